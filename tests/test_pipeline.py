"""End-to-end pipeline on real scenes: tiled equals whole-image, georeferencing kept, S3 round trip.

Every run goes through ``run_upscale`` (the CLI's code path) on a real Dask cluster with two
worker processes (the ``dask_address`` fixture)."""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import crop_scene

from sr_core.imaging.normalize import normalization_for
from sr_core.models.registry import load_model
from sr_core.pipeline import UpscaleConfig, run_upscale

MODELS = ["bicubic", "espcn-x2", "edsr-x2", "edsr-x4"]
# (file, crop row, col, height, width): windows of real scenes of three dtypes
CROPS = {
    "landsat-uint8": ("landsat7_RGB.byte.tif", 150, 60, 170, 190),   # nodata corner inside
    "s2-uint16": ("S2A_29RKH_20200219_L2A_B04.tif", 400, 380, 150, 130),
    # relief from 75 m to 1066 m (the window at row 700, col 2900 was all sea: 0 everywhere)
    "dem-float32": ("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif", 2700, 1800, 140, 150),
}


def upscale(src, dst, dask_address, **kw):
    cfg = UpscaleConfig(src=str(src), dst=str(dst), dask_address=dask_address, progress=False, **kw)
    return run_upscale(cfg)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def crops(repo_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    return {k: crop_scene(repo_data.path(f), folder / f"{k}.tif", row=r, col=c, height=h, width=w)
            for k, (f, r, c, h, w) in CROPS.items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", list(CROPS))
def test_tiled_equals_whole_image(model, kind, crops, dask_address, tmp_path):
    src = crops[kind]
    small = upscale(src, tmp_path / "small.tif", dask_address, model=model, tile_size_px=32)
    whole = upscale(src, tmp_path / "whole.tif", dask_address, model=model, tile_size_px=512)
    assert len(small.grid) > 16 and len(whole.grid) == 1
    a, b = read(tmp_path / "small.tif"), read(tmp_path / "whole.tif")
    assert a.shape == b.shape
    assert np.nanstd(b.astype(np.float64)) > 1, "a flat crop would make this comparison vacuous"
    if np.issubdtype(a.dtype, np.integer):
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1
    else:
        assert np.array_equal(np.isnan(a), np.isnan(b))
        span = float(np.nanmax(b) - np.nanmin(b))
        # 1e-5 in the model's normalised units, i.e. of the scene's value range
        assert np.nanmax(np.abs(a - b)) <= 1e-5 * span


def test_pipeline_equals_direct_whole_image_inference(crops, dask_address, tmp_path):
    """The stitched output equals the model run on the whole array in one call (no Zarr, no
    Dask, no tiles), after the same normalisation."""
    src = crops["s2-uint16"]
    upscale(src, tmp_path / "out.tif", dask_address, model="edsr-x2", tile_size_px=48)
    with rasterio.open(src) as ds:
        x = ds.read()
        valid = ds.read_masks() > 0
    norm = normalization_for(x.dtype, [float(x[b][valid[b]].min()) for b in range(x.shape[0])],
                             [float(x[b][valid[b]].max()) for b in range(x.shape[0])])
    xn = norm.to_model(x)
    xn[~valid] = 0
    expected = norm.from_model(load_model("edsr-x2").upscale(xn))
    got = read(tmp_path / "out.tif")
    up_valid = np.repeat(np.repeat(valid, 2, axis=1), 2, axis=2)
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))[up_valid]
    assert diff.max() <= 1


GEO_SCENES = [
    # (file, crop or None, has nodata pixels): the full real scene, or a window of the DEM
    ("landsat7_RGB.byte.tif", None, True),
    ("S2A_29RKH_20200219_L2A_B04.tif", None, False),
    ("naip_m_4709963_se_14_1_20200831_5m.tif", None, False),
    ("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif", (2000, 2000, 700, 900), False),
]


@pytest.mark.parametrize("name,window,has_nodata", GEO_SCENES, ids=lambda v: str(v)[:12])
def test_georeferencing_kept(name, window, has_nodata, repo_data, dask_address, tmp_path):
    src = repo_data.path(name)
    if window:
        src = crop_scene(src, tmp_path / "crop.tif", row=window[0], col=window[1],
                         height=window[2], width=window[3])
    dst = tmp_path / "out.tif"
    run = upscale(src, dst, dask_address, model="bicubic", scale=2)
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs
        assert b.transform.almost_equals(a.transform @ Affine.scale(0.5))
        assert np.allclose(b.bounds, a.bounds, rtol=0, atol=1e-6 * max(map(abs, a.bounds)))
        assert (b.width, b.height) == (2 * a.width, 2 * a.height)
        assert b.count == a.count and b.dtypes == a.dtypes and b.nodata == a.nodata
        assert b.colorinterp == a.colorinterp and b.descriptions == a.descriptions
        assert b.profile["tiled"] and b.overviews(1), "a COG is tiled with overviews"
        x, y = a.read(), b.read()
        valid = a.read_masks() > 0
        valid_up = np.repeat(np.repeat(valid, 2, axis=1), 2, axis=2)
        if a.nodata is not None:
            assert (y[~valid_up] == a.nodata).all(), "nodata stays nodata"
            assert not (y[valid_up] == a.nodata).any(), "valid pixels never read as nodata"
        assert (~valid).any() == has_nodata, \
            "the nodata checks above bite on the scenes with nodata"
        # values in the input's units: the SR mean over valid pixels matches the input's
        for band in range(a.count):
            mx, my = x[band][valid[band]].mean(), y[band][valid_up[band]].mean()
            assert abs(my - mx) <= 0.01 * (abs(mx) + 1)
    rep = json.loads((tmp_path / "out.report.json").read_text())
    assert rep["output"]["crs"] == rep["input"]["crs"]
    assert rep["tiling"]["halo_px"] >= run.model.descriptor.receptive_field_px


def test_s3_round_trip(moto_s3, crops, dask_address, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="scenes")
    s3.upload_file(str(crops["landsat-uint8"]), "scenes", "in/landsat.tif")
    run = upscale("s3://scenes/in/landsat.tif", "s3://scenes/out/landsat_x2.tif", dask_address,
                  model="bicubic")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="scenes", Prefix="out/")["Contents"]}
    assert keys == {"out/landsat_x2.tif", "out/landsat_x2.report.json", "out/landsat_x2.report.md",
                    "out/landsat_x2.report.html", "out/landsat_x2.manifest.json"}
    s3.download_file("scenes", "out/landsat_x2.tif", str(tmp_path / "got.tif"))
    with rasterio.open(tmp_path / "got.tif") as got, rasterio.open(crops["landsat-uint8"]) as src:
        assert got.crs == src.crs and got.width == 2 * src.width
    rep = json.loads(s3.get_object(Bucket="scenes",
                                   Key="out/landsat_x2.report.json")["Body"].read())
    assert rep["input"]["name"] == "s3://scenes/in/landsat.tif"
    # the HTML report was made from the published pixels (kept in scratch until the report ran)
    page = s3.get_object(Bucket="scenes", Key="out/landsat_x2.report.html")["Body"].read().decode()
    assert page.count("data:image/png;base64,") >= 5 and "s3://scenes/out/landsat_x2.tif" in page
    assert rep["quality"]["seam"]["ratio"] is None or rep["quality"]["seam"]["ratio"] > 0
    assert run.published["cog"] == "s3://scenes/out/landsat_x2.tif"


@pytest.mark.parametrize("model", ["edsr", "bicubic"])
def test_planning_process_never_imports_torch(model, crops, dask_address, tmp_path):
    """With a shipped model or bicubic, only the Dask workers load torch: the process that plans,
    stitches and reports (the CLI, a flow) stays light (about 2 s of start-up and 1 GB of memory
    less)."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from sr_core.pipeline import UpscaleConfig, run_upscale\n"
        f"run = run_upscale(UpscaleConfig(src={str(crops['landsat-uint8'])!r}, "
        f"dst={str(tmp_path / 'out.tif')!r}, model={model!r}, dask_address={dask_address!r}, "
        "progress=False))\n"
        "print(json.dumps({'torch': sorted(m for m in sys.modules if m.split('.')[0] == 'torch'),"
        " 'html': run.published['report_html'], 'psnr': run.wald['model']['psnr_db']}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["torch"] == []
    assert got["html"] and (tmp_path / "out.report.html").stat().st_size > 10_000
    assert got["psnr"] > 10  # the Wald check ran (on the worker)


def test_one_driver_runs_every_stage_through_the_wrapper(crops, dask_address, tmp_path):
    """``run_upscale`` is the one driver: an entry point's stage wrapper (the flows make each
    stage a Prefect task with it) sees every stage, by name and in order, and its result is the
    run's; the frozen stage results are what the stages returned."""
    import dataclasses

    from sr_core.pipeline.run import Claim, Inference, Tiling

    seen = []

    def wrap(name, stage, *args):
        seen.append(name)
        return stage(*args)

    run = run_upscale(UpscaleConfig(src=str(crops["landsat-uint8"]), dst=str(tmp_path / "x2.tif"),
                                    model="bicubic", tile_size_px=64, dask_address=dask_address,
                                    progress=False), wrap=wrap)
    assert seen == ["ingest", "tile", "infer", "stitch", "report", "publish"]
    assert (tmp_path / "x2.tif").exists() and run.manifest is not None
    assert isinstance(run.claim, Claim) and isinstance(run.tiling, Tiling)
    assert isinstance(run.inference, Inference) and len(run.tiles) == len(run.grid)
    for result in (run.claim, run.tiling, run.inference):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(result, dataclasses.fields(result)[0].name, None)
    assert {"cluster_wait", "teardown", "cleanup"} <= set(run.timings)


def test_errors_are_types():
    """A full scratch disk and a lost scheduler are error types, not attributes or strings: the
    disk-full error is a StorageError (an OSError; CLI exit status 1) with the one-line message;
    distributed's cancellation of the futures for a lost connection becomes SchedulerLostError."""
    from distributed.client import FutureCancelledError

    from sr_core.compute.cluster import SCHEDULER_LOST_REASON, task_result
    from sr_core.errors import NoSpaceError, SchedulerLostError, SRError, StorageError

    err = NoSpaceError.for_scratch("/data/scratch/sr-pipeline-abc")
    assert isinstance(err, StorageError) and isinstance(err, OSError)
    assert str(err) == ("/data/scratch: no space left on device for the run's scratch files "
                        "(free space or choose another --scratch-dir / SR_SCRATCH)")

    class Lost:
        def result(self):
            raise FutureCancelledError("k", SCHEDULER_LOST_REASON, "lost")

    class Failed:
        def result(self):
            raise ValueError("boom")

    with pytest.raises(SchedulerLostError):
        task_result(Lost())
    assert issubclass(SchedulerLostError, SRError)
    with pytest.raises(ValueError, match="boom"):
        task_result(Failed())
