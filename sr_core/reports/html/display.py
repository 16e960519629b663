"""Display maths of the HTML reports: which bands make the picture, the stretch, the crop regions.

Conventions (stated in the page): each band is stretched linearly between its 2nd and 98th
percentile of valid input pixels (measured on the input thumbnail) and the same stretch is applied
to every picture, so input, bicubic and model are comparable; multi-band scenes are shown as an RGB
composite from the bands labelled red, green and blue (else bands 1, 2, 3), single-band scenes in
grey levels; nodata is transparent. The :class:`~sr_core.formats.base.Display` value type and the
medical formats' windows are display hints of :mod:`sr_core.formats`.

May import: :mod:`sr_core.formats` and numpy; pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_core.formats import Display

#: display stretch: per-band percentiles of valid input pixels mapped to black and white
STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class Region:
    """A square window of the input: ``size`` LR px from ``(row, col)``; ``why`` says how it was
    chosen."""

    name: str
    row: int
    col: int
    size: int
    why: str


def composite_bands(colorinterp: list[str], count: int) -> tuple[tuple[int, ...], str]:
    """The bands a scene is displayed with and the sentence that says so.

    Returns:
        ``(bands, label)``: the bands labelled red, green, blue (in that order) when the file
        labels them; else bands 1, 2, 3 for three or more bands; else band 1 in grey levels.
    """
    names = [str(c).lower() for c in colorinterp]
    if all(c in names for c in ("red", "green", "blue")):
        idx = tuple(names.index(c) for c in ("red", "green", "blue"))
        return idx, ("RGB composite: " + ", ".join(f"{ch} = band {i + 1} ({c})" for ch, i, c in
                                                   zip("RGB", idx, ("red", "green", "blue"),
                                                       strict=True)))
    if count >= 3:
        return (0, 1, 2), ("RGB composite: R = band 1, G = band 2, B = band 3 (the file does not "
                           "label its bands' colours)")
    extra = f" (of {count} bands; all bands in the per-band panels)" if count > 1 else ""
    return (0,), f"Band 1 in grey levels{extra}"


def stretch(data: np.ndarray, valid: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per band, the :data:`STRETCH_PERCENTILES` of the valid values of ``data`` ``(bands, h,
    w)`` (bool ``valid`` of the same shape) as ``(lo, hi)``; ``(0, 1)`` for a band with no valid
    value, ``hi = lo + 1`` for a flat band."""
    lo, hi = [], []
    for b in range(data.shape[0]):
        vals = data[b][valid[b]]
        if vals.size == 0:
            lo.append(0.0)
            hi.append(1.0)
            continue
        p0, p1 = np.percentile(vals, STRETCH_PERCENTILES)
        lo.append(float(p0))
        hi.append(float(p1) if p1 > p0 else float(p0) + 1.0)
    return tuple(lo), tuple(hi)


def _box_sums(a: np.ndarray, k: int) -> np.ndarray:
    """Sums of every ``k x k`` box of a 2-D array (integral image), shape ``(h-k+1, w-k+1)``."""
    s = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def _gradient_energy(thumb: np.ndarray, all_valid: np.ndarray, display: Display) -> np.ndarray:
    """Per thumbnail pixel, the squared gradients (both axes) of the stretched bands, summed;
    0 where any band is invalid."""
    g = np.zeros(all_valid.shape)
    for b in range(thumb.shape[0]):
        x = display.band01(thumb, b).astype(np.float64)
        dx = np.zeros_like(x)
        dy = np.zeros_like(x)
        dx[:, 1:] = np.diff(x, axis=1) ** 2
        dy[1:, :] = np.diff(x, axis=0) ** 2
        g += dx + dy
    g[~all_valid] = 0.0
    return g


def pick_regions(thumb, size_px: tuple[int, int], display: Display, *, crop_px: int,
                 tile_px: int | None = None, seed: int = 0) -> list[Region]:
    """Choose the crop regions on a decimated read of the input.

    Region A has the most detail: the largest sum of squared gradients (both axes, stretched
    values, all bands) in a crop-sized box of the thumbnail, among boxes at least 99 % valid.
    Region B is drawn at random (``numpy.random.default_rng(seed)``) among boxes at least 90 %
    valid that do not overlap A. Region C (when ``tile_px`` is given and the scene has more than
    one tile) is centred on a tile corner (on an edge when one axis has a single tile): the one
    whose box has the most detail among boxes at least 90 % valid, so seams would show.

    Args:
        thumb: ``(data, valid, factor)``: ``(bands, h, w)`` decimated input and validity, and
            input pixels per thumbnail pixel (:class:`~sr_core.reports.html.sources.Decimated`).
        size_px: input ``(height, width)`` (px).
        display: the display stretch (bands weigh equally after it).
        crop_px: crop edge in input pixels, at most ``min(height, width)``.
        tile_px: tile core edge in input pixels, or ``None`` for no region C.
        seed: seed of the random region.

    Returns:
        Regions ``A``, then ``B`` and ``C`` where there is room / a tile edge.
    """
    data, valid, factor = thumb
    height, width = size_px
    all_valid = valid.all(axis=0)
    g = _gradient_energy(data, all_valid, display)
    k = max(1, min(round(crop_px / factor), *g.shape))
    energy = _box_sums(g, k)
    frac = _box_sums(all_valid.astype(np.float64), k) / (k * k)

    def clamp(r: int, c: int) -> tuple[int, int]:
        return min(max(0, r), height - crop_px), min(max(0, c), width - crop_px)

    ok = frac >= 0.99 if (frac >= 0.99).any() else frac >= frac.max()
    i, j = np.unravel_index(np.argmax(np.where(ok, energy, -1.0)), energy.shape)
    regions = [Region("A", *clamp(round(i * factor), round(j * factor)), crop_px,
                      "most detail (largest gradient energy)")]
    rng = np.random.default_rng(seed)
    cand = np.argwhere((frac >= 0.9) & ((np.abs(np.arange(energy.shape[0])[:, None] - i) >= k)
                                        | (np.abs(np.arange(energy.shape[1])[None, :] - j) >= k)))
    if len(cand):
        bi, bj = cand[rng.integers(len(cand))]
        regions.append(Region("B", *clamp(round(bi * factor), round(bj * factor)), crop_px,
                              f"random (seed {seed})"))
    if tile_px and (height > tile_px or width > tile_px):
        best = _tile_corner((energy, frac, factor), clamp, (height, width), tile_px, crop_px)
        regions.append(Region("C", *best, crop_px,
                              "centred on the tile corner (or edge) with the most detail"))
    return regions


def _tile_corner(boxes: tuple, clamp, size_px: tuple[int, int], tile_px: int,
                 crop_px: int) -> tuple[int, int]:
    """Region C's ``(row, col)``: the crop centred on a tile corner (an edge when one axis has a
    single tile) with the most detail among boxes at least 90 % valid.

    Args:
        boxes: ``(energy, frac, factor)``: per thumbnail box, the gradient energy and the valid
            fraction, and input pixels per thumbnail pixel.
        clamp: ``(row, col) -> (row, col)`` keeping a crop inside the scene.
        size_px: input ``(height, width)``; tile_px: tile core edge; crop_px: crop edge (px).
    """
    energy, frac, factor = boxes
    height, width = size_px

    def box(r: int, c: int) -> tuple[int, int]:
        return (min(round(r / factor), energy.shape[0] - 1),
                min(round(c / factor), energy.shape[1] - 1))

    rows = list(range(tile_px, height, tile_px)) or [height // 2]
    cols = list(range(tile_px, width, tile_px)) or [width // 2]
    best, best_score = clamp(rows[0] - crop_px // 2, cols[0] - crop_px // 2), -np.inf
    for by in rows:
        for bx in cols:
            r, c = clamp(by - crop_px // 2, bx - crop_px // 2)
            bi, bj = box(r, c)
            score = energy[bi, bj] if frac[bi, bj] >= 0.9 else frac[bi, bj] - 2.0
            if score > best_score:
                best, best_score = (r, c), score
    return best
