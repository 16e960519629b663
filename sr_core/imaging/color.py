"""ITU-R BT.601 YCbCr ("studio swing", as MATLAB ``rgb2ycbcr``), the colour space of the SR
literature's Y-channel models and PSNR-Y.

For ``R, G, B`` in [0, 1]:

* ``Y  = 16  + 65.481 R + 128.553 G +  24.966 B`` (in [16, 235])
* ``Cb = 128 - 37.797 R -  74.203 G + 112.0   B`` (in [16, 240])
* ``Cr = 128 + 112.0  R -  93.786 G -  18.214 B`` (in [16, 240])

on the 0..255 scale. Reference: ITU-R Recommendation BT.601-7 (2011), Section 2.5.
"""

from __future__ import annotations

import numpy as np

#: rows: Y, Cb, Cr coefficients of R, G, B in [0, 1], giving 0..255 values.
BT601_MATRIX = np.array([[65.481, 128.553, 24.966],
                         [-37.797, -74.203, 112.0],
                         [112.0, -93.786, -18.214]])
BT601_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_ycbcr(x: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` RGB in [0, 1] -> ``(3, H, W)`` float64 YCbCr divided by 255 (Y in
    [16/255, 235/255])."""
    y = np.tensordot(BT601_MATRIX, x.astype(np.float64), axes=1) + BT601_OFFSET[:, None, None]
    return y / 255.0


def ycbcr_to_rgb(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: ``(3, H, W)`` YCbCr / 255 -> float64 RGB (not clipped)."""
    inv = np.linalg.inv(BT601_MATRIX)
    return np.tensordot(inv, y.astype(np.float64) * 255.0 - BT601_OFFSET[:, None, None], axes=1)


def luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0..255 scale (not rounded).

    Args:
        x: ``(3, H, W)`` RGB or ``(1, H, W)`` grey, in [0, 1].

    Returns:
        ``(H, W)`` float64: ``16 + 65.481 R + 128.553 G + 24.966 B`` for RGB; ``255 x`` for grey.

    Raises:
        ValueError: neither 1 nor 3 channels.
    """
    if x.shape[0] == 1:
        return x[0].astype(np.float64) * 255.0
    if x.shape[0] != 3:
        raise ValueError(f"luma needs 1 or 3 bands, got {x.shape[0]}")
    return rgb_to_ycbcr(x)[0] * 255.0
