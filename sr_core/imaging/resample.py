"""Bicubic resampling with the kernel super-resolution papers mean by "bicubic".

SR benchmark tables (Set5, Set14, ...) and the Wald-protocol degradation use MATLAB ``imresize``:
Keys' cubic convolution kernel with ``a = -0.5``, and, when downscaling, the kernel stretched by the
scale factor (antialiasing). Pillow's ``Image.resize(..., BICUBIC)`` uses the same kernel.
PyTorch's plain ``interpolate(mode="bicubic")`` uses ``a = -0.75`` and no antialiasing, which gives
a different (and on Set5 x4 about 0.2 dB stronger) baseline.

Measured (torch 2.15, Pillow 13, float ``'F'`` images, scales 2/3/4, up and down):
``torch.nn.functional.interpolate(x, mode="bicubic", antialias=True, align_corners=False)`` equals
Pillow to within 5e-6 on [0, 1] data, **borders included**, for both upsampling and downsampling,
while the plain (non-antialiased) call differs by 0.07-0.6. So this module uses the antialiased
PyTorch kernel; ``tests/test_models.py`` pins it against Pillow.

Border handling: Pillow and PyTorch truncate the kernel at the image edge and renormalise its
weights; MATLAB ``imresize`` mirrors the image instead. Pixels farther than ``2 * scale`` (down) or
2 LR pixels (up) from the border are identical to MATLAB's; the outermost ones differ slightly.

Reference: R. Keys, "Cubic convolution interpolation for digital image processing", IEEE
Transactions on Acoustics, Speech, and Signal Processing 29(6), 1981.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_core.errors import InputError

if TYPE_CHECKING:  # imported where tensors are made: a report process never needs torch
    import torch

__all__ = [
    "downsample_bands",
    "downsample_bicubic",
    "upsample_bands",
    "upsample_bands_pillow",
    "upsample_bicubic",
]


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale!r}")


def _check_tensor(x: torch.Tensor, scale: int) -> None:
    _check_scale(scale)
    if x.ndim != 4:
        raise InputError(f"expected a (N, C, h, w) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point tensor, got {x.dtype}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise InputError(f"empty image of shape {tuple(x.shape)}")


def upsample_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by an integer factor, Keys' kernel with ``a = -0.5`` (Pillow/MATLAB).

    Pixel-centre aligned (``align_corners=False``): HR pixel ``q`` samples LR coordinate
    ``(q + 0.5) / scale - 0.5``. Each output pixel depends on LR pixels at most 2 away
    (Chebyshev), so the receptive-field radius is 2 LR pixels.

    Args:
        x: ``(N, C, h, w)`` float32 or float64 tensor, any device; typically in [0, 1]. Values
            are not clipped: the kernel overshoots, so output may leave [0, 1] near edges.
        scale: integer factor >= 1.

    Returns:
        ``(N, C, h * scale, w * scale)`` tensor of ``x``'s dtype and device.

    Raises:
        InputError: ``x`` is not a 4-D floating-point tensor, is empty, or ``scale`` is not an
            integer >= 1.
    """
    import torch.nn.functional as F

    _check_tensor(x, scale)
    if scale == 1:
        return x.clone()
    h, w = x.shape[-2:]
    return F.interpolate(
        x, size=(h * scale, w * scale), mode="bicubic", antialias=True, align_corners=False
    )


def downsample_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by an integer factor (MATLAB ``imresize`` / Pillow).

    The kernel (``a = -0.5``) is stretched by ``scale``, so each LR pixel averages a
    ``4 * scale``-wide neighbourhood: the standard degradation for the Wald protocol and for
    making LR/HR training pairs.

    Args:
        x: ``(N, C, H, W)`` float32 or float64 tensor, any device; ``H`` and ``W`` multiples of
            ``scale`` (crop first), typically in [0, 1].
        scale: integer factor >= 1.

    Returns:
        ``(N, C, H // scale, W // scale)`` tensor of ``x``'s dtype and device.

    Raises:
        InputError: ``x`` is not a 4-D floating-point tensor, is empty, ``scale`` is not an
            integer >= 1, or ``H``/``W`` is not a multiple of ``scale`` (the pixel grids would
            not align).
    """
    _check_tensor(x, scale)
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise InputError(
            f"image of {h}x{w} px is not a multiple of scale {scale}; crop it to "
            f"{h - h % scale}x{w - w % scale} px before downsampling"
        )
    if scale == 1:
        return x.clone()
    import torch.nn.functional as F

    return F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
    )


def _check_bands(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise InputError(
            f"expected a (bands, h, w) array, got {getattr(x, 'shape', type(x).__name__)}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"expected a float array (normalised), got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _bands_to_tensor(x: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(_check_bands(x))[:, None]


def upsample_bands(x: np.ndarray, scale: int) -> np.ndarray:
    """NumPy form of :func:`upsample_bicubic`, band by band.

    Args:
        x: ``(bands, h, w)`` float array (cast to float32), normalised to [0, 1].
        scale: integer factor >= 1.

    Returns:
        ``(bands, h * scale, w * scale)`` float32.

    Raises:
        InputError: as :func:`upsample_bicubic`, or ``x`` is not a 3-D float array.
    """
    return upsample_bicubic(_bands_to_tensor(x), scale)[:, 0].numpy()


def upsample_bands_pillow(x: np.ndarray, scale: int) -> np.ndarray:
    """:func:`upsample_bands` through Pillow's ``Image.resize(..., BICUBIC)`` on float (``"F"``)
    images: the same kernel (Keys, ``a = -0.5``), equal to it within 1e-4 on [0, 1] data
    (``tests/test_models.py``), without importing torch. For display crops in reports, made in
    the process that plans a run, which does not load torch; model inputs and the Wald check use
    :func:`upsample_bands`.

    Args:
        x: ``(bands, h, w)`` float array (cast to float32), normalised to [0, 1].
        scale: integer factor >= 1.

    Returns:
        ``(bands, h * scale, w * scale)`` float32.

    Raises:
        InputError: ``x`` is not a 3-D float array, is empty, or ``scale`` is not an integer >= 1.
    """
    from PIL import Image

    x = _check_bands(x)
    _check_scale(scale)
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise InputError(f"empty image of shape {x.shape}")
    size_wh = (x.shape[2] * scale, x.shape[1] * scale)
    return np.stack([np.asarray(Image.fromarray(b).resize(
        size_wh, Image.Resampling.BICUBIC), dtype=np.float32) for b in x])


def downsample_bands(x: np.ndarray, scale: int) -> np.ndarray:
    """NumPy form of :func:`downsample_bicubic`, band by band.

    Args:
        x: ``(bands, H, W)`` float array (cast to float32), ``H`` and ``W`` multiples of
            ``scale``.
        scale: integer factor >= 1.

    Returns:
        ``(bands, H // scale, W // scale)`` float32.

    Raises:
        InputError: as :func:`downsample_bicubic`, or ``x`` is not a 3-D float array.
    """
    return downsample_bicubic(_bands_to_tensor(x), scale)[:, 0].numpy()
