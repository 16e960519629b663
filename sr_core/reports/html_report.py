"""Quality reports people can look at: one self-contained HTML page per scene and per archive run.

The scene report (:func:`build_scene_html`) shows the header (input, output, model and its card,
run), pictures (thumbnail of the output with the chosen regions marked; input nearest-neighbour,
bicubic and model crops at the same zoom for the region with most detail and a seeded random one;
absolute-difference heat map model vs bicubic; the tile grid over a crop at a tile corner; the seam
profile; per-band histograms of input and output; per-band panels) and the numbers of the JSON
report, each with a one-line explanation and the direction that is better.

Every figure is drawn by matplotlib (``matplotlib.figure.Figure``, the Agg renderer, no pyplot
state) into a PNG embedded as a ``data:`` URI, so one file opens offline and can be published
anywhere. Pixels are read windowed: thumbnails through decimated reads (the COG's overviews), crops
as small windows; nothing is read at full resolution over the whole scene here (the streaming
statistics come from :mod:`sr_core.quality.scan` through the JSON report).

Display conventions (stated in the page): each band is stretched linearly between its 2nd and 98th
percentile of valid input pixels (measured on the input thumbnail) and the same stretch is applied
to every picture, so input, bicubic and model are comparable; multi-band scenes are shown as an RGB
composite from the bands labelled red, green and blue (else bands 1, 2, 3), single-band scenes in
grey levels; nodata is transparent.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
import os
from dataclasses import dataclass, replace

import jinja2
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from sr_core.errors import InputError
from sr_core.imaging.normalize import Normalization
from sr_core.formats.geotiff import ALLOWED_DRIVERS

#: display stretch: per-band percentiles of valid input pixels mapped to black and white
STRETCH_PERCENTILES = (2.0, 98.0)
#: longest side of the thumbnails (px)
THUMB_MAX_PX = 800
#: crop edge in input (LR) pixels
CROP_LR_PX = 64
#: matplotlib dots per inch of every figure: a figure of W x H inches is W*DPI x H*DPI px
DPI = 100
#: figure sizes in pixels (width, height); the thumbnail's follows the scene's aspect
CROPS_PX = (840, 330)
HEATMAP_PX = (840, 390)
GRID_PX = (840, 450)
SEAM_PROFILE_PX = (840, 300)
HIST_ROW_PX = (840, 230)
BANDS_PANEL_PX = 210
ARCHIVE_PLOT_PX = (900, 720)

_REGION_COLOURS = {"A": "#ff3b30", "B": "#00c7ff", "C": "#ffd60a"}


@dataclass(frozen=True)
class Region:
    """A square window of the input: ``size`` LR px from ``(row, col)``; ``why`` says how it was
    chosen."""

    name: str
    row: int
    col: int
    size: int
    why: str


@dataclass(frozen=True)
class FigureHTML:
    """One embedded figure: ``data_uri`` is a PNG of ``width x height`` px."""

    id: str
    title: str
    caption: str
    better: str
    data_uri: str
    width: int
    height: int


# ---------------------------------------------------------------------------- matplotlib helpers

def _figure(size_px: tuple[int, int]):
    from matplotlib.figure import Figure

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG from its IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _embed(fig, fid: str, title: str, caption: str, better: str) -> FigureHTML:
    buf = io.BytesIO()
    # zlib level 3: half the encoding time of the default 6 for about 6 % more bytes
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    data = buf.getvalue()
    w, h = png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return FigureHTML(fid, title, caption, better, uri, w, h)


# ----------------------------------------------------------------------------- display mapping

@dataclass(frozen=True)
class Display:
    """How pixels become colours: which bands make the composite and each band's stretch.

    Attributes:
        bands: 0-based band indices shown as R, G, B (three) or grey (one).
        lo, hi: per band of the scene, the values mapped to 0 and 1 (scene units).
        label: the sentence the report prints about it.
    """

    bands: tuple[int, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    label: str

    def band01(self, data: np.ndarray, band: int) -> np.ndarray:
        """One band of ``(bands, h, w)`` scene values stretched to [0, 1] (float32, clipped)."""
        x = (data[band].astype(np.float64) - self.lo[band]) / (self.hi[band] - self.lo[band])
        return np.clip(np.nan_to_num(x, nan=0.0), 0, 1).astype(np.float32)

    def rgba(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(h, w, 4)`` float32 RGBA of a ``(bands, h, w)`` array; invalid pixels transparent."""
        chans = [self.band01(data, b) for b in self.bands]
        if len(chans) == 1:
            chans = chans * 3
        alpha = valid[list(self.bands)].all(axis=0).astype(np.float32)
        return np.dstack([*chans, alpha])


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


def _stretch(data: np.ndarray, valid: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lo, hi = [], []
    for b in range(data.shape[0]):
        vals = data[b][valid[b]]
        if vals.size == 0:
            lo.append(0.0), hi.append(1.0)
            continue
        p0, p1 = np.percentile(vals, STRETCH_PERCENTILES)
        lo.append(float(p0))
        hi.append(float(p1) if p1 > p0 else float(p0) + 1.0)
    return tuple(lo), tuple(hi)


# ------------------------------------------------------------------------------------- reading

def _open(path: str):
    try:
        return rasterio.open(path, driver=ALLOWED_DRIVERS)
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"{path}: cannot open for the HTML report ({str(exc).splitlines()[0]})"
                         ) from None


def read_decimated(ds, max_px: int = THUMB_MAX_PX) -> tuple[np.ndarray, np.ndarray, float]:
    """The whole dataset decimated so its longest side is at most ``max_px``.

    GDAL serves the read from the closest overview when the file has them (our COGs do) and
    averages (``Resampling.average``); the validity mask is read with nearest neighbour.

    Returns:
        ``(data float64 (bands, h, w), valid bool (bands, h, w), factor)`` where ``factor`` is
        dataset pixels per thumbnail pixel (>= 1).
    """
    f = max(1.0, max(ds.height, ds.width) / max_px)
    h, w = max(1, round(ds.height / f)), max(1, round(ds.width / f))
    data = ds.read(out_shape=(ds.count, h, w), resampling=Resampling.average).astype(np.float64)
    valid = ds.read_masks(out_shape=(ds.count, h, w), resampling=Resampling.nearest) > 0
    valid &= np.isfinite(data)
    return data, valid, ds.height / h


def _read(ds, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    win = Window(col, row, w, h)
    data = ds.read(window=win)
    valid = ds.read_masks(window=win) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


# ------------------------------------------------------------------------------------- regions

def _box_sums(a: np.ndarray, k: int) -> np.ndarray:
    """Sums of every ``k x k`` box of a 2-D array (integral image), shape ``(h-k+1, w-k+1)``."""
    s = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]


def pick_regions(thumb: np.ndarray, valid: np.ndarray, factor: float, height: int, width: int,
                 display: Display, *, crop_px: int, tile_px: int | None = None,
                 seed: int = 0) -> list[Region]:
    """Choose the crop regions on a decimated read of the input.

    Region A has the most detail: the largest sum of squared gradients (both axes, stretched
    values, all bands) in a crop-sized box of the thumbnail, among boxes at least 99 % valid.
    Region B is drawn at random (``numpy.random.default_rng(seed)``) among boxes at least 90 %
    valid that do not overlap A. Region C (when ``tile_px`` is given and the scene has more than
    one tile) is centred on a tile corner (on an edge when one axis has a single tile): the one
    whose box has the most detail among boxes at least 90 % valid, so seams would show.

    Args:
        thumb, valid: ``(bands, h, w)`` decimated input and validity.
        factor: input pixels per thumbnail pixel.
        height, width: input size (px).
        display: the display stretch (bands weigh equally after it).
        crop_px: crop edge in input pixels, at most ``min(height, width)``.
        tile_px: tile core edge in input pixels, or ``None`` for no region C.
        seed: seed of the random region.

    Returns:
        Regions ``A``, then ``B`` and ``C`` where there is room / a tile edge.
    """
    all_valid = valid.all(axis=0)
    g = np.zeros(all_valid.shape)
    for b in range(thumb.shape[0]):
        x = display.band01(thumb, b).astype(np.float64)
        dx = np.zeros_like(x)
        dy = np.zeros_like(x)
        dx[:, 1:] = np.diff(x, axis=1) ** 2
        dy[1:, :] = np.diff(x, axis=0) ** 2
        g += dx + dy
    g[~all_valid] = 0.0
    k = max(1, min(round(crop_px / factor), *g.shape))
    energy = _box_sums(g, k)
    frac = _box_sums(all_valid.astype(np.float64), k) / (k * k)

    def clamp(r: int, c: int) -> tuple[int, int]:
        return min(max(0, r), height - crop_px), min(max(0, c), width - crop_px)

    def box(r: int, c: int) -> tuple[int, int]:
        return (min(round(r / factor), energy.shape[0] - 1),
                min(round(c / factor), energy.shape[1] - 1))

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
        rows = list(range(tile_px, height, tile_px)) or [height // 2]
        cols = list(range(tile_px, width, tile_px)) or [width // 2]
        best, best_score = None, -np.inf
        for by in rows:
            for bx in cols:
                r, c = clamp(by - crop_px // 2, bx - crop_px // 2)
                bi, bj = box(r, c)
                score = energy[bi, bj] if frac[bi, bj] >= 0.9 else frac[bi, bj] - 2.0
                if score > best_score:
                    best, best_score = (r, c), score
        regions.append(Region("C", *best, crop_px,
                              "centred on the tile corner (or edge) with the most detail"))
    return regions


# ------------------------------------------------------------------------------------- figures

def _hide(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _thumbnail_figure(out_thumb, out_valid, out_factor, display, regions, scale) -> FigureHTML:
    h, w = out_thumb.shape[1:]
    fig = _figure((w, h))
    ax = fig.add_axes((0, 0, 1, 1))
    # the figure has exactly the thumbnail's pixels: one image pixel per screen pixel
    ax.imshow(display.rgba(out_thumb, out_valid), interpolation="nearest")
    ax.set_axis_off()
    from matplotlib.patches import Rectangle

    for reg in regions:
        k = reg.size * scale / out_factor
        x, y = reg.col * scale / out_factor, reg.row * scale / out_factor
        colour = _REGION_COLOURS[reg.name]
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), k, k, fill=False, lw=2, ec=colour))
        ax.text(x + 2, y - 4 if y > 14 else y + k + 12, reg.name, color=colour, fontsize=12,
                fontweight="bold")
    return _embed(fig, "thumbnail", "The whole output",
                  (f"Decimated {out_factor:.1f} x from the output COG's overviews"
                   if out_factor > 1.01 else "At full resolution") + "; boxes mark the "
                  "regions cropped below (A most detail, B random, C tile corner).",
                  "Look for tile-sized patterns, stripes or blocks: there should be none.")


def _crops_figure(reg: Region, crops: dict, display: Display, scale: int) -> FigureHTML:
    fig = _figure(CROPS_PX)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.02, wspace=0.04)
    titles = {"input": f"input, nearest neighbour x{scale}", "bicubic": "bicubic (Keys a=-0.5)",
              "model": "model (the output)"}
    for ax, key in zip(axes, ("input", "bicubic", "model"), strict=True):
        data, valid = crops[key]
        ax.imshow(display.rgba(data, valid), interpolation="nearest")
        ax.set_title(titles[key], fontsize=10)
        _hide(ax)
    edge_hr = reg.size * scale
    return _embed(fig, f"crops-{reg.name}",
                  f"Region {reg.name}: {reg.why}",
                  f"Input rows {reg.row}-{reg.row + reg.size - 1}, columns {reg.col}-"
                  f"{reg.col + reg.size - 1} ({reg.size} x {reg.size} input px = {edge_hr} x "
                  f"{edge_hr} output px), all three at the same zoom and stretch.",
                  "Better: the model is sharper than bicubic with no new artefacts (ringing, "
                  "checkerboard, invented texture) and agrees with the input's structures.")


def _heatmap_figure(diffs: list[tuple[Region, np.ndarray]], units: str) -> FigureHTML:
    fig = _figure(HEATMAP_PX)
    axes = fig.subplots(1, len(diffs) + 1, width_ratios=[1] * len(diffs) + [0.06])
    fig.subplots_adjust(left=0.01, right=0.93, top=0.9, bottom=0.03, wspace=0.06)
    finite = np.concatenate([d[np.isfinite(d)].ravel() for _, d in diffs]) \
        if diffs else np.zeros(1)
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = None
    for ax, (reg, d) in zip(axes[:-1], diffs, strict=True):
        im = ax.imshow(np.ma.masked_invalid(d), cmap="magma", vmin=0, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(f"region {reg.name}", fontsize=10)
        _hide(ax)
    fig.colorbar(im, cax=axes[-1], label=f"|model - bicubic| ({units})")
    return _embed(fig, "heatmap", "Where the model departs from bicubic",
                  "Absolute difference model - bicubic per output pixel, mean over bands, in the "
                  "scene's units; colour scale 0 to the 99th percentile over both regions.",
                  "Differences should follow edges and texture (added detail); flat areas should "
                  "stay dark, and straight lines along tile edges would mean seams.")


def _grid_figure(reg: Region, model: tuple, display: Display, scale: int,
                 tile_px: int) -> FigureHTML:
    fig = _figure(GRID_PX)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.04)
    data, valid = model
    img = display.rgba(data, valid)
    n = reg.size * scale
    t_hr = tile_px * scale
    for ax, lines in zip(axes, (True, False), strict=True):
        ax.imshow(img, interpolation="nearest")
        if lines:
            for x in range(-(-reg.col * scale // t_hr) * t_hr, (reg.col * scale) + n, t_hr):
                ax.axvline(x - reg.col * scale - 0.5, color="#ffd60a", lw=1, ls="--")
            for y in range(-(-reg.row * scale // t_hr) * t_hr, (reg.row * scale) + n, t_hr):
                ax.axhline(y - reg.row * scale - 0.5, color="#ffd60a", lw=1, ls="--")
        ax.set_title("model output, tile edges dashed" if lines else "the same, no lines",
                     fontsize=10)
        _hide(ax)
    return _embed(fig, "tile-grid", "Tile grid over the output (region C)",
                  f"Tiles of {tile_px} input px ({t_hr} output px) around the tile corner (or "
                  "edge) with the most detail; the right panel is the same crop without the "
                  "lines.",
                  "Nothing should change where the dashed lines run (no step, line or texture "
                  "change at the tile edges).")


def _seam_figure(seam: dict) -> FigureHTML | None:
    prof = seam.get("profile") or {}
    if not prof.get("offset_px"):
        return None
    fig = _figure(SEAM_PROFILE_PX)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.1, right=0.98, top=0.92, bottom=0.18)
    off = np.asarray(prof["offset_px"])
    rel = np.asarray([np.nan if v is None else v for v in prof["relative"]], dtype=float)
    ax.axhline(1.0, color="0.6", lw=1)
    ax.plot(off, rel, "o-", color="#0a84ff")
    ax.plot([0], [rel[off == 0][0]] if (off == 0).any() else [np.nan], "o", color="#ff3b30",
            ms=9, label="across the tile edge")
    ax.set_xlabel("distance from the tile edge (output px)")
    ax.set_ylabel("|neighbour diff.| / reference")
    # never zoom in so far that noise of a few per cent looks like a seam
    finite = rel[np.isfinite(rel)]
    ax.set_ylim(min(0.8, finite.min() - 0.05) if finite.size else 0.8,
                max(1.2, finite.max() + 0.05) if finite.size else 1.2)
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.3)
    return _embed(fig, "seam-profile", "Seam profile",
                  "Mean absolute difference of neighbouring output pixels at each distance from "
                  "the tile edges (multiples of the scale, so every point has the same sub-pixel "
                  "phase), pooled over all edges, bands and both axes, relative to the reference "
                  "pairs of the seam metric.",
                  "Flat around 1.0 is better; a peak at 0 (red) means visible seams.")


def _hist_figure(rep: dict, band_names: list[str]) -> FigureHTML | None:
    hist = rep.get("histograms")
    if not hist:
        return None
    hin, hout = hist["input"], hist["output"]
    nb = len(hin["counts"])
    ncols = min(nb, 3)
    nrows = -(-nb // ncols)
    fig = _figure((HIST_ROW_PX[0], HIST_ROW_PX[1] * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.13 / nrows, bottom=0.2 / nrows,
                        wspace=0.25, hspace=0.55)
    for b in range(nb):
        ax = axes[b]
        lo, hi = hin["ranges"][b]
        edges = np.linspace(lo, hi, len(hin["counts"][b]) + 1)
        for h, label, colour in ((hin, "input", "#8e8e93"), (hout, "output", "#0a84ff")):
            c = np.asarray(h["counts"][b], dtype=float)
            ax.stairs(c / max(c.sum(), 1), edges, label=label, color=colour, lw=1.5)
        ax.set_title(band_names[b], fontsize=10)
        ax.tick_params(labelsize=8)
        if b == 0:
            ax.legend(fontsize=8)
    for ax in axes[nb:]:
        ax.set_axis_off()
    return _embed(fig, "histograms", "Per-band histograms, input vs output",
                  "Fraction of valid pixels per bin over the input's valid range (every pixel of "
                  "both files, streamed); output values outside the range are counted in the "
                  "edge bins.",
                  "The output's histogram should follow the input's: a shift or a widened "
                  "histogram means the model changed the radiometry.")


def _bands_figure(thumb, valid, display: Display, band_names: list[str]) -> FigureHTML | None:
    nb = thumb.shape[0]
    if nb < 2:
        return None
    ncols = min(nb, 4)
    nrows = -(-nb // ncols)
    h, w = thumb.shape[1:]
    panel_h = BANDS_PANEL_PX * h / w
    fig = _figure((BANDS_PANEL_PX * ncols, round((panel_h + 24) * nrows)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - 20 / ((panel_h + 24) * nrows),
                        bottom=0.005, wspace=0.03, hspace=24 / panel_h)
    for b in range(nb):
        own = Display((b,), display.lo, display.hi, "")
        axes[b].imshow(own.rgba(thumb, valid), interpolation="nearest")
        axes[b].set_title(band_names[b], fontsize=9)
        _hide(axes[b])
    for ax in axes[nb:]:
        ax.set_axis_off()
    return _embed(fig, "bands", "Every band of the output",
                  "Each band of the output thumbnail in grey levels, with its own 2-98 % stretch.",
                  "Every band should look like a sharper version of the input band; a band that "
                  "is blank, noisy or blocky is a problem.")


# --------------------------------------------------------------------------------- scene report

def _crop_set(src, out, reg: Region, scale: int, norm: Normalization) -> dict:
    """Input, bicubic (the Wald baseline's kernel, through Pillow: no torch in this process) and
    model for a region."""
    from sr_core.imaging.resample import upsample_bands_pillow

    lr, lr_valid = _read(src, reg.row, reg.col, reg.size, reg.size)
    m = 3  # LR px of context for the bicubic kernel (support 2), clipped at the scene border
    r0, c0 = max(reg.row - m, 0), max(reg.col - m, 0)
    r1, c1 = min(reg.row + reg.size + m, src.height), min(reg.col + reg.size + m, src.width)
    ctx, ctx_valid = _read(src, r0, c0, r1 - r0, c1 - c0)
    x = norm.to_model(ctx)
    x[~ctx_valid] = 0.0
    up = norm.from_model(upsample_bands_pillow(x, scale))
    n = reg.size * scale
    dr, dc = (reg.row - r0) * scale, (reg.col - c0) * scale
    bic = up[:, dr:dr + n, dc:dc + n]
    bic_valid = np.repeat(np.repeat(lr_valid, scale, axis=1), scale, axis=2)
    model = _read(out, reg.row * scale, reg.col * scale, n, n)
    return {"input": (lr, lr_valid), "bicubic": (bic, bic_valid), "model": model}


def _normalization(rep: dict) -> Normalization:
    n = rep["normalisation"]
    return Normalization(n["method"], tuple(n["offset"]), tuple(n["span"]), n["dtype"])


def _spacing(transform: list[float], crs_label: str | None) -> tuple[float, float, str]:
    a, b, _, d, e, _ = transform[:6]
    units = "CRS units"
    if crs_label:
        try:
            crs = rasterio.crs.CRS.from_user_input(crs_label)
            units = "degree" if crs.is_geographic else (crs.linear_units or units)
        except Exception:  # noqa: BLE001 - a CRS GDAL cannot parse: say "CRS units"
            pass
    else:
        units = "px (no CRS)"
    return math.hypot(a, d), math.hypot(b, e), units


def _band_names(rep: dict) -> list[str]:
    inp = rep["input"]
    descs = inp.get("descriptions") or []
    ci = inp.get("colorinterp") or []
    names = []
    for b in range(inp["bands"]):
        label = descs[b] if b < len(descs) and descs[b] else None
        label = label or (ci[b] if b < len(ci) and ci[b] not in ("undefined", "gray") else None)
        names.append(f"band {b + 1}" + (f" ({label})" if label else ""))
    return names


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("sr_core.reports", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    return env


def _num(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.{nd}f}"
    return str(v)


def _picture_figures(src, out, norm: Normalization, display: Display, in_thumbs: tuple,
                     out_thumbs: tuple, *, scale: int, tile_px: int, crop_px: int, seed: int,
                     units: str, value_scale: float = 1.0
                     ) -> tuple[list[FigureHTML], list[Region], Region | None]:
    """The thumbnail, crop, difference-map and tile-grid figures of a scene.

    Args:
        src, out: the input and output, read through ``read(window=)`` / ``read_masks(window=)``
            (a rasterio dataset, or :class:`ZarrPlanes` for medical images).
        norm: the run's normalisation of the bands read; display: the display mapping.
        in_thumbs, out_thumbs: ``(data, valid, factor)`` decimated reads of input and output.
        units: the difference map's unit; value_scale: multiplies the differences (e.g. a DICOM
            Rescale Slope, so the map is in modality units).

    Returns:
        ``(figures, regions A/B, region C or None)``.
    """
    in_thumb, in_valid, in_factor = in_thumbs
    out_thumb, out_valid, out_factor = out_thumbs
    crop_px = max(1, min(crop_px, src.height, src.width))
    marked = pick_regions(in_thumb, in_valid, in_factor, src.height, src.width, display,
                          crop_px=crop_px, tile_px=tile_px, seed=seed)
    regions = [r for r in marked if r.name != "C"]
    grid_reg = next((r for r in marked if r.name == "C"), None)
    figures = [_thumbnail_figure(out_thumb, out_valid, out_factor, display, marked, scale)]
    diffs = []
    for reg in regions:
        crops = _crop_set(src, out, reg, scale, norm)
        figures.append(_crops_figure(reg, crops, display, scale))
        (m, mv), (b, bv) = crops["model"], crops["bicubic"]
        d = np.abs(m.astype(np.float64) - b.astype(np.float64)) * abs(value_scale)
        d[~(mv & bv)] = np.nan
        diffs.append((reg, np.nanmean(d, axis=0) if np.isfinite(d).any()
                      else np.full(d.shape[1:], np.nan)))
    figures.append(_heatmap_figure(diffs, units))
    if grid_reg:
        n = grid_reg.size * scale
        figures.append(_grid_figure(grid_reg, _read(out, grid_reg.row * scale,
                                                    grid_reg.col * scale, n, n),
                                    display, scale, tile_px))
    return figures, regions, grid_reg


def build_scene_html(rep: dict, input_path: str, output_path: str, *, seed: int = 0,
                     crop_px: int = CROP_LR_PX, uncertainty_path: str | None = None) -> str:
    """The per-scene HTML report: one self-contained page (figures embedded as PNG data URIs).

    Args:
        rep: the scene's JSON report (:func:`sr_core.reports.report.build_report`, with the seam metric,
            band statistics and histograms the pipeline adds).
        input_path: local path of the input scene (LR).
        output_path: local path of the output COG.
        seed: seed of the random crop region.
        crop_px: crop edge in input pixels (clipped to the scene).
        uncertainty_path: local path of the self-ensemble's uncertainty COG, shown as a map
            (:func:`sr_core.reports.html_uncertainty.uncertainty_map`); ``None``: no map.

    Returns:
        The HTML text (UTF-8; no external resources).

    Raises:
        InputError: a file cannot be opened or read, or the two files disagree on bands or scale.
    """
    scale = int(rep["scale"])
    norm = _normalization(rep)
    tile_px = int(rep["tiling"]["tile_size_px"])
    band_names = _band_names(rep)
    with _open(input_path) as src, _open(output_path) as out:
        if out.count != src.count or (out.width, out.height) != (src.width * scale,
                                                                 src.height * scale):
            raise InputError(f"{output_path}: is not {input_path} upscaled x{scale} "
                             f"({out.width} x {out.height} px, {out.count} bands)")
        in_thumb, in_valid, in_factor = read_decimated(src)
        bands, label = composite_bands(list(rep["input"].get("colorinterp") or []), src.count)
        lo, hi = _stretch(in_thumb, in_valid)
        display = Display(bands, lo, hi, label)
        out_thumb, out_valid, out_factor = read_decimated(out)
        small_thumb, small_valid, _ = read_decimated(out, BANDS_PANEL_PX)
        units = "DN" if np.issubdtype(np.dtype(rep["input"]["dtype"]), np.integer) \
            else "scene units"
        figures, regions, grid_reg = _picture_figures(
            src, out, norm, display, (in_thumb, in_valid, in_factor),
            (out_thumb, out_valid, out_factor), scale=scale, tile_px=tile_px, crop_px=crop_px,
            seed=seed, units=units)
    seam = (rep.get("quality") or {}).get("seam") or {}
    for extra in (_seam_figure(seam) if isinstance(seam, dict) else None,
                  _hist_figure(rep, band_names),
                  _bands_figure(small_thumb, small_valid, display, band_names)):
        if extra is not None:
            figures.append(extra)
    if uncertainty_path:
        from sr_core.reports.html_uncertainty import uncertainty_map

        figures.append(uncertainty_map(uncertainty_path, units))

    sx, sy, units_gsd = _spacing(rep["input"]["transform"], rep["input"].get("crs"))
    context = {
        "medical": None, "rep": rep, "figures": figures, "display": display, "regions": regions,
        "grid_region": grid_reg, "band_names": band_names,
        "stretch": f"{STRETCH_PERCENTILES[0]:g}-{STRETCH_PERCENTILES[1]:g} %",
        "gsd": {"in": (sx, sy), "out": (sx / scale, sy / scale), "units": units_gsd},
        "numbers": quality_numbers(rep),
        "card": _card_summary(rep["model"].get("card") or {}),
        "card_json": _json(rep["model"].get("card") or {}),
        "out_name": os.path.basename(str(rep["output"]["uri"])),
    }
    return _env().get_template("scene_report.html.j2").render(**context)


# ------------------------------------------------------------------------- medical scene report

#: display stretch of medical images without a VOI window in the file (percentiles, valid pixels)
MEDICAL_STRETCH_PERCENTILES = (0.5, 99.5)


class ZarrPlanes:
    """Some planes of a staged Zarr group (``image`` and ``valid`` ``(planes, H, W)``) seen as a
    small raster: ``read(window=)`` / ``read_masks(window=)`` like a rasterio dataset, so the
    figure code reads medical images the way it reads COGs, window by window.

    Args:
        store_path: the Zarr group (the run's input or output store).
        planes: plane indices shown as bands (one for grey levels, three for RGB).
    """

    def __init__(self, store_path: str, planes: list[int]) -> None:
        import zarr

        group = zarr.open_group(store_path, mode="r")
        self._image, self._valid = group["image"], group["valid"]
        self.planes = list(planes)
        self.count = len(self.planes)
        self.height, self.width = (int(v) for v in self._image.shape[1:])

    def _stack(self, arr, rows: slice, cols: slice) -> np.ndarray:
        return np.stack([np.asarray(arr[p, rows, cols]) for p in self.planes])

    @staticmethod
    def _slices(window: Window) -> tuple[slice, slice]:
        r, c = int(window.row_off), int(window.col_off)
        return slice(r, r + int(window.height)), slice(c, c + int(window.width))

    def read(self, window: Window) -> np.ndarray:
        """``(bands, h, w)`` values of a window, in the scene's dtype."""
        return self._stack(self._image, *self._slices(window))

    def read_masks(self, window: Window) -> np.ndarray:
        """``(bands, h, w)`` uint8, 255 where valid (rasterio's convention)."""
        return self._stack(self._valid, *self._slices(window)).astype(np.uint8) * 255

    def decimated(self, max_px: int = THUMB_MAX_PX) -> tuple[np.ndarray, np.ndarray, float]:
        """Every ``f``-th pixel (nearest neighbour, ``f`` the smallest step that fits ``max_px``):
        ``(data float64, valid bool, f)`` as :func:`read_decimated`; only the sampled pixels are
        held."""
        f = max(1, math.ceil(max(self.height, self.width) / max_px))
        step = slice(None, None, f)
        data = self._stack(self._image, step, step).astype(np.float64)
        valid = self._stack(self._valid, step, step) & np.isfinite(data)
        return data, valid, float(f)


def medical_planes(rep: dict) -> tuple[list[int], str]:
    """The planes a medical report shows and the sentence that says which.

    Returns:
        ``(planes, label)``: the middle image of the volume or series (middle slice of the first
        time point for NIfTI, middle instance and frame for DICOM), its three colour samples
        when it has them (DICOM RGB, whole-slide RGB), else its one plane.
    """
    inp = rep["input"]
    geo, fmt, count = inp.get("geometry") or {}, inp["format"], int(inp["bands"])
    if fmt == "wsi":
        n = int(geo.get("samples") or count)
        return (list(range(3)), "level 0 in RGB") if n >= 3 else ([0], "level 0 in grey levels")
    if fmt == "dicom":
        samples = int(geo.get("samples_per_pixel") or 1)
        images = count // samples
        m = images // 2
        where = (f"image {m + 1} of {images} (instance x frame, in series order)"
                 if images > 1 else "the image")
        if samples == 3:
            return [m * 3, m * 3 + 1, m * 3 + 2], f"{where}, RGB"
        return [m], f"{where} in grey levels"
    shape = list(geo.get("shape") or [inp["width"], inp["height"]])
    k = shape[2] // 2 if len(shape) > 2 else 0
    t = " of the first volume" if len(shape) > 3 and math.prod(shape[3:]) > 1 else ""
    return [k], (f"slice k = {k} (of {shape[2]}){t}, voxel axis i across, j down, in grey "
                 "levels" if len(shape) > 2 else "the image in grey levels")


def medical_display(rep: dict, planes: list[int], thumb: np.ndarray, valid: np.ndarray,
                    label: str) -> Display:
    """The display window of a medical image, in stored values.

    DICOM with a VOI window: the file's first Window Center / Width (modality units), taken back
    to stored values through Rescale Slope / Intercept (PS3.3 C.11.2; MONOCHROME1 shown inverted).
    8-bit RGB: 0-255. Otherwise each band between its
    :data:`MEDICAL_STRETCH_PERCENTILES` of valid input pixels.
    """
    geo = rep["input"].get("geometry") or {}
    n = len(planes)
    bands = tuple(range(n)) if n == 3 else (0,)
    centre, width = geo.get("window_center"), geo.get("window_width")
    if rep["input"]["format"] == "dicom" and n == 1 and centre is not None and width:
        m, b = geo.get("rescale_slope") or 1.0, geo.get("rescale_intercept") or 0.0
        lo, hi = (centre - width / 2 - b) / m, (centre + width / 2 - b) / m
        unit = geo.get("rescale_type") or "modality units"
        text = (f"{label}; window: the file's VOI window, centre {centre:g} / width {width:g} "
                f"{unit}")
        if geo.get("photometric") == "MONOCHROME1":
            lo, hi = hi, lo
            text += " (MONOCHROME1: low values white)"
        return Display(bands, (lo,), (hi,), text)
    if rep["input"]["dtype"] == "uint8" and n == 3:
        return Display(bands, (0.0,) * 3, (255.0,) * 3, f"{label}; values 0-255 as stored")
    lo, hi = [], []
    for bnd in range(n):
        vals = thumb[bnd][valid[bnd]]
        p0, p1 = np.percentile(vals, MEDICAL_STRETCH_PERCENTILES) if vals.size else (0.0, 1.0)
        lo.append(float(p0))
        hi.append(float(p1) if p1 > p0 else float(p0) + 1.0)
    pct = "-".join(f"{v:g}" for v in MEDICAL_STRETCH_PERCENTILES)
    return Display(bands, tuple(lo), tuple(hi),
                   f"{label}; window: the {pct} % percentiles of the valid input pixels shown")


def medical_histograms(input_store: str, output_store: str, channels: int,
                       ranges: list[tuple[float, float]], bins: int = 64) -> dict:
    """Histograms of every plane of input and output, pooled per colour channel (plane ``p``
    is channel ``p % channels``), streamed block by block from the Zarr stores.

    Returns:
        ``{"input": {"ranges", "counts"}, "output": {...}}`` as :func:`_hist_figure` reads them;
        values outside a range fall in the edge bins.
    """
    import zarr

    out = {}
    for key, path in (("input", input_store), ("output", output_store)):
        group = zarr.open_group(path, mode="r")
        image, valid = group["image"], group["valid"]
        counts = np.zeros((channels, bins), np.int64)
        rows = int(image.chunks[1])
        for p in range(image.shape[0]):
            c = p % channels
            lo, hi = ranges[c]
            for r in range(0, image.shape[1], rows):
                x = np.asarray(image[p, r:r + rows]).astype(np.float64)
                x = x[np.asarray(valid[p, r:r + rows]) & np.isfinite(x)]
                idx = np.clip(((x - lo) / ((hi - lo) or 1.0) * bins).astype(np.int64), 0, bins - 1)
                counts[c] += np.bincount(idx, minlength=bins)
        out[key] = {"ranges": [list(r) for r in ranges], "counts": counts.tolist()}
    return out


def _geometry_rows(rep: dict) -> list[tuple[str, str, str]]:
    """``(what, input, output)`` rows of a medical image's physical geometry (no patient data)."""
    inp, out, s = rep["input"], rep["output"], int(rep["scale"])
    geo, fmt = inp.get("geometry") or {}, inp["format"]

    def pair(v, nd=6) -> str:
        return " x ".join(f"{float(x):.{nd}g}" for x in v) if v else "none"

    rows = []
    if fmt == "dicom":
        rows.append(("modality", geo.get("modality") or "?", geo.get("modality") or "?"))
        for key, what in (("pixel_spacing_mm", "Pixel Spacing (row x column, mm)"),
                          ("imager_pixel_spacing_mm", "Imager Pixel Spacing (mm)"),
                          ("nominal_scanned_pixel_spacing_mm",
                           "Nominal Scanned Pixel Spacing (mm)")):
            if geo.get(key):
                rows.append((what, pair(geo[key]), pair(out.get(key) or
                                                        [v / s for v in geo[key]])))
        rows.append(("images", f"{geo.get('instances')} instance(s) x {geo.get('frames')} frame(s)",
                     "the same"))
        if geo.get("slice_thickness_mm"):
            rows.append(("Slice Thickness (mm)", f"{geo['slice_thickness_mm']:g}", "kept"))
        unit = geo.get("rescale_type") or "modality units"
        rows.append(("values", f"stored x {geo.get('rescale_slope'):g} + "
                     f"{geo.get('rescale_intercept'):g} = {unit}",
                     "the same rescale (values in the original units)"))
    elif fmt == "nifti":
        units = geo.get("units") or {}
        vs = geo.get("voxel_size") or []
        rows.append(("voxel size (i x j x k ...)", f"{pair(vs)} {units.get('space') or ''}",
                     f"{pair(out.get('voxel_size') or [])} {units.get('space') or ''}"))
        rows.append(("shape", pair(geo.get("shape") or [], 9), pair(out.get("shape") or [], 9)))
        rows.append(("affine (voxel -> world)", _json(geo.get("affine")),
                     _json(out.get("affine"))))
        if geo.get("scl_slope") is not None:
            rows.append(("scl_slope / scl_inter", f"{geo['scl_slope']} / {geo.get('scl_inter')}",
                         "kept"))
    else:
        mpp = geo.get("mpp")
        rows.append(("microns per pixel (x, y)", pair(mpp) if mpp else "not stated",
                     pair([v / s for v in mpp]) if mpp else "not stated"))
        if geo.get("app_mag"):
            rows.append(("apparent magnification", f"{geo['app_mag']:g}x",
                         f"{geo['app_mag'] * s:g}x"))
        rows.append(("kind", geo.get("kind") or "?", "pyramidal tiled TIFF"))
    return rows


def build_medical_html(rep: dict, input_store: str, output_store: str, *, seed: int = 0,
                       crop_px: int = CROP_LR_PX) -> str:
    """The HTML report of a medical image (DICOM, NIfTI, whole-slide TIFF): the same page as
    :func:`build_scene_html` (thumbnail, crops input / bicubic / model, difference map, tile
    grid, histograms, numbers) with the physical geometry (pixel spacing, voxel size and affine,
    microns per pixel) in place of CRS and GSD, and a window suited to the modality
    (:func:`medical_display`). Pictures show one image of the volume (:func:`medical_planes`);
    the histograms pool every plane.

    Pixels are read from the run's staged input Zarr and output Zarr (the arrays the format's
    writer serialised), windowed: nothing is read whole beyond a decimated thumbnail. The page
    holds no patient data: ``rep`` carries geometry and pixel format only.

    Args:
        rep: the scene's JSON report (``rep["input"]["format"]`` not ``"geotiff"``).
        input_store, output_store: local paths of the run's input and output Zarr groups.
        seed: seed of the random crop region; crop_px: crop edge in input pixels.

    Returns:
        The HTML text (UTF-8; no external resources).

    Raises:
        InputError: the stores do not hold the input and its x-scale output.
    """
    scale = int(rep["scale"])
    tile_px = int(rep["tiling"]["tile_size_px"])
    planes, where = medical_planes(rep)
    src, out = ZarrPlanes(input_store, planes), ZarrPlanes(output_store, planes)
    if (out.height, out.width) != (src.height * scale, src.width * scale):
        raise InputError(f"{output_store}: is not {input_store} upscaled x{scale}")
    full = _normalization(rep)
    norm = Normalization(full.method, tuple(full.offset[p] for p in planes),
                         tuple(full.span[p] for p in planes), full.dtype)
    in_thumbs, out_thumbs = src.decimated(), out.decimated()
    display = medical_display(rep, planes, in_thumbs[0], in_thumbs[1], f"Shown: {where}")
    geo = rep["input"].get("geometry") or {}
    if rep["input"]["format"] == "dicom":
        value_scale = abs(geo.get("rescale_slope") or 1.0)
        units = geo.get("rescale_type") or "modality units"
    elif rep["input"]["format"] == "nifti" and geo.get("scl_slope") not in (None, 0):
        value_scale, units = abs(geo["scl_slope"]), "values after scl_slope"
    else:
        value_scale, units = 1.0, "stored values"
    figures, regions, grid_reg = _picture_figures(
        src, out, norm, display, in_thumbs, out_thumbs, scale=scale, tile_px=tile_px,
        crop_px=crop_px, seed=seed, units=units, value_scale=value_scale)
    figures[0] = replace(figures[0], caption=(
        f"{where.capitalize()}, one output pixel in {out_thumbs[2]:g} along each axis"
        if out_thumbs[2] > 1
        else f"{where.capitalize()} at full resolution") + "; boxes mark the regions cropped "
        "below (A most detail, B random, C tile corner).")
    channels = 3 if len(planes) == 3 else 1
    names = (["red", "green", "blue"] if channels == 3
             else [f"all {rep['input']['bands']} planes, stored values"])
    ranges = [(float(norm.offset[c]), float(norm.offset[c] + norm.span[c]))
              for c in range(channels)]
    hist = medical_histograms(input_store, output_store, channels, ranges)
    if channels == 3 and rep["input"]["bands"] % 3:
        hist = None  # planes are not RGB triples throughout
    if hist:
        figures.append(_hist_figure({"histograms": hist}, names))
    if channels == 3:
        small = out.decimated(BANDS_PANEL_PX)
        figures.append(_bands_figure(small[0], small[1], display, names))
    context = {
        "medical": {"format": rep["input"]["format"], "rows": _geometry_rows(rep)},
        "rep": rep, "figures": figures, "display": display, "regions": regions,
        "grid_region": grid_reg, "band_names": names, "stretch": "",
        "gsd": None, "numbers": quality_numbers(rep),
        "card": _card_summary(rep["model"].get("card") or {}),
        "card_json": _json(rep["model"].get("card") or {}),
        "out_name": os.path.basename(str(rep["output"]["uri"]).rstrip("/")),
    }
    return _env().get_template("scene_report.html.j2").render(**context)


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)


def _by_degradation(entry: dict) -> dict:
    """A card's validation entry as ``{degradation: {"model", "bicubic", "gain_db"}}`` (cards
    written before degradations were named hold one bicubic result)."""
    if isinstance(entry.get("model"), dict):
        return {"bicubic": entry}
    return {d: v for d, v in entry.items() if isinstance(v, dict) and "model" in v}


def _card_summary(card: dict) -> dict:
    training = card.get("training") or {}
    val = (card.get("metrics") or {}).get("validation") or {}
    return {
        "summary": card.get("summary") or card.get("note"),
        "bands": card.get("bands"),
        "training_scenes": len(training.get("scenes") or []),
        "protocol": training.get("protocol"),
        "validation": [{"scene": k, "degradation": d, "model_psnr": v["model"].get("psnr_db"),
                        "bicubic_psnr": v["bicubic"].get("psnr_db"),
                        "gain": v.get("gain_db"), "model_ssim": v["model"].get("ssim")}
                       for k, by_deg in val.items() if isinstance(by_deg, dict)
                       for d, v in _by_degradation(by_deg).items()],
        "sha256": card.get("sha256"),
    }


def quality_numbers(rep: dict) -> list[dict]:
    """The report's figures as rows ``{name, model, bicubic, unit, meaning, better}``."""
    q = rep.get("quality") or {}
    rows = []
    wald = q.get("wald")
    if isinstance(wald, dict):
        rows += [
            {"name": "Wald PSNR", "model": wald["model"]["psnr_db"],
             "bicubic": wald["bicubic"]["psnr_db"], "unit": "dB",
             "meaning": "the scene degraded by the scale and super-resolved back, compared with "
                        "the scene itself (Wald protocol, centred window)",
             "better": "higher"},
            {"name": "Wald SSIM", "model": wald["model"]["ssim"], "bicubic": wald["bicubic"]["ssim"],
             "unit": "", "meaning": "structural similarity on the same comparison (1 = identical)",
             "better": "higher"},
            {"name": "PSNR gain over bicubic", "model": wald.get("gain_db"), "bicubic": None,
             "unit": "dB", "meaning": "model PSNR minus bicubic PSNR; > 0 means the model beats "
                                      "interpolation", "better": "higher"},
        ]
        for d, r in (wald.get("by_degradation") or {}).items():
            if d == wald.get("degradation", "bicubic"):
                continue
            rows += [
                {"name": f"Wald PSNR, {d} degradation", "model": r["model"]["psnr_db"],
                 "bicubic": r["bicubic"]["psnr_db"], "unit": "dB",
                 "meaning": f"the same check with the LR made by {d} (an ideal detector's "
                            "integration for area): closer to how real sensors blur",
                 "better": "higher"},
                {"name": f"PSNR gain over bicubic, {d} degradation", "model": r["gain_db"],
                 "bicubic": None, "unit": "dB", "meaning": "model minus bicubic under that "
                                                           "degradation", "better": "higher"},
            ]
    lr = q.get("lr_consistency") or {}
    rows.append({"name": "LR consistency PSNR", "model": lr.get("psnr_db"), "bicubic": None,
                 "unit": "dB", "meaning": "the output downsampled back by the scale vs the input: "
                                          "does the output keep what was measured",
                 "better": "higher"})
    seam = q.get("seam")
    if isinstance(seam, dict):
        rows.append({"name": "Seam ratio", "model": seam.get("ratio"), "bicubic": None, "unit": "",
                     "meaning": "neighbour differences across tile edges / inside tiles "
                                "(n/a with a single tile)",
                     "better": "closer to 1.0 (above 1 = visible seams)"})
    rows.append({"name": "Nodata fraction", "model": rep.get("nodata_fraction"), "bicubic": None,
                 "unit": "", "meaning": "share of input pixel values that are nodata, masked or "
                                        "not finite (they stay nodata in the output)",
                 "better": "informative (lower = more of the scene compared)"})
    from sr_core.reports.html_uncertainty import uncertainty_numbers

    return rows + consistency_numbers(rep) + uncertainty_numbers(rep)


def consistency_numbers(rep: dict) -> list[dict]:
    """``--consistency``'s figures as :func:`quality_numbers` rows (none when it was off): per
    report degradation, the LR-consistency PSNR and the Wald gain after the correction, the
    figure without it in the meaning."""
    c = (rep.get("quality") or {}).get("consistency")
    if not isinstance(c, dict):
        return []

    def db(v) -> str:
        return f"{v:.2f} dB" if isinstance(v, int | float) else str(v)

    rows = []
    for d, lr in c["lr_psnr_db"].items():
        rows.append({"name": f"LR consistency PSNR, {d}, after --consistency {c['degradation']}",
                     "model": lr["after"], "bicubic": None, "unit": "dB",
                     "meaning": f"the output as written, degraded by {d}, vs the input; without "
                                f"the correction {db(lr['before'])}; "
                                f"{db(lr.get('after_unclipped'))} where no output pixel was "
                                "clipped to the dtype's range", "better": "higher"})
        g = c["wald_gain_db"].get(d)
        if g:
            rows.append({"name": f"PSNR gain over bicubic, {d} degradation, after --consistency",
                         "model": g["after"], "bicubic": None, "unit": "dB",
                         "meaning": f"Wald gain with the back-projected output; without "
                                    f"{db(g['before'])}", "better": "higher"})
    return rows


def link_for(uri: str) -> str:
    """A link a browser (or the Prefect UI) can follow: ``file://`` URI for a local path, the
    URL itself otherwise (``s3://``, ``https://``)."""
    from pathlib import Path

    if "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()


# ------------------------------------------------------------------------------- archive report

def _archive_row(rep: dict, link: str | None) -> dict:
    status = rep.get("status", "ok")
    q = rep.get("quality") or {}
    wald = q.get("wald") if isinstance(q.get("wald"), dict) else {}
    seam = q.get("seam") if isinstance(q.get("seam"), dict) else {}
    inp = rep.get("input") or {}
    model = (rep.get("model") or {}).get("descriptor") or {}
    return {
        "scene": inp.get("name") or rep.get("src") or "?", "link": link, "status": status,
        "error": rep.get("error"),
        "seconds": (rep.get("timings_s") or {}).get("total"),
        "mp_s": (rep.get("throughput") or {}).get("output_mp_per_s"),
        "gain": wald.get("gain_db"), "psnr": (wald.get("model") or {}).get("psnr_db"),
        "ssim": (wald.get("model") or {}).get("ssim"),
        "seam": seam.get("ratio"), "nodata": rep.get("nodata_fraction"),
        "model": model.get("name"),
        "out_mp": (rep["output"]["width"] * rep["output"]["height"] / 1e6)
        if isinstance(rep.get("output"), dict) and "width" in rep["output"] else None,
    }


def _sort_key(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, int | float) else str(v)


def _archive_plot(rows: list[dict]) -> FigureHTML | None:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    fig = _figure(ARCHIVE_PLOT_PX)
    axes = fig.subplots(3, 1, sharex=True)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.95, bottom=0.08, hspace=0.25)
    x = np.array([r["index"] for r in ok])

    def vals(key):
        return np.array([np.nan if not isinstance(r[key], int | float) else r[key] for r in ok],
                        dtype=float)

    axes[0].bar(x, vals("mp_s"), color="#0a84ff")
    axes[0].set_ylabel("output MP/s")
    axes[0].set_title("throughput per scene (higher is faster)", fontsize=10)
    gain = vals("gain")
    axes[1].bar(x, gain, color=np.where(gain >= 0, "#34c759", "#ff3b30"))
    axes[1].axhline(0, color="0.4", lw=1)
    axes[1].set_ylabel("Wald gain (dB)")
    axes[1].set_title("quality gain over bicubic (higher is better, < 0 = worse than bicubic)",
                      fontsize=10)
    seam = vals("seam")
    axes[2].plot(x, seam, "o", color="#ff9500")
    axes[2].axhline(1.0, color="0.4", lw=1)
    finite = seam[np.isfinite(seam)]
    axes[2].set_ylim(min(0.8, finite.min() - 0.05) if finite.size else 0.8,
                     max(1.2, finite.max() + 0.05) if finite.size else 1.2)
    axes[2].set_ylabel("seam ratio")
    axes[2].set_title("seam ratio (about 1.0 = no seams)", fontsize=10)
    axes[2].set_xlabel("scene # (table order)")
    from matplotlib.ticker import MaxNLocator

    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    return _embed(fig, "archive-plots", "Throughput and quality across scenes",
                  "One bar or point per scene that succeeded, at its number in the table "
                  "(scene #; failed scenes leave a gap).",
                  "Look for outliers: slow scenes, scenes worse than bicubic, seam ratios above "
                  "1.0.")


def build_archive_html(reports: list[dict], links: list[str | None], *,
                       title: str = "sr-pipeline archive run", created: str | None = None) -> str:
    """One HTML page for an archive run: a sortable table of scenes linking to each scene's
    report, totals, and plots of throughput and quality across scenes.

    Args:
        reports: per-scene JSON reports (:func:`sr_core.reports.report.build_report`), in run order. A
            scene that failed is given as ``{"status": "failed", "input": {"name": SRC},
            "error": "one line"}``; a report without ``status`` counts as ``"ok"``.
        links: per scene, the URL (relative or absolute) of its HTML report, or ``None``.
        title: page title.
        created: timestamp to print (default now, UTC).

    Returns:
        The HTML text (self-contained; the table sorts with a few lines of inline JavaScript).

    Raises:
        ValueError: ``reports`` and ``links`` differ in length.
    """
    if len(reports) != len(links):
        raise ValueError(f"{len(reports)} reports but {len(links)} links")
    rows = [_archive_row(r, link) for r, link in zip(reports, links, strict=True)]
    for i, r in enumerate(rows):
        r["index"] = i
    ok = [r for r in rows if r["status"] == "ok"]
    total_s = sum(r["seconds"] or 0 for r in ok)
    total_mp = sum(r["out_mp"] or 0 for r in ok)
    gains = [r["gain"] for r in ok if isinstance(r["gain"], int | float) and math.isfinite(r["gain"])]
    seams = [r["seam"] for r in ok if isinstance(r["seam"], int | float) and math.isfinite(r["seam"])]
    summary = {
        "scenes": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
        "seconds": total_s, "output_mp": total_mp,
        "mp_s": total_mp / total_s if total_s > 0 else None,
        "median_gain": float(np.median(gains)) if gains else None,
        "worse_than_bicubic": sum(g < 0 for g in gains),
        "max_seam": max(seams) if seams else None,
    }
    plot = _archive_plot(rows)
    return _env().get_template("archive_report.html.j2").render(
        title=title, rows=rows, summary=summary, figures=[plot] if plot else [],
        created=created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        sort_key=_sort_key)


def write_archive_report(report_paths: list[str], out_path: str, *,
                         title: str = "sr-pipeline archive run") -> str:
    """Read per-scene JSON reports from local files and write the archive page to ``out_path``
    (``sr-pipeline report-archive``). Each scene links to the HTML report beside its JSON
    (``X.report.html`` for ``X.report.json``) when that file exists, by a path relative to
    ``out_path``'s folder. The page is written under a temporary name and renamed into place.

    Returns:
        ``out_path``.

    Raises:
        InputError: a report is missing or not a JSON report, or the output folder is missing.
    """
    import json

    reports, links = [], []
    for p in report_paths:
        try:
            with open(p, encoding="utf-8") as f:
                rep = json.load(f)
        except FileNotFoundError:
            raise InputError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{p}: not a JSON report ({type(exc).__name__}: {exc})") from None
        if not isinstance(rep, dict) or not isinstance(rep.get("input"), dict):
            raise InputError(f"{p}: not an sr-pipeline scene report (no 'input' section)")
        reports.append(rep)
        html = p[:-5] + ".html" if p.endswith(".json") else p + ".html"
        out_dir = os.path.dirname(os.path.abspath(out_path))
        links.append(os.path.relpath(os.path.abspath(html), out_dir).replace(os.sep, "/")
                     if os.path.isfile(html) else None)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise InputError(f"{out_path}: folder {folder} does not exist")
    page = build_archive_html(reports, links, title=title)
    tmp = os.path.join(folder, f".{os.path.basename(out_path)}.partial-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out_path)
    return out_path
