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
from sr_core.imaging.degradations import EVALUATION
from sr_core.models.catalog import SHIPPED_ARGUMENTS
from sr_core.models.registry import load_model
from sr_core.training.config import TrainConfig
from sr_core.training.train import train_model

TINY = {"scale": 2, "in_channels": 1, "n_resblocks": 1, "n_feats": 8, "rgb_range": 1.0,
        "equivariant": True,
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
    v = card["metrics"]["validation"]["l7.tif"]["bicubic"]
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
                             degradation="gaussian-0.3"), progress=False)
    assert mse["training"]["loss"] == "MSE"
    assert mse["training"]["degradation"] == ("gaussian-0.3: Gaussian blur sigma 0.3 LR px, then "
                                              "area integration (block mean)")


@pytest.mark.parametrize("degradation", ["random", *EVALUATION])
def test_one_step_with_each_degradation(scenes, tmp_path, degradation):
    card = train_model(config(scenes, tmp_path / "one.safetensors", epochs=1, steps_per_epoch=1,
                              degradation=degradation, val_degradations=("area",)),
                       progress=False)
    assert card["training"]["degradation_name"] == degradation
    assert card["training"]["steps"] == 1
    assert np.isfinite(card["training"]["history"][0]["train_loss"])
    assert set(card["training"]["history"][0]["validation"]["l7.tif"]) == {"area"}


def test_card_validation_table_from_the_run(scenes, tmp_path):
    """The card's table holds, per held-out scene and evaluation degradation, figures that
    recomputing the Wald check with the saved weights gives again (not typed in)."""
    from sr_core.training.train import _stage_all, validate
    from sr_core.training.train_card import validation_markdown

    card = train_model(config(scenes, tmp_path / "t.safetensors", epochs=1), progress=False)
    table = card["metrics"]["validation"]["l7.tif"]
    assert list(table) == list(EVALUATION)
    staged = _stage_all(scenes["val"], str(tmp_path), "v")
    model = load_model(card["weights"])
    again = validate(model, staged, 64, EVALUATION)["l7.tif"]
    for d in EVALUATION:
        assert table[d]["model"]["psnr_db"] == pytest.approx(again[d]["model"]["psnr_db"], abs=1e-6)
        assert table[d]["bicubic"]["psnr_db"] == pytest.approx(again[d]["bicubic"]["psnr_db"],
                                                              abs=1e-6)
        assert table[d]["gain_db"] == pytest.approx(
            table[d]["model"]["psnr_db"] - table[d]["bicubic"]["psnr_db"])
    s = card["metrics"]["summary"]["area"]
    assert s["scenes"] == 1 and s["mean_gain_db"] == pytest.approx(table["area"]["gain_db"])
    assert card["metrics"]["data_range"]["l7.tif"] == "8-bit depth (255)"
    assert validation_markdown(card).count("| l7.tif |") == len(EVALUATION)
    # licences come from a PROVENANCE.md beside the scenes; these crops have none, and say so
    assert {d["licence"] for d in card["training"]["data"]} == {"not recorded"}


def test_initialise_from_weights_and_provenance(repo_data):
    from sr_core.models.registry import build_module
    from sr_core.training.train import initialise
    from sr_core.training.train_card import provenance

    init = (Path(__file__).resolve().parent.parent
            / "training/init/edsr_x2_bicubic_pairs.safetensors")
    module = build_module("edsr", **SHIPPED_ARGUMENTS["edsr-x4"])
    got = initialise(module, str(init))
    # the bias-free x4 has one more upsampler stage than x2: all weights but that conv's copied
    assert got["of"] - got["tensors"] == 1
    assert torch.equal(module.state_dict()["head.0.weight"], load_file(init)["head.0.weight"])
    lic = provenance(str(repo_data.path("landsat7_RGB.byte.tif")))
    assert "CC0-1.0" in lic["licence"] and "rasterio" in lic["source"]


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


def _all_nodata(src: Path, dst: Path) -> Path:
    """A real scene's crop with every pixel set to its nodata value (0)."""
    import rasterio

    crop_scene(src, dst, row=100, col=100, height=64, width=64)
    with rasterio.open(dst, "r+") as ds:
        ds.nodata = 0
        ds.write(np.zeros((ds.count, ds.height, ds.width), dtype=ds.dtypes[0]))
    return dst


def test_bad_training_input_from_the_cli(scenes, repo_data, tmp_path):
    """One line naming the file and the problem, exit 2, nothing written at --out."""
    import subprocess
    import sys

    cli = str(Path(sys.executable).parent / "sr-pipeline")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scenes here")
    tiny = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "tiny.tif",
                      row=300, col=300, height=12, width=12)
    blank = _all_nodata(repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif"),
                        tmp_path / "blank.tif")
    val = ["--val-scene", scenes["val"][0]]
    cases = {
        "no GeoTIFF": ["--scene", str(empty)],
        "at least 96 x 96 px": ["--scene", str(tiny)],
        "every pixel is nodata": ["--scene", str(blank)],
        "unknown degradation 'blurry'": ["--scene", scenes["train"][0], "--degradation", "blurry"],
    }
    for want, args in cases.items():
        out = tmp_path / "out" / "m.safetensors"
        res = subprocess.run([cli, "train", "--arch", "espcn", "--out", str(out), "--epochs", "1",
                              "--steps", "1", "--device", "cpu", *args, *val],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, (want, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert (len(lines) == 1 and lines[0].startswith("sr-pipeline: error: ")
                and want in lines[0]), (want, res.stderr)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
