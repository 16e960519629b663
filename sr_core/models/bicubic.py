"""Bicubic interpolation as a model: the baseline every SR result is compared with."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.imaging.resample import upsample_bicubic

# defined where the planning process can read them without importing torch
from sr_core.models.catalog import BICUBIC_RECEPTIVE_FIELD_PX, describe_bicubic  # noqa: F401


class Bicubic(nn.Module):
    """Bicubic upsampling (Keys' kernel, ``a = -0.5``, as MATLAB ``imresize`` and Pillow).

    No weights. It is the baseline of SR benchmark tables: R. Keys, "Cubic convolution
    interpolation for digital image processing", IEEE Trans. ASSP, 1981. See
    :mod:`sr_core.imaging.resample` for the kernel and border conventions (Pillow's renormalised
    border, not MATLAB's mirrored one).

    Args:
        scale: integer upscaling factor >= 2.
        in_channels: channels of the input; the module works on any number (each channel is
            interpolated alone), this only records what the descriptor says (1: band by band).

    Raises:
        ModelError: ``scale`` is not an integer >= 2 or ``in_channels`` < 1.
    """

    def __init__(self, *, scale: int = 2, in_channels: int = 1) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 2:
            raise ModelError(f"bicubic: scale must be an integer >= 2, got {scale!r}")
        if in_channels < 1:
            raise ModelError(f"bicubic: in_channels must be >= 1, got {in_channels!r}")
        self.scale = scale
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample.

        Args:
            x: ``(N, C, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, C, h * scale, w * scale)`` float32 (may overshoot [0, 1] slightly at edges).
        """
        return upsample_bicubic(x, self.scale)
