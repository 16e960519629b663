"""The Prefect flow ``upscale_scene`` runs end to end on a real scene: six stage task runs
whatever the tile count, the COG and reports exist, and the markdown and table artifacts are
readable from the API. Runs against Prefect's test harness (a temporary local server)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import crop_scene


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


@pytest.mark.parametrize("src_name,dst_name,fmt",
                         [("CT5N", "ct5n_x2", "dicom"),
                          ("example4d.nii.gz", "ex4d_x2.nii.gz", "nifti")],
                         ids=["dicom-series", "nifti-4d"])
def test_upscale_scene_flow_medical(src_name, dst_name, fmt, prefect_harness, dask_address,
                                    tmp_path):
    """Medical inputs (a DICOM series folder, a 4-D NIfTI) take the same six stages and come out
    in their own format (a new series, a NIfTI), with the HTML report beside the JSON."""
    import nibabel as nib
    import pydicom

    from flows.upscale_scene import upscale_scene

    src = Path(__file__).resolve().parent / "data" / "medical" / src_name
    dst = tmp_path / "out" / dst_name
    dst.parent.mkdir()
    state = upscale_scene(src=str(src), dst=str(dst), model="bicubic", dask_address=dask_address,
                          return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["output"] == str(dst) and out["format"] == fmt and "cog" not in out
    assert os.path.exists(out["report_json"]) and os.path.exists(out["report_html"])
    if fmt == "dicom":
        files = sorted(dst.iterdir())
        assert len(files) == 5 and all(pydicom.dcmread(f).Rows == 32 for f in files)
    else:
        img = nib.load(dst)
        assert img.shape == (256, 192, 24, 2)
        assert np.allclose(img.header.get_zooms()[:3], (1.0, 1.0, 2.2), atol=1e-5)
    tasks, artifacts = asyncio.run(_read_run(state.state_details.flow_run_id))
    names = sorted(t.name.rsplit("-", 1)[0] for t in tasks)
    assert names == sorted(["ingest", "tile", "infer", "stitch", "publish", "report"])
    by_key = {a.key: a for a in artifacts}
    assert "upscale-report" in by_key and "upscale-report-html" in by_key


def _tasks_and_artifacts(state):
    """Sorted task names (completed) and artifacts by key of a finished flow run."""
    tasks, artifacts = asyncio.run(_read_run(state.state_details.flow_run_id))
    assert all(t.state.is_completed() for t in tasks)
    return sorted(t.name.rsplit("-", 1)[0] for t in tasks), {a.key: a for a in artifacts}


def test_evaluate_models_flow(prefect_harness, repo_data, tmp_path):
    """Two task runs (evaluate, publish); the summary is a table artifact and the files exist."""
    import numpy as np
    from PIL import Image

    from flows.evaluate_models import evaluate_models
    from sr_core.training.evaluate import EvalConfig

    with rasterio.open(repo_data.path("landsat7_RGB.byte.tif")) as ds:
        rgb = ds.read(window=rasterio.windows.Window(250, 250, 120, 100))
    Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0))).save(tmp_path / "l_HR.png")
    state = evaluate_models(EvalConfig(models=["espcn-x2"], scale=2, hr_dir=str(tmp_path)),
                            out_dir=str(tmp_path / "eval"), return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert os.path.exists(out["markdown"]) and os.path.exists(out["csv"])
    assert {r["model"] for r in out["summary"]} == {"bicubic", "espcn-x2"}

    names, by_key = _tasks_and_artifacts(state)
    assert names == ["evaluate", "publish"]
    assert by_key["evaluation-summary"].type == "table"
    assert "espcn-x2" in str(by_key["evaluation-summary"].data)
    assert "BT.601" in by_key["evaluation-report"].data


def test_train_model_flow(prefect_harness, repo_data, tmp_path):
    """Two task runs (train, publish); the weights and card are written and the per-epoch
    validation is a table artifact."""
    from flows.train_model import train_model_flow
    from sr_core.training.config import TrainConfig

    train = crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), tmp_path / "s2.tif",
                       row=300, col=300, height=96, width=96)
    val = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "l7.tif",
                     row=250, col=250, height=64, width=64)
    arguments = {"scale": 2, "in_channels": 1, "n_feats": [8, 4]}
    cfg = TrainConfig(architecture="espcn", arguments=arguments, name="espcn-tiny-x2",
                      out=str(tmp_path / "espcn_tiny.safetensors"), scenes=[str(train)],
                      val_scenes=[str(val)], epochs=2, steps_per_epoch=2, batch_size=2,
                      patch_px=8, pool_size=8, val_window_px=48, device="cpu")
    state = train_model_flow(cfg, return_state=True)
    assert state.is_completed(), state.message
    card = state.result()
    assert os.path.exists(card["weights"]) and (tmp_path / "espcn_tiny.json").exists()
    names, by_key = _tasks_and_artifacts(state)
    assert names == ["publish", "train"]
    assert by_key["training-validation"].type == "table"
    assert "l7.tif area gain (dB)" in str(by_key["training-validation"].data)
    assert "| l7.tif | gaussian-0.6 |" in by_key["training-card"].data
    assert "espcn-tiny-x2" in by_key["training-card"].data
