"""VDSR: a very deep network learning the residual over bicubic, on the upsampled grid."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.imaging.resample import upsample_bicubic
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px


class _ConvReLU(nn.Module):
    """``relu(conv3x3(x))`` without bias (the reference's ``Conv_ReLU_Block``, key ``conv``)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_feats, n_feats, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class VDSR(nn.Module):
    """VDSR (Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
    Networks", CVPR 2016).

    The LR image is upsampled by bicubic interpolation (Keys, ``a = -0.5``); ``depth`` 3x3
    convolutions (``n_feats`` maps, ReLU between them, zero padding, no bias) predict the
    residual, which is added to the bicubic image (global residual learning). Paper defaults:
    20 layers of 64 filters, one channel (Y).

    Parameter names follow the widely used PyTorch port ``twtygqyy/pytorch-vdsr``
    (``input.weight``, ``residual_layer.N.conv.weight``, ``output.weight``).

    Departure from the paper: the network takes the LR image and upsamples it itself.

    Args:
        scale: integer upscaling factor >= 2 (the paper trains one network for x2, x3 and x4;
            a model here is described for one).
        in_channels: input (and output) channels, >= 1 (the paper: 1, the Y channel).
        depth: convolutional layers, >= 2 (20 in the paper).
        n_feats: feature maps, >= 1.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 2, in_channels: int = 1, depth: int = 20,
                 n_feats: int = 64) -> None:
        super().__init__()
        _check(scale, in_channels, depth, n_feats)
        self.scale = scale
        self.in_channels = in_channels
        self.input = nn.Conv2d(in_channels, n_feats, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*(_ConvReLU(n_feats) for _ in range(depth - 2)))
        self.output = nn.Conv2d(n_feats, in_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1] (LR).

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        up = upsample_bicubic(x, self.scale)
        h = self.relu(self.input(up))
        return self.output(self.residual_layer(h)) + up


def _check(scale, in_channels, depth, n_feats) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ModelError(f"vdsr: scale must be an integer >= 2, got {scale!r}")
    if in_channels < 1 or depth < 2 or n_feats < 1:
        raise ModelError(f"vdsr: bad in_channels={in_channels!r}, depth={depth!r} or "
                         f"n_feats={n_feats!r}")


def describe_vdsr(name: str, *, scale: int = 2, in_channels: int = 1, depth: int = 20,
                  n_feats: int = 64) -> ModelDescriptor:
    """Descriptor of :class:`VDSR`: ``depth`` HR px of convolutions carried back through the
    bicubic upsampling to the LR grid (12 LR px for the paper's 20 layers at x2)."""
    _check(scale, in_channels, depth, n_feats)
    return ModelDescriptor(
        name=name, architecture="vdsr", scale=scale, in_channels=in_channels,
        out_channels=in_channels, input_grid="hr",
        receptive_field_px=receptive_field_px([("bicubic", scale), ("conv", depth)]),
    )
