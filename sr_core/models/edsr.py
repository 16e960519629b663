"""EDSR: enhanced deep residual network, laid out like the authors' reference code."""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.imaging.resample import downsample_bicubic, upsample_bicubic
from sr_core.models.bicubic import BICUBIC_RECEPTIVE_FIELD_PX
from sr_core.models.descriptor import ModelDescriptor

#: Mean of DIV2K's RGB channels on [0, 1], used by the reference code's ``MeanShift``.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
          ) -> nn.Conv2d:
    """The reference's ``default_conv``: zero-padded "same" convolution (with bias unless
    ``bias=False``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def local_detail(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 3 x 3 local mean (replicate padding): zero for a constant image and
    unchanged by adding one, so a network fed it ignores the intensity offset. Reaches 1 px.

    Args:
        x: ``(N, C, H, W)`` float tensor, any units and device.

    Returns:
        A tensor of ``x``'s shape, dtype and units.
    """
    mean = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3,
                                    stride=1)
    return x - mean


class MeanShift(nn.Conv2d):
    """Fixed 1x1 convolution adding ``sign * rgb_range * mean`` per channel (reference code).

    A ``Conv2d`` (not a buffer) so its ``weight``/``bias`` keys match published checkpoints; its
    parameters do not train.
    """

    def __init__(self, rgb_range: float, rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
                 sign: int = -1) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            assert self.bias is not None  # a Conv2d built with its default bias=True
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean))
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))``, no batch norm (keys ``body.0``, ``body.2``)."""

    def __init__(self, n_feats: int, res_scale: float, bias: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats, bias=bias), nn.ReLU(True),
                                  _conv(n_feats, n_feats, bias=bias))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: ``(conv -> PixelShuffle(2)) * log2(scale)``, or ``conv ->
    PixelShuffle(3)`` for x3 (reference code; keys ``0.weight``, ``2.weight``, ...)."""

    def __init__(self, scale: int, n_feats: int, bias: bool = True) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [_conv(n_feats, 4 * n_feats, bias=bias), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [_conv(n_feats, 9 * n_feats, bias=bias), nn.PixelShuffle(3)]
        else:
            raise ModelError(f"edsr: scale must be 2, 3, 4 or 8, got {scale!r}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR (Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image
    Super-Resolution", CVPR Workshops (NTIRE) 2017).

    ``head conv -> n_resblocks x ResBlock(conv-ReLU-conv, no batch norm, * res_scale) -> conv``,
    a global skip around the body, then ``Upsampler`` (sub-pixel convolution) and a tail conv.
    The defaults are the paper's EDSR-baseline (16 blocks, 64 features, ``res_scale=1``); the
    large EDSR is ``n_resblocks=32, n_feats=256, res_scale=0.1``.

    Parameter names are those of the authors' reference implementation
    (``sanghyun-son/EDSR-PyTorch``: ``head.0.weight``, ``body.N.body.0.weight``,
    ``body.<n_resblocks>.weight``, ``tail.0.0.weight``, ``tail.1.weight``, ``sub_mean.weight``,
    ...), so its published checkpoints load.

    Value range: the model takes and returns [0, 1]. Internally the input is multiplied by
    ``rgb_range`` and the output divided by it, as the reference code feeds [0, ``rgb_range``]
    data (255 for its checkpoints). For 3-channel models the reference's RGB ``MeanShift`` is
    applied (subtract the DIV2K mean before the head, add it back after the tail); for any other
    channel count it is absent (its statistics are RGB-specific).

    Departures from the paper:
        * ``bicubic_residual=True`` (default False) adds the bicubic-upsampled input
          (:func:`sr_core.imaging.resample.upsample_bicubic`) to the output, a VDSR-style global
          residual (Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
          Networks", CVPR 2016): the network learns only the detail bicubic misses. The tail
          conv is then zero-initialised, so an untrained model returns exactly bicubic, and the
          RGB mean is not added back (the bicubic image already carries it).
        * any ``in_channels`` (the paper is RGB); 1 means the pipeline runs it band by band.
        * ``equivariant=True`` (default False; needs ``bicubic_residual``) makes the model
          equivariant to the intensity scale and offset, ``f(a x + b) = a f(x) + b`` for
          ``a > 0``: every convolution is bias-free and the head is fed the input minus its
          3 x 3 local mean (:func:`local_detail`), so with ReLU (positively homogeneous) the
          learned residual scales with the local contrast and is exactly zero on a constant
          (bias-free CNNs: Mohan, Kadkhodaie, Simoncelli & Fernandez-Granda, "Robust and
          Interpretable Blind Image Denoising via Bias-Free Convolutional Neural Networks",
          ICLR 2020). A smooth DEM spanning 1,400 m and a textured uint8 photo then look alike
          to the network, where a biased one adds a residual whose absolute error floor exceeds
          a DEM's sub-metre detail. Adds 1 LR px to the receptive field.
        * ``detail_only=True`` (default False; needs ``bicubic_residual``) removes from the
          learned residual ``r`` what the LR image already shows: ``r - U(D(r))`` with ``D`` /
          ``U`` the antialiased bicubic down- / upsampling by the scale, a high-pass that leaves
          the low frequencies to bicubic interpolation (in the spirit of back-projection, Irani
          & Peleg 1991, and SEN2SR's low-frequency constraint, Aybar et al., RSE 2026). A blind
          model otherwise shifts a smooth DEM's low frequencies by more than bicubic's whole
          error (0.5 m on a 1,400 m range). Adds 3 (x2, x3) or 4 (x4, x8) LR px to the receptive
          field.

    Args:
        scale: upscaling factor: 2, 3, 4 or 8 (the reference's power-of-two or x3 upsamplers).
        in_channels: input (and output) channels, >= 1.
        n_resblocks: residual blocks, >= 0.
        n_feats: feature maps, >= 1.
        res_scale: residual scaling inside each block.
        rgb_range: the range the network works in internally (see above), > 0.
        bicubic_residual: add the bicubic upsampled input to the output (see above).
        equivariant: intensity scale- and offset-equivariant variant (see above).
        detail_only: high-pass the learned residual (see above).

    Raises:
        ModelError: an argument is out of range or the scale has no upsampler.
    """

    def __init__(self, *, scale: int = 2, in_channels: int = 3, n_resblocks: int = 16,
                 n_feats: int = 64, res_scale: float = 1.0, rgb_range: float = 255.0,
                 bicubic_residual: bool = False, equivariant: bool = False,
                 detail_only: bool = False) -> None:
        super().__init__()
        if detail_only and not bicubic_residual:
            raise ModelError("edsr: detail_only=True needs bicubic_residual=True")
        if equivariant and not bicubic_residual:
            raise ModelError("edsr: equivariant=True needs bicubic_residual=True (the bicubic "
                             "path carries the intensity offset)")
        if not isinstance(scale, int) or scale not in (2, 3, 4, 8):
            raise ModelError(f"edsr: scale must be 2, 3, 4 or 8, got {scale!r}")
        if in_channels < 1 or n_resblocks < 0 or n_feats < 1 or not rgb_range > 0:
            raise ModelError(
                f"edsr: bad arguments in_channels={in_channels!r} n_resblocks={n_resblocks!r} "
                f"n_feats={n_feats!r} rgb_range={rgb_range!r}"
            )
        self.scale = scale
        self.in_channels = in_channels
        self.rgb_range = float(rgb_range)
        self.bicubic_residual = bool(bicubic_residual)
        self.equivariant = bool(equivariant)
        self.detail_only = bool(detail_only)
        bias = not self.equivariant
        self.mean_shift = in_channels == 3 and not self.equivariant
        if self.mean_shift:
            self.sub_mean = MeanShift(self.rgb_range, sign=-1)
            self.add_mean = MeanShift(self.rgb_range, sign=1)
        self.head = nn.Sequential(_conv(in_channels, n_feats, bias=bias))
        self.body = nn.Sequential(
            *(ResBlock(n_feats, res_scale, bias) for _ in range(n_resblocks)),
            _conv(n_feats, n_feats, bias=bias)
        )
        last = _conv(n_feats, in_channels, bias=bias)
        self.tail = nn.Sequential(Upsampler(scale, n_feats, bias), last)
        if self.bicubic_residual:
            nn.init.zeros_(last.weight)
            if last.bias is not None:  # bias=True
                nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        h = (local_detail(x) if self.equivariant else x) * self.rgb_range
        if self.mean_shift:
            h = self.sub_mean(h)
        h = self.head(h)
        h = self.tail(self.body(h) + h)
        if self.bicubic_residual:
            r = h / self.rgb_range
            if self.detail_only:
                # in the input's precision: under bf16 autocast the convolutions give bf16, for
                # which antialiased interpolation has no CPU kernel (and fp32 is exact enough)
                r = r.to(x.dtype)
                r = r - upsample_bicubic(downsample_bicubic(r, self.scale), self.scale)
            return r + upsample_bicubic(x, self.scale)
        if self.mean_shift:
            h = self.add_mean(h)
        return h / self.rgb_range


#: extra reach (LR px) of ``r - U(D(r))`` by scale (antialiased bicubic down, then up), measured
#: by perturbing single pixels (:func:`sr_core.models.probe.probe_receptive_field`; tests hold it)
DETAIL_ONLY_REACH_PX = {2: 3, 3: 3, 4: 4, 8: 4}


def _upsampler_tail_reach_px(scale: int) -> int:
    """How far (LR px, Chebyshev) the upsampler and tail convs reach, found by walking the layers.

    Walks back from every HR phase ``q in [0, scale)`` through ``tail conv (radius 1 on the HR
    grid) -> [PixelShuffle(f) <- conv radius 1] per upsampler stage`` and returns the largest
    distance of the LR interval reached from LR pixel 0 (the one containing ``q``).
    """
    stages = [2] * int(math.log2(scale)) if scale & (scale - 1) == 0 else [scale]
    reach = 0
    for q in range(scale):
        lo, hi = q - 1, q + 1  # tail conv on the HR grid
        for f in reversed(stages):
            lo, hi = lo // f, hi // f  # pixel shuffle: fine grid -> coarser grid
            lo, hi = lo - 1, hi + 1  # the upsampler conv before it
        reach = max(reach, -lo, hi)
    return reach


def edsr_receptive_field_px(*, scale: int, n_resblocks: int, bicubic_residual: bool,
                            equivariant: bool = False, detail_only: bool = False) -> int:
    """Receptive-field radius of :class:`EDSR` on the LR grid, in LR pixels.

    ``1`` (head) ``+ 2 * n_resblocks`` (two 3x3 convs per block) ``+ 1`` (body-end conv)
    ``+`` the upsampler and tail (2 for x2, x3, x4 and x8), ``+ 1`` for the equivariant variant's
    local mean, ``+`` :data:`DETAIL_ONLY_REACH_PX` for the high-passed residual, at least 2 with
    the bicubic residual.
    """
    r = 1 + 2 * n_resblocks + 1 + _upsampler_tail_reach_px(scale) + int(equivariant) \
        + (DETAIL_ONLY_REACH_PX[scale] if detail_only else 0)
    return max(r, BICUBIC_RECEPTIVE_FIELD_PX) if bicubic_residual else r


def describe_edsr(name: str, *, scale: int = 2, in_channels: int = 3, n_resblocks: int = 16,
                  n_feats: int = 64, res_scale: float = 1.0, rgb_range: float = 255.0,
                  bicubic_residual: bool = False, equivariant: bool = False,
                  detail_only: bool = False) -> ModelDescriptor:
    """Descriptor of :class:`EDSR` built with these arguments.

    Returns:
        A descriptor with ``receptive_field_px = 2 * n_resblocks + 4`` (``+ 5`` when
        ``equivariant``) and ``size_multiple 1``.
    """
    return ModelDescriptor(
        name=name, architecture="edsr", scale=scale, in_channels=in_channels,
        out_channels=in_channels,
        receptive_field_px=edsr_receptive_field_px(
            scale=scale, n_resblocks=n_resblocks, bicubic_residual=bicubic_residual,
            equivariant=equivariant, detail_only=detail_only),
    )
