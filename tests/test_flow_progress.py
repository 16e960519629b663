"""What the Prefect UI shows (issue #18, item 6): the ``infer`` stage publishes a progress
artifact that the server holds while the tiles run, and logs a line every ~10 %; the report links
(link artifact and markdown artifact) are URLs a browser opens: for S3 a presigned URL (tested
against moto_server on loopback, fetched with urllib), with an opt-out."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from conftest import bucket_with_scene, crop_scene

from sr_core import storage
from sr_core.compute.progress import ProgressMeter, format_seconds
from sr_core.errors import InputError

S2 = "S2A_29RKH_20200219_L2A_B04.tif"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_meter_throttles_a_10000_tile_scene():
    """One call per tile, 0.05 s apart: at most one published tick per 2 s and per 1 %, the first
    and last always; a log line at each 10 % (11 in all); MP/s and ETA from the rate so far."""
    clock = FakeClock()
    meter = ProgressMeter(clock=clock)
    ticks = [meter.update(0, 10_000, 0)]
    for done in range(1, 10_001):
        clock.t += 0.05
        ticks.append(meter.update(done, 10_000, done * 4_000_000))
    published = [t for t in ticks if t.publish]
    assert published[0].done == 0 and published[-1].percent == 100.0
    assert 50 <= len(published) <= 101
    assert [round(t.percent) for t in ticks if t.log] == list(range(0, 101, 10))
    half = ticks[5_000]
    assert half.mp_per_s == pytest.approx(4.0 / 0.05)  # 4 MP per tile, 20 tiles/s
    assert half.eta_s == pytest.approx(5_000 * 0.05)
    assert half.line() == "infer: 50 % (5000/10000 tiles), 80 output MP/s, ETA 4 min 10 s"
    assert ticks[-1].eta_s == 0.0


def test_meter_resumed_run_and_empty_scene():
    """Reused tiles count as done but not in the rate; a scene whose tiles were all reused is
    published and logged once at 100 %."""
    clock = FakeClock()
    meter = ProgressMeter(clock=clock)
    first = meter.update(60, 100, 0)
    assert first.publish and first.log and first.eta_s is None and first.mp_per_s is None
    clock.t = 10.0
    tick = meter.update(80, 100, 1_000_000)
    assert tick.eta_s == pytest.approx(10.0)  # 20 tiles in 10 s, 20 left
    done = ProgressMeter(clock=FakeClock()).update(5, 5, 0)
    assert done.publish and done.log and done.percent == 100.0
    assert format_seconds(3 * 3600 + 125) == "3 h 02 min"


async def _run_records(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in artifacts}, [lg.message for lg in logs]


def _read_back(artifact_id) -> float:
    """The progress artifact's value as the server holds it now."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    return float(art.data)


def test_infer_progress_artifact_on_the_server(prefect_harness, repo_data, dask_address,
                                              tmp_path, monkeypatch):
    """64 x 64 px at 16 px tiles: 16 tiles. Each update of the progress artifact is read back
    from the server during the run (as the UI would); it ends at 100 and the flow run's logs
    hold the "infer: N %" lines."""
    import flows.upscale_scene as scene_flow

    monkeypatch.setattr(scene_flow, "PROGRESS_MIN_INTERVAL_S", 0.0)  # every 1 % may publish
    seen: list[float] = []
    real_update = scene_flow.update_progress_artifact

    def update_and_read_back(artifact_id, progress, description=None):
        out = real_update(artifact_id, progress, description=description)
        seen.append(_read_back(artifact_id))
        return out

    monkeypatch.setattr(scene_flow, "update_progress_artifact", update_and_read_back)
    src = crop_scene(repo_data.path(S2), tmp_path / "crop.tif", row=300, col=300, height=64,
                     width=64)
    state = scene_flow.upscale_scene(src=str(src), dst=str(tmp_path / "crop_x2.tif"),
                                     model="bicubic", tile_size=16, dask_address=dask_address,
                                     return_state=True)
    assert state.is_completed(), state.message
    deadline = time.monotonic() + 15  # logs reach the server in batches
    while True:
        by_key, logs = asyncio.run(_run_records(state.state_details.flow_run_id))
        if any(m.startswith("infer: 100 %") for m in logs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    art = by_key["infer-progress"]
    assert art.type == "progress" and float(art.data) == 100.0
    assert "(16/16 tiles)" in art.description and "output MP/s" in art.description
    # intermediate values reached the server while infer ran, in order
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 100.0
    assert any(0 < v < 100 for v in seen)
    lines = [m for m in logs if m.startswith("infer: ")]
    assert lines[0].startswith("infer: 0 % (0/16 tiles)")
    assert lines[-1].startswith("infer: 100 % (16/16 tiles)") and "ETA 0 s" in lines[-1]
    assert 3 <= len(lines) <= 12
    # a local report: a file:// link whose description says where it opens
    assert "file://" in by_key["upscale-report-html"].data
    assert "machine that holds the file" in by_key["upscale-report-html"].description


@pytest.fixture
def scene_bucket(moto_s3, repo_data, tmp_path):
    """A new bucket on moto_server holding a 64 x 64 Sentinel-2 crop as ``in/crop.tif``."""
    return bucket_with_scene("links", repo_data, tmp_path)


def test_s3_report_links_open_in_a_browser(prefect_harness, scene_bucket, dask_address):
    """S3 output: the link artifact and the markdown artifact carry the same presigned URL
    (SigV4, its expiry stated), and fetching it over HTTP gives the HTML report's bytes."""
    import boto3

    from flows.upscale_scene import upscale_scene

    dst = f"s3://{scene_bucket}/out/crop_x2.tif"
    state = upscale_scene(src=f"s3://{scene_bucket}/in/crop.tif", dst=dst, model="bicubic",
                          tile_size=32, dask_address=dask_address, return_state=True)
    assert state.is_completed(), state.message
    by_key, _ = asyncio.run(_run_records(state.state_details.flow_run_id))
    link_art = by_key["upscale-report-html"]
    # (Prefect stores a link artifact as markdown: "[text](link)")
    url = link_art.data.rsplit("](", 1)[1].rstrip(")")
    assert url.startswith(("http://", "https://")) and "X-Amz-Signature=" in url
    assert "X-Amz-Expires=604800" in url and "valid for 7 days, until" in link_art.description
    assert f"]({url})" in by_key["upscale-report"].data
    assert "valid for 7 days" in by_key["upscale-report"].data
    with urllib.request.urlopen(url, timeout=10) as resp:
        got = resp.read()
    body = boto3.client("s3").get_object(Bucket=scene_bucket,
                                         Key="out/crop_x2.report.html")["Body"].read()
    assert got == body and b"<html" in got.lower()


def test_browser_link_s3_expiry_and_opt_out(scene_bucket, monkeypatch):
    """The validity is configurable; ``SR_PRESIGN_REPORTS=0`` links the s3:// URI and says so;
    an invalid validity is refused in one line."""
    uri = f"s3://{scene_bucket}/in/crop.tif"
    monkeypatch.setenv("SR_REPORT_LINK_EXPIRES_S", "3600")
    link = storage.browser_link(uri)
    assert "X-Amz-Expires=3600" in link.url and link.expires_s == 3600
    assert "valid for 1 h" in link.note
    with urllib.request.urlopen(link.url, timeout=10) as resp:
        assert resp.read(4) in (b"II*\x00", b"MM\x00*")  # the GeoTIFF itself
    monkeypatch.setenv("SR_PRESIGN_REPORTS", "0")
    off = storage.browser_link(uri)
    assert off.url == uri and off.expires_s is None and "SR_PRESIGN_REPORTS=0" in off.note
    monkeypatch.setenv("SR_REPORT_LINK_EXPIRES_S", "8d")
    with pytest.raises(InputError, match="SR_REPORT_LINK_EXPIRES_S"):
        storage.browser_link(uri)


def test_archive_scene_progress(prefect_harness, repo_data, dask_address, tmp_path):
    """``upscale_archive``: each ``scene`` task run has its own (unkeyed) progress artifact,
    at 100 when the scene is done."""
    from flows.upscale_archive import Cluster, Processing, upscale_archive

    (tmp_path / "in").mkdir()
    crop_scene(repo_data.path(S2), tmp_path / "in" / "s2.tif", row=300, col=300, height=64,
               width=64)
    state = upscale_archive(source=str(tmp_path / "in"), output_prefix=str(tmp_path / "out"),
                            processing=Processing(model="bicubic", tile_size=32, wald_window=48),
                            cluster=Cluster(dask_address=dask_address), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["done"] == 1
    artifacts = asyncio.run(_run_records(state.state_details.flow_run_id))[0]
    progress = artifacts[None]  # unkeyed: on the run's page only
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert progress.description.startswith("s2") and "(4/4 tiles)" in progress.description
