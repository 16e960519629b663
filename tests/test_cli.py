"""The CLI on bad input: exit status 2, one line naming the file (or option) and the problem, and
nothing at the destination. Most cases call ``sr_core.cli.main`` in-process; two go through the
installed console script to prove the entry point and its exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from sr_core.cli import main

CLI = str(Path(sys.executable).parent / "sr-pipeline")


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def window_of(src: Path, dst: Path, *, dtype=None, **extra) -> Path:
    with rasterio.open(src) as ds:
        data = ds.read(1, window=Window(0, 0, 64, 64))
        profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1,
                   "dtype": dtype or data.dtype, "crs": ds.crs, "transform": ds.transform, **extra}
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data.astype(profile["dtype"]), 1)
        return dst


@pytest.fixture
def landsat(repo_data):
    return repo_data.path("landsat7_RGB.byte.tif")


def bad_files(tmp: Path, landsat: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error must contain)."""
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "page.tif").write_text("<!doctype html><html><body>Not Found</body></html>")
    raw = landsat.read_bytes()
    (tmp / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    complex_tif = window_of(landsat, tmp / "complex.tif", dtype="complex64")
    palette = window_of(landsat, tmp / "palette.tif", photometric="palette")
    with rasterio.open(palette, "r+") as ds:
        ds.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    vrt = tmp / "mosaic.tif"
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" '
                   f'band="1"><SimpleSource><SourceFilename>{landsat}</SourceFilename>'
                   f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    return {
        "empty": (tmp / "empty.tif", "empty file"),
        "html": (tmp / "page.tif", "not a readable GeoTIFF"),
        "truncated": (tmp / "truncated.tif", "truncated"),
        "complex": (complex_tif, "complex"),
        "palette": (palette, "palette"),
        "vrt": (vrt, "not a readable GeoTIFF"),
        "missing": (tmp / "nope.tif", "no such file"),
    }


CASES = ["empty", "html", "truncated", "complex", "palette", "vrt", "missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_exits_2_with_one_line_and_writes_nothing(case, landsat, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    files = bad_files(tmp_path / "in", landsat)
    src, phrase = files[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_main(["upscale", str(src), str(out_dir / "x.tif"), "--model", "bicubic",
                             "--no-progress"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sr-pipeline: error: ") and str(src) in lines[0]
    assert phrase in lines[0]
    assert list(out_dir.iterdir()) == [], "nothing may be written at the destination"


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


def test_console_script_bad_file_and_good_run(landsat, tmp_path, dask_address):
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(landsat.read_bytes()[:100_000])
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(bad), str(out / "x.tif")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "truncated" in res.stderr
    assert "Traceback" not in res.stderr and list(out.iterdir()) == []

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
    assert "receptive field" in out and "20" in out  # the default EDSR's radius
    from sr_core.models.registry import ARCHITECTURES

    assert all(f"  {a} " in out for a in ARCHITECTURES if a != "bicubic")
    assert "imdn" in out and "whole image" in out


def test_flat_scene_reports_infinite_psnr_without_crashing(repo_data, dask_address, tmp_path,
                                                           capsys):
    """A window of open sea in the Copernicus DEM (all 0 m): bicubic reproduces the Wald window
    exactly, so PSNR is infinite ("inf" in the JSON report). The CLI printed the output and then
    crashed formatting it."""
    from conftest import crop_scene

    src = crop_scene(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"),
                     tmp_path / "sea.tif", row=700, col=2900, height=96, width=96)
    with rasterio.open(src) as ds:
        assert float(np.ptp(ds.read())) == 0.0
    code, out, err = run_main(["upscale", str(src), str(tmp_path / "sea_x2.tif"), "--model",
                               "bicubic", "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    assert "Wald check: model inf dB" in out and "bicubic inf dB" in out
    assert (tmp_path / "sea_x2.tif").is_file()
