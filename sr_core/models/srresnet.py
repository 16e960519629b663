"""SRResNet and the SRGAN discriminator (Ledig et al. 2017), and BasicSR's modified SRResNet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px


def _check_scale(arch: str, scale: object, allowed: tuple[int, ...]) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale not in allowed:
        raise ModelError(f"{arch}: scale must be one of {', '.join(map(str, allowed))}, "
                         f"got {scale!r}")


class _ResidualBlockBN(nn.Module):
    """``x + BN(conv(PReLU(BN(conv(x)))))``: the paper's residual block (3x3, 64 maps)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(n_feats)
        self.act = nn.PReLU(n_feats)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """SRResNet, the SRGAN generator (Ledig et al., "Photo-Realistic Single Image
    Super-Resolution Using a Generative Adversarial Network", CVPR 2017), as in the paper's
    Figure 4.

    ``conv9x9(64) -> PReLU``; ``n_blocks`` residual blocks ``conv3x3 -> BN -> PReLU -> conv3x3
    -> BN`` (+ skip); ``conv3x3 -> BN`` with a skip from the first layer's output;
    ``log2(scale)`` sub-pixel stages ``conv3x3(256) -> PixelShuffle(2) -> PReLU``; ``conv9x9(C)``.
    Paper defaults: x4, 16 blocks, 64 maps, RGB.

    Batch norm runs in inference mode (its running statistics) when the model is in eval mode,
    so it is a per-channel affine map and tiles like a convolution. The authors released no
    code; parameter names follow BasicSR's conventions (``conv_first``, ``body.N.conv1``,
    ``conv_after_body``, ``upsample.N.0``, ``conv_last``). For BasicSR's released
    ``MSRResNet`` weights (no batch norm), see :class:`MSRResNet`.

    Value range: [0, 1] in and out (the paper scales the output to [-1, 1] with a tanh-free
    linear layer; here the training data is [0, 1]).

    Args:
        scale: 2, 4 or 8 (power-of-two sub-pixel stages).
        in_channels: input (and output) channels, >= 1.
        n_blocks: residual blocks, >= 0.
        n_feats: feature maps, >= 1.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 4, in_channels: int = 3, n_blocks: int = 16,
                 n_feats: int = 64) -> None:
        super().__init__()
        _check_srresnet(scale, in_channels, n_blocks, n_feats)
        self.scale = scale
        self.in_channels = in_channels
        self.conv_first = nn.Conv2d(in_channels, n_feats, 9, padding=4)
        self.act_first = nn.PReLU(n_feats)
        self.body = nn.Sequential(*(_ResidualBlockBN(n_feats) for _ in range(n_blocks)))
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.bn_after_body = nn.BatchNorm2d(n_feats)
        self.upsample = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2),
                          nn.PReLU(n_feats))
            for _ in range(int(math.log2(scale)))))
        self.conv_last = nn.Conv2d(n_feats, in_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1].

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        feat = self.act_first(self.conv_first(x))
        feat = feat + self.bn_after_body(self.conv_after_body(self.body(feat)))
        return self.conv_last(self.upsample(feat))


def _check_srresnet(scale, in_channels, n_blocks, n_feats) -> None:
    _check_scale("srresnet", scale, (2, 4, 8))
    if in_channels < 1 or n_blocks < 0 or n_feats < 1:
        raise ModelError(f"srresnet: bad in_channels={in_channels!r}, n_blocks={n_blocks!r} or "
                         f"n_feats={n_feats!r}")


def describe_srresnet(name: str, *, scale: int = 4, in_channels: int = 3, n_blocks: int = 16,
                      n_feats: int = 64) -> ModelDescriptor:
    """Descriptor of :class:`SRResNet`: ``4 + 2 n_blocks + 1`` LR px, then per x2 stage a 3x3
    conv, then the 9x9 output conv on the HR grid."""
    _check_srresnet(scale, in_channels, n_blocks, n_feats)
    ops: list = [("conv", 4 + 2 * n_blocks + 1)]
    for _ in range(int(math.log2(scale))):
        ops += [("conv", 1), ("up", 2)]
    ops.append(("conv", 4))
    return ModelDescriptor(name=name, architecture="srresnet", scale=scale,
                           in_channels=in_channels, out_channels=in_channels,
                           receptive_field_px=receptive_field_px(ops))


class _ResidualBlockNoBN(nn.Module):
    """BasicSR's ``ResidualBlockNoBN``: ``x + conv2(relu(conv1(x)))``."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """BasicSR's modified SRResNet (Wang et al., ESRGAN, ECCV Workshops 2018, Section 3.1:
    SRResNet without batch norm), a common PSNR-oriented baseline.

    ``conv3x3 -> LReLU(0.1)``; ``n_blocks`` blocks ``conv -> ReLU -> conv`` (+ skip); sub-pixel
    upsampling (one ``conv -> PixelShuffle(scale)`` for x2/x3, two x2 stages for x4), each
    followed by LReLU; ``conv_hr -> LReLU -> conv_last``; plus the bilinearly upsampled input.

    Parameter names are BasicSR's (``conv_first``, ``body.N.conv1``, ``upconv1``, ``upconv2``,
    ``conv_hr``, ``conv_last``), so its released ``MSRResNet_x4`` weights load.

    Args:
        scale: 2, 3 or 4.
        in_channels: input (and output) channels, >= 1.
        n_blocks: residual blocks (16 in BasicSR).
        n_feats: feature maps (64).

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 4, in_channels: int = 3, n_blocks: int = 16,
                 n_feats: int = 64) -> None:
        super().__init__()
        _check_msrresnet(scale, in_channels, n_blocks, n_feats)
        self.scale = scale
        self.in_channels = in_channels
        self.conv_first = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(*(_ResidualBlockNoBN(n_feats) for _ in range(n_blocks)))
        if scale == 4:
            self.upconv1 = nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1)
            self.upconv2 = nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(n_feats, scale * scale * n_feats, 3, padding=1)
            self.pixel_shuffle = nn.PixelShuffle(scale)
        self.conv_hr = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv_last = nn.Conv2d(n_feats, in_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` in [0, 1] -> ``(N, C, h * scale, w * scale)``, nominally [0, 1]."""
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear",
                                   align_corners=False)


def _check_msrresnet(scale, in_channels, n_blocks, n_feats) -> None:
    _check_scale("msrresnet", scale, (2, 3, 4))
    if in_channels < 1 or n_blocks < 0 or n_feats < 1:
        raise ModelError(f"msrresnet: bad in_channels={in_channels!r}, n_blocks={n_blocks!r} "
                         f"or n_feats={n_feats!r}")


def describe_msrresnet(name: str, *, scale: int = 4, in_channels: int = 3, n_blocks: int = 16,
                       n_feats: int = 64) -> ModelDescriptor:
    """Descriptor of :class:`MSRResNet` (main chain and the bilinear skip)."""
    _check_msrresnet(scale, in_channels, n_blocks, n_feats)
    stages = [2, 2] if scale == 4 else [scale]
    ops: list = [("conv", 1 + 2 * n_blocks)]
    for f in stages:
        ops += [("conv", 1), ("up", f)]
    ops.append(("conv", 2))
    return ModelDescriptor(name=name, architecture="msrresnet", scale=scale,
                           in_channels=in_channels, out_channels=in_channels,
                           receptive_field_px=receptive_field_px(ops, [("bilinear", scale)]))


class SRGANDiscriminator(nn.Module):
    """The SRGAN discriminator (Ledig et al., CVPR 2017, Figure 4).

    ``conv3x3(64) -> LReLU(0.2)``, then seven ``conv3x3 -> BN -> LReLU`` blocks with (maps,
    stride) ``(64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)``, then
    ``Dense(1024) -> LReLU -> Dense(1)``.

    Departure from the paper: it returns the logit (no final sigmoid); train it with
    ``BCEWithLogitsLoss``, which applies the sigmoid in a numerically stable way.

    Args:
        in_channels: channels of the HR images it judges.
        n_feats: maps of the first block (64); later blocks double it.
        input_px: edge of the square HR patches it judges, a multiple of 16 (96 in the paper).

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, in_channels: int = 3, n_feats: int = 64, input_px: int = 96) -> None:
        super().__init__()
        if in_channels < 1 or n_feats < 1 or input_px < 16 or input_px % 16:
            raise ModelError(f"srgan discriminator: bad in_channels={in_channels!r}, "
                             f"n_feats={n_feats!r} or input_px={input_px!r} (multiple of 16)")
        self.input_px = input_px
        layers: list[nn.Module] = [nn.Conv2d(in_channels, n_feats, 3, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        c = n_feats
        for mult, stride in [(1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2)]:
            out = n_feats * mult
            layers += [nn.Conv2d(c, out, 3, stride=stride, padding=1), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c * (input_px // 16) ** 2, 1024),
            nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, input_px, input_px)`` in [0, 1] -> ``(N, 1)`` logits (real > 0)."""
        return self.classifier(self.features(x))
