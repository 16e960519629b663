"""One streaming pass over a raster file: per-band statistics, histograms and pair-difference
profiles (what the seam metric is computed from).

The file is read one window at a time (``window_px`` square, aligned to multiples of it, so a COG's
512 px blocks are decoded once), so memory stays bounded by one window whatever the scene size
(about ``4 x 8 x bands x window_px**2`` bytes with the float64 working copies: 25 MiB for a 3-band
512 px window).
Only valid pixels count: the dataset mask (nodata value or mask band) is non-zero and, for float
data, the value is finite.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from sr_core.errors import InputError
from sr_core.formats.geotiff import ALLOWED_DRIVERS

#: histogram bins per band
HIST_BINS = 64


@dataclass
class RasterScan:
    """What :func:`scan_raster` measured.

    Attributes:
        height, width, bands: size of the raster read.
        count: per band, valid pixels.
        total, total_sq: per band, sum and sum of squares of valid values (float64, scene units).
        vmin, vmax: per band, valid minimum and maximum (``nan`` for a band with no valid pixel).
        ranges: per band, the ``(lo, hi)`` the histogram covers (scene units).
        hist: ``(bands, bins)`` int64 counts; values outside ``ranges`` are counted in the edge
            bins and also in ``below`` / ``above``.
        below, above: per band, valid values below ``lo`` / above ``hi``.
        col_pair_sum: ``(width,)`` float64; entry ``c`` (>= 1) is the sum over rows and bands of
            ``|x[:, r, c] - x[:, r, c - 1]|`` (scene units) over pairs where both pixels are valid;
            entry 0 is 0. ``col_pair_n``: ``(width,)`` int64, the number of such pairs.
        row_pair_sum, row_pair_n: the same for vertical neighbours, ``(height,)``.
    """

    height: int
    width: int
    bands: int
    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    ranges: list[tuple[float, float]]
    hist: np.ndarray
    below: np.ndarray
    above: np.ndarray
    col_pair_sum: np.ndarray
    col_pair_n: np.ndarray
    row_pair_sum: np.ndarray
    row_pair_n: np.ndarray

    def band_stats(self) -> list[dict]:
        """Per band ``{"band", "valid_px", "min", "max", "mean", "std"}`` (scene units; ``None``
        where a band has no valid pixel)."""
        out: list[dict[str, Any]] = []
        for b in range(self.bands):
            n = int(self.count[b])
            if n == 0:
                out.append({"band": b + 1, "valid_px": 0, "min": None, "max": None,
                            "mean": None, "std": None})
                continue
            mean = self.total[b] / n
            var = max(self.total_sq[b] / n - mean * mean, 0.0)
            out.append({"band": b + 1, "valid_px": n, "min": float(self.vmin[b]),
                        "max": float(self.vmax[b]), "mean": float(mean),
                        "std": float(np.sqrt(var))})
        return out

    def histograms(self) -> dict:
        """JSON-ready histograms: ``{"bins", "ranges", "counts" (bands x bins), "below",
        "above"}``."""
        return {"bins": int(self.hist.shape[1]), "ranges": [list(r) for r in self.ranges],
                "counts": self.hist.tolist(), "below": self.below.tolist(),
                "above": self.above.tolist()}


def _windows(height: int, width: int, step: int):
    for r0 in range(0, height, step):
        for c0 in range(0, width, step):
            yield r0, c0, min(step, height - r0), min(step, width - c0)


def scan_raster(path: str | os.PathLike, ranges: list[tuple[float, float]], *,
                bins: int = HIST_BINS, window_px: int = 512, pair_profiles: bool = True,
                name: str | None = None) -> RasterScan:
    """Stream a raster once and measure it (see :class:`RasterScan`).

    Args:
        path: local GeoTIFF / COG.
        ranges: per band ``(lo, hi)`` in scene units for the histograms, ``hi > lo``.
        bins: histogram bins per band.
        window_px: edge of the windows read (pixels).
        pair_profiles: also accumulate the neighbour-difference profiles (for the seam metric).
        name: how to name the file in messages (default ``path``).

    Returns:
        A :class:`RasterScan`.

    Raises:
        InputError: the file cannot be opened or decoded, or ``ranges`` does not match its bands.
    """
    path = os.fspath(path)
    name = name or path
    try:
        ds = rasterio.open(path, driver=ALLOWED_DRIVERS)
    except RasterioError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{name}: cannot open for the report ({first})") from None
    with ds:
        h, w, nb = ds.height, ds.width, ds.count
        if len(ranges) != nb:
            raise InputError(f"{name}: {nb} bands but {len(ranges)} histogram ranges")
        lo = np.array([r[0] for r in ranges], dtype=np.float64)[:, None]
        hi = np.array([r[1] for r in ranges], dtype=np.float64)[:, None]
        span = np.where(hi > lo, hi - lo, 1.0)
        edges = _Bins(lo, hi, span, bins)
        scan = RasterScan(
            height=h, width=w, bands=nb, count=np.zeros(nb, np.int64),
            total=np.zeros(nb), total_sq=np.zeros(nb), vmin=np.full(nb, np.inf),
            vmax=np.full(nb, -np.inf), ranges=[(float(a), float(b)) for a, b in ranges],
            hist=np.zeros((nb, bins), np.int64), below=np.zeros(nb, np.int64),
            above=np.zeros(nb, np.int64),
            col_pair_sum=np.zeros(w), col_pair_n=np.zeros(w, np.int64),
            row_pair_sum=np.zeros(h), row_pair_n=np.zeros(h, np.int64))
        for r0, c0, wh, ww in _windows(h, w, window_px):
            # one extra row above and column left, so pairs across window edges are counted once
            er0, ec0 = (max(r0 - 1, 0), max(c0 - 1, 0)) if pair_profiles else (r0, c0)
            win = Window(ec0, er0, c0 + ww - ec0, r0 + wh - er0)
            try:
                x = ds.read(window=win).astype(np.float64)
                v = ds.read_masks(window=win) > 0
            except RasterioError as exc:
                raise InputError(f"{name}: cannot read pixels at row {r0}, col {c0} "
                                 f"({str(exc).splitlines()[0]})") from None
            v &= np.isfinite(x)
            dr, dc = r0 - er0, c0 - ec0
            core, cv = x[:, dr:, dc:].reshape(nb, -1), v[:, dr:, dc:].reshape(nb, -1)
            _accumulate_values(scan, core, cv, edges)
            if pair_profiles:
                # horizontal pairs (c-1, c) on the core rows; global column ec0 + j, j >= 1
                d = np.diff(x[:, dr:, :], axis=2)
                pv = v[:, dr:, 1:] & v[:, dr:, :-1]
                scan.col_pair_sum[ec0 + 1:c0 + ww] += np.where(pv, np.abs(d), 0.0).sum(axis=(0, 1))
                scan.col_pair_n[ec0 + 1:c0 + ww] += pv.sum(axis=(0, 1))
                d = np.diff(x[:, :, dc:], axis=1)
                pv = v[:, 1:, dc:] & v[:, :-1, dc:]
                scan.row_pair_sum[er0 + 1:r0 + wh] += np.where(pv, np.abs(d), 0.0).sum(axis=(0, 2))
                scan.row_pair_n[er0 + 1:r0 + wh] += pv.sum(axis=(0, 2))
        scan.vmin[scan.count == 0] = np.nan
        scan.vmax[scan.count == 0] = np.nan
    return scan


@dataclass(frozen=True)
class _Bins:
    """The histograms' per-band ``(bands, 1)`` float64 limits and span (scene units) and bin
    count."""

    lo: np.ndarray
    hi: np.ndarray
    span: np.ndarray
    bins: int


def _accumulate_values(scan: RasterScan, x: np.ndarray, v: np.ndarray, edges: _Bins) -> None:
    """Add the valid values of a window (``x``, ``v``: ``(bands, n)``) to ``scan``'s counts,
    sums, extremes and histograms."""
    lo, hi, span, bins = edges.lo, edges.hi, edges.span, edges.bins
    for b in range(scan.bands):
        vals = x[b][v[b]]
        if vals.size == 0:
            continue
        scan.count[b] += vals.size
        scan.total[b] += vals.sum()
        scan.total_sq[b] += (vals * vals).sum()
        scan.vmin[b] = min(scan.vmin[b], vals.min())
        scan.vmax[b] = max(scan.vmax[b], vals.max())
        scan.below[b] += int((vals < lo[b, 0]).sum())
        scan.above[b] += int((vals > hi[b, 0]).sum())
        idx = np.clip(((vals - lo[b, 0]) / span[b, 0] * bins).astype(np.int64), 0, bins - 1)
        scan.hist[b] += np.bincount(idx, minlength=bins)
