"""The Prefect flow ``upscale_scene`` runs end to end on a real scene: six stage task runs
whatever the tile count, the COG and reports exist, and the markdown and table artifacts are
readable from the API. Runs against Prefect's test harness (a temporary local server)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import rasterio
from conftest import crop_scene


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


async def _read_run(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    async with get_client() as client:
        tasks = await client.read_task_runs(flow_run_filter=flt)
        artifacts = await client.read_artifacts(flow_run_filter=flt)
    return tasks, artifacts


def test_upscale_scene_flow(prefect_harness, repo_data, dask_address, tmp_path):
    from flows.upscale_scene import upscale_scene

    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "crop.tif",
                     row=200, col=200, height=230, width=250)
    dst = tmp_path / "out" / "crop_x2.tif"
    dst.parent.mkdir()
    state = upscale_scene(src=str(src), dst=str(dst), model="bicubic", tile_size=64,
                          dask_address=dask_address, return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["cog"] == str(dst) and os.path.exists(out["report_json"])
    assert os.path.exists(out["report_md"]) and os.path.exists(out["report_html"])
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs and (b.width, b.height) == (2 * a.width, 2 * a.height)

    tasks, artifacts = asyncio.run(_read_run(state.state_details.flow_run_id))
    # 4 x 4 = 16 tiles, but Prefect sees the scene's six stages only (Dask runs the tiles)
    names = sorted(t.name.rsplit("-", 1)[0] for t in tasks)
    assert names == sorted(["ingest", "tile", "infer", "stitch", "publish", "report"])
    assert all(t.state.is_completed() for t in tasks)
    by_key = {a.key: a for a in artifacts}
    assert by_key["upscale-report"].type == "markdown"
    assert "Wald PSNR" in by_key["upscale-report"].data
    assert by_key["upscale-quality"].type == "table"
    assert "Wald PSNR (dB)" in str(by_key["upscale-quality"].data)
    assert "Seam ratio" in str(by_key["upscale-quality"].data)
    # the HTML report is linked from the UI, as a link artifact and from the markdown
    html_uri = Path(out["report_html"]).resolve().as_uri()
    # (Prefect stores a link artifact as markdown: "[text](link)")
    assert f"]({html_uri})" in by_key["upscale-report-html"].data
    assert f"]({html_uri})" in by_key["upscale-report"].data
