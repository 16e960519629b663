"""Training on real scenes by the Wald protocol: deterministic with a seed, a resumed run equals
an uninterrupted one, pixel / perceptual / adversarial losses, the card filled in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import crop_scene
from safetensors.torch import load_file

from sr_core.errors import InputError, ModelError
from sr_core.models.registry import load_model
from sr_core.train import TrainConfig, train_model

TINY = {"scale": 2, "in_channels": 1, "n_resblocks": 1, "n_feats": 8, "rgb_range": 1.0,
        "bicubic_residual": True}


@pytest.fixture(scope="module")
def scenes(repo_data, tmp_path_factory):
    """Two real training crops (Sentinel-2 uint16, NAIP uint8) and a held-out Landsat crop."""
    folder = tmp_path_factory.mktemp("train")
    return {
        "train": (str(crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"),
                                 folder / "s2.tif", row=300, col=300, height=128, width=128)),
                  str(crop_scene(repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif"),
                                 folder / "naip.tif", row=100, col=100, height=96, width=96))),
        "val": (str(crop_scene(repo_data.path("landsat7_RGB.byte.tif"), folder / "l7.tif",
                               row=250, col=250, height=80, width=80)),),
    }


def config(scenes, out: Path, **kw) -> TrainConfig:
    base = dict(architecture="edsr", arguments=TINY, name="tiny-x2", out=str(out),
                scenes=scenes["train"], val_scenes=scenes["val"], epochs=2, steps_per_epoch=3,
                batch_size=4, patch_px=8, pool_size=16, learning_rate=1e-3, val_window_px=64,
                seed=7, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class _Stop(Exception):
    pass


def test_resume_equals_uninterrupted_and_card(scenes, tmp_path):
    full = train_model(config(scenes, tmp_path / "full.safetensors"), progress=False)

    def stop_after_first(entry: dict) -> None:
        if entry["epoch"] == 1:
            raise _Stop

    out = tmp_path / "resumed.safetensors"
    with pytest.raises(_Stop):
        train_model(config(scenes, out), progress=False, on_epoch_end=stop_after_first)
    assert out.with_suffix(".ckpt").exists() and not out.exists()
    resumed = train_model(config(scenes, out, resume=True), progress=False)
    assert not out.with_suffix(".ckpt").exists()

    a, b = load_file(tmp_path / "full.safetensors"), load_file(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in resumed["training"]["history"]] == [1, 2]
    assert resumed["training"]["history"] == full["training"]["history"]

    card = json.loads((tmp_path / "full.json").read_text())
    assert card["training"]["loss"] == "L1" and card["training"]["seed"] == 7
    assert card["training"]["validation_scenes"] == ["l7.tif"]
    v = card["metrics"]["validation"]["l7.tif"]
    assert np.isfinite(v["model"]["psnr_db"]) and 0 < v["model"]["ssim"] <= 1
    assert load_model(str(tmp_path / "full.safetensors")).name == "tiny-x2"

    other = train_model(config(scenes, tmp_path / "seed8.safetensors", seed=8,
                               epochs=1), progress=False)
    assert other["training"]["history"][0] != full["training"]["history"][0]


def _vgg_head(path: Path) -> Path:
    """The first VGG-19 layers (up to relu2_2) with random weights, in torchvision's layout."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])[:9]
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_perceptual_and_adversarial_phases(scenes, tmp_path):
    vgg = _vgg_head(tmp_path / "vgg19_head.pth")
    card = train_model(config(scenes, tmp_path / "gan.safetensors", loss="perceptual",
                              vgg_weights=str(vgg), vgg_layer="relu2_2", epochs=1, gan_epochs=1,
                              steps_per_epoch=2), progress=False)
    history = card["training"]["history"]
    assert [h["phase"] for h in history] == ["pixel", "adversarial"]
    assert "discriminator_loss" in history[1] and np.isfinite(history[1]["discriminator_loss"])
    assert "VGG-19 relu2_2" in card["training"]["loss"] and "SRGAN" in card["training"]["loss"]
    assert load_model(card["weights"]).scale == 2

    mse = train_model(config(scenes, tmp_path / "mse.safetensors", loss="mse", epochs=1,
                             degradation="area", blur_sigma_px=0.8, noise_sigma=0.01),
                      progress=False)
    assert mse["training"]["loss"] == "MSE"
    assert mse["training"]["degradation"] == ("area (block mean), Gaussian blur sigma 0.8 HR px "
                                              "first, Gaussian noise sigma 0.01")


def test_degradations(repo_data):
    import rasterio
    from rasterio.windows import Window

    from sr_core.resample import downsample_bicubic
    from sr_core.train import degrade

    with rasterio.open(repo_data.path("landsat7_RGB.byte.tif")) as ds:
        hr = ds.read(window=Window(300, 300, 32, 32)).astype(np.float32)[None] / 255.0
    t = torch.from_numpy(hr)
    area = degrade(t, 2, method="area")
    np.testing.assert_allclose(area.numpy(), hr.reshape(1, 3, 16, 2, 16, 2).mean(axis=(3, 5)),
                               atol=1e-6)
    assert torch.equal(degrade(t, 2), downsample_bicubic(t, 2))
    blurred = degrade(t, 2, method="area", blur_sigma_px=1.0)
    assert (blurred - area).abs().max() > 0.01 and blurred.std() < area.std()
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(degrade(flat, 2, blur_sigma_px=2.0), torch.full((1, 1, 8, 8), 0.3))
    n1 = degrade(t, 2, noise_sigma=0.05, generator=torch.Generator().manual_seed(1))
    n2 = degrade(t, 2, noise_sigma=0.05, generator=torch.Generator().manual_seed(1))
    assert torch.equal(n1, n2)
    assert 0.04 < float((n1 - degrade(t, 2)).std()) < 0.06
    with pytest.raises(InputError, match="degradation 'nearest'"):
        degrade(t, 2, method="nearest")


def test_bad_training_options(scenes, tmp_path):
    with pytest.raises(InputError, match="needs VGG-19 weights"):
        train_model(config(scenes, tmp_path / "a", loss="perceptual"), progress=False)
    with pytest.raises(InputError, match="multiple of 16"):
        train_model(config(scenes, tmp_path / "a", gan_epochs=1, patch_px=6), progress=False)
    with pytest.raises(InputError, match="in both training and validation"):
        train_model(config(scenes, tmp_path / "a", val_scenes=scenes["train"][:1]),
                    progress=False)
    evil = tmp_path / "vgg.pth"

    class _Payload:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(tmp_path / "marker"), "w"))

    torch.save({"features.0.weight": torch.zeros(1), "x": _Payload()}, evil)
    with pytest.raises(ModelError, match="refusing"):
        train_model(config(scenes, tmp_path / "a", loss="perceptual", vgg_weights=str(evil)),
                    progress=False)
    assert not (tmp_path / "marker").exists()
