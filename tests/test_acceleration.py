"""How a worker runs the network: bf16 autocast, channels-last, tiles batched per forward pass,
the read / model / write pipeline inside a task, and ``torch.compile``.

Run on the CPU here (autocast and channels-last exist on the CPU too); the CUDA versions skip
without a GPU. Scenes are windows of real ones (``tests/data``, ``samples/``)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from conftest import crop_scene

from sr_core.compute.infer import auto_tile_batch, get_model
from sr_core.errors import InputError
from sr_core.imaging.normalize import normalization_for
from sr_core.models.registry import load_model
from sr_core.pipeline import UpscaleConfig, run_upscale
from sr_core.quality.metrics import data_range_for
from sr_core.quality.wald import wald_check

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _window(path, row, col, edge):
    with rasterio.open(path) as ds:
        win = rasterio.windows.Window(col, row, edge, edge)
        hr, valid = ds.read(window=win), ds.read_masks(window=win) > 0
    lo = [float(hr[b][valid[b]].min()) for b in range(hr.shape[0])]
    hi = [float(hr[b][valid[b]].max()) for b in range(hr.shape[0])]
    return hr, valid, normalization_for(hr.dtype, lo, hi), data_range_for(hr.dtype, lo, hi)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scene,row,col", [("landsat7_RGB.byte.tif", 300, 300),
                                           ("S2A_29RKH_20200219_L2A_B04.tif", 400, 380)])
def test_bf16_autocast_changes_wald_psnr_by_at_most_001_db(repo_data, scene, row, col, device):
    """Wald protocol (degrade by the scale, super-resolve back, compare with the window): the
    shipped default model in bf16 autocast scores within 0.01 dB of fp32, on uint8 and uint16."""
    hr, valid, norm, drange = _window(repo_data.path(scene), row, col, 160)
    fp32 = wald_check(load_model("edsr-x2", device=device), hr, valid, norm, drange)
    bf16_model = load_model("edsr-x2", device=device).configure(precision="bf16")
    bf16 = wald_check(bf16_model, hr, valid, norm, drange)
    assert fp32["compared_px"] == bf16["compared_px"] > 10_000
    assert fp32["gain_db"] > 0.1  # the model does something the comparison can see
    change = bf16["model"]["psnr_db"] - fp32["model"]["psnr_db"]
    # measured on this CPU: +0.0013 dB (uint8), -0.0048 dB (uint16); nonzero: bf16 really ran
    assert 0 < abs(change) <= 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_and_tile_batches_give_the_same_output(repo_data, device):
    hr, _, norm, _ = _window(repo_data.path("landsat7_RGB.byte.tif"), 200, 200, 144)
    tiles = [norm.to_model(hr[:, r:r + 48, c:c + 40]).astype(np.float32)
             for r in (0, 48, 96) for c in (0, 40)]
    plain = load_model("edsr-x2", device=device)
    one_by_one = [plain.upscale(t) for t in tiles]
    nhwc = load_model("edsr-x2", device=device).configure(channels_last=True)
    assert next(nhwc.module.parameters()).is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(nhwc.upscale_many(tiles), one_by_one, strict=True):
        assert got.shape == (3, 96, 80) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)
    plain.max_batch = 4  # 6 tiles x 1 group of 3 bands: two forward passes
    for got, want in zip(plain.upscale_many(tiles), one_by_one, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(InputError, match="share one shape"):
        plain.upscale_many([tiles[0], tiles[0][:, :20]])


def test_precision_is_checked_and_auto_follows_the_device():
    model = load_model("espcn-x2")
    with pytest.raises(InputError, match="precision 'fp16'"):
        model.configure(precision="fp16")
    with pytest.raises(InputError, match="--precision fp16"):
        run_upscale(UpscaleConfig(src="in.tif", dst="out.tif", precision="fp16"))
    cpu = get_model("espcn-x2", 2, "cpu", 0)
    assert (cpu.precision, cpu.channels_last) == ("fp32", True)  # NHWC is faster on a CPU too
    assert next(cpu.module.parameters()).is_contiguous(memory_format=torch.channels_last)
    assert auto_tile_batch(cpu, 1024 * 1024) == 1  # on a CPU one tile already uses every core
    if torch.cuda.is_available():
        gpu = get_model("espcn-x2", 2, "cuda", 0)
        assert (gpu.precision, gpu.channels_last) == ("bf16", True)
        assert auto_tile_batch(gpu, 256 * 256) == 8 and auto_tile_batch(gpu, 1024 * 1024) == 4


def test_batched_tiles_and_bf16_through_the_pipeline(repo_data, dask_address, tmp_path):
    """A whole run with tiles batched 4 per forward pass (the reader / writer threads of each
    task included) writes the same COG as one tile at a time; bf16 stays within a few DN and
    the report says which precision ran."""
    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "in.tif",
                     row=150, col=60, height=112, width=120)  # a nodata corner inside

    def run(name, **kw):
        cfg = UpscaleConfig(src=str(src), dst=str(tmp_path / name), model="edsr-x2",
                            tile_size_px=32, dask_address=dask_address, progress=False, **kw)
        result = run_upscale(cfg)
        with rasterio.open(tmp_path / name) as ds:
            return result, ds.read().astype(np.int64), ds.read_masks() > 0

    single, a, valid = run("single.tif", tile_batch=1)
    batched, b, valid_b = run("batched.tif", tile_batch=4)
    assert len(single.grid) == 16 and np.array_equal(valid, valid_b)
    assert np.abs(a - b)[valid].max() <= 1
    assert single.dask["precision"] == "fp32"
    bf16, c, _ = run("bf16.tif", precision="bf16", tile_batch=4)
    assert bf16.dask["precision"] == "bf16"
    diff = np.abs(a - c)[valid]
    assert 0 < diff.max() <= 3 and diff.mean() < 0.1


@pytest.mark.slow
def test_torch_compile_gives_the_same_output():
    """``torch.compile`` (inductor; compiles C++ on a CPU, so it takes a while) changes nothing
    but speed."""
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, 48), dtype=np.float32)
    want = load_model("espcn-x2").upscale(x)
    compiled = load_model("espcn-x2").configure(compile=True)
    assert compiled.compiled
    np.testing.assert_allclose(compiled.upscale(x), want, atol=1e-5)
