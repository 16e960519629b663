"""Measure a network's receptive field by perturbing input pixels.

The tile halo must be at least the receptive-field radius for tiled inference to equal
whole-image inference. Descriptors state the radius analytically; this probe measures it, so the
tests can check ``descriptor.receptive_field_px >= measured`` for every architecture.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sr_core.errors import ModelError

_MAX_AUTO_SIZE_PX = 512


@dataclass(frozen=True)
class ProbeSampling:
    """How :func:`probe_receptive_field` samples: its random inputs and its change threshold.

    Attributes:
        trials: random inputs (and perturbed pixels) to try.
        seed: seed of the probe's own random generator (the global RNG is not used).
        rtol: changes up to ``rtol * max|output|`` count as no change (see
            :func:`probe_receptive_field`).
    """

    trials: int = 3
    seed: int = 0
    rtol: float = 0.0


DEFAULT_SAMPLING = ProbeSampling()


@dataclass(frozen=True)
class _Probe:
    """What :func:`probe_receptive_field` measures with (its arguments and sampling fields of the
    same names)."""

    scale: int
    in_channels: int
    trials: int
    rtol: float


def _measure(module: nn.Module, probe: _Probe, size: int, gen: torch.Generator
             ) -> tuple[int, bool]:
    """One probe at ``size``: ``(radius, reached_border)``."""
    scale, in_channels, trials, rtol = probe.scale, probe.in_channels, probe.trials, probe.rtol
    c0 = size // 2
    xs, xps, where = [], [], []
    for _ in range(trials):
        x = torch.rand(1, in_channels, size, size, generator=gen, dtype=torch.float64)
        i, j = (c0 + int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
        i, j = min(max(i, 0), size - 1), min(max(j, 0), size - 1)
        xp = x.clone()
        xp[..., i, j] = (xp[..., i, j] + 0.5) % 1.0  # change by +-0.5, stay in [0, 1)
        xs.append(x)
        xps.append(xp)
        where.append((i, j))
    with torch.inference_mode():
        out = module(torch.cat(xs + xps)).to(torch.float64)
    expected = (2 * trials, in_channels, size * scale, size * scale)
    if tuple(out.shape[:1]) + tuple(out.shape[2:]) != expected[:1] + expected[2:]:
        raise ModelError(
            f"probe: module returned shape {tuple(out.shape)} for input "
            f"{(2 * trials, in_channels, size, size)}; expected {expected}"
        )
    radius, reached = 0, False
    for t, (i, j) in enumerate(where):
        base, pert = out[t], out[trials + t]
        diff = (pert - base).abs().amax(dim=0)  # over channels: (H, W)
        threshold = rtol * max(float(base.abs().max()), float(pert.abs().max()), 1e-30)
        rows, cols = torch.nonzero(diff > threshold, as_tuple=True)
        if rows.numel() == 0:
            continue
        r = int(torch.maximum((rows // scale - i).abs(), (cols // scale - j).abs()).max())
        radius = max(radius, r)
        reached |= r >= min(i, j, size - 1 - i, size - 1 - j)
    return radius, reached


def probe_receptive_field(module: nn.Module, scale: int, *, in_channels: int = 1,
                          size: int | None = None,
                          sampling: ProbeSampling = DEFAULT_SAMPLING) -> int:
    """Measure the receptive-field radius of an SR network on the LR grid, in LR pixels.

    For each trial: a random ``(1, in_channels, size, size)`` input in [0, 1), and the same input
    with one pixel near the centre (all channels) changed by +-0.5. Output pixels whose value
    changes by more than ``sampling.rtol * max|output|`` are mapped to their LR pixel
    (``floor(q / scale)`` on each axis); the largest Chebyshev distance from the perturbed pixel
    over all trials is the radius. The network runs on a float64 CPU copy in eval mode (the
    caller's module is not changed). On the CPU, float64 convolutions compute each output from
    its own input patch only (no Winograd/FFT mixing), so a pixel outside the receptive field is
    bit-identical and ``rtol=0`` is exact. A positive ``rtol`` (such as 1e-7) under-measures deep
    networks: influence at the edge of a 36-pixel EDSR field is ~1e-12 of the output.

    The result is a lower bound of the true radius: a weight that happens to be zero, or a ReLU
    that is off for every trial, hides influence. Untrained networks should get random weights
    first (an EDSR with ``bicubic_residual`` starts with a zero tail and probes as bicubic).

    Args:
        module: ``(N, in_channels, h, w) -> (N, in_channels, h * scale, w * scale)`` network.
        scale: its integer upscaling factor.
        in_channels: channels the network takes.
        size: input side in LR pixels. ``None``: start at 16 and double (up to 512) while the
            influence reaches the image border, where zero padding would truncate it.
        sampling: trials, seed and ``rtol`` (:class:`ProbeSampling`; default 3 trials, seed 0,
            ``rtol=0``).

    Returns:
        The radius in LR pixels, >= 0 (0: an output pixel depends only on its own LR pixel, or
        nothing changed at all).

    Raises:
        ModelError: the module returns the wrong shape, or (``size=None``) the influence still
            reaches the border at 512 px (a global-context model: not tileable).
    """
    net = copy.deepcopy(module).to("cpu", torch.float64).eval()
    gen = torch.Generator().manual_seed(sampling.seed)
    probe = _Probe(scale, in_channels, sampling.trials, sampling.rtol)
    n = size or 16
    while True:
        radius, reached = _measure(net, probe, n, gen)
        if size is not None or not reached:
            return radius
        if n >= _MAX_AUTO_SIZE_PX:
            raise ModelError(
                f"probe: influence still reaches the border of a {n}x{n} px input; the model "
                f"looks global-context (not tileable)"
            )
        n *= 2
