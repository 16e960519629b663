"""The effective receptive field (sr_core.models.effective) and the halo rules
(sr_core.compute.halo): measured on networks with known fields, cached by the weights' SHA-256,
bounded by its budget; window-attention transformers and IMDN run tiled within 1 DN of whole-image
output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import crop_scene
from safetensors.torch import save_file
from test_models import randomized
from torch import nn

from sr_core.compute import halo as halo_rules
from sr_core.models import effective
from sr_core.models.base import SRModel
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.registry import build_module, load_model, model_reach
from sr_core.models.weights import save_model
from sr_core.pipeline import UpscaleConfig, run_upscale


class ConvStack(nn.Module):
    """``k`` 3x3 convolutions on the LR grid, then PixelShuffle(2): receptive field ``k`` px."""

    def __init__(self, k: int, delay_s: float = 0.0) -> None:
        super().__init__()
        chans = [1] + [6] * (k - 1) + [4]
        self.body = nn.Sequential(*[nn.Conv2d(a, b, 3, padding=1)
                                    for a, b in zip(chans, chans[1:], strict=False)])
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)
        return nn.functional.pixel_shuffle(torch.tanh(self.body(x)), 2)


def _srmodel(net: nn.Module, radius: int, tileable: bool) -> SRModel:
    d = ModelDescriptor(name="stack", architecture="test", scale=2, receptive_field_px=radius,
                        tileable=tileable)
    return SRModel(module=randomized(net, seed=radius).eval(), descriptor=d)


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("tileable", [True, False])
def test_conv_stack_radius_is_k(k: int, tileable: bool) -> None:
    # with the analytic radius the probe stops there; without it, it must find k by itself
    reach = effective.measure(_srmodel(ConvStack(k), k if tileable else 0, tileable))
    assert reach.halo_for(effective.FLOOR) == k
    assert reach.deviation_at(k - 1) > 1e-3  # influence reaches k px
    assert reach.stopped == ("limit" if tileable else "floor")


def _swinir(window: int = 4):
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    # two Swin layers: the second one shifted by half a window
    return SwinIR(in_chans=1, embed_dim=12, depths=[2], num_heads=[2], window_size=window,
                  upscale=2, upsampler="pixelshuffledirect", img_size=16).eval()


def _craft():
    from spandrel.architectures.CRAFT import CRAFT

    torch.manual_seed(0)
    return CRAFT(in_chans=3, window_size=8, embed_dim=12, depths=[1], num_heads=[2],
                 split_size_0=2, split_size_1=8, upscale=2).eval()


def _save(net: nn.Module, path: Path) -> str:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return str(path)


def test_shifted_window_block(tmp_path: Path) -> None:
    """A shifted-window attention block (spandrel's SwinIR code, random weights): four 3x3
    convolutions and two window-attention layers of window 4 reach at most 4 + 2 * 3 = 10 LR px;
    the measured halo is a multiple of the window, within that bound, and found."""
    model = load_model(_save(_swinir(), tmp_path / "swinir.safetensors"))
    reach = effective.measure(model)
    found = reach.halo_for(effective.FLOOR)
    assert reach.stopped == "floor" and found is not None
    assert found % 4 == 0 and 4 <= found <= 12
    assert reach.deviation_at(found - 4) > 1e-4


def test_cached_by_weights_hash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SR_MODEL_CACHE", str(tmp_path / "cache"))
    module = randomized(build_module("edsr", scale=2, n_resblocks=2, n_feats=8), seed=3)
    card = {"name": "tiny", "architecture": "edsr", "scale": 2,
            "arguments": {"scale": 2, "n_resblocks": 2, "n_feats": 8}, "training": {},
            "metrics": {}}
    path = save_model(module, card, tmp_path / "tiny")
    first = model_reach(load_model(str(path)))
    assert not first.cached and first.sha256 == json.loads(
        path.with_suffix(".json").read_text())["sha256"]
    assert (tmp_path / "cache" / "receptive-field" / f"{first.sha256}.json").is_file()

    def no_probe(*args, **kwargs):
        raise AssertionError("the second load probed again")

    monkeypatch.setattr(effective, "measure", no_probe)
    second = model_reach(load_model(str(path)))
    assert second.cached and second.curve == first.curve
    # the pipeline's main process reads the same cache
    from sr_core.pipeline import resolve_model

    assert resolve_model(str(path), None).reach.curve == first.curve


def test_cardless_checkpoint_described_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    """The second start with a card-less checkpoint reads its descriptor, card and curve from
    the cache (keyed by the file's SHA-256) instead of loading it in the main process."""
    from sr_core.models import registry
    from sr_core.pipeline import resolve_model

    monkeypatch.setenv("SR_MODEL_CACHE", str(tmp_path / "cache"))
    path = _save(_swinir(), tmp_path / "swinir.safetensors")
    first = resolve_model(path, None)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(registry, "load_model", no_load)
    second = resolve_model(path, None)
    assert second.descriptor == first.descriptor and second.card == first.card
    assert second.reach.cached and second.reach.curve == first.reach.curve
    with pytest.raises(AssertionError):  # another scale asked for: not the cached description
        resolve_model(path, 4)


def test_budget_is_honoured() -> None:
    delay = 0.25
    model = _srmodel(ConvStack(3, delay_s=delay), 0, tileable=False)
    t0 = time.perf_counter()
    reach = effective.measure(model, budget_s=1.0)
    took = time.perf_counter() - t0
    assert reach.stopped == "budget"
    assert took <= 1.0 + delay + 0.2  # no forward pass started that would end past the budget
    assert 2 <= len(reach.curve) + 1 <= 5


def test_halo_rules() -> None:
    d_local = ModelDescriptor(name="a", architecture="t", scale=2, receptive_field_px=36)
    d_none = ModelDescriptor(name="b", architecture="t", scale=2, receptive_field_px=0,
                             tileable=False, size_multiple=8)
    reach = effective.EffectiveReach(curve=[[8, 1e-2], [16, 1e-4], [24, 1e-6]],
                                     reference_px=48, analytic_px=None, core_px=16,
                                     probe_px=112, seconds=1.0, stopped="floor")
    kw = {"span": 255.0, "scene_px": 10**8, "tile_size_px": 512}
    c = halo_rules.choose_halo(d_local, reach, tolerance=1e-3, **kw)
    assert (c.halo_px, c.rule, c.deviation) == (16, "effective", 1e-4)
    assert c.deviation_scene_units == pytest.approx(1e-4 * 255)
    c = halo_rules.choose_halo(d_local, reach, tolerance=1e-9, **kw)
    assert (c.halo_px, c.rule) == (36, "analytic")
    c = halo_rules.choose_halo(d_none, reach, tolerance=1e-3, **kw)
    assert (c.halo_px, c.rule) == (16, "effective")
    c = halo_rules.choose_halo(d_none, reach, tolerance=1e-9, **{**kw, "scene_px": 1000})
    assert c.whole_scene and c.rule == "whole scene"
    c = halo_rules.choose_halo(d_none, reach, tolerance=1e-9, **kw)
    assert (c.halo_px, c.rule, c.deviation) == (48, "largest affordable", 1e-6)
    c = halo_rules.choose_halo(d_none, reach, tolerance=1e-9, **{**kw, "tile_size_px": 64})
    assert c.halo_px == 32 and c.deviation == 1e-6  # at most half the tile


def test_tolerance_is_half_a_dn() -> None:
    assert effective.tolerance_for("uint8", 255) == pytest.approx(0.5 / 255 / effective.SAFETY)
    assert effective.tolerance_for("float32", 1.0) == pytest.approx(1e-5 / effective.SAFETY)
    assert effective.tolerance_for("uint16", 65535) >= effective.FLOOR


# --- the pipeline: transformers and IMDN, tiled vs whole image -----------------------------------

@pytest.fixture(scope="module")
def rgb_crop(repo_data, tmp_path_factory) -> Path:
    """An 8-bit RGB window of a real scene (integer output: within 1 DN)."""
    folder = tmp_path_factory.mktemp("reach")
    return crop_scene(repo_data.path("landsat7_RGB.byte.tif"), folder / "rgb.tif",
                      row=300, col=300, height=72, width=80)


@pytest.fixture(scope="module")
def dem_crop(repo_data, tmp_path_factory) -> Path:
    """A float32 window of the Copernicus DEM (float output: within 1e-5 of the range)."""
    folder = tmp_path_factory.mktemp("reach-dem")
    return crop_scene(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"),
                      folder / "dem.tif", row=2700, col=1800, height=72, width=80)


def _tiled_and_whole(model: str, src: Path, tmp_path: Path, dask_address: str, tile: int = 16):
    runs, arrays = {}, {}
    for label, size in (("tiled", tile), ("whole", 512)):
        cfg = UpscaleConfig(src=str(src), dst=str(tmp_path / f"{label}.tif"), model=model,
                            dask_address=dask_address, progress=False, tile_size_px=size)
        runs[label] = run_upscale(cfg)
        with rasterio.open(tmp_path / f"{label}.tif") as f:
            arrays[label] = f.read().astype(np.int64)
    return runs, arrays


def test_swinir_tiled_within_1_dn(rgb_crop, dask_address, tmp_path) -> None:
    """Shifted-window attention (SwinIR layout, random weights, 1 channel: band by band) runs
    tiled with its measured halo, within 1 DN of the whole image."""
    path = _save(_swinir(), tmp_path / "swinir.safetensors")
    runs, out = _tiled_and_whole(path, rgb_crop, tmp_path, dask_address)
    tiled = runs["tiled"]
    assert tiled.halo.rule == "effective" and len(tiled.grid) == 25  # 5 x 5 tiles
    assert tiled.halo.halo_px % tiled.model.descriptor.size_multiple == 0
    assert np.abs(out["tiled"] - out["whole"]).max() <= 1
    assert tiled.published["report"]["tiling"]["halo_rule"] == "effective"


def test_craft_global_attention_runs_whole_within_budget(rgb_crop, dask_address,
                                                         tmp_path) -> None:
    """CRAFT's high-frequency-prior inter attention attends across channels over the whole
    image (Restormer-style transposed attention): its deviation does not fall with the halo, so
    a small scene runs as one tile (its output is the whole image's)."""
    path = _save(_craft(), tmp_path / "craft.safetensors")
    runs, out = _tiled_and_whole(path, rgb_crop, tmp_path, dask_address)
    tiled = runs["tiled"]
    assert tiled.halo.rule == "whole scene" and len(tiled.grid) == 1
    devs = [d for _, d in tiled.model.reach.curve if d is not None]
    assert devs and min(devs) > tiled.halo.tolerance
    assert np.abs(out["tiled"] - out["whole"]).max() == 0


def test_imdn_whole_scene_within_budget_else_largest_halo(dem_crop, dask_address, tmp_path,
                                                          monkeypatch) -> None:
    """IMDN's contrast-aware channel attention is global: on a float scene no halo meets the
    tolerance. Within the whole-scene budget the scene is one tile; beyond it, tiled with the
    largest affordable halo and the measured deviation in the report."""
    arguments = {"scale": 2, "nf": 16, "num_modules": 1, "in_channels": 3}
    module = randomized(build_module("imdn", **arguments), seed=5)
    with torch.no_grad():  # random 0.1-scale weights leave the attention's ReLU off: make it
        module.IMDB1.cca.conv_du[0].bias.fill_(1.0)  # live, as in trained models
        module.IMDB1.cca.conv_du[2].weight.mul_(30)
    card = {"name": "imdn-x2", "architecture": "imdn", "arguments": arguments, "scale": 2,
            "training": {}, "metrics": {}}
    path = str(save_model(module, card, tmp_path / "imdn-x2"))
    cfg = UpscaleConfig(src=str(dem_crop), dst=str(tmp_path / "one.tif"), model=path,
                        dask_address=dask_address, progress=False, tile_size_px=16)
    one = run_upscale(cfg)
    assert one.halo.rule == "whole scene" and len(one.grid) == 1
    monkeypatch.setattr(halo_rules, "WHOLE_SCENE_MAX_LR_PX", 1000)
    tiled = run_upscale(UpscaleConfig(**{**cfg.__dict__, "dst": str(tmp_path / "tiled.tif")}))
    assert tiled.halo.rule == "largest affordable" and len(tiled.grid) == 25
    assert tiled.halo.halo_px == 8  # half the 16 px tile
    rep = tiled.published["report"]["tiling"]["halo_choice"]
    assert rep["deviation"] is not None and rep["deviation"] > rep["tolerance"]
    span = max(tiled.normalization.span)
    assert rep["deviation_scene_units"] == pytest.approx(rep["deviation"] * span)
