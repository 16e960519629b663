"""Benchmark image sets (Set5, Set14, BSD100, Urban100, DIV2K valid layouts): HR/LR pairs found
in folders, LR images made as the benchmark sets were made, and PSNR / SSIM with the SR
literature's conventions (stated in :mod:`sr_core.training.evaluate`, which uses these).

May import :mod:`sr_core.errors` and :mod:`sr_core.imaging`; nothing above.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sr_core.errors import InputError
from sr_core.imaging.color import luma
from sr_core.imaging.resample import downsample_bicubic

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def rgb_to_y(x: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0..255 scale (:func:`sr_core.imaging.color.luma`).

    Raises:
        InputError: neither 1 nor 3 channels.
    """
    try:
        return luma(x)
    except ValueError:
        raise InputError(f"Y channel needs 1 or 3 bands, got {x.shape[0]}; use channel='rgb'"
                         ) from None


def image_metrics(hr: np.ndarray, sr: np.ndarray, *, channel: str, border_px: int
                  ) -> dict[str, float]:
    """PSNR and SSIM of an SR image against its HR reference (conventions in
    :mod:`sr_core.training.evaluate`'s docstring).

    Args:
        hr, sr: ``(C, H, W)`` float arrays in [0, 1] (``sr`` already quantised), same shape.
        channel: ``"y"`` or ``"rgb"``.
        border_px: pixels cropped from each side.

    Returns:
        ``{"psnr_db", "ssim"}``.

    Raises:
        InputError: shapes differ, or the image is too small after the crop (7 px for SSIM).
    """
    if hr.shape != sr.shape:
        raise InputError(f"HR {hr.shape} and SR {sr.shape} differ in shape")
    b = border_px
    if b:
        hr, sr = hr[:, b:-b, b:-b], sr[:, b:-b, b:-b]
    if min(hr.shape[1:]) < 7:
        raise InputError(f"image of {hr.shape[1:]} px after a {b} px border crop is too small")
    if channel == "y":
        a, t = rgb_to_y(hr)[None], rgb_to_y(sr)[None]
    else:
        a, t = hr.astype(np.float64) * 255.0, sr.astype(np.float64) * 255.0
    mse = float(np.mean((a - t) ** 2))
    psnr = math.inf if mse == 0 else float(peak_signal_noise_ratio(a, t, data_range=255.0))
    ssim = float(np.mean([
        structural_similarity(a[c], t[c], data_range=255.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for c in range(a.shape[0])]))
    return {"psnr_db": psnr, "ssim": ssim}


def read_image(path: Path) -> np.ndarray:
    """``(C, H, W)`` float32 in [0, 1] from an 8-bit image (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            im: Image.Image = opened
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "LA") else "L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: expected an 8-bit image, got {arr.dtype}")
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr.astype(np.float32) / 255.0


_HR = re.compile(r"^(?P<stem>.+?)_HR(_x\d+)?$", re.IGNORECASE)
_LR = re.compile(r"^(?P<stem>.+?)_LR\w*$", re.IGNORECASE)


def find_pairs(hr_dir: str | Path, lr_dir: str | Path | None = None
               ) -> list[tuple[str, Path, Path | None]]:
    """``(name, HR path, LR path or None)`` for each HR image of a folder.

    Raises:
        InputError: the folder is missing or holds no image.
    """
    hr_dir = Path(hr_dir)
    if not hr_dir.is_dir():
        raise InputError(f"{hr_dir}: HR folder not found")
    files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    hr = [(m.group("stem"), p) for p in files if (m := _HR.match(p.stem))]
    if not hr:  # no suffixes: every image that is not an LR one is HR
        hr = [(p.stem, p) for p in files if not _LR.match(p.stem)]
    if not hr:
        raise InputError(f"{hr_dir}: no HR images (*.png, *.tif, ...) found")
    lr_folder = Path(lr_dir) if lr_dir else hr_dir
    if lr_dir and not lr_folder.is_dir():
        raise InputError(f"{lr_folder}: LR folder not found")
    lr_files: dict[str, Path] = {}
    for p in sorted(lr_folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = _LR.match(p.stem)
        if m:
            lr_files.setdefault(m.group("stem"), p)
        elif lr_dir and not _HR.match(p.stem):
            lr_files.setdefault(p.stem, p)
    pairs = [(stem, p, lr_files.get(stem)) for stem, p in hr]
    if lr_dir:
        missing = [stem for stem, _, lr in pairs if lr is None]
        if missing:
            raise InputError(f"{lr_folder}: no LR image for {missing[0]} "
                             f"({len(missing)} of {len(pairs)} missing)")
    return pairs


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop HR to a multiple of the scale and degrade it: ``(hr_cropped, lr)``, LR rounded to
    8 bits (bicubic, antialiased: MATLAB ``imresize``)."""
    h, w = hr.shape[1] // scale * scale, hr.shape[2] // scale * scale
    hr = hr[:, :h, :w]
    lr = downsample_bicubic(torch.from_numpy(np.ascontiguousarray(hr))[None], scale)[0].numpy()
    return hr, quantise(lr)


def quantise(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to 8 bits (as saving a PNG does), float32 in [0, 1]."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0
