"""The Prefect deployments on a real stack: ``prefect server start`` (SQLite), ``prefect deploy``
from ``deployments/prefect.yaml``, a process worker, an S3 archive on ``moto_server`` with more
than 1,000 keys. ``upscale-scene`` is triggered by ``prefect deployment run``, by the client and
from the UI in headless Chromium; ``nightly-archive`` has its cron schedule and scheduled runs;
``upscale_archive`` is idempotent and a bad scene fails alone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time

import pytest
import rasterio
from conftest import crop_scene
from prefect_stack import finish_stack, start_server
from test_archive import put_objects

pytestmark = pytest.mark.slow

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
BUCKET = "archive"
GOOD = ["2024/landsat_a", "2024/s2_b04", "2025/dem"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_archive(moto_s3, repo_data, tmp_path_factory):
    """Bucket ``archive``: ``incoming/`` holds 1,100 sidecar .xml keys (sorted first, so the
    scenes are only on the second page of a listing) and three real scenes (crops of Landsat 7
    RGB uint8, Sentinel-2 B04 uint16, Copernicus DEM float32); ``mixed/`` one good scene and a
    truncated TIFF; ``single/`` the scene the upscale-scene runs use."""
    import boto3

    d = tmp_path_factory.mktemp("archive-src")
    crops = {
        "incoming/2024/landsat_a.tif": crop_scene(repo_data.path("landsat7_RGB.byte.tif"),
                                                  d / "a.tif", row=300, col=300, height=64,
                                                  width=72),
        "incoming/2024/s2_b04.tif": crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"),
                                               d / "b.tif", row=10, col=20, height=60, width=64),
        "incoming/2025/dem.tif": crop_scene(
            repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"), d / "c.tif",
            row=100, col=100, height=64, width=64),
        "mixed/ok/landsat_b.tif": crop_scene(repo_data.path("landsat7_RGB.byte.tif"),
                                             d / "d.tif", row=200, col=400, height=56, width=64),
        "single/landsat.tif": crop_scene(repo_data.path("landsat7_RGB.byte.tif"), d / "e.tif",
                                         row=250, col=250, height=64, width=64),
    }
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    items = {f"incoming/0000-meta/m-{i:04d}.xml": b"<meta/>" for i in range(1100)}
    items.update({key: path.read_bytes() for key, path in crops.items()})
    items["mixed/bad/broken.tif"] = crops["mixed/ok/landsat_b.tif"].read_bytes()[:3000]
    put_objects(BUCKET, items)
    return crops


@pytest.fixture(scope="module")
def prefect_server(moto_s3, tmp_path_factory):
    """``prefect server start``, spawned first so that it starts while the archive and the Dask
    cluster are set up; every process of the stack is stopped at teardown."""
    home = tmp_path_factory.mktemp("prefect-stack")
    stack = start_server(home, _free_port(), {k: os.environ[k] for k in AWS_VARS})
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def prefect_stack(prefect_server, s3_archive, dask_address):
    """Server + pool + ``sr-gpu`` limit (1 slot) + deployments + worker; this process talks to
    the same server (PREFECT_API_URL) for in-process flow runs and client calls."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack = finish_stack(prefect_server)
    try:
        with (pytest.MonkeyPatch.context() as mp,
              temporary_settings({PREFECT_API_URL: stack.api_url})):
            mp.setenv("PREFECT_API_URL", stack.api_url)
            yield stack
            # send this process's buffered run logs and events before the server goes away
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
    finally:
        stack.close()


async def _api(fn):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await fn(client)


def api(fn):
    """Call ``fn(client)`` (async) with a Prefect client of the stack's server."""
    return asyncio.run(_api(fn))


def _run_filter(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))


def read_run(flow_run_id):
    """(flow run, task runs, artifacts) of one flow run, from the API."""
    async def go(client):
        flt = _run_filter(flow_run_id)
        return (await client.read_flow_run(flow_run_id),
                await client.read_task_runs(flow_run_filter=flt),
                await client.read_artifacts(flow_run_filter=flt))
    return api(go)


def wait_final(flow_run_id, timeout_s: float = 300):
    """Poll until the flow run is in a final state; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = api(lambda c: c.read_flow_run(flow_run_id))
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {flow_run_id} not finished after {timeout_s} s: "
                                 f"{run.state}")
        time.sleep(1)


def s3_json(key):
    import boto3

    return json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def assert_scene_output(key_stem, tmp_path, src_path):
    """The COG (2x the input, same CRS) and its report are in S3."""
    import boto3

    s3 = boto3.client("s3")
    local = tmp_path / (key_stem.replace("/", "_") + ".tif")
    s3.download_file(BUCKET, f"{key_stem}.tif", str(local))
    with rasterio.open(local) as cog, rasterio.open(src_path) as src:
        assert (cog.width, cog.height) == (2 * src.width, 2 * src.height)
        assert cog.crs == src.crs and cog.overviews(1) is not None
    rep = s3_json(f"{key_stem}.report.json")
    assert rep["output"]["uri"] == f"s3://{BUCKET}/{key_stem}.tif"
    s3.head_object(Bucket=BUCKET, Key=f"{key_stem}.report.md")


def scene_params(dst_key, dask_address):
    return {"src": f"s3://{BUCKET}/single/landsat.tif", "dst": f"s3://{BUCKET}/{dst_key}.tif",
            "model": "espcn", "tile_size": 32, "dask_address": dask_address}


def assert_scene_run(flow_run_id):
    run, tasks, artifacts = read_run(flow_run_id)
    assert run.state.is_completed(), run.state
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == sorted(
        ["ingest", "tile", "infer", "stitch", "publish", "report"])
    keys = {a.key: a for a in artifacts}
    assert "Wald PSNR" in keys["upscale-report"].data
    assert "Wald PSNR (dB)" in str(keys["upscale-quality"].data)


def test_nightly_archive_schedule(prefect_stack):
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    name = "upscale_archive/nightly-archive"
    dep = api(lambda c: c.read_deployment_by_name(name))
    (sched,) = dep.schedules
    # deployed paused: it must not fire at the placeholder source / output_prefix
    assert not sched.active and sched.schedule.cron == "0 2 * * *"
    assert sched.schedule.timezone == "UTC"
    assert dep.work_pool_name == "sr-process"
    # activated as the README says: the schedule's ID from `schedule ls`, then `schedule resume`
    out = prefect_stack.cli("deployment", "schedule", "ls", name, "-o", "json").stdout
    listed = json.loads(out[out.index("["):out.rindex("]") + 1])
    assert [(s["id"], s["active"]) for s in listed] == [(str(sched.id), False)]
    prefect_stack.cli("deployment", "schedule", "resume", name, str(sched.id))
    assert api(lambda c: c.read_deployment_by_name(name)).schedules[0].active
    deadline = time.monotonic() + 90
    while True:
        runs = api(lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))))
        if runs or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert runs, "the server created no scheduled runs for nightly-archive"
    for r in runs:
        t = r.expected_start_time
        assert (t.hour, t.minute) == (2, 0) and t.timestamp() > time.time()

    scene = api(lambda c: c.read_deployment_by_name("upscale_scene/upscale-scene"))
    assert scene.schedules == []


def _archive(dask_address, source, output, model="espcn"):
    from flows.upscale_archive import Cluster, Processing, upscale_archive

    state = upscale_archive(source=source, output_prefix=output,
                            processing=Processing(model=model, tile_size=32, wald_window=48),
                            cluster=Cluster(dask_address=dask_address),
                            max_scenes_in_flight=2, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def test_archive_is_idempotent(prefect_stack, s3_archive, dask_address):
    import boto3

    source, output = f"s3://{BUCKET}/incoming/**/*.tif", f"s3://{BUCKET}/out"
    out, run_id = _archive(dask_address, source, output)
    assert (out["done"], out["skipped"], out["failed"]) == (3, 0, 0), out
    summary = s3_json("out/archive-summary.json")
    assert [r["scene_id"] for r in summary["results"]] == GOOD
    for r in summary["results"]:
        stem = r["scene_id"].rsplit("/", 1)[-1]
        assert r["cog"] == f"{output}/{r['scene_id']}/espcn_x2/{stem}.tif"
        assert r["quality"]["wald_psnr_db"] > 0 and r["output_mp_per_s"] > 0
        boto3.client("s3").head_object(Bucket=BUCKET, Key=r["cog"][len(f"s3://{BUCKET}/"):])
    # one slot of the sr-gpu limit: two scenes in flight, but never two running at once
    spans = sorted((r["started"], r["finished"]) for r in summary["results"])
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    _, tasks, artifacts = read_run(run_id)
    # list-scenes + plan + summary + one task per scene (the tiles run on Dask)
    assert len(tasks) == 3 + 3
    page = boto3.client("s3").get_object(Bucket=BUCKET, Key="out/archive-report.html")
    assert "2024/landsat_a/espcn_x2/landsat_a.report.html" in page["Body"].read().decode()
    table = {a.key: a for a in artifacts}["archive-summary"]
    assert table.type == "table" and "landsat_a" in str(table.data)

    out2, run_id2 = _archive(dask_address, source, output)
    assert (out2["done"], out2["skipped"], out2["failed"]) == (0, 3, 0)
    assert out2["message"] == "nothing to do: all 3 scenes are up to date"
    _, tasks2, _ = read_run(run_id2)
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks2) == ["list-scenes", "plan", "summary"]

    boto3.client("s3").delete_object(Bucket=BUCKET, Key="out/2024/s2_b04/espcn_x2/s2_b04.tif")
    out3, _ = _archive(dask_address, source, output)
    assert (out3["done"], out3["skipped"], out3["failed"]) == (1, 2, 0)
    summary3 = s3_json("out/archive-summary.json")
    assert [r["scene_id"] for r in summary3["results"] if r["status"] == "done"] == ["2024/s2_b04"]
    assert summary3["results"][1]["processed_because"] == "output COG missing"


def test_archive_bad_scene_fails_alone_via_deployment(prefect_stack, s3_archive, dask_address):
    from prefect.deployments import run_deployment

    params = {"source": f"s3://{BUCKET}/mixed/**/*.tif", "output_prefix": f"s3://{BUCKET}/mixed-out",
              "processing": {"model": "bicubic", "tile_size": 32, "wald_window": 48},
              "cluster": {"dask_address": dask_address}}
    # the server validates parameters against the flow's schema before any run exists
    with pytest.raises(Exception, match="tile_size|validation|16"):
        run_deployment("upscale_archive/nightly-archive", timeout=0,
                       parameters={**params, "processing": {"tile_size": 4}})
    run = run_deployment("upscale_archive/nightly-archive", parameters=params, timeout=400)
    run, tasks, artifacts = read_run(run.id)
    assert run.state.is_completed(), run.state
    summary = s3_json("mixed-out/archive-summary.json")
    rows = {r["scene_id"]: r for r in summary["results"]}
    assert rows["ok/landsat_b"]["status"] == "done"
    assert rows["bad/broken"]["status"] == "failed"
    assert "broken.tif" in rows["bad/broken"]["reason"]
    assert summary["failed"] == 1 and "bad/broken" in summary["message"]
    import boto3

    page = boto3.client("s3").get_object(Bucket=BUCKET, Key="mixed-out/archive-report.html")
    assert "broken.tif" in page["Body"].read().decode()
    failed_tasks = [t for t in tasks if t.state.is_failed()]
    assert [t.name for t in failed_tasks] == ["scene bad/broken"]
    assert "bad/broken" in {a.key: a for a in artifacts}["archive-summary-md"].data


def submit_from_ui(ui_url: str, deployment_id, params: dict, known_runs: set) -> str:
    """Open the deployment's page in headless Chromium, Run > Custom run, fill the form, submit;
    return the id of the flow run that appeared."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(180_000)  # the UI is slow to render on a loaded 2-core runner
            page.goto(f"{ui_url}/deployments/deployment/{deployment_id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").first.click()
            page.get_by_text("dask_address (Optional)").wait_for()
            # optional str parameters start as None: switch model and dask_address to str
            page.get_by_role("button", name="str", exact=True).nth(0).click()
            page.get_by_role("button", name="str", exact=True).nth(1).click()
            boxes = page.locator("form textarea")
            # in form order: src, dst, model, device, dask_address
            boxes.nth(0).fill(params["src"])
            boxes.nth(1).fill(params["dst"])
            boxes.nth(2).fill(params["model"])
            boxes.nth(4).fill(params["dask_address"])
            page.locator("form input[type=number]").first.fill(str(params["tile_size"]))
            page.get_by_role("button", name="Submit", exact=True).click()
            # the UI leaves the form once the server created the run: back to the deployment
            # page, or on to the new flow run's page
            try:
                page.wait_for_url(re.compile(
                    r".*/(deployments/deployment|runs/flow-run)/[0-9a-f-]{36}(\?.*)?$"))
            except PlaywrightTimeout:
                # it failed once in a full suite run on a loaded 2-core machine (and passed alone):
                # say what the page showed, so the next failure can be told apart
                body = page.inner_text("body")[:1500].replace("\n", " | ")
                raise AssertionError(
                    f"the UI did not leave the run form: at {page.url}: {body}") from None
        finally:
            browser.close()
    deadline = time.monotonic() + 30
    while True:
        new = {str(r.id) for r in deployment_runs(deployment_id)} - known_runs
        if new or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(new) == 1, f"the UI created {len(new)} runs"
    return new.pop()


def deployment_runs(deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return api(lambda c: c.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))


def test_upscale_scene_from_cli_client_and_ui(prefect_stack, s3_archive, dask_address, tmp_path):
    """Three runs of upscale-scene, started from the CLI, the client and the UI; they overlap on
    the worker and all complete."""
    from prefect.deployments import run_deployment

    dep = api(lambda c: c.read_deployment_by_name("upscale_scene/upscale-scene"))
    known = {str(r.id) for r in deployment_runs(dep.id)}
    runs = {}
    params = scene_params("scene-out/cli", dask_address)
    res = prefect_stack.cli("deployment", "run", "upscale_scene/upscale-scene",
                            *[a for k, v in params.items() for a in ("--param", f"{k}={v}")])
    runs["cli"] = re.search(r"UUID: ([0-9a-f-]{36})", res.stdout).group(1)
    runs["client"] = str(run_deployment("upscale_scene/upscale-scene", timeout=0,
                                        parameters=scene_params("scene-out/client",
                                                                dask_address)).id)
    params = scene_params("scene-out/ui", dask_address)
    runs["ui"] = submit_from_ui(prefect_stack.ui_url, dep.id, params,
                                known | set(runs.values()))
    ui_run = api(lambda c: c.read_flow_run(runs["ui"]))
    assert {k: ui_run.parameters.get(k) for k in params} == params

    for how, flow_run_id in runs.items():
        run = wait_final(flow_run_id, 500)
        assert run.state.is_completed(), (how, run.state, prefect_stack.log_tail("worker"))
        assert_scene_run(flow_run_id)
        assert_scene_output(f"scene-out/{how}", tmp_path, s3_archive["single/landsat.tif"])


def test_archive_local_folder(prefect_stack, repo_data, dask_address, tmp_path):
    """A local folder in, a local output prefix out: the same layout, manifest and summary."""
    src = tmp_path / "scenes" / "2026"
    src.mkdir(parents=True)
    crop_scene(repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif"), src / "naip.tif",
               row=0, col=0, height=40, width=48)
    out = tmp_path / "upscaled"
    result, _ = _archive(dask_address, str(tmp_path / "scenes"), str(out), model="bicubic")
    assert (result["done"], result["skipped"], result["failed"]) == (1, 0, 0)
    folder = out / "2026" / "naip" / "bicubic_x2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "naip.manifest.json", "naip.report.html", "naip.report.json", "naip.report.md",
        "naip.stac.json", "naip.tif"]
    assert "2026/naip/bicubic_x2/naip.report.html" in (out / "archive-report.html").read_text()
    summary = json.loads((out / "archive-summary.json").read_text())
    assert summary["results"][0]["cog"] == str(folder / "naip.tif")
    assert len(list((out / "_runs").iterdir())) == 1
    again, _ = _archive(dask_address, str(tmp_path / "scenes"), str(out), model="bicubic")
    assert (again["done"], again["skipped"]) == (0, 1)
