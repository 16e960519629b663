"""The stack of ``infra/compose.yaml``, run natively: PostgreSQL (Debian's package) for the Prefect
server, ``moto_server`` for MinIO, and the compose services ``docker compose up`` starts
(prefect-server, register-deployments, prefect-worker, dask-scheduler, dask-worker) as local
processes with the commands, environment and health checks read from the compose file (host names
and container ports mapped to free ports on 127.0.0.1, ``${VAR}`` from ``infra/.env.example``).
``upscale-scene`` is then run through the deployment: an s3:// scene in, a COG out, its tiles on the
compose Dask cluster and its runs stored in PostgreSQL."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import rasterio
from conftest import crop_scene
from infra_compose import (
    ENV_EXAMPLE,
    LOOPBACK,
    REPO,
    Processes,
    default_services,
    free_port,
    load_compose,
    local_service,
    port_map,
    read_env_file,
)

pytestmark = pytest.mark.slow

#: services the compose file runs from images we cannot run here, and their stand-ins
STAND_INS = {"postgres": "postgresql", "minio": "moto_server", "minio-bucket": "create-bucket"}


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]))
    if not candidates:
        pytest.fail(f"{name} not found: PostgreSQL is missing (scripts/setup.sh installs Debian's "
                    "postgresql package)")
    return candidates[-1]


class LocalPostgres:
    """``initdb`` + ``pg_ctl`` in a temporary data directory on 127.0.0.1:PORT, with the user,
    password and database the compose file gives the ``postgres`` service. As root, the server
    runs as the ``postgres`` user (initdb refuses root)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sr-pg-"))
        self.data = self.dir / "data"
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(env["POSTGRES_PASSWORD"])
        if self.run_as:
            shutil.chown(pwfile, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", env["POSTGRES_USER"],
                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} "
                  "-c fsync=off", "start")
        self.url = (f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
                    f"@{LOOPBACK}:{self.port}")
        self.query("postgres", f'CREATE DATABASE "{env["POSTGRES_DB"]}"')

    def _run(self, *argv: str) -> None:
        res = subprocess.run([*self.run_as, *argv], capture_output=True, text=True, timeout=120)
        if res.returncode:
            raise RuntimeError(f"{argv[0]} exited {res.returncode}: {res.stdout}{res.stderr}")

    def query(self, db: str, sql: str):
        import asyncpg

        async def go():
            conn = await asyncpg.connect(f"{self.url}/{db}")
            try:
                return await conn.fetch(sql)
            finally:
                await conn.close()
        return asyncio.run(go())

    def stop(self) -> None:
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def compose_stack(moto_s3, tmp_path_factory):
    """Everything ``docker compose up`` starts, as local processes; yields (services, processes,
    postgres, env). Stopped (process groups) at teardown."""
    import boto3

    env_file = read_env_file(ENV_EXAMPLE)
    compose = load_compose(env_file)
    services = default_services(compose)
    assert set(services) - set(STAND_INS) == {
        "prefect-server", "register-deployments", "prefect-worker", "dask-scheduler",
        "dask-worker"}, services
    assert {n for n in compose["services"] if compose["services"][n].get("x-ci-stand-in")} == \
        set(STAND_INS)
    moto_port = int(moto_s3.rsplit(":", 1)[1])
    ports = port_map(compose, {"minio": {9000: moto_port}})

    home = tmp_path_factory.mktemp("infra-stack")
    logs = home / "logs"
    logs.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    # the host side of the image: the venv instead of /opt/venv, the repository instead of
    # /opt/sr-pipeline, temporary folders instead of the image's PREFECT_HOME and /scratch; no AWS,
    # PREFECT or DASK settings leak in from this process (the compose environment must suffice)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "PREFECT_", "DASK_", "SR_"))}
    base.update(PATH=os.pathsep.join([venv_bin, base.get("PATH", "")]),
                PYTHONPATH=str(REPO),
                PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                SR_SCRATCH=str(home / "scratch"), DASK_TEMPORARY_DIRECTORY=str(home / "dask"),
                # test tuning only: poll for work every second (default 10 s)
                PREFECT_WORKER_QUERY_SECONDS="1")
    (home / "scratch").mkdir()
    # the stand-ins: the bucket minio-bucket creates, PostgreSQL as the postgres service
    boto3.client("s3").create_bucket(Bucket=env_file["SR_BUCKET"])
    procs = Processes(logs)
    pg = LocalPostgres(compose["services"]["postgres"]["environment"])
    try:
        # the database URL reaches PostgreSQL through the postgres service's mapped port
        ports["postgres"][5432] = pg.port
        local = {name: local_service(compose, name, ports, base) for name in services
                 if name not in STAND_INS}
        timings = {}
        t0 = time.monotonic()
        procs.start(local["prefect-server"])
        procs.start(local["dask-scheduler"])
        timings["dask-scheduler"] = procs.wait_healthy(local["dask-scheduler"], 120)
        timings["prefect-server"] = procs.wait_healthy(local["prefect-server"], 240)
        procs.start(local["dask-worker"])
        # compose starts the worker once registration is done; here they overlap to save time
        # (a process worker polls its pool whether or not deployments exist yet)
        procs.start(local["prefect-worker"])
        t_reg = time.monotonic()
        reg = subprocess.run(local["register-deployments"].argv, cwd=REPO,
                             env=local["register-deployments"].env, capture_output=True,
                             text=True, timeout=240)
        assert reg.returncode == 0, reg.stdout[-3000:] + reg.stderr[-3000:]
        # compose sets SR_ARCHIVE_SOURCE / SR_ARCHIVE_OUTPUT: the nightly schedule is activated
        assert "nightly-archive: schedule active" in reg.stdout, reg.stdout[-3000:]
        timings["register-deployments"] = time.monotonic() - t_reg
        timings["prefect-worker"] = procs.wait_healthy(local["prefect-worker"], 120)
        timings["dask-worker"] = procs.wait_healthy(local["dask-worker"], 120)
        timings["total"] = time.monotonic() - t0
        print(f"\ninfra stack up: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")
        yield local, procs, pg, env_file
    finally:
        procs.stop_all()
        pg.stop()


def test_compose_stack_runs_upscale_scene(compose_stack, repo_data, tmp_path):
    import boto3
    from distributed import Client
    from prefect.client.orchestration import get_client

    local, procs, pg, env_file = compose_stack
    bucket = env_file["SR_BUCKET"]
    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "in.tif", row=250,
                     col=250, height=64, width=64)
    s3 = boto3.client("s3")
    s3.upload_file(str(src), bucket, "incoming/landsat.tif")
    cli_env = local["register-deployments"].env
    scheduler = cli_env["SR_DASK_ADDRESS"]
    with Client(scheduler, timeout="20s") as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1, workers
        before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)

    # the deployment's default dask_address is the compose scheduler: only src, dst, model given
    res = subprocess.run(
        [local["prefect-worker"].argv[0], "deployment", "run", "upscale_scene/upscale-scene",
         "--param", f"src=s3://{bucket}/incoming/landsat.tif",
         "--param", f"dst=s3://{bucket}/upscaled/landsat_x2.tif", "--param", "model=espcn"],
        env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", res.stdout).group(1)

    async def final_run():
        async with get_client() as c:
            deadline = time.monotonic() + 240
            while True:
                run = await c.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

                    tasks = await c.read_task_runs(flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=[run.id])))
                    dep = await c.read_deployment(run.deployment_id)
                    return run, tasks, dep
                assert time.monotonic() < deadline, f"run {run_id} not final: {run.state}"
                await asyncio.sleep(1)

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: cli_env["PREFECT_API_URL"]}):
        run, tasks, dep = asyncio.run(final_run())
    assert run.state.is_completed(), (run.state, procs.log_tail("prefect-worker"))
    assert dep.parameters["dask_address"] == scheduler
    assert run.parameters["dask_address"] == scheduler
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == sorted(
        ["ingest", "tile", "infer", "stitch", "publish", "report"])

    # the COG and its report are in the bucket
    out = tmp_path / "out.tif"
    s3.download_file(bucket, "upscaled/landsat_x2.tif", str(out))
    with rasterio.open(out) as cog, rasterio.open(src) as inp:
        assert (cog.width, cog.height) == (128, 128)
        assert cog.crs == inp.crs and cog.overviews(1) is not None
    s3.head_object(Bucket=bucket, Key="upscaled/landsat_x2.report.json")
    # the tiles ran on the compose Dask cluster (its scheduler saw task transitions) ...
    with Client(scheduler, timeout="20s") as client:
        after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after > before
    # ... and the Prefect server keeps its state in PostgreSQL
    rows = pg.query(env_file["POSTGRES_DB"],
                    f"SELECT state_type FROM flow_run WHERE id = '{run_id}'")
    assert [r["state_type"] for r in rows] == ["COMPLETED"]
