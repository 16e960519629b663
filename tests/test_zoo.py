"""Model zoo: every native architecture (receptive field held to the probe, reference parameter
names, keyword-only paper defaults), checkpoints recognised without a card, spandrel
architectures, and tiled == whole-image through the pipeline for each of them."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import crop_scene
from test_models import ZOO_CONFIGS as CONFIGS
from test_models import ZOO_IDS as IDS
from test_models import rand01, randomized
from torch import nn

from sr_core.errors import InputError, ModelError
from sr_core.imaging.resample import upsample_bands
from sr_core.models.effective import FLOOR
from sr_core.models.probe import probe_receptive_field
from sr_core.models.registry import (
    ARCHITECTURES,
    build_module,
    describe,
    load_model,
    model_reach,
)
from sr_core.models.srresnet import SRGANDiscriminator
from sr_core.models.weights import save_model
from sr_core.pipeline import UpscaleConfig, run_upscale

NEEDS_SCALE = {"srcnn", "vdsr", "fsrcnn"}  # their weights do not encode the scale


def run_module(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)[None])[0].numpy()


# --- architectures ------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", [a for a in ARCHITECTURES if a != "bicubic"])
def test_constructors_are_keyword_only_with_defaults(architecture: str) -> None:
    sig = inspect.signature(ARCHITECTURES[architecture].builder)
    params = list(sig.parameters.values())
    assert params and all(p.kind is p.KEYWORD_ONLY for p in params)
    assert all(p.default is not p.empty for p in params)
    d = describe(architecture, "t")  # paper defaults describe a valid model
    assert d.scale >= 2 and d.receptive_field_px > 0
    scales = ARCHITECTURES[architecture].scales
    assert d.supported_scales == scales and (scales is None or d.scale in scales)


def test_paper_defaults() -> None:
    """The constructors' defaults are the papers' configurations (layer counts and widths read
    back from the built networks)."""
    vdsr = build_module("vdsr")
    convs = [m for m in vdsr.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and convs[1].out_channels == 64  # 20 layers, 64 filters
    fsrcnn = build_module("fsrcnn")
    assert fsrcnn.first_part[0].out_channels == 56 and fsrcnn.mid_part[0].out_channels == 12
    assert len([m for m in fsrcnn.mid_part if isinstance(m, nn.Conv2d)]) == 4 + 2  # m = 4
    srcnn = build_module("srcnn")
    assert [srcnn.conv1.kernel_size[0], srcnn.conv2.kernel_size[0],
            srcnn.conv3.kernel_size[0]] == [9, 1, 5]
    assert len(build_module("srresnet").body) == 16 and build_module("srresnet").scale == 4
    rrdb = build_module("rrdbnet")
    assert len(rrdb.body) == 23 and rrdb.conv_first.out_channels == 64
    assert rrdb.body[0].rdb1.conv1.out_channels == 32
    imdn = build_module("imdn")
    assert imdn.num_modules == 6 and imdn.fea_conv.out_channels == 64
    assert not describe("imdn", "t").tileable
    assert describe("rrdbnet", "t", scale=2).size_multiple == 2
    assert describe("srcnn", "t").input_grid == "hr" and describe("vdsr", "t").input_grid == "hr"
    assert describe("fsrcnn", "t").input_grid == "lr"


REFERENCE_KEYS = {
    # BasicSR / the authors' code / the ports whose weights are published
    "rrdbnet": ["conv_first.weight", "body.22.rdb3.conv5.bias", "conv_body.weight",
                "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"],
    "msrresnet": ["conv_first.weight", "body.15.conv2.weight", "upconv1.weight",
                  "upconv2.weight", "conv_hr.weight", "conv_last.weight"],
    "imdn": ["fea_conv.weight", "IMDB6.c5.weight", "IMDB1.cca.conv_du.2.bias", "c.0.weight",
             "LR_conv.weight", "upsampler.0.weight"],
    "srcnn": ["conv1.weight", "conv2.bias", "conv3.weight"],
    "fsrcnn": ["first_part.0.weight", "first_part.1.weight", "mid_part.0.weight",
               "mid_part.11.weight", "last_part.weight"],
    "vdsr": ["input.weight", "residual_layer.17.conv.weight", "output.weight"],
}


@pytest.mark.parametrize("architecture", sorted(REFERENCE_KEYS))
def test_reference_parameter_names(architecture: str) -> None:
    keys = set(build_module(architecture).state_dict())
    assert set(REFERENCE_KEYS[architecture]) <= keys
    if architecture == "vdsr":
        assert not any(k.endswith("bias") for k in keys)  # the reference has no biases


def test_srgan_discriminator() -> None:
    disc = SRGANDiscriminator(in_channels=1, n_feats=8, input_px=32).eval()
    convs = [m for m in disc.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    out = disc(torch.rand(3, 1, 32, 32))
    assert out.shape == (3, 1)
    with pytest.raises(ModelError):
        SRGANDiscriminator(input_px=30)


# --- checkpoints without a card -----------------------------------------------------------------

WRAPPERS = ["params_ema", "params", "state_dict", "model", None]


@pytest.mark.parametrize(("architecture", "arguments"),
                         [c for c in CONFIGS if c[0] != "imdn"][::2] + [CONFIGS[-1]],
                         ids=IDS[:-2][::2] + [IDS[-1]])
def test_checkpoint_without_card_is_recognised(architecture: str, arguments: dict,
                                               tmp_path: Path) -> None:
    module = randomized(build_module(architecture, **arguments))
    i = CONFIGS.index((architecture, arguments))
    wrapper = WRAPPERS[i % len(WRAPPERS)]
    state = {f"module.{k}" if i % 2 else k: v for k, v in module.state_dict().items()}
    path = tmp_path / f"downloaded_{architecture}.pth"
    torch.save({wrapper: state, "iter": 1000} if wrapper else state, path)

    scale = arguments["scale"]
    if architecture in NEEDS_SCALE:
        with pytest.raises(ModelError, match="do not encode the scale; pass the scale"):
            load_model(str(path))
    model = load_model(str(path), scale=scale if architecture in NEEDS_SCALE else None)
    assert model.descriptor.architecture == architecture and model.scale == scale
    assert model.card["source"].startswith("recognised from the checkpoint's keys")
    expected = describe(architecture, path.stem, **arguments)
    if architecture in NEEDS_SCALE and expected.in_channels == 1:  # reference Y-channel models
        expected = replace(expected, colour="y")
    assert model.descriptor == expected
    x = rand01(model.descriptor.in_channels, 10, 12)
    np.testing.assert_array_equal(model.upscale(x), run_module(module, x))
    if architecture not in NEEDS_SCALE:
        with pytest.raises(ModelError, match=f"upscales x{scale}, but scale 5"):
            load_model(str(path), scale=5)


def test_y_channel_model_runs_on_bt601_luma(tmp_path: Path) -> None:
    """A reference 1-channel SRCNN on an RGB image: the network on Y, bicubic on Cb/Cr, back to
    RGB (checked with BasicSR's rounded ycbcr2rgb constants, an independent inverse)."""
    module = randomized(build_module("srcnn", scale=2, n_feats=[8, 4]))
    path = tmp_path / "srcnn_x2.pth"
    torch.save({"state_dict": module.state_dict()}, path)
    model = load_model(str(path), scale=2)
    assert model.descriptor.colour == "y" and model.card["colour"] == "y"
    rgb = rand01(3, 12, 10, seed=5)
    r, g, b = rgb * 255.0
    y = (16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255) / 255
    cb = (128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255) / 255
    cr = (128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255) / 255
    y_sr = run_module(module, y[None].astype(np.float32))[0] * 255
    cb_up, cr_up = upsample_bands(np.stack([cb, cr]).astype(np.float32), 2) * 255
    expected = np.stack([
        298.082 * y_sr / 256 + 408.583 * cr_up / 256 - 222.921,
        298.082 * y_sr / 256 - 100.291 * cb_up / 256 - 208.120 * cr_up / 256 + 135.576,
        298.082 * y_sr / 256 + 516.412 * cb_up / 256 - 276.836]) / 255
    got = model.upscale(rgb)
    assert got.shape == (3, 24, 20)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    one = rand01(1, 8, 8)  # other band counts: band by band
    np.testing.assert_array_equal(model.upscale(one), run_module(module, one))


def test_published_edsr_layout_with_mean_shift(tmp_path: Path) -> None:
    """The reference EDSR checkpoints are RGB on [0, 255] with the DIV2K mean shift."""
    module = randomized(build_module("edsr", scale=2, n_resblocks=2, n_feats=8))
    path = tmp_path / "edsr_baseline_x2.pt"
    torch.save(module.state_dict(), path)
    model = load_model(str(path))
    assert model.card["arguments"]["rgb_range"] == 255.0 and model.descriptor.in_channels == 3
    x = rand01(3, 9, 11)
    np.testing.assert_array_equal(model.upscale(x), run_module(module, x))


class _CreatesFile:
    """Unpickling this object calls ``open(target, "w")``: a file appears if it runs."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.target, "w"))


def test_malicious_checkpoint_of_a_known_layout_is_refused(tmp_path: Path) -> None:
    state = build_module("rrdbnet", num_block=1, num_feat=8, num_grow_ch=4).state_dict()
    marker = tmp_path / "marker"
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": state, "extra": _CreatesFile(str(marker))}, path)
    with pytest.raises(ModelError, match="needs full unpickling.*Convert it to safetensors"):
        load_model(str(path))
    assert not marker.exists()


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3), "decoder.weight": torch.zeros(3)},
               path)
    with pytest.raises(ModelError, match="unknown architecture.*spandrel does not recognise"):
        load_model(str(path))


# --- spandrel -----------------------------------------------------------------------------------

def _spandrel_nets() -> dict[str, nn.Module]:
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact
    from spandrel.architectures.SPAN.__arch.span import SPAN
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

    torch.manual_seed(0)
    return {
        "compact": SRVGGNetCompact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=3, upscale=2),
        "span": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
        "swinir": SwinIR(in_chans=1, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                         upscale=2, upsampler="pixelshuffledirect", img_size=16),
    }


def test_spandrel_architectures(tmp_path: Path) -> None:
    for key, net in _spandrel_nets().items():
        path = tmp_path / f"{key}.safetensors"
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
        model = load_model(str(path))
        d = model.descriptor
        assert d.scale == 2 and model.card["spandrel"]["architecture"] in (
            "Compact", "SPAN", "SwinIR")
        x = rand01(d.in_channels, 20, 24, seed=3)
        net.eval()
        # spandrel states no receptive field: no analytic bound, the halo is measured
        assert not d.tileable and d.receptive_field_px == 0
        reach = model_reach(model)
        if key == "swinir":
            # windows of 4 and a 16 px minimum: measured halos are multiples of 4
            assert d.size_multiple == 4 and d.min_size_px == 16
            assert all(h % 4 == 0 for h, _ in reach.curve)
            small = rand01(1, 10, 6, seed=4)
            assert model.upscale(small).shape == (1, 20, 12)  # padded up to 16 and cropped
        else:
            assert d.size_multiple == 1
            # convolutional: the influence ends exactly at the probed radius
            measured = probe_receptive_field(net, 2, in_channels=d.in_channels)
            assert 0 < reach.halo_for(FLOOR) <= measured
            assert reach.deviation_at(measured - 1) > 0
        np.testing.assert_allclose(model.upscale(x), run_module(net, x), atol=1e-6)


# --- the pipeline: tiled equals whole image -----------------------------------------------------

PIPELINE_MODELS = {
    # name: (architecture, arguments, how the file is written)
    "srcnn-x2": ("srcnn", {"scale": 2, "n_feats": [8, 4]}, "card"),
    "fsrcnn-x3": ("fsrcnn", {"scale": 3, "d": 8, "s": 4, "m": 1}, "card"),
    "vdsr-x2": ("vdsr", {"scale": 2, "depth": 5, "n_feats": 8}, "card"),
    "srresnet-x2": ("srresnet", {"scale": 2, "n_blocks": 1, "n_feats": 8, "in_channels": 3},
                    "card"),
    "msrresnet-x3": ("msrresnet", {"scale": 3, "n_blocks": 1, "n_feats": 8, "in_channels": 1},
                     "card"),
    "rrdbnet-x2": ("rrdbnet", {"scale": 2, "num_block": 1, "num_feat": 8, "num_grow_ch": 4,
                               "in_channels": 1}, "pth without card"),
    "imdn-x2": ("imdn", {"scale": 2, "nf": 16, "num_modules": 1, "in_channels": 3}, "card"),
    "edsr-x4": ("edsr", {"scale": 4, "n_resblocks": 1, "n_feats": 8, "in_channels": 3}, "card"),
    "spandrel-compact-x2": ("compact", {}, "spandrel"),
    "spandrel-swinir-x2": ("swinir", {}, "spandrel"),
}


@pytest.fixture(scope="module")
def dem_crop(repo_data, tmp_path_factory) -> Path:
    """A float32 window of the Copernicus DEM: floats are not clipped on output, so models with
    random weights (whose values leave the input range) are compared everywhere."""
    folder = tmp_path_factory.mktemp("zoo")
    return crop_scene(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"),
                      folder / "dem.tif", row=2700, col=1800, height=90, width=76)


def _write_model(name: str, folder: Path) -> str:
    architecture, arguments, how = PIPELINE_MODELS[name]
    if how == "spandrel":
        net = _spandrel_nets()[architecture]
        path = folder / f"{name}.pth"
        torch.save({"params": net.state_dict()}, path)
        return str(path)
    module = randomized(build_module(architecture, **arguments), seed=len(name))
    if how == "card":
        card = {"name": name, "architecture": architecture, "arguments": arguments,
                "scale": arguments["scale"], "training": {}, "metrics": {}}
        return str(save_model(module, card, folder / name))
    path = folder / f"{name}.pth"
    torch.save({"params_ema": module.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("name", list(PIPELINE_MODELS))
def test_tiled_equals_whole_image(name, dem_crop, dask_address, tmp_path):
    model = _write_model(name, tmp_path)
    runs = {}
    for label, tile in (("tiled", 16), ("whole", 512)):
        cfg = UpscaleConfig(src=str(dem_crop), dst=str(tmp_path / f"{label}.tif"),
                            model=model, dask_address=dask_address, progress=False,
                            tile_size_px=tile)
        runs[label] = run_upscale(cfg)
    d = runs["whole"].model.descriptor
    assert len(runs["whole"].grid) == 1
    assert len(runs["tiled"].grid) == (1 if runs["tiled"].halo.whole_scene else 30)
    assert runs["tiled"].grid.halo_px % d.size_multiple == 0
    with rasterio.open(tmp_path / "tiled.tif") as a, rasterio.open(tmp_path / "whole.tif") as b:
        x, y = a.read(), b.read()
        assert a.width == 76 * d.scale and y.dtype == np.float32
    span = float(y.max() - y.min())
    assert span > 0 and np.isfinite(y).all()
    assert np.abs(x - y).max() <= 1e-5 * span  # 1e-5 of the output's value range


def test_model_from_s3(moto_s3, tmp_path, monkeypatch):
    """``--model s3://...``: weights and card downloaded (once per object version), then loaded
    as a local file; a missing object is one clear error."""
    import boto3

    monkeypatch.setenv("SR_MODEL_CACHE", str(tmp_path / "cache"))
    arguments = {"scale": 2, "depth": 4, "n_feats": 8}
    module = randomized(build_module("vdsr", **arguments))
    card = {"name": "vdsr-x2", "architecture": "vdsr", "arguments": arguments, "scale": 2}
    local = save_model(module, card, tmp_path / "vdsr_x2")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(local), "models", "zoo/vdsr_x2.safetensors")
    s3.upload_file(str(local.with_suffix(".json")), "models", "zoo/vdsr_x2.json")
    model = load_model("s3://models/zoo/vdsr_x2.safetensors")
    assert model.card["name"] == "vdsr-x2" and model.card["sha256"]
    x = rand01(1, 9, 9)
    np.testing.assert_array_equal(model.upscale(x), run_module(module, x))
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1
    load_model("s3://models/zoo/vdsr_x2.safetensors")  # cached: no second copy
    assert len(list((tmp_path / "cache").rglob("*"))) == 3  # one folder, weights + card
    with pytest.raises(InputError, match="s3://models/zoo/absent.pth"):
        load_model("s3://models/zoo/absent.pth")
