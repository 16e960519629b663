"""IMDN: the information multi-distillation network (lightweight SR)."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px

#: the reference's activation: LeakyReLU with slope 0.05.
_LRELU_SLOPE = 0.05


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


def _stdv_channels(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).pow(0.5)


class _CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(MLP(std(x) + mean(x)))``, statistics
    over the whole image."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(_stdv_channels(x) + self.avg_pool(x))


class _IMDModule(nn.Module):
    """Information multi-distillation block: four 3x3 convs, each keeping a quarter of its maps
    (distillation), the rest going on; CCA over the concatenation; 1x1 fusion; skip."""

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled_channels = int(channels * distillation_rate)
        self.remaining_channels = channels - self.distilled_channels
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.remaining_channels, channels, 3)
        self.c3 = _conv(self.remaining_channels, channels, 3)
        self.c4 = _conv(self.remaining_channels, self.distilled_channels, 3)
        self.act = nn.LeakyReLU(_LRELU_SLOPE, inplace=True)
        self.c5 = _conv(self.distilled_channels * 4, channels, 1)
        self.cca = _CCALayer(self.distilled_channels * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = [self.distilled_channels, self.remaining_channels]
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        return self.c5(self.cca(out)) + x


class IMDN(nn.Module):
    """IMDN (Hui, Gao, Yang, Wang, "Lightweight Image Super-Resolution with Information
    Multi-distillation Network", ACM Multimedia 2019).

    ``conv3x3(nf)``; ``num_modules`` information multi-distillation blocks (IMDB); a 1x1
    ``conv -> LReLU(0.05)`` fusing all block outputs; ``conv3x3`` + skip from the first conv;
    ``conv3x3(C * scale^2) -> PixelShuffle(scale)``. Paper defaults: 6 blocks of 64 maps, RGB.

    Parameter names are those of the authors' code (``Zheng222/IMDN``: ``fea_conv``,
    ``IMDB1.c1``, ``IMDB1.cca.conv_du.0``, ``c.0``, ``LR_conv``, ``upsampler.0``), so its
    released x2/x3/x4 weights load.

    **Global context.** The contrast-aware channel attention takes the mean and standard
    deviation of each feature map over the whole image, so every output pixel depends on every
    input pixel. The descriptor says ``global_context=True``: the pipeline runs the scene as one
    tile while it fits the whole-scene memory budget, and beyond it tiles with the largest
    affordable halo, the measured deviation in the report (:mod:`sr_core.compute.halo`);
    ``receptive_field_px`` gives the convolutions' reach only.

    Args:
        scale: integer upscaling factor >= 2.
        in_channels: input (and output) channels, >= 1.
        nf: feature maps, a multiple of 4 and >= 16 (the attention reduces by 16).
        num_modules: IMD blocks, >= 1.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 4, in_channels: int = 3, nf: int = 64,
                 num_modules: int = 6) -> None:
        super().__init__()
        _check(scale, in_channels, nf, num_modules)
        self.scale = scale
        self.in_channels = in_channels
        self.num_modules = num_modules
        self.fea_conv = _conv(in_channels, nf, 3)
        for i in range(1, num_modules + 1):
            setattr(self, f"IMDB{i}", _IMDModule(nf))
        self.c = nn.Sequential(_conv(nf * num_modules, nf, 1),
                               nn.LeakyReLU(_LRELU_SLOPE, inplace=True))
        self.LR_conv = _conv(nf, nf, 3)
        self.upsampler = nn.Sequential(_conv(nf, in_channels * scale**2, 3),
                                       nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        fea = self.fea_conv(x)
        outs, h = [], fea
        for i in range(1, self.num_modules + 1):
            h = getattr(self, f"IMDB{i}")(h)
            outs.append(h)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr)


def _check(scale, in_channels, nf, num_modules) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ModelError(f"imdn: scale must be an integer >= 2, got {scale!r}")
    if in_channels < 1 or nf < 16 or nf % 4 or num_modules < 1:
        raise ModelError(f"imdn: bad in_channels={in_channels!r}, nf={nf!r} (multiple of 4, "
                         f">= 16) or num_modules={num_modules!r}")


def describe_imdn(name: str, *, scale: int = 4, in_channels: int = 3, nf: int = 64,
                  num_modules: int = 6) -> ModelDescriptor:
    """Descriptor of :class:`IMDN`: ``tileable=False`` (global channel attention); the
    convolutions alone reach ``1 + 4 num_modules + 1`` LR px plus the upsampler conv."""
    _check(scale, in_channels, nf, num_modules)
    return ModelDescriptor(
        name=name, architecture="imdn", scale=scale, in_channels=in_channels,
        out_channels=in_channels, tileable=False, global_context=True,
        receptive_field_px=receptive_field_px(
            [("conv", 1 + 4 * num_modules + 1 + 1), ("up", scale)]),
    )
