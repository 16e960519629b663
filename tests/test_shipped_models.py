"""The shipped models' cards tell the truth: recomputing the Wald-protocol validation on the
held-out Landsat 7 scene gives the card's figures, and each model beats bicubic there."""

from __future__ import annotations

import json

import pytest
import rasterio

from sr_core.metrics import data_range_for, wald_check
from sr_core.models.catalog import SHIPPED, WEIGHTS_DIR, describe_shipped
from sr_core.models.registry import load_model
from sr_core.normalize import normalization_for
from sr_core.tiling import PixelWindow

HELD_OUT = "landsat7_RGB.byte.tif"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_matches_recomputed_validation_and_beats_bicubic(name, repo_data):
    card = json.loads((WEIGHTS_DIR / f"{SHIPPED[name]}.json").read_text())
    assert HELD_OUT in card["training"]["validation_scenes"]
    assert HELD_OUT not in card["training"]["scenes"], "validation scene must be held out"
    claimed = card["metrics"]["validation"][HELD_OUT]
    model = load_model(name)
    with rasterio.open(repo_data.path(HELD_OUT)) as ds:
        h, w = claimed["window_px"]
        win = PixelWindow((ds.height - h) // 2, (ds.width - w) // 2, h, w)
        rw = rasterio.windows.Window(win.col_off, win.row_off, win.width, win.height)
        x, valid = ds.read(window=rw), ds.read_masks(window=rw) > 0
        # the normalisation uses the whole scene's statistics, as in training and inference
        full, fvalid = ds.read(), ds.read_masks() > 0
    lo = [float(full[b][fvalid[b]].min()) for b in range(full.shape[0])]
    hi = [float(full[b][fvalid[b]].max()) for b in range(full.shape[0])]
    got = wald_check(model, x, valid, normalization_for(x.dtype, lo, hi),
                     data_range_for(x.dtype, lo, hi))
    assert got["model"]["psnr_db"] == pytest.approx(claimed["model"]["psnr_db"], abs=0.01)
    assert got["bicubic"]["psnr_db"] == pytest.approx(claimed["bicubic"]["psnr_db"], abs=0.01)
    assert got["model"]["psnr_db"] > got["bicubic"]["psnr_db"]
    assert got["model"]["ssim"] > got["bicubic"]["ssim"]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_descriptor_is_the_loaded_models(name):
    """The planning process reads the descriptor from the card (no torch): it must be the one
    loading the weights gives, or tiles would get the wrong halo."""
    from_card = describe_shipped(name, None)
    assert from_card is not None, f"{name}: card has no descriptor"
    loaded = load_model(name)
    assert from_card[0] == loaded.descriptor
    assert from_card[1] == loaded.card


@pytest.mark.parametrize("scale", [None, 2, 3, 4])
def test_bicubic_descriptor_without_torch_is_the_loaded_models(scale):
    """``bicubic`` has no card file: the planning process builds its descriptor and card without
    torch, and they must be the ones the loader gives."""
    described = describe_shipped("bicubic", scale)
    loaded = load_model("bicubic", scale=scale)
    assert described[0] == loaded.descriptor and described[1] == loaded.card
    assert described[0].scale == (scale or 2)
