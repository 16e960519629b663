"""FSRCNN: a fast SRCNN working on the LR grid with a transposed-convolution upsampler."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px

#: kernel of the final transposed convolution (the paper's 9x9 deconvolution).
DECONV_KERNEL = 9


class FSRCNN(nn.Module):
    """FSRCNN (Dong, Loy, Tang, "Accelerating the Super-Resolution Convolutional Neural
    Network", ECCV 2016).

    On the LR grid: feature extraction ``conv5x5(d) -> PReLU``, shrinking ``conv1x1(s) ->
    PReLU``, ``m`` mapping layers ``conv3x3(s) -> PReLU``, expanding ``conv1x1(d) -> PReLU``;
    then a 9x9 transposed convolution of stride ``scale`` to the HR grid. Paper defaults:
    ``FSRCNN(d=56, s=12, m=4)``.

    Parameter names follow the widely used PyTorch port ``yjn870/FSRCNN-pytorch``
    (``first_part.0.weight``, ``first_part.1.weight`` (PReLU), ``mid_part.N.*``,
    ``last_part.weight``), whose released x2/x3/x4 weights (Y channel) load.

    Args:
        scale: integer upscaling factor >= 2.
        in_channels: input (and output) channels, >= 1 (the paper: 1, the Y channel).
        d: feature maps of extraction/expansion.
        s: feature maps of shrinking/mapping.
        m: mapping layers, >= 0.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 2, in_channels: int = 1, d: int = 56, s: int = 12,
                 m: int = 4) -> None:
        super().__init__()
        _check(scale, in_channels, d, s, m)
        self.scale = scale
        self.in_channels = in_channels
        self.first_part = nn.Sequential(nn.Conv2d(in_channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, in_channels, DECONV_KERNEL, stride=scale,
                                            padding=DECONV_KERNEL // 2,
                                            output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        return self.last_part(self.mid_part(self.first_part(x)))


def _check(scale, in_channels, d, s, m) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or not 2 <= scale <= 8:
        raise ModelError(f"fsrcnn: scale must be an integer 2..8, got {scale!r}")
    if in_channels < 1 or d < 1 or s < 1 or m < 0:
        raise ModelError(f"fsrcnn: bad in_channels={in_channels!r}, d={d!r}, s={s!r}, m={m!r}")


def describe_fsrcnn(name: str, *, scale: int = 2, in_channels: int = 1, d: int = 56,
                    s: int = 12, m: int = 4) -> ModelDescriptor:
    """Descriptor of :class:`FSRCNN`: ``2 + m`` LR px of convolutions plus the reach of the
    9x9 stride-``scale`` deconvolution (2 at x2 and x3, 1 at x4)."""
    _check(scale, in_channels, d, s, m)
    return ModelDescriptor(
        name=name, architecture="fsrcnn", scale=scale, in_channels=in_channels,
        out_channels=in_channels,
        receptive_field_px=receptive_field_px(
            [("conv", 2 + m), ("deconv", DECONV_KERNEL, scale, DECONV_KERNEL // 2)]),
    )
