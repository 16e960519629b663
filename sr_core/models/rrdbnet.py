"""RRDBNet: the ESRGAN generator (residual-in-residual dense blocks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px

#: 3x3 convolutions per RRDB: 3 residual dense blocks of 5 convs each.
_CONVS_PER_RRDB = 15


class _ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (LReLU 0.2), output scaled by 0.2 plus skip."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, output scaled by 0.2 plus skip."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = _ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = _ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = _ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """RRDBNet, the ESRGAN generator (Wang, Yu, Wu, Gu, Liu, Dong, Qiao, Loy, "ESRGAN: Enhanced
    Super-Resolution Generative Adversarial Networks", ECCV Workshops 2018).

    ``conv_first``; ``num_block`` RRDBs; ``conv_body`` + skip; two ``nearest x2 -> conv ->
    LReLU(0.2)`` stages; ``conv_hr -> LReLU -> conv_last``. The network always upsamples x4
    internally; for x2 the input is first ``pixel_unshuffle``-d by 2 (as Real-ESRGAN x2), so
    its height and width must be even (``size_multiple`` 2). Paper defaults: 23 RRDBs, 64 maps,
    growth 32, RGB.

    Parameter names are BasicSR's (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``,
    ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so BasicSR's and Real-ESRGAN's
    released RRDB weights load (the original ESRGAN repository's ``RRDB_ESRGAN_x4.pth`` uses
    older names; convert it with BasicSR, or load it through spandrel).

    Args:
        scale: 2 or 4.
        in_channels: input (and output) channels, >= 1.
        num_feat: feature maps, >= 1.
        num_block: RRDBs, >= 0.
        num_grow_ch: growth channels of the dense blocks, >= 1.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 4, in_channels: int = 3, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        _check(scale, in_channels, num_feat, num_block, num_grow_ch)
        self.scale = scale
        self.in_channels = in_channels
        unshuffle = 4 // scale
        self.conv_first = nn.Conv2d(in_channels * unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, in_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1]; ``h``, ``w`` even for x2.

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        feat = F.pixel_unshuffle(x, 2) if self.scale == 2 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _check(scale, in_channels, num_feat, num_block, num_grow_ch) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale not in (2, 4):
        raise ModelError(f"rrdbnet: scale must be 2 or 4, got {scale!r}")
    if in_channels < 1 or num_feat < 1 or num_block < 0 or num_grow_ch < 1:
        raise ModelError(f"rrdbnet: bad in_channels={in_channels!r}, num_feat={num_feat!r}, "
                         f"num_block={num_block!r} or num_grow_ch={num_grow_ch!r}")


def describe_rrdbnet(name: str, *, scale: int = 4, in_channels: int = 3, num_feat: int = 64,
                     num_block: int = 23, num_grow_ch: int = 32) -> ModelDescriptor:
    """Descriptor of :class:`RRDBNet`: ``2 + 15 num_block`` convs before upsampling, one conv
    after each x2 nearest stage, two more on the HR grid; size multiple 2 at x2 (pixel
    unshuffle)."""
    _check(scale, in_channels, num_feat, num_block, num_grow_ch)
    ops: list = [("down", 2)] if scale == 2 else []
    ops += [("conv", 2 + _CONVS_PER_RRDB * num_block), ("up", 2), ("conv", 1), ("up", 2),
            ("conv", 3)]
    return ModelDescriptor(
        name=name, architecture="rrdbnet", scale=scale, in_channels=in_channels,
        out_channels=in_channels, size_multiple=2 if scale == 2 else 1,
        receptive_field_px=receptive_field_px(ops),
    )
