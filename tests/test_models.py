"""Models: shapes, receptive fields, weights files, loading safety, band policy, resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sr_core.errors import InputError, ModelError
from sr_core.imaging.resample import (
    downsample_bands,
    downsample_bicubic,
    upsample_bands,
    upsample_bands_pillow,
    upsample_bicubic,
)
from sr_core.models import catalog, registry
from sr_core.models.base import SRModel
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.edsr import EDSR
from sr_core.models.probe import probe_receptive_field
from sr_core.models.registry import (
    SHIPPED_ARGUMENTS,
    build_module,
    describe,
    list_models,
    load_model,
    resolve_device,
)
from sr_core.models.weights import load_weights, save_model, sha256_file, unwrap_state_dict

# (architecture, constructor arguments): every architecture, every upsampler layout, the shipped
# default model and the paper's EDSR-baseline depth (narrowed to keep the test fast).
CONFIGS = [
    ("bicubic", {"scale": 2}),
    ("bicubic", {"scale": 3}),
    ("espcn", {"scale": 2}),
    ("espcn", {"scale": 3, "in_channels": 3}),
    ("edsr", {"scale": 2, "in_channels": 1, "n_resblocks": 2, "n_feats": 8}),
    ("edsr", {"scale": 3, "in_channels": 1, "n_resblocks": 2, "n_feats": 8}),
    ("edsr", {"scale": 4, "in_channels": 3, "n_resblocks": 1, "n_feats": 8}),
    ("edsr", SHIPPED_ARGUMENTS["edsr-x2"]),
    ("edsr", {"scale": 2, "in_channels": 1, "n_resblocks": 16, "n_feats": 4}),
]
# the model zoo, small widths and depths: the descriptors' formulas are in terms of the
# arguments (also used by test_zoo.py)
ZOO_CONFIGS = [
    ("srcnn", {"scale": 2, "n_feats": [8, 4]}),
    ("srcnn", {"scale": 3, "n_feats": [8, 4], "kernel_sizes": [9, 5, 5]}),
    ("srcnn", {"scale": 4, "n_feats": [8, 4]}),
    ("fsrcnn", {"scale": 2, "d": 8, "s": 4, "m": 2}),
    ("fsrcnn", {"scale": 3, "d": 8, "s": 4, "m": 1}),
    ("fsrcnn", {"scale": 4, "d": 8, "s": 4, "m": 1, "in_channels": 3}),
    ("vdsr", {"scale": 2, "depth": 5, "n_feats": 8}),
    ("vdsr", {"scale": 3, "depth": 4, "n_feats": 8}),
    ("vdsr", {"scale": 4, "depth": 6, "n_feats": 8}),
    ("srresnet", {"scale": 4, "n_blocks": 2, "n_feats": 8}),
    ("srresnet", {"scale": 2, "n_blocks": 1, "n_feats": 8, "in_channels": 1}),
    ("msrresnet", {"scale": 4, "n_blocks": 2, "n_feats": 8}),
    ("msrresnet", {"scale": 3, "n_blocks": 1, "n_feats": 8}),
    ("msrresnet", {"scale": 2, "n_blocks": 1, "n_feats": 8, "in_channels": 1}),
    ("rrdbnet", {"scale": 4, "num_block": 1, "num_feat": 8, "num_grow_ch": 4}),
    ("rrdbnet", {"scale": 2, "num_block": 1, "num_feat": 8, "num_grow_ch": 4, "in_channels": 1}),
    ("edsr", {"scale": 4, "n_resblocks": 1, "n_feats": 8}),
    ("imdn", {"scale": 2, "nf": 16, "num_modules": 2, "in_channels": 1}),
    ("imdn", {"scale": 3, "nf": 16, "num_modules": 1}),
]
CONFIGS += ZOO_CONFIGS


def _config_id(architecture: str, arguments: dict) -> str:
    return f"{architecture}-{'-'.join(f'{k}{v}' for k, v in arguments.items())}".replace(" ", "")


IDS = [_config_id(a, kw) for a, kw in CONFIGS]
ZOO_IDS = [_config_id(a, kw) for a, kw in ZOO_CONFIGS]


def randomized(module: nn.Module, seed: int = 1) -> nn.Module:
    """Give every trainable parameter random values (an untrained bicubic-residual EDSR has a
    zero tail, which would hide the network from the probe and the round trip), and batch-norm
    statistics random positive values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for b in module.buffers():
            if b.dtype.is_floating_point:
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module.eval()


def card_for(name: str, architecture: str, arguments: dict) -> dict:
    return {"name": name, "architecture": architecture, "arguments": arguments,
            "scale": arguments["scale"], "in_channels": arguments.get("in_channels", 1),
            "bands": "band by band", "normalisation": "scene min/max to [0, 1]",
            "training": {"seed": 0}, "metrics": {}}


def rand01(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --- resampling ---------------------------------------------------------------------------------

def pil_resize(x: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize(size_wh, Image.Resampling.BICUBIC))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_resample_equals_pil_bicubic(scale: int) -> None:
    lr = rand01(23, 31, seed=scale)
    up = upsample_bands(lr[None], scale)[0]
    assert up.shape == (23 * scale, 31 * scale) and up.dtype == np.float32
    assert np.abs(up - pil_resize(lr, (31 * scale, 23 * scale))).max() < 1e-4  # borders too

    hr = rand01(12 * scale, 10 * scale, seed=10 + scale)
    down = downsample_bands(hr[None], scale)[0]
    assert down.shape == (12, 10) and down.dtype == np.float32
    assert np.abs(down - pil_resize(hr, (10, 12))).max() < 1e-4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pillow_upsampling_equals_the_torch_kernel(scale: int) -> None:
    """The report's torch-free crops use the Wald baseline's kernel."""
    x = np.stack([rand01(19, 26, seed=scale), rand01(19, 26, seed=7)])
    got = upsample_bands_pillow(x, scale)
    assert got.shape == (2, 19 * scale, 26 * scale) and got.dtype == np.float32
    assert np.abs(got - upsample_bands(x, scale)).max() < 1e-4
    with pytest.raises(InputError, match="float"):
        upsample_bands_pillow(np.zeros((1, 4, 4), np.uint8), 2)


def test_plain_torch_bicubic_differs_from_pil() -> None:
    """Guards the reason resample.py exists: plain interpolate (a=-0.75, no antialias) is not it."""
    lr = rand01(20, 20)
    plain = F.interpolate(torch.from_numpy(lr)[None, None], scale_factor=2, mode="bicubic",
                          align_corners=False)[0, 0].numpy()
    assert np.abs(plain - pil_resize(lr, (40, 40)))[4:-4, 4:-4].max() > 1e-2


def test_resample_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="multiple of scale 2"):
        downsample_bicubic(torch.zeros(1, 1, 5, 4), 2)
    with pytest.raises(InputError):
        upsample_bicubic(torch.zeros(5, 4), 2)
    with pytest.raises(InputError):
        upsample_bands(np.zeros((1, 4, 4), np.uint8), 2)


# --- architectures ------------------------------------------------------------------------------

@pytest.mark.parametrize(("architecture", "arguments"), CONFIGS, ids=IDS)
def test_output_shape_dtype_and_receptive_field(architecture: str, arguments: dict) -> None:
    torch.manual_seed(0)
    module = randomized(build_module(architecture, **arguments))
    d = describe(architecture, "t", **arguments)
    m = d.size_multiple  # 11 x 13, or the next multiple (the runner pads; the network needs it)
    h, w = -(-11 // m) * m, -(-13 // m) * m
    x = torch.rand(2, d.in_channels, h, w)
    with torch.inference_mode():
        y = module(x)
    assert y.shape == (2, d.in_channels, h * d.scale, w * d.scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()

    if not d.tileable:
        # global context (IMDN's channel attention): a pixel in one corner changes the output
        # in the opposite corner, far beyond the convolutions' reach
        x = torch.rand(1, d.in_channels, 40, 40, dtype=torch.float64)
        xp = x.clone()
        xp[..., 0, 0] += 0.5
        net = module.double()
        with torch.inference_mode():
            far = (net(xp) - net(x))[..., -d.scale:, -d.scale:].abs().max()
        assert far > 0 and d.receptive_field_px < 39
        return
    size = 2 * d.receptive_field_px + 8  # room for the whole field around the centre pixel
    measured = probe_receptive_field(module, d.scale, in_channels=d.in_channels, size=size)
    assert measured > 0
    assert d.receptive_field_px == measured  # >= is what tiling needs; the formulas are exact


def test_probe_grows_input_until_field_fits() -> None:
    module = randomized(build_module("edsr", scale=2, in_channels=1, n_resblocks=6, n_feats=4))
    assert probe_receptive_field(module, 2) == 16  # starts at 16 px, needs 64


def test_receptive_fields_of_paper_defaults() -> None:
    assert describe("edsr", "t").receptive_field_px == 36  # EDSR-baseline: 16 blocks
    assert describe("edsr", "t", n_resblocks=32, n_feats=256, res_scale=0.1,
                    scale=4).receptive_field_px == 68  # EDSR
    assert describe("espcn", "t", scale=4).receptive_field_px == 4
    assert describe("edsr", "t", **SHIPPED_ARGUMENTS["edsr-x2"]).receptive_field_px == 24


def test_edsr_reference_parameter_names() -> None:
    keys = set(EDSR(scale=4).state_dict())
    for k in ["sub_mean.weight", "add_mean.bias", "head.0.weight", "body.0.body.0.weight",
              "body.15.body.2.bias", "body.16.weight", "tail.0.0.weight", "tail.0.2.weight",
              "tail.1.weight"]:
        assert k in keys
    one_band = set(EDSR(scale=2, in_channels=1, n_resblocks=1).state_dict())
    assert not any("mean" in k for k in one_band)  # RGB mean shift only for 3 channels


def test_untrained_bicubic_residual_edsr_is_bicubic() -> None:
    module = build_module("edsr", **SHIPPED_ARGUMENTS["edsr-x2"]).eval()
    x = torch.rand(1, 1, 9, 12)
    with torch.inference_mode():
        assert torch.allclose(module(x), upsample_bicubic(x, 2), atol=1e-6)


def test_equivariant_edsr_follows_intensity_scale_and_offset() -> None:
    """The shipped EDSR variant: f(a x + b) = a f(x) + b for a > 0 (random weights, so the
    property comes from the architecture, not training), and a constant image stays constant."""
    module = randomized(build_module("edsr", **SHIPPED_ARGUMENTS["edsr-x2"])).eval()
    assert all(m.bias is None for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 1, 23, 17, dtype=torch.float64)
    module = module.double()
    with torch.inference_mode():
        for a, b in ((3.7, 0.2), (1e-3, 0.7), (250.0, -40.0)):
            torch.testing.assert_close(module(a * x + b), a * module(x) + b, rtol=1e-9,
                                       atol=1e-9 * max(a, 1))
        flat = torch.full((1, 1, 12, 12), 0.42, dtype=torch.float64)
        torch.testing.assert_close(module(flat), torch.full((1, 1, 24, 24), 0.42,
                                                            dtype=torch.float64))
    with pytest.raises(ModelError, match="needs bicubic_residual"):
        build_module("edsr", scale=2, in_channels=1, equivariant=True)


def test_detail_only_leaves_the_low_frequencies_to_bicubic() -> None:
    """``detail_only`` high-passes the learned residual: on a smooth real-world-like input the
    shipped variant's output, degraded back by bicubic, stays much closer to bicubic's than the
    same weights without it (random weights: the property is the architecture's)."""
    from sr_core.imaging.resample import downsample_bicubic

    args = dict(SHIPPED_ARGUMENTS["edsr-x2"])
    assert args["detail_only"]
    with_hp = randomized(build_module("edsr", **args)).eval()
    without = build_module("edsr", **{**args, "detail_only": False}).eval()
    without.load_state_dict(with_hp.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 96, generator=g),
                                       4, 1, 2)[..., :64, :64]
    with torch.inference_mode():
        base = downsample_bicubic(upsample_bicubic(x, 2), 2)
        low_hp = (downsample_bicubic(with_hp(x), 2) - base)[..., 8:-8, 8:-8].abs().mean()
        low = (downsample_bicubic(without(x), 2) - base)[..., 8:-8, 8:-8].abs().mean()
    assert low > 0 and low_hp < 0.3 * low, (float(low_hp), float(low))
    with pytest.raises(ModelError, match="detail_only=True needs bicubic_residual"):
        build_module("edsr", scale=2, in_channels=1, detail_only=True)


# --- weights files ------------------------------------------------------------------------------

def test_safetensors_round_trip_gives_identical_output(tmp_path: Path) -> None:
    arguments = {"scale": 2, "in_channels": 1, "n_resblocks": 2, "n_feats": 8,
                 "bicubic_residual": True, "rgb_range": 1.0}
    module = randomized(build_module("edsr", **arguments))
    path = save_model(module, card_for("tiny-x2", "edsr", arguments), tmp_path / "tiny_x2")
    assert path.name == "tiny_x2.safetensors" and (tmp_path / "tiny_x2.json").is_file()

    model = load_model(str(path))
    assert model.descriptor.receptive_field_px == 8 and model.scale == 2
    assert not model.module.training
    x = rand01(2, 17, 19)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)[:, None])[:, 0].numpy()
    assert np.array_equal(model.upscale(x), expected)
    assert np.array_equal(load_model(str(path)).upscale(x), expected)  # deterministic

    with pytest.raises(ModelError, match="x2, but scale 3"):
        load_model(str(path), scale=3)


def test_card_missing_malformed_or_stale(tmp_path: Path) -> None:
    arguments = {"scale": 2, "in_channels": 1}
    path = save_model(randomized(build_module("espcn", **arguments)),
                      card_for("e-x2", "espcn", arguments), tmp_path / "e.safetensors")
    card = tmp_path / "e.json"
    good = card.read_text()

    card.write_text("{not json")
    with pytest.raises(ModelError, match=r"e\.json.*not valid JSON"):
        load_model(str(path))
    card.write_text(json.dumps({**json.loads(good), "arguments": "scale=2"}))
    with pytest.raises(ModelError, match=r"e\.json.*'arguments'"):
        load_weights(path)
    card.write_text(json.dumps({**json.loads(good), "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="SHA-256"):
        load_weights(path)
    other = tmp_path / "other.safetensors"
    other.write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match=r"other\.json: model card missing"):
        load_weights(other)  # a card is required unless the caller recognises the layout
    card.unlink()  # without a card the layout is recognised from the keys (test_zoo.py)
    assert load_model(str(path)).card["source"].startswith("recognised")


# A pickled checkpoint that runs code is a row of test_bad_inputs.py.


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", "model", None])
def test_checkpoint_unwrapping(tmp_path: Path, wrapper: str | None) -> None:
    module = randomized(build_module("espcn", scale=2))
    state = {f"module.{k}": v for k, v in module.state_dict().items()}
    obj = {wrapper: state, "epoch": 3} if wrapper else state
    if wrapper == "params_ema":
        obj["params"] = {"module.decoy": torch.zeros(1)}  # EMA weights win over raw ones
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded, card = load_weights(path, require_card=False)
    assert card is None
    assert set(loaded) == set(module.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in module.state_dict().items())


def test_unwrap_rejects_non_state_dicts() -> None:
    with pytest.raises(ModelError, match="not a state dict"):
        unwrap_state_dict({"epoch": 3, "lr": 0.1}, "x.pth")
    with pytest.raises(ModelError, match="no state dict"):
        unwrap_state_dict([torch.zeros(1)], "x.pth")


def test_pth_with_card_loads_through_registry(tmp_path: Path) -> None:
    arguments = {"scale": 2, "in_channels": 1}
    module = randomized(build_module("espcn", **arguments))
    path = tmp_path / "net.pth"
    torch.save({"params": module.state_dict()}, path)
    card = card_for("net-x2", "espcn", arguments)
    (tmp_path / "net.json").write_text(json.dumps({**card, "sha256": sha256_file(path)}))
    x = rand01(1, 8, 8)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)[None])[0].numpy()
    assert np.array_equal(load_model(str(path)).upscale(x), expected)


# --- SRModel: band policy and size multiple -----------------------------------------------------

def test_three_channel_model_on_four_bands() -> None:
    torch.manual_seed(0)
    module = randomized(EDSR(scale=2, in_channels=3, n_resblocks=1, n_feats=8))
    model = SRModel(module=module, descriptor=describe("edsr", "rgb", scale=2, in_channels=3,
                                                       n_resblocks=1, n_feats=8))
    x = rand01(4, 10, 12)
    y = model.upscale(x)
    assert y.shape == (4, 20, 24) and y.dtype == np.float32
    with torch.inference_mode():
        rgb = module(torch.from_numpy(x[None, :3]))[0].numpy()
        nnn = module(torch.from_numpy(x[[3, 3, 3]][None]))[0].numpy()
    np.testing.assert_allclose(y[:3], rgb, atol=1e-6)
    np.testing.assert_allclose(y[3], nnn[0], atol=1e-6)
    assert not np.allclose(y[3], nnn[1], atol=1e-3)  # channels differ: the grouping matters
    model.max_batch = 1
    np.testing.assert_allclose(model.upscale(x), y, atol=1e-6)


def test_one_channel_model_runs_band_by_band() -> None:
    model = load_model("bicubic", scale=3)
    x = rand01(5, 7, 6)
    y = model.upscale(x)
    assert y.shape == (5, 21, 18)
    for b in range(5):
        np.testing.assert_array_equal(y[b], upsample_bands(x[b:b + 1], 3)[0])


class _NeedsMultipleOf4(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0, x.shape
        return upsample_bicubic(x, 2)


@pytest.mark.parametrize(("h", "w"), [(13, 10), (2, 3), (8, 8)])
def test_size_multiple_pads_and_crops_back(h: int, w: int) -> None:
    descriptor = ModelDescriptor(name="m4", architecture="test", scale=2,
                                 receptive_field_px=2, size_multiple=4)
    model = SRModel(module=_NeedsMultipleOf4(), descriptor=descriptor)
    x = rand01(2, h, w)
    y = model.upscale(x)
    assert y.shape == (2, 2 * h, 2 * w)
    # away from the padded bottom/right edge, padding changes nothing
    ref = upsample_bands(x, 2)
    core_h, core_w = max(0, h - 3), max(0, w - 3)
    np.testing.assert_allclose(y[:, : 2 * core_h, : 2 * core_w],
                               ref[:, : 2 * core_h, : 2 * core_w], atol=1e-6)


def test_upscale_rejects_bad_arrays() -> None:
    model = load_model("bicubic")
    for bad in (np.zeros((4, 4), np.float32), np.zeros((1, 4, 4), np.uint16),
                np.zeros((0, 4, 4), np.float32)):
        with pytest.raises(InputError):
            model.upscale(bad)


# --- registry -----------------------------------------------------------------------------------

def test_registry_names_scales_and_missing_files(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "WEIGHTS_DIR", tmp_path)
    assert load_model("bicubic").scale == 2
    assert load_model("bicubic", scale=4).descriptor.receptive_field_px == 2
    with pytest.raises(ModelError, match="edsr-x2: shipped weights file .* is missing"):
        load_model("edsr")
    with pytest.raises(ModelError, match=r"edsr: no shipped weights for x3 \(shipped: x2, x4\)"):
        load_model("edsr", scale=3)
    with pytest.raises(ModelError, match="unknown model 'srgan'"):
        load_model("srgan")
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "absent.safetensors"))
    with pytest.raises(ModelError, match="bad arguments"):
        build_module("edsr", n_blocks=3)

    rows = {r["name"]: r for r in list_models()}
    assert rows["bicubic"]["weights"] == "none"
    assert rows["edsr-x2"]["receptive_field_px"] == 24
    assert rows["edsr-x2"]["weights"].endswith("(missing)")

    # once the shipped file exists, "edsr" at scale 2 loads it
    module = build_module("edsr", **SHIPPED_ARGUMENTS["edsr-x2"])
    save_model(module, card_for("edsr-x2", "edsr", SHIPPED_ARGUMENTS["edsr-x2"]),
               tmp_path / "edsr_x2.safetensors")
    model = load_model(registry.DEFAULT_MODEL)
    assert model.name == "edsr-x2" and model.descriptor.receptive_field_px == 24
    assert {r["name"]: r for r in list_models()}["edsr-x2"]["weights"] == "edsr_x2.safetensors"
    with pytest.raises(ModelError, match="x2, but scale 4"):
        load_model("edsr-x2", scale=4)


def test_loading_leaves_global_rng_alone(tmp_path: Path) -> None:
    arguments = {"scale": 2, "in_channels": 1}
    path = save_model(build_module("espcn", **arguments), card_for("e-x2", "espcn", arguments),
                      tmp_path / "e")
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    load_model(str(path))
    assert torch.equal(torch.rand(3), a)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tmp_path: Path) -> None:
    arguments = {"scale": 2, "in_channels": 1, "n_resblocks": 2, "n_feats": 8, "rgb_range": 1.0}
    path = save_model(randomized(build_module("edsr", **arguments)),
                      card_for("t-x2", "edsr", arguments), tmp_path / "t")
    x = rand01(3, 32, 40)
    cpu = load_model(str(path)).upscale(x)
    gpu_model = load_model(str(path), device="cuda")
    assert next(gpu_model.module.parameters()).is_cuda
    np.testing.assert_allclose(gpu_model.upscale(x), cpu, atol=1e-4)
    np.testing.assert_allclose(load_model("bicubic", device="cuda").upscale(x),
                               load_model("bicubic").upscale(x), atol=1e-5)
