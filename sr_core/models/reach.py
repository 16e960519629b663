"""Receptive-field radius of a network from its layer sequence (exact interval arithmetic).

A descriptor's ``receptive_field_px`` is the Chebyshev radius, on the LR grid, of the input pixels
an output pixel depends on. For a chain of layers it is found by walking back from each output
phase ``q in [0, scale)`` (the HR pixels inside LR pixel 0) to the interval of LR pixels it
reads, layer by layer:

* ``("conv", r)``: a convolution of radius ``r`` (kernel ``2r + 1``) on the current grid;
* ``("up", f)``: nearest-neighbour upsampling or ``PixelShuffle(f)``: fine pixel ``p`` reads
  coarse pixel ``p // f``;
* ``("down", f)``: ``pixel_unshuffle(f)``: coarse pixel ``P`` reads fine pixels
  ``[P f, P f + f - 1]``;
* ``("bicubic", f)``: bicubic upsampling by ``f`` (Keys, ``a = -0.5``, pixel-centre aligned), only
  taps with a non-zero weight;
* ``("bilinear", f)``: bilinear upsampling by ``f`` (``align_corners=False``), non-zero taps;
* ``("deconv", k, f, p)``: a transposed convolution, kernel ``k``, stride ``f``, padding ``p``:
  output ``o`` reads input ``i`` where ``o = i f - p + j``, ``0 <= j < k``.

Residual branches are separate chains; the radius of the network is the largest over its
chains. The tests hold every formula to :func:`sr_core.models.probe.probe_receptive_field`.
"""

from __future__ import annotations

from fractions import Fraction
from math import ceil, floor

Op = tuple


def _keys_weight(d: Fraction) -> Fraction:
    """Keys' cubic convolution kernel, ``a = -0.5``, at distance ``d``."""
    a, x = Fraction(-1, 2), abs(d)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return Fraction(0)


def _taps(p: int, f: int, kind: str) -> tuple[int, int]:
    """LR taps with non-zero weight of HR pixel ``p`` for interpolation by ``f``."""
    c = Fraction(2 * p + 1 - f, 2 * f)  # (p + 0.5) / f - 0.5
    if kind == "bicubic":
        ks = [k for k in range(floor(c) - 2, floor(c) + 3) if _keys_weight(c - k) != 0]
    else:  # bilinear
        ks = [floor(c)] + ([floor(c) + 1] if c != floor(c) else [])
    return min(ks), max(ks)


def _back(lo: int, hi: int, op: Op) -> tuple[int, int]:
    kind = op[0]
    if kind == "conv":
        return lo - op[1], hi + op[1]
    if kind == "up":
        return lo // op[1], hi // op[1]
    if kind == "down":
        return lo * op[1], hi * op[1] + op[1] - 1
    if kind in ("bicubic", "bilinear"):
        spans = [_taps(p, op[1], kind) for p in range(lo, hi + 1)]
        return min(s[0] for s in spans), max(s[1] for s in spans)
    if kind == "deconv":
        k, f, pad = op[1], op[2], op[3]
        return ceil((lo + pad - k + 1) / f), floor((hi + pad) / f)
    raise ValueError(f"unknown layer kind {kind!r}")


def chain_scale(ops: list[Op]) -> Fraction:
    """Output pixels per input pixel along an axis for a chain."""
    s = Fraction(1)
    for op in ops:
        if op[0] in ("up", "bicubic", "bilinear"):
            s *= op[1]
        elif op[0] == "deconv":
            s *= op[2]
        elif op[0] == "down":
            s /= op[1]
    return s


def receptive_field_px(*chains: list[Op]) -> int:
    """Radius in LR px of a network made of these chains (input -> output order), all with the
    same overall scale.

    Returns:
        The largest Chebyshev distance from LR pixel 0 to an LR pixel that any HR pixel inside
        it reads, over all phases and chains.

    Raises:
        ValueError: chains of different or non-integer overall scale, or an unknown layer kind.
    """
    scales = {chain_scale(c) for c in chains}
    if len(scales) != 1 or next(iter(scales)).denominator != 1:
        raise ValueError(f"chains must share one integer scale, got {sorted(map(str, scales))}")
    scale = int(next(iter(scales)))
    reach = 0
    for ops in chains:
        for q in range(scale):
            lo = hi = q
            for op in reversed(ops):
                lo, hi = _back(lo, hi, op)
            reach = max(reach, -lo, hi)
    return reach


def conv_chain(radius_px: int) -> list[Op]:
    """``radius_px`` stacked radius-1 convolutions, as one op."""
    return [("conv", radius_px)] if radius_px else []
