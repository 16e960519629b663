"""ESPCN: the efficient sub-pixel convolutional network."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor

#: conv 5x5 (radius 2) + conv 3x3 (1) + conv 3x3 (1), all on the LR grid; the pixel shuffle maps
#: each LR pixel to its own ``scale x scale`` HR block, so it adds nothing.
ESPCN_RECEPTIVE_FIELD_PX = 4


class ESPCN(nn.Module):
    """ESPCN (Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
    Sub-Pixel Convolutional Neural Network", CVPR 2016).

    ``conv5x5(64) -> tanh -> conv3x3(32) -> tanh -> conv3x3(C * scale**2) -> PixelShuffle(scale)``,
    the paper's ``l = 3, (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3`` configuration.
    Parameter names follow the widely used ``yjn870/ESPCN-pytorch`` implementation
    (``first_part.0.weight``, ``first_part.2.weight``, ``last_part.0.weight``).

    Departures from the paper: convolutions are zero-padded ("same") so the output is exactly
    ``scale`` times the input (the paper trains on unpadded patches); the paper's model takes the
    luminance channel only, here any ``in_channels`` (default 1: run band by band).

    Args:
        scale: integer upscaling factor >= 2.
        in_channels: input (and output) channels, >= 1.
        n_feats: feature maps of the first and second layers, ``(64, 32)`` in the paper.

    Raises:
        ModelError: ``scale`` < 2, ``in_channels`` < 1 or feature counts < 1.
    """

    def __init__(self, *, scale: int = 2, in_channels: int = 1,
                 n_feats: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 2:
            raise ModelError(f"espcn: scale must be an integer >= 2, got {scale!r}")
        if in_channels < 1 or len(n_feats) != 2 or min(n_feats) < 1:
            raise ModelError(f"espcn: bad in_channels={in_channels!r} or n_feats={n_feats!r}")
        f1, f2 = n_feats
        self.scale = scale
        self.in_channels = in_channels
        self.first_part = nn.Sequential(
            nn.Conv2d(in_channels, f1, kernel_size=5, padding=2),
            nn.Tanh(),
            nn.Conv2d(f1, f2, kernel_size=3, padding=1),
            nn.Tanh(),
        )
        self.last_part = nn.Sequential(
            nn.Conv2d(f2, in_channels * scale**2, kernel_size=3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        return self.last_part(self.first_part(x))


def describe_espcn(name: str, *, scale: int = 2, in_channels: int = 1,
                   n_feats: tuple[int, int] = (64, 32)) -> ModelDescriptor:
    """Descriptor of :class:`ESPCN` built with these arguments (``receptive_field_px == 4``)."""
    return ModelDescriptor(
        name=name, architecture="espcn", scale=scale, in_channels=in_channels,
        out_channels=in_channels, receptive_field_px=ESPCN_RECEPTIVE_FIELD_PX,
    )
