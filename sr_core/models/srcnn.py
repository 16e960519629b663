"""SRCNN: the first convolutional SR network, on the bicubic-upsampled grid."""

from __future__ import annotations

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.imaging.resample import upsample_bicubic
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.reach import receptive_field_px


class SRCNN(nn.Module):
    """SRCNN (Dong, Loy, He, Tang, "Learning a Deep Convolutional Network for Image
    Super-Resolution", ECCV 2014; extended in IEEE TPAMI 38(2), 2016).

    The LR image is first upsampled by bicubic interpolation (Keys, ``a = -0.5``, see
    :mod:`sr_core.imaging.resample`); then, on that HR grid, ``conv f1 x f1 (n1) -> ReLU -> conv f2
    x f2 (n2) -> ReLU -> conv f3 x f3 (C)``. The defaults are the ECCV paper's base network
    ``9-1-5`` with ``n1 = 64, n2 = 32``; the journal version's better ``9-5-5`` is
    ``kernel_sizes=(9, 5, 5)``.

    Parameter names follow the widely used PyTorch port ``yjn870/SRCNN-pytorch``
    (``conv1.weight``, ``conv2.weight``, ``conv3.weight``), whose released x2/x3/x4 weights
    (9-5-5, Y channel) load.

    Departures from the paper: convolutions are zero-padded ("same"), so the output is exactly
    ``scale`` times the input (the paper trains on unpadded patches); the network takes the LR
    image and upsamples it itself, so it runs like every other model.

    Args:
        scale: integer upscaling factor >= 2 (the weights do not depend on it, but a network is
            trained for one).
        in_channels: input (and output) channels, >= 1 (the paper: 1, the Y channel).
        n_feats: ``(n1, n2)`` feature maps of the first two layers.
        kernel_sizes: ``(f1, f2, f3)``, odd.

    Raises:
        ModelError: an argument is out of range.
    """

    def __init__(self, *, scale: int = 3, in_channels: int = 1,
                 n_feats: tuple[int, int] = (64, 32),
                 kernel_sizes: tuple[int, int, int] = (9, 1, 5)) -> None:
        super().__init__()
        _check(scale, in_channels, n_feats, kernel_sizes)
        (n1, n2), (f1, f2, f3) = n_feats, kernel_sizes
        self.scale = scale
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, in_channels, f3, padding=f3 // 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            x: ``(N, in_channels, h, w)`` float32 in [0, 1] (LR).

        Returns:
            ``(N, in_channels, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped).
        """
        h = upsample_bicubic(x, self.scale)
        h = self.relu(self.conv1(h))
        h = self.relu(self.conv2(h))
        return self.conv3(h)


def _check(scale, in_channels, n_feats, kernel_sizes) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ModelError(f"srcnn: scale must be an integer >= 2, got {scale!r}")
    if (in_channels < 1 or len(n_feats) != 2 or min(n_feats) < 1 or len(kernel_sizes) != 3
            or any(k < 1 or k % 2 == 0 for k in kernel_sizes)):
        raise ModelError(f"srcnn: bad in_channels={in_channels!r}, n_feats={n_feats!r} or "
                         f"kernel_sizes={kernel_sizes!r} (odd sizes)")


def describe_srcnn(name: str, *, scale: int = 3, in_channels: int = 1,
                   n_feats: tuple[int, int] = (64, 32),
                   kernel_sizes: tuple[int, int, int] = (9, 1, 5)) -> ModelDescriptor:
    """Descriptor of :class:`SRCNN`: HR-grid radius ``sum(f // 2)`` (8 for 9-1-5) carried
    back through the bicubic upsampling to the LR grid."""
    _check(scale, in_channels, n_feats, kernel_sizes)
    hr_radius = sum(k // 2 for k in kernel_sizes)
    return ModelDescriptor(
        name=name, architecture="srcnn", scale=scale, in_channels=in_channels,
        out_channels=in_channels, input_grid="hr",
        receptive_field_px=receptive_field_px([("bicubic", scale), ("conv", hr_radius)]),
    )
