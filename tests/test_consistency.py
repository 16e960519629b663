"""``--consistency``: the back-projection itself (tolerance reached on a real scene, nodata never
feeding the correction, halo sufficient) and through the pipeline on a real Dask cluster (the
output as written reproduces the input; nodata kept; tiled equals whole image; the report's
before / after figures; an unknown degradation refused with exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import crop_scene, run_main

from sr_core.compute.infer import TileResult
from sr_core.imaging.degradations import NAMED, degrade
from sr_core.imaging.normalize import normalization_for
from sr_core.imaging.resample import upsample_bicubic
from sr_core.models.registry import load_model
from sr_core.pipeline import UpscaleConfig, run_upscale
from sr_core.quality.consistency import (
    TOLERANCE_RMS_DN,
    back_project,
    consistency_halo_px,
    residual_mask,
    spectrum_bounds,
)
from sr_core.quality.metrics import data_range_for
from sr_core.quality.wald import WaldSetup, wald_check

# (file, row, col, height, width): real windows; the Landsat one has a nodata corner (79 % valid,
# no saturated pixel), the Sentinel-2 one none
LANDSAT = ("landsat7_RGB.byte.tif", 200, 80, 96, 96)
S2 = ("S2A_29RKH_20200219_L2A_B04.tif", 400, 380, 96, 96)


@pytest.fixture(scope="module")
def crops(repo_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("consistency-crops")
    return {name: crop_scene(repo_data.path(f), folder / f"{name}.tif", row=r, col=c, height=h,
                             width=w)
            for name, (f, r, c, h, w) in (("landsat", LANDSAT), ("s2", S2))}


@pytest.fixture(scope="module")
def edsr():
    return load_model("edsr-x2", device="cpu")


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.read_masks() > 0, ds.nodata


def _landsat_lr(crops):
    """The Landsat crop normalised as the pipeline does (uint8: / 255; 0 where invalid)."""
    data, valid, _ = _read(crops["landsat"])
    x = data.astype(np.float32) / 255.0
    x[~valid] = 0.0
    return data, x, valid


def _degrade(y: np.ndarray, name: str, scale: int = 2) -> np.ndarray:
    return degrade(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None], scale,
                   NAMED[name])[0].numpy()


def _rms_dn(y, x, valid, name, span=255.0) -> float:
    """RMS of D(y) - x over the residual mask (valid, D's footprint valid), in DN."""
    mask = residual_mask(valid, NAMED[name], 2)
    return float(np.sqrt(((_degrade(y, name) - x)[mask] ** 2).mean()) * span)


@pytest.mark.parametrize("scale", [2, 4])
def test_spectrum_bounds_match_the_real_operators(scale):
    """The NumPy frequency response of D U equals the 2-D impulse response of the torch
    operators the back-projection runs (bicubic upsampling, then ``degrade``)."""
    n = 48
    for name in NAMED:
        impulse = torch.zeros((1, 1, n, n), dtype=torch.float64)
        impulse[..., n // 2, n // 2] = 1.0
        k = degrade(upsample_bicubic(impulse, scale), scale, NAMED[name])[0, 0].numpy()
        response = np.fft.fft2(np.fft.ifftshift(k)).real
        lo, hi = spectrum_bounds(name, scale)
        assert lo == pytest.approx(response.min(), abs=2e-3), name
        assert hi == pytest.approx(response.max(), abs=1e-6), name
        assert 0 < lo < hi <= 1 + 1e-9


@pytest.mark.parametrize("name", ["bicubic", "area", "gaussian-0.3"])
def test_back_projection_reaches_the_tolerance_on_a_real_scene(name, crops, edsr):
    data, x, valid = _landsat_lr(crops)
    y = edsr.upscale(x)
    before = _rms_dn(y, x, valid, name)
    out = back_project(y, x, valid, name, 2)
    after = _rms_dn(out, x, valid, name)
    assert before > 0.1, "the model alone already consistent: the test would be vacuous"
    assert after <= 0.01 and after <= before / 100
    # as written: rounded to uint8 (and clipped), degraded back, within the stated tolerance
    written = np.clip(np.rint(out * 255), 0, 255).astype(np.float32) / 255
    assert _rms_dn(written, x, valid, name) <= TOLERANCE_RMS_DN


def test_gaussian_06_is_only_reduced(crops, edsr):
    """gaussian-0.6 removes most of the high frequencies: no tolerance is promised, only a
    smaller residual (the module docstring says so)."""
    _, x, valid = _landsat_lr(crops)
    y = edsr.upscale(x)
    before, after = (_rms_dn(v, x, valid, "gaussian-0.6")
                     for v in (y, back_project(y, x, valid, "gaussian-0.6", 2)))
    assert after < before / 2


def test_nodata_never_feeds_the_correction(crops, edsr):
    """Garbage in the invalid input pixels and in the model output over them changes nothing
    of the correction: the residual is used only where D's footprint is valid."""
    _, x, valid = _landsat_lr(crops)
    assert 0.5 < valid.mean() < 0.95
    y = edsr.upscale(x)
    rng = np.random.default_rng(0)
    x2, y2 = x.copy(), y.copy()
    x2[~valid] = rng.uniform(-5, 5, size=int((~valid).sum()))
    invalid_hr = ~np.repeat(np.repeat(valid, 2, axis=1), 2, axis=2)
    y2[invalid_hr] = rng.uniform(-5, 5, size=int(invalid_hr.sum()))
    for name in ("bicubic", "area"):
        c1 = back_project(y, x, valid, name, 2) - y
        c2 = back_project(y2, x2, valid, name, 2) - y2
        np.testing.assert_allclose(c1, c2, atol=1e-6)
        assert np.abs(c1).max() > 1e-3  # the correction is not trivially zero


@pytest.mark.parametrize("name", ["bicubic", "gaussian-0.3"])
def test_halo_suffices_tiled_equals_whole(name, crops, edsr):
    """Back-projection window by window, each read with consistency_halo_px of context, gives
    the whole-image result on each core; without a halo it does not. (The analytic halo is
    conservative: measured, 8 px already agree within 1e-3 DN.)"""
    _, x, valid = _landsat_lr(crops)
    y = edsr.upscale(x)
    whole = back_project(y, x, valid, name, 2)
    halo = consistency_halo_px(name, 2)

    def tiled(h: int, core: int = 24) -> float:
        worst = 0.0
        for r0 in range(0, 96, core):
            for c0 in range(0, 96, core):
                rr0, cc0 = max(r0 - h, 0), max(c0 - h, 0)
                rr1, cc1 = min(r0 + core + h, 96), min(c0 + core + h, 96)
                win = back_project(y[:, 2 * rr0:2 * rr1, 2 * cc0:2 * cc1],
                                   x[:, rr0:rr1, cc0:cc1], valid[:, rr0:rr1, cc0:cc1], name, 2)
                got = win[:, 2 * (r0 - rr0):2 * (r0 - rr0 + core),
                          2 * (c0 - cc0):2 * (c0 - cc0 + core)]
                want = whole[:, 2 * r0:2 * (r0 + core), 2 * c0:2 * (c0 + core)]
                worst = max(worst, float(np.abs(got - want).max()))
        return worst

    assert tiled(halo) <= 1e-5
    assert tiled(0) * 255 > 0.5  # without it, cores differ by more than half a DN


def test_tile_result_from_an_older_journal_record():
    rec = {"row": 0, "col": 1, "seconds": 0.5, "valid_px": 10, "lr_sse": 1.0, "skipped": False,
           "device": "cpu"}
    assert TileResult(**rec).consistency_sse is None


def test_wald_check_with_and_without(crops, edsr):
    """Under the degradation the LR was made by, the back-projected output is at least as close
    to the real HR window as the model's own; the figures come on the same pixels."""
    data, valid, _ = _read(crops["s2"])
    lo = [float(data[b][valid[b]].min()) for b in range(data.shape[0])]
    hi = [float(data[b][valid[b]].max()) for b in range(data.shape[0])]
    norm = normalization_for(data.dtype, lo, hi)
    drange = data_range_for(data.dtype, lo, hi)
    r = wald_check(edsr, data, valid, norm, drange, WaldSetup("bicubic", consistency="bicubic"))
    plain = wald_check(edsr, data, valid, norm, drange, WaldSetup("bicubic"))
    assert r["model"] == plain["model"]  # no nodata: the same compared pixels
    assert r["consistent"]["psnr_db"] >= r["model"]["psnr_db"] - 0.01
    assert r["gain_consistent_db"] == pytest.approx(r["consistent"]["psnr_db"]
                                                    - r["bicubic"]["psnr_db"])


# ----------------------------------------------------------------------- through the pipeline

@pytest.fixture(scope="module")
def runs(crops, dask_address, tmp_path_factory):
    """Landsat with --consistency bicubic and S2 with --consistency area, each tiled (32 px
    tiles) and as one tile."""
    out = tmp_path_factory.mktemp("consistency-runs")
    done = {}
    for scene, deg in (("landsat", "bicubic"), ("s2", "area")):
        for tile_px in (32, 512):
            dst = out / f"{scene}-{tile_px}.tif"
            cfg = UpscaleConfig(src=str(crops[scene]), dst=str(dst), model="edsr-x2",
                                tile_size_px=tile_px, dask_address=dask_address, progress=False,
                                consistency=deg)
            done[scene, tile_px] = (run_upscale(cfg), dst)
    return done


def test_pipeline_output_reproduces_the_input(runs, crops):
    run, dst = runs["landsat", 32]
    data, valid, _ = _read(crops["landsat"])
    out, _, _ = _read(dst)
    x = data.astype(np.float32) / 255
    x[~valid] = 0
    rms = _rms_dn(out.astype(np.float32) / 255, x, valid, "bicubic")
    assert rms <= TOLERANCE_RMS_DN
    rep = json.loads(open(str(dst).replace(".tif", ".report.json")).read())
    c = rep["quality"]["consistency"]
    assert c["degradation"] == "bicubic" and c["iterations"] >= 1
    assert c["halo_px"] == consistency_halo_px("bicubic", 2)
    assert run.grid.halo_px == run.halo.halo_px + run.consistency_halo_px
    lr = c["lr_psnr_db"]["bicubic"]
    assert lr["after"] > lr["before"]
    # the report's figure is the same measurement over the tiles' compared pixels
    assert lr["after"] >= 20 * np.log10(255 / TOLERANCE_RMS_DN)
    assert lr["after_unclipped"] >= lr["after"] and 0.5 < lr["unclipped_fraction"] <= 1
    assert set(c["lr_psnr_db"]) == {"bicubic", "area"}
    md = open(str(dst).replace(".tif", ".report.md")).read()
    assert "## LR consistency (--consistency)" in md


def test_pipeline_keeps_nodata(runs, crops):
    data, valid, nodata = _read(crops["landsat"])
    out, out_valid, out_nodata = _read(runs["landsat", 32][1])
    valid_up = np.repeat(np.repeat(valid, 2, axis=1), 2, axis=2)
    assert out_nodata == nodata and (~valid).any()
    assert np.array_equal(out_valid, valid_up)
    assert (out[~valid_up] == nodata).all()
    assert (out[valid_up] != nodata).all()


@pytest.mark.parametrize("scene", ["landsat", "s2"])
def test_pipeline_tiled_equals_whole_image(scene, runs):
    small, whole = runs[scene, 32], runs[scene, 512]
    assert len(small[0].grid) > 4 and len(whole[0].grid) == 1
    a, b = _read(small[1])[0], _read(whole[1])[0]
    assert np.nanstd(b.astype(np.float64)) > 1
    assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1


def test_pipeline_reports_wald_with_and_without(runs):
    rep = json.loads(open(str(runs["s2", 512][1]).replace(".tif", ".report.json")).read())
    by = rep["quality"]["wald"]["by_degradation"]
    gains = rep["quality"]["consistency"]["wald_gain_db"]
    assert set(gains) == {"bicubic", "area"}
    for d, g in gains.items():
        assert g["before"] == by[d]["gain_db"] and g["after"] == by[d]["gain_consistent_db"]
    # --consistency area on the area-degraded Wald window: the correction does not hurt
    assert gains["area"]["after"] >= gains["area"]["before"] - 0.01


def test_unknown_degradation_exits_2_with_one_line(crops, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_main(["upscale", str(crops["landsat"]), str(out_dir / "x.tif"),
                             "--consistency", "gaussian-9"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr-pipeline: error: "), err
    assert "--consistency gaussian-9" in lines[0]
    assert "bicubic, area, gaussian-0.3, gaussian-0.6" in lines[0]
    assert list(out_dir.iterdir()) == []


def test_report_side_never_imports_torch():
    """The process that plans and reports (CLI, flow) checks the option, sizes the halo and
    summarises the figures without torch (the workers run the back-projection)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sr_core.quality.consistency import consistency_halo_px, summarise, summary_line\n"
        "from sr_core.compute.infer import TileResult\n"
        "from sr_core.pipeline import UpscaleConfig, check_options\n"
        "check_options(UpscaleConfig(src='a.tif', dst='b.tif', consistency='gaussian-0.3'))\n"
        "sse = {d: {'before': 4.0, 'after': 1.0, 'after_unclipped': 0.5, 'unclipped_px': 9}\n"
        "       for d in ('bicubic', 'area')}\n"
        "t = TileResult(0, 0, 1.0, 10, 1.0, False, 'cpu', sse)\n"
        "s = summarise('gaussian-0.3', 2, [t], None, 255.0)\n"
        "print(summary_line(s), consistency_halo_px('area', 4))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    line, torch_modules = res.stdout.strip().splitlines()[-2:]
    assert torch_modules == "[]"
    assert "gaussian-0.3" in line and "bicubic" in line and line.endswith(" 16")
