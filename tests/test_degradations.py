"""Degradation models (sr_core.imaging.degradations): shapes, kernels that sum to 1, area
integration equal to the block mean, a Gaussian's width in LR pixels, a reproducible random draw,
and errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from sr_core.errors import InputError
from sr_core.imaging import degradations as D
from sr_core.imaging.resample import downsample_bicubic


@pytest.fixture(scope="module")
def patch(repo_data) -> torch.Tensor:
    """A real 48 x 48 px window of the Landsat 7 sample, 3 bands, float64 on [0, 255]."""
    with rasterio.open(repo_data.path("landsat7_RGB.byte.tif")) as ds:
        return torch.from_numpy(ds.read(window=Window(300, 300, 48, 48)).astype(np.float64))[None]


@pytest.mark.parametrize("name", D.EVALUATION)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_named_shapes_and_constant_preserved(name, scale, patch):
    hr = patch[..., :48 // scale * scale, :48 // scale * scale]
    lr = D.degrade(hr, scale, D.parse(name))
    assert lr.shape == (1, 3, hr.shape[-2] // scale, hr.shape[-1] // scale)
    assert lr.dtype == hr.dtype
    flat = torch.full((2, 1, 12 * scale, 12 * scale), 0.3, dtype=torch.float64)
    # every kernel sums to 1, so a constant image stays that constant
    torch.testing.assert_close(D.degrade(flat, scale, D.parse(name)),
                               torch.full((2, 1, 12, 12), 0.3, dtype=torch.float64))


def test_area_is_the_block_mean_exactly(patch):
    # integer-valued data: block sums are exact, so any summation order gives the same mean
    lr = D.degrade(patch, 2, D.NAMED["area"])
    want = patch.numpy().reshape(1, 3, 24, 2, 24, 2).mean(axis=(3, 5))
    assert np.array_equal(lr.numpy(), want)
    lr4 = D.degrade(patch, 4, D.NAMED["area"])
    assert np.array_equal(lr4.numpy(), patch.numpy().reshape(1, 3, 12, 4, 12, 4).mean(axis=(3, 5)))


def test_bicubic_is_the_antialiased_keys_downsampling(patch):
    assert torch.equal(D.degrade(patch, 2, D.NAMED["bicubic"]), downsample_bicubic(patch, 2))


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("sigma", [0.3, 0.6, 1.0])
def test_gaussian_width_is_in_lr_pixels(scale, sigma):
    """The kernel's standard deviation, measured from its second moment, is sigma_lr_px * scale
    HR pixels (the docstring's unit), and each kernel sums to 1."""
    k = D.blur_kernel(D.Degradation("area", sigma_lr_px=sigma), scale)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    t = np.arange(k.shape[0]) - k.shape[0] // 2
    var_rows = float((k.sum(axis=1) * t**2).sum())
    var_cols = float((k.sum(axis=0) * t**2).sum())
    assert np.sqrt(var_rows) == pytest.approx(sigma * scale, rel=0.02)
    assert np.sqrt(var_cols) == pytest.approx(sigma * scale, rel=0.02)


def test_anisotropy_shift_and_kernel_sums():
    k = D.blur_kernel(D.Degradation("area", sigma_lr_px=0.6, anisotropy=0.5, angle_deg=0.0), 2)
    t = np.arange(k.shape[0]) - k.shape[0] // 2
    sd_cols = np.sqrt((k.sum(axis=0) * t**2).sum())
    sd_rows = np.sqrt((k.sum(axis=1) * t**2).sum())
    # angle 0: the major axis is the column axis
    assert sd_cols == pytest.approx(1.2, rel=0.02) and sd_rows == pytest.approx(0.6, rel=0.05)
    shifted = D.blur_kernel(D.Degradation("bicubic", shift_lr_px=(0.1, -0.2)), 2)
    assert shifted.sum() == pytest.approx(1.0)
    mean_row = (shifted.sum(axis=1) * (np.arange(shifted.shape[0]) - shifted.shape[0] // 2)).sum()
    mean_col = (shifted.sum(axis=0) * (np.arange(shifted.shape[1]) - shifted.shape[1] // 2)).sum()
    assert mean_row == pytest.approx(0.2) and mean_col == pytest.approx(-0.4)
    for d in D.draw(50, np.random.default_rng(3)):
        assert D.blur_kernel(d, 4).sum() == pytest.approx(1.0, abs=1e-12)


def test_random_draw_reproducible_and_spans_the_kinds(patch):
    a = D.draw(200, np.random.default_rng(11))
    b = D.draw(200, np.random.default_rng(11))
    assert a == b and a != D.draw(200, np.random.default_rng(12))
    assert {d.kernel for d in a} == {"bicubic", "area"}
    assert any(d.sigma_lr_px > 0 for d in a) and any(d.anisotropy < 1 for d in a)
    assert any(any(d.shift_lr_px) for d in a) and any(d.noise_sigma > 0 for d in a)
    assert all(d.sigma_lr_px <= 0.75 and d.noise_sigma <= 0.05 for d in a)
    hr = patch.float().repeat(8, 1, 1, 1) / 255
    degs = D.draw(8, np.random.default_rng(5))
    one = D.degrade(hr, 2, degs, generator=torch.Generator().manual_seed(1))
    two = D.degrade(hr, 2, degs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, two) and one.shape == (8, 3, 24, 24)
    # each image got its own degradation: same HR in, different LR out
    assert not torch.equal(one[0], one[1])


def test_noise_relative_to_the_image_spread(patch):
    """Noise sigma is noise_sigma x the HR image's std, in the data's own units: the same
    signal-to-noise ratio for a photo in DN and the same photo scaled down 1,000 times."""
    for factor in (1.0, 1e-3):
        hr = (patch * factor).float()
        clean = D.degrade(hr, 2, D.NAMED["area"])
        noisy = D.degrade(hr, 2, D.Degradation("area", noise_sigma=0.05),
                          generator=torch.Generator().manual_seed(0))
        ratio = float((noisy - clean).std()) / float(hr.std())
        assert 0.045 < ratio < 0.055


def test_bad_degradations():
    with pytest.raises(InputError, match="unknown degradation 'nearest'"):
        D.parse("nearest")
    with pytest.raises(InputError, match="kernel 'lanczos'"):
        D.Degradation("lanczos")
    with pytest.raises(InputError, match="sigma"):
        D.Degradation("area", sigma_lr_px=-1)
    with pytest.raises(InputError, match="not a multiple of scale"):
        D.degrade(torch.zeros(1, 1, 9, 9), 2, D.NAMED["area"])
    with pytest.raises(InputError, match="too small"):
        D.degrade(torch.zeros(1, 1, 4, 4), 2, D.NAMED["gaussian-0.6"])
    with pytest.raises(InputError, match="unknown degradation"):
        D.TrainingDegradation("blurry")
