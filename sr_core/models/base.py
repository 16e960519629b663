"""A loaded model ready to run: network + descriptor + card + device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sr_core.errors import InputError
from sr_core.models.descriptor import ModelDescriptor


@dataclass
class SRModel:
    """A network with the metadata the pipeline needs to run it.

    Band policy (how a ``(bands, h, w)`` scene maps onto the network's channels):

    * a 1-channel model runs band by band: the bands are stacked as the batch dimension;
    * a C-channel model runs on consecutive groups of C bands (bands ``0..C-1``, ``C..2C-1``,
      ...); the last group, if short, is padded by repeating its last band, and the outputs for
      the padding are dropped. So a 3-channel RGB model sees a 4-band RGBN scene as ``(R, G, B)``
      and ``(N, N, N)``. Band order matters: the pipeline must pass bands in the order the
      model was trained on.
    * a Y-channel model (``descriptor.colour == "y"``, 1 channel) on a 3-band scene: the bands
      are read as RGB, converted to BT.601 YCbCr (:mod:`sr_core.imaging.color`), Y is super-resolved
      by the network and Cb/Cr by bicubic interpolation, and the result converted back to RGB (as
      the SR literature evaluates SRCNN, FSRCNN and VDSR). Other band counts run band by band.

    Size policy: when the descriptor's ``size_multiple`` is above 1 or its ``min_size_px`` is
    larger than the image, the image is padded at the bottom and right to the smallest size that
    is a multiple and at least the minimum (reflect, or replicate when the image is too small to
    reflect) and the output cropped back, so the output is always exactly ``scale`` times the
    input.

    Attributes:
        module: the network, in eval mode, on ``device``, gradients off.
        descriptor: scale, channels, receptive field, size multiple.
        card: the model card (see :mod:`sr_core.models.weights`); a synthesised one for bicubic.
        device: where the network runs.
        max_batch: at most this many images (bands or band groups) per forward pass; ``None`` =
            all at once. Bounds memory for many-band scenes.
        precision: ``"fp32"``, or ``"bf16"``: the forward pass under ``torch.autocast`` with
            bfloat16 (convolutions and matmuls in bf16, accumulation and output in fp32; the
            output is returned as float32 either way). See :meth:`configure`.
        channels_last: run the network in the NHWC memory format (faster convolutions on
            tensor-core GPUs and with oneDNN on CPUs; same values up to float rounding).
        self_ensemble: :meth:`upscale` and :meth:`upscale_many` return the mean over the eight
            dihedral transforms of the input (:meth:`upscale_many_with_std`); 8 forward passes
            per image.
    """

    module: nn.Module
    descriptor: ModelDescriptor
    card: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    max_batch: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compiled: bool = False
    self_ensemble: bool = False

    @property
    def scale(self) -> int:
        """Integer upscaling factor."""
        return self.descriptor.scale

    @property
    def name(self) -> str:
        """Registry name, e.g. ``"edsr-x2"``."""
        return self.descriptor.name

    def configure(self, *, precision: str = "fp32", channels_last: bool = False,
                  compile: bool = False) -> SRModel:
        """Choose how the network runs (on a worker, once, after loading).

        bf16 is the bfloat16 format (8 exponent bits, 7 mantissa bits: fp32's range; Kalamkar et
        al., "A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322, 2019) under
        PyTorch's automatic mixed precision (``torch.autocast``); channels-last is PyTorch's
        NHWC memory format (``torch.channels_last``). Outputs stay float32 in [0, 1] nominally;
        bf16 changes the Wald PSNR of the shipped model by under 0.01 dB
        (``tests/test_acceleration.py``).

        Args:
            precision: ``"fp32"`` or ``"bf16"`` (autocast; on CUDA it uses the tensor cores).
            channels_last: convert the network's weights and each input to NHWC.
            compile: wrap the network in ``torch.compile`` (PyTorch 2 inductor; the first tile
                of each new shape pays the compilation, seconds to minutes).

        Returns:
            ``self``.

        Raises:
            InputError: an unknown precision.
        """
        if precision not in ("fp32", "bf16"):
            raise InputError(f"{self.name}: precision {precision!r}: must be fp32 or bf16")
        self.precision, self.channels_last = precision, channels_last
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        if compile and not self.compiled:
            # a Module compiles to an OptimizedModule, itself a Module
            self.module = cast(nn.Module, torch.compile(self.module))
            self.compiled = True
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` (on any device) -> ``(N, C, h*s, w*s)`` float32 on ``self.device``,
        with size-multiple padding, batching, the configured precision and memory format."""
        h, w = x.shape[-2:]
        pad_h, pad_w = self._padding(h, w)
        if x.device != self.device:
            # from pinned host memory the copy is asynchronous: it queues behind the
            # previous batch's kernels instead of waiting for them
            pin = self.device.type == "cuda" and not x.is_pinned()
            x = (x.pin_memory() if pin else x).to(self.device, non_blocking=True)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        step = self.max_batch or x.shape[0]
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            y = torch.cat([self.module(x[i:i + step]).float()
                           for i in range(0, x.shape[0], step)])
        s = self.scale
        return y[..., : h * s, : w * s]

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns the size policy adds at the bottom and right of an ``h x w`` image
        (reflect when both are smaller than the image, else replicate)."""
        m, lo = self.descriptor.size_multiple, self.descriptor.min_size_px
        return (-max(h, lo)) % m + max(lo - h, 0), (-max(w, lo)) % m + max(lo - w, 0)

    def upscale(self, x: np.ndarray) -> np.ndarray:
        """Super-resolve a normalised image, applying the band policy above.

        Args:
            x: ``(bands, h, w)`` float array (cast to float32), normalised to [0, 1], finite
                (fill nodata before calling).

        Returns:
            ``(bands, h * scale, w * scale)`` float32, nominally [0, 1] (not clipped: models
            and the bicubic kernel overshoot slightly near edges).

        Raises:
            InputError: ``x`` is not a non-empty 3-D float array.
        """
        return self.upscale_many([x])[0]

    def upscale_many(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Super-resolve several images of the same shape in shared forward passes (tiles
        batched on a GPU); each result equals :meth:`upscale` of that image (up to float
        rounding, as any change of batch size). With :attr:`self_ensemble` on, each result is
        the self-ensemble mean (:meth:`upscale_many_with_std`).

        Args:
            xs: ``(bands, h, w)`` float arrays as for :meth:`upscale`, all of one shape.

        Returns:
            One ``(bands, h * scale, w * scale)`` float32 array per input, in order.

        Raises:
            InputError: an array is not a non-empty 3-D float array, or the shapes differ.
        """
        self._check(xs)
        if self.self_ensemble:
            return [mean for mean, _ in self._ensemble(xs)]
        return self._upscale_plain(xs)

    def upscale_many_with_std(self, xs: list[np.ndarray]
                              ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Geometric self-ensemble (:mod:`sr_core.models.ensemble`; Timofte, Rothe & Van Gool,
        CVPR 2016; Lim et al., EDSR+, CVPR Workshops 2017), whatever :attr:`self_ensemble` says.

        Each image is first padded at the bottom and right by the size policy (so that every
        flip and rotation of it starts on the same ``size_multiple`` grid as the image itself:
        window-attention models then see the same windows, tile or whole image), then for each
        of the eight dihedral transforms the transformed batch is super-resolved as
        :meth:`upscale_many` does (band policy, Y-channel path), mapped back and cropped to
        ``scale`` times the input. One transform is in memory at a time.

        Args:
            xs: ``(bands, h, w)`` float arrays as for :meth:`upscale`, all of one shape.

        Returns:
            Per input, ``(mean, std)``: ``(bands, h * scale, w * scale)`` float32 each, in the
            normalised model units; ``mean`` nominally [0, 1] (not clipped), ``std`` the
            population standard deviation (ddof = 0) over the eight outputs, >= 0.

        Raises:
            InputError: an array is not a non-empty 3-D float array, or the shapes differ.
        """
        self._check(xs)
        return self._ensemble(xs)

    def _ensemble(self, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        from sr_core.models.ensemble import DIHEDRAL, MeanStd, apply, invert

        _, h, w = xs[0].shape
        pad_h, pad_w = self._padding(h, w)
        if pad_h or pad_w:
            mode: Literal["reflect", "edge"] = "reflect" if pad_h < h and pad_w < w else "edge"
            xs = [np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode) for x in xs]
        stats = [MeanStd() for _ in xs]
        out_h, out_w = h * self.scale, w * self.scale
        for t in DIHEDRAL:
            ys = self._upscale_plain([apply(x, t) for x in xs])
            for acc, y in zip(stats, ys, strict=True):
                acc.add(invert(y, t)[:, :out_h, :out_w])
        return [acc.result() for acc in stats]

    def _check(self, xs: list[np.ndarray]) -> None:
        """Raise :class:`InputError` unless ``xs`` are non-empty 3-D float arrays of one shape."""
        for x in xs:
            if not isinstance(x, np.ndarray) or x.ndim != 3 or 0 in x.shape:
                raise InputError(
                    f"{self.name}: expected a non-empty (bands, h, w) array, got "
                    f"{getattr(x, 'shape', type(x).__name__)}"
                )
            if not np.issubdtype(x.dtype, np.floating):
                raise InputError(f"{self.name}: expected a normalised float array, got {x.dtype}")
        if len({x.shape for x in xs}) > 1:
            raise InputError(f"{self.name}: a batch of images must share one shape, got "
                             f"{sorted({x.shape for x in xs})}")

    def _upscale_plain(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`upscale_many` without the self-ensemble (``xs`` already checked)."""
        bands, h, w = xs[0].shape
        if self.descriptor.colour == "y" and bands == 3:
            return [self._upscale_luma(x) for x in xs]
        c = self.descriptor.in_channels
        groups = -(-bands // c)
        parts = []
        for x in xs:
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if groups * c > bands:
                t = torch.cat([t, t[-1:].expand(groups * c - bands, h, w)])
            parts.append(t.reshape(groups, c, h, w))
        with torch.inference_mode():
            y = self._forward(parts[0] if len(parts) == 1 else torch.cat(parts))
            y = y.to("cpu").reshape(len(xs), groups * c, h * self.scale, w * self.scale)
            return [yi[:bands].contiguous().numpy() for yi in y]

    def _upscale_luma(self, x: np.ndarray) -> np.ndarray:
        """RGB -> YCbCr; network on Y, bicubic on Cb/Cr; -> RGB (float32, not clipped)."""
        from sr_core.imaging.color import rgb_to_ycbcr, ycbcr_to_rgb
        from sr_core.imaging.resample import upsample_bicubic

        ycc = rgb_to_ycbcr(x).astype(np.float32)
        with torch.inference_mode():
            y = self._forward(torch.from_numpy(ycc[None, :1]))
            cc = upsample_bicubic(torch.from_numpy(ycc[None, 1:]), self.scale)
        out = np.concatenate([y.to("cpu").numpy()[0], cc.numpy()[0]])
        return ycbcr_to_rgb(out).astype(np.float32)


def configure_for_device(model: SRModel, precision: str = "auto", compile: bool = False):
    """Configure a loaded model the way the workers run it (:meth:`SRModel.configure`).

    Channels-last (NHWC) on every device: on CUDA it is the tensor-core layout; on a CPU
    oneDNN's NHWC convolutions ran every architecture faster than NCHW on this project's 2-core
    AVX2 machine (``benchmarks/bench_layout.py``: 1.06x IMDN to 2.9x SRCNN on 192 px inputs;
    on 512 px inputs EDSR 1.34x, SRResNet 1.75x, VDSR 1.48x; outputs equal within 5e-6).
    ``precision="auto"`` is bf16 autocast on CUDA, fp32 elsewhere (a CPU without bf16 units
    gains nothing from it).

    Args:
        model: an :class:`sr_core.models.base.SRModel`, as loaded.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        compile: wrap the network in ``torch.compile``.

    Returns:
        ``model``, configured.

    Raises:
        InputError: an unknown precision.
    """
    if precision == "auto":
        precision = "bf16" if model.device.type == "cuda" else "fp32"
    return model.configure(precision=precision, channels_last=True, compile=compile)
