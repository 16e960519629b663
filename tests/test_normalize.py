"""Normalisation to and from the model's range: the blocked conversion gives exactly the
whole-array float64 formula's values, on real scenes of every dtype the pipeline meets."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from sr_core.imaging import normalize
from sr_core.imaging.normalize import normalization_for


def _coeffs(norm, count):
    off, spn = norm._coeffs(None, count)
    return off[:, None, None], spn[:, None, None]


def _formula_to(norm, x):
    off, spn = _coeffs(norm, x.shape[0])
    return ((x.astype(np.float64) - off) / spn).astype(np.float32)


def _formula_from(norm, y):
    off, spn = _coeffs(norm, y.shape[0])
    x = y.astype(np.float64) * spn + off
    dt = np.dtype(norm.dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dt)


@pytest.mark.parametrize("scene", ["landsat7_RGB.byte.tif", "S2A_29RKH_20200219_L2A_B04.tif",
                                   "Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"])
def test_blocked_conversion_equals_the_whole_array_formula(repo_data, scene, monkeypatch):
    with rasterio.open(repo_data.path(scene)) as ds:
        data = ds.read(window=Window(7, 11, 301, 257))  # odd sizes: a partial last block
        valid = ds.read_masks(window=Window(7, 11, 301, 257)) > 0
    lo = [float(data[b][valid[b]].min()) for b in range(data.shape[0])]
    hi = [float(data[b][valid[b]].max()) for b in range(data.shape[0])]
    norm = normalization_for(data.dtype, lo, hi)
    monkeypatch.setattr(normalize, "BLOCK_VALUES", 301 * 20)  # many blocks per band
    x = norm.to_model(data)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, _formula_to(norm, data))
    # a model output: the input upsampled x2, pushed past [0, 1] at both ends (clipping) and
    # perturbed as a network's output is (values between DN, so rounding is exercised and
    # float32 arithmetic would differ from the float64 formula in the last bits)
    noise = np.random.default_rng(0).normal(0, 0.01, (x.shape[0], 2 * x.shape[1], 2 * x.shape[2]))
    y = (np.repeat(np.repeat(x, 2, axis=1), 2, axis=2) * 1.1 - 0.05 + noise).astype(np.float32)
    y = y[:, 1:-3, 2:]  # a non-contiguous view, as the pipeline crops the core
    back = norm.from_model(y)
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back, _formula_from(norm, y))
    if np.issubdtype(data.dtype, np.integer):  # the round trip is exact for integer scenes
        np.testing.assert_array_equal(norm.from_model(x)[valid], data[valid])


def test_one_coefficient_serves_every_band_and_bad_shapes_are_refused():
    norm = normalization_for(np.dtype("uint16"), [100.0], [4000.0])
    x = np.arange(3 * 5 * 7, dtype=np.uint16).reshape(3, 5, 7) * 30 + 100
    np.testing.assert_array_equal(norm.to_model(x), _formula_to(norm, x))
    with pytest.raises(ValueError, match=r"\(bands, h, w\)"):
        norm.to_model(x[0])
