"""The shipped models' cards tell the truth: recomputing the Wald-protocol validation on the
held-out Landsat 7 scene under every evaluation degradation gives the card's figures; the default
models (edsr-x2, edsr-x4) beat bicubic on every held-out scene under every degradation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from sr_core.degradations import EVALUATION
from sr_core.metrics import data_range_for, wald_check
from sr_core.models.catalog import DEFAULT_MODEL, SHIPPED, WEIGHTS_DIR, describe_shipped
from sr_core.models.registry import load_model
from sr_core.normalize import normalization_for
from sr_core.tiling import PixelWindow

HELD_OUT = "landsat7_RGB.byte.tif"
DEFAULTS = sorted(n for n in SHIPPED if n.startswith(f"{DEFAULT_MODEL}-x"))


def _card(name: str) -> dict:
    return json.loads((WEIGHTS_DIR / f"{SHIPPED[name]}.json").read_text())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_matches_recomputed_validation(name, repo_data):
    card = _card(name)
    assert HELD_OUT in card["training"]["validation_scenes"]
    assert not set(card["training"]["validation_scenes"]) & set(card["training"]["scenes"]), \
        "validation scenes must be held out"
    claimed = card["metrics"]["validation"][HELD_OUT]
    assert list(claimed) == list(EVALUATION)
    model = load_model(name)
    with rasterio.open(repo_data.path(HELD_OUT)) as ds:
        h, w = claimed["bicubic"]["window_px"]
        win = PixelWindow((ds.height - h) // 2, (ds.width - w) // 2, h, w)
        rw = rasterio.windows.Window(win.col_off, win.row_off, win.width, win.height)
        x, valid = ds.read(window=rw), ds.read_masks(window=rw) > 0
        # the normalisation uses the whole scene's statistics, as in training and inference
        full, fvalid = ds.read(), ds.read_masks() > 0
    lo = [float(full[b][fvalid[b]].min()) for b in range(full.shape[0])]
    hi = [float(full[b][fvalid[b]].max()) for b in range(full.shape[0])]
    for d in EVALUATION:
        got = wald_check(model, x, valid, normalization_for(x.dtype, lo, hi),
                         data_range_for(x.dtype, lo, hi), d)
        assert got["model"]["psnr_db"] == pytest.approx(claimed[d]["model"]["psnr_db"], abs=0.01)
        assert got["bicubic"]["psnr_db"] == pytest.approx(claimed[d]["bicubic"]["psnr_db"],
                                                          abs=0.01)
        assert got["model"]["ssim"] == pytest.approx(claimed[d]["model"]["ssim"], abs=1e-4)


def test_defaults_beat_bicubic_everywhere_and_card_is_complete():
    """x2 and x4 are shipped; on every held-out scene under every degradation the card (whose
    figures the test above recomputes) shows a gain; the mean gain meets the targets."""
    assert DEFAULTS == [f"{DEFAULT_MODEL}-x2", f"{DEFAULT_MODEL}-x4"]
    for name, target in zip(DEFAULTS, (1.0, 0.7), strict=True):
        card = _card(name)
        gains = [r["gain_db"] for by_deg in card["metrics"]["validation"].values()
                 for r in by_deg.values()]
        assert len(gains) == len(card["training"]["validation_scenes"]) * len(EVALUATION)
        assert min(gains) > 0, f"{name} loses to bicubic somewhere"
        assert np.mean(gains) >= target, f"{name}: mean gain {np.mean(gains):.2f} dB"
        t = card["training"]
        assert t["degradation_name"] == "random" and t["steps"] >= 5000 and t["seconds"] > 0
        assert all(d["licence"] != "not recorded" for d in t["data"]), "a scene lacks its licence"
        assert card["parameters"] > 0 and card["training"]["hardware"]


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
