"""``sr-pipeline evaluate``: the metric conventions pinned against an independent computation
(Pillow resampling + NumPy BT.601 luma + scikit-image metrics) on a real image, provided LR
images, scenes by the Wald protocol, and the CLI's outputs and errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sr_core.cli import main
from sr_core.errors import InputError
from sr_core.training.evaluate import EvalConfig, evaluate, to_markdown


@pytest.fixture(scope="module")
def real_rgb(repo_data) -> np.ndarray:
    """(H, W, 3) uint8: a window of the Landsat 7 RGB sample scene (real pixels)."""
    with rasterio.open(repo_data.path("landsat7_RGB.byte.tif")) as ds:
        return ds.read(window=Window(250, 250, 201, 163)).transpose(1, 2, 0).copy()


def pil_bicubic(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Independent resampling: Pillow's bicubic on each channel as a float ('F') image, then
    rounded to 8 bits."""
    out = [np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F")
                      .resize(size_wh, Image.Resampling.BICUBIC)) for c in range(img.shape[2])]
    return np.clip(np.round(np.stack(out, axis=-1)), 0, 255).astype(np.uint8)


def independent_metrics(hr: np.ndarray, sr: np.ndarray, channel: str, border: int):
    hr, sr = hr[border:-border, border:-border], sr[border:-border, border:-border]
    if channel == "y":
        def luma(x):
            x = x.astype(np.float64) / 255.0
            return 16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
        a, b = luma(hr), luma(sr)
        return (peak_signal_noise_ratio(a, b, data_range=255),
                structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False))
    a, b = hr.astype(np.float64), sr.astype(np.float64)
    return (peak_signal_noise_ratio(a, b, data_range=255),
            structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, channel_axis=2))


def _bicubic_row(result, image):
    return next(r for r in result.rows if r["model"] == "bicubic" and r["image"] == image)


@pytest.mark.parametrize(("scale", "channel"), [(2, "y"), (3, "rgb"), (4, "y")])
def test_bicubic_metrics_match_independent_computation(real_rgb, tmp_path, scale, channel):
    Image.fromarray(real_rgb).save(tmp_path / "landsat_HR.png")
    result = evaluate(EvalConfig(models=(), scale=scale, hr_dir=str(tmp_path), channel=channel))
    row = _bicubic_row(result, "landsat")

    h, w = real_rgb.shape[0] // scale * scale, real_rgb.shape[1] // scale * scale
    hr = real_rgb[:h, :w]
    lr = pil_bicubic(hr, (w // scale, h // scale))
    sr = pil_bicubic(lr, (w, h))
    psnr, ssim = independent_metrics(hr, sr, channel, scale)
    assert 15 < psnr < 40
    assert row["psnr_db"] == pytest.approx(psnr, abs=0.01)
    assert row["ssim"] == pytest.approx(ssim, abs=1e-3)


def test_provided_lr_images_are_used(real_rgb, tmp_path):
    hr = real_rgb[:160, :200]
    lr = hr[::2, ::2]  # a different degradation (decimation), so using it is visible
    Image.fromarray(hr).save(tmp_path / "img_HR.png")
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    Image.fromarray(lr).save(lr_dir / "img_LRx2.png")
    given = _bicubic_row(evaluate(EvalConfig(models=(), scale=2, hr_dir=str(tmp_path),
                                             lr_dir=str(lr_dir))), "img")
    psnr, ssim = independent_metrics(hr, pil_bicubic(lr, (200, 160)), "y", 2)
    assert given["psnr_db"] == pytest.approx(psnr, abs=0.01)
    made = _bicubic_row(evaluate(EvalConfig(models=(), scale=2, hr_dir=str(tmp_path))), "img")
    assert abs(made["psnr_db"] - given["psnr_db"]) > 0.1

    (lr_dir / "img_LRx2.png").unlink()
    with pytest.raises(InputError, match="no LR image for img"):
        evaluate(EvalConfig(models=(), scale=2, hr_dir=str(tmp_path), lr_dir=str(lr_dir)))


def test_models_and_scenes(real_rgb, repo_data, tmp_path):
    """A shipped model and bicubic on an image folder and on a scene (Wald protocol under each
    evaluation degradation, with the gain over bicubic); the shipped EDSR beats bicubic on the
    images and under every degradation of the scene."""
    from sr_core.imaging.degradations import EVALUATION

    Image.fromarray(real_rgb).save(tmp_path / "a_HR.png")
    scene = repo_data.path("S2A_29RKH_20200219_L2A_B04.tif")
    result = evaluate(EvalConfig(models=("edsr-x2",), scale=2, hr_dir=str(tmp_path),
                                 scenes=(str(scene),), window_px=256))
    summary = {(r["dataset"], r["model"]): r for r in result.summary}
    datasets = [tmp_path.name, *(f"scenes (Wald, {d})" for d in EVALUATION)]
    assert len(result.rows) == 2 * len(datasets) and len(summary) == 2 * len(datasets)
    for dataset in datasets:
        assert summary[(dataset, "edsr-x2")]["psnr_db"] > summary[(dataset, "bicubic")]["psnr_db"]
    for d in EVALUATION:
        row = summary[(f"scenes (Wald, {d})", "edsr-x2")]
        bic = summary[(f"scenes (Wald, {d})", "bicubic")]
        assert row["mean_gain_db"] == pytest.approx(row["psnr_db"] - bic["psnr_db"])
        assert row["beats_bicubic"] == 1
    md = to_markdown(result)
    assert md.count(f"| {scene.name} |") == len(EVALUATION)
    with pytest.raises(InputError, match="unknown degradation 'jpeg'"):
        evaluate(EvalConfig(models=(), scale=2, scenes=(str(scene),), degradations=("jpeg",)))


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_writes_markdown_and_csv(real_rgb, tmp_path, capsys):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    Image.fromarray(real_rgb[:100, :120]).save(hr_dir / "x_HR.png")
    Image.fromarray(real_rgb[60:160, 60:180]).save(hr_dir / "y_HR.png")
    out = tmp_path / "eval"
    code, stdout, stderr = _cli(capsys, "--scale", "2", "--hr", str(hr_dir), "--model",
                                "espcn-x2", "--out", str(out))
    assert code == 0, stderr
    assert "| hr | espcn-x2 | 2 |" in stdout
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert {(r["image"], r["model"]) for r in rows} == {
        ("x", "bicubic"), ("x", "espcn-x2"), ("y", "bicubic"), ("y", "espcn-x2")}
    assert all(float(r["psnr_db"]) > 15 for r in rows)
    assert "BT.601" in (out / "evaluation.md").read_text()

    code, _, err = _cli(capsys, "--scale", "2", "--hr", str(tmp_path / "absent"), "--out",
                        str(tmp_path / "o2"))
    assert code == 2 and err.count("\n") == 1
    assert "absent: HR folder not found" in err and not (tmp_path / "o2").exists()
    (hr_dir / "broken_HR.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = _cli(capsys, "--scale", "2", "--hr", str(hr_dir), "--out", str(tmp_path / "o3"))
    assert code == 2 and "broken_HR.png: not a readable image" in err
    assert not (tmp_path / "o3").exists()
