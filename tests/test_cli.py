"""The CLI on nonsense options: exit status 2, one line naming the option and the problem, and
nothing at the destination (bad files are the matrix of test_bad_inputs.py); the console script's
good run and the model listing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import run_main

CLI = str(Path(sys.executable).parent / "sr-pipeline")


@pytest.fixture
def landsat(repo_data):
    return repo_data.path("landsat7_RGB.byte.tif")


# Bad files (empty, HTML, truncated, VRT, dtypes, huge headers, ...) are rows of the bad-input
# matrix in test_bad_inputs.py.


@pytest.mark.parametrize("options,phrase", [
    (["--scale", "0"], "--scale"),
    (["--scale", "3"], "x3"),              # the default EDSR ships x2 weights only
    (["--tile-size", "0"], "--tile-size"),
    (["--tile-size", "5"], "--tile-size"),
    (["--tile-size", "abc"], "--tile-size"),
    (["--device", "tpu"], "--device"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_option_nonsense_exits_2_with_one_line(options, phrase, landsat, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_main(["upscale", str(landsat), str(out_dir / "x.tif"), *options], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr-pipeline: error: "), err
    assert phrase in lines[0]
    assert list(out_dir.iterdir()) == []


def test_destination_folder_missing(landsat, tmp_path, capsys):
    dst = tmp_path / "no" / "such" / "dir" / "x.tif"
    code, _, err = run_main(["upscale", str(landsat), str(dst), "--model", "bicubic"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(dst) in err
    assert not (tmp_path / "no").exists()


def test_console_script_good_run(landsat, tmp_path, dask_address):
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(landsat), str(out / "landsat_x2.tif"), "--model",
                          "bicubic", "--dask-address", dask_address, "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert str(out / "landsat_x2.tif") in res.stdout and "landsat_x2.report.json" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["landsat_x2.manifest.json",
                                                     "landsat_x2.report.html",
                                                     "landsat_x2.report.json",
                                                     "landsat_x2.report.md", "landsat_x2.tif"]
    assert "landsat_x2.report.html (HTML)" in res.stdout


def test_models_lists_every_architecture(capsys):
    code, out, _ = run_main(["models"], capsys)
    assert code == 0
    for name in ("bicubic", "espcn-x2", "edsr-x2"):
        assert name in out
    assert "receptive field" in out and "24" in out  # the default EDSR's radius
    from sr_core.models.registry import ARCHITECTURES

    assert all(f"  {a} " in out for a in ARCHITECTURES if a != "bicubic")
    assert "imdn" in out and "global context" in out


def test_flat_scene_reports_infinite_psnr_without_crashing(repo_data, dask_address, tmp_path,
                                                           capsys):
    """A window of open sea in the Copernicus DEM (all 0 m): bicubic reproduces the Wald window
    exactly, so PSNR is infinite ("inf" in the JSON report). The CLI printed the output and then
    crashed formatting it."""
    from conftest import crop_scene, run_main

    src = crop_scene(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"),
                     tmp_path / "sea.tif", row=700, col=2900, height=96, width=96)
    with rasterio.open(src) as ds:
        assert float(np.ptp(ds.read())) == 0.0
    code, out, err = run_main(["upscale", str(src), str(tmp_path / "sea_x2.tif"), "--model",
                               "bicubic", "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    assert "Wald check (bicubic degradation): model inf dB" in out and "bicubic inf dB" in out
    assert "Wald check (area degradation): model inf dB" in out
    assert (tmp_path / "sea_x2.tif").is_file()


def test_scale_4_without_model_runs_the_x4_default(repo_data, dask_address, tmp_path, capsys):
    """``--scale 4`` alone picks the shipped EDSR x4 (the default model's x4 weights); the
    report names it and the output is 4 times the input on each axis."""
    import json

    from conftest import crop_scene, run_main

    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "l7.tif",
                     row=300, col=300, height=48, width=40)
    code, out, err = run_main(["upscale", str(src), str(tmp_path / "l7_x4.tif"), "--scale", "4",
                               "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "l7_x4.report.json").read_text())
    # the default reference "edsr" resolved at scale 4 to the shipped x4 weights
    assert rep["model"]["ref"] == "edsr" and rep["model"]["descriptor"]["name"] == "edsr-x4"
    assert rep["scale"] == 4 and rep["model"]["descriptor"]["scale"] == 4
    with rasterio.open(tmp_path / "l7_x4.tif") as ds:
        assert (ds.width, ds.height) == (160, 192)
    assert "Wald check (area degradation)" in out
