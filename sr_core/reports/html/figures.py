"""The figures of the HTML reports: matplotlib drawings embedded as PNG ``data:`` URIs.

Every figure is drawn by matplotlib (``matplotlib.figure.Figure``, the Agg renderer, no pyplot
state) into a PNG embedded as a ``data:`` URI, so one page opens offline and can be published
anywhere. Each builder takes arrays already read (:mod:`sr_core.reports.html.sources`) and the
display mapping (:mod:`sr_core.reports.html.display`) and returns a :class:`FigureHTML`.

May import: :mod:`sr_core.formats` (the Display type), the modules of this package below it
(sources, display), numpy and matplotlib (lazily).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from sr_core.formats import Display
from sr_core.reports.html.display import Region
from sr_core.reports.html.sources import Decimated

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

def new_figure(size_px: tuple[int, int]):
    """An empty matplotlib figure of ``size_px`` ``(width, height)`` pixels at :data:`DPI`."""
    from matplotlib.figure import Figure

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG from its IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def embed(fig, fid: str, title: str, caption: str, better: str) -> FigureHTML:
    """``fig`` as a PNG ``data:`` URI with its id, title, caption and what is better."""
    buf = io.BytesIO()
    # zlib level 3: half the encoding time of the default 6 for about 6 % more bytes
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    data = buf.getvalue()
    w, h = png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return FigureHTML(fid, title, caption, better, uri, w, h)


# ------------------------------------------------------------------------------------- figures

def hide(ax) -> None:
    """No ticks on ``ax``."""
    ax.set_xticks([])
    ax.set_yticks([])


def thumbnail_figure(out: Decimated, display: Display, regions: list[Region],
                     scale: int) -> FigureHTML:
    """The whole output, one image pixel per screen pixel, with the crop regions boxed
    (``out``: the output's decimated read; ``regions`` in input px)."""
    out_thumb, out_valid, out_factor = out
    h, w = out_thumb.shape[1:]
    fig = new_figure((w, h))
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
    return embed(fig, "thumbnail", "The whole output",
                 (f"Decimated {out_factor:.1f} x from the output COG's overviews"
                  if out_factor > 1.01 else "At full resolution") + "; boxes mark the "
                 "regions cropped below (A most detail, B random, C tile corner).",
                 "Look for tile-sized patterns, stripes or blocks: there should be none.")


def crops_figure(reg: Region, crops: dict, display: Display, scale: int) -> FigureHTML:
    """Input (nearest neighbour), bicubic and model side by side for one region (``crops``:
    ``{"input", "bicubic", "model"}`` -> ``(data, valid)``)."""
    fig = new_figure(CROPS_PX)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.02, wspace=0.04)
    titles = {"input": f"input, nearest neighbour x{scale}", "bicubic": "bicubic (Keys a=-0.5)",
              "model": "model (the output)"}
    for ax, key in zip(axes, ("input", "bicubic", "model"), strict=True):
        data, valid = crops[key]
        ax.imshow(display.rgba(data, valid), interpolation="nearest")
        ax.set_title(titles[key], fontsize=10)
        hide(ax)
    edge_hr = reg.size * scale
    return embed(fig, f"crops-{reg.name}",
                 f"Region {reg.name}: {reg.why}",
                 f"Input rows {reg.row}-{reg.row + reg.size - 1}, columns {reg.col}-"
                 f"{reg.col + reg.size - 1} ({reg.size} x {reg.size} input px = {edge_hr} x "
                 f"{edge_hr} output px), all three at the same zoom and stretch.",
                 "Better: the model is sharper than bicubic with no new artefacts (ringing, "
                 "checkerboard, invented texture) and agrees with the input's structures.")


def heatmap_figure(diffs: list[tuple[Region, np.ndarray]], units: str) -> FigureHTML:
    """``|model - bicubic|`` per region (``(h, w)`` float64 maps, NaN where invalid) on one
    colour scale in ``units``."""
    fig = new_figure(HEATMAP_PX)
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
        hide(ax)
    fig.colorbar(im, cax=axes[-1], label=f"|model - bicubic| ({units})")
    return embed(fig, "heatmap", "Where the model departs from bicubic",
                 "Absolute difference model - bicubic per output pixel, mean over bands, in the "
                 "scene's units; colour scale 0 to the 99th percentile over both regions.",
                 "Differences should follow edges and texture (added detail); flat areas should "
                 "stay dark, and straight lines along tile edges would mean seams.")


def grid_figure(reg: Region, model: tuple, display: Display, scale: int,
                tile_px: int) -> FigureHTML:
    """Region C of the output with the tile edges dashed, and the same without (``model``:
    ``(data, valid)`` of the output window)."""
    fig = new_figure(GRID_PX)
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
        hide(ax)
    return embed(fig, "tile-grid", "Tile grid over the output (region C)",
                 f"Tiles of {tile_px} input px ({t_hr} output px) around the tile corner (or "
                 "edge) with the most detail; the right panel is the same crop without the "
                 "lines.",
                 "Nothing should change where the dashed lines run (no step, line or texture "
                 "change at the tile edges).")


def seam_figure(seam: dict) -> FigureHTML | None:
    """The seam metric's profile (relative neighbour difference by distance from the tile
    edges), or ``None`` when it has none."""
    prof = seam.get("profile") or {}
    if not prof.get("offset_px"):
        return None
    fig = new_figure(SEAM_PROFILE_PX)
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
    return embed(fig, "seam-profile", "Seam profile",
                 "Mean absolute difference of neighbouring output pixels at each distance from "
                 "the tile edges (multiples of the scale, so every point has the same sub-pixel "
                 "phase), pooled over all edges, bands and both axes, relative to the reference "
                 "pairs of the seam metric.",
                 "Flat around 1.0 is better; a peak at 0 (red) means visible seams.")


def hist_figure(hist: dict | None, band_names: list[str]) -> FigureHTML | None:
    """Per-band histograms of input and output (``hist``: the report's ``histograms``,
    ``{"input": {"ranges", "counts"}, "output": {...}}``), or ``None`` without them."""
    if not hist:
        return None
    hin, hout = hist["input"], hist["output"]
    nb = len(hin["counts"])
    ncols = min(nb, 3)
    nrows = -(-nb // ncols)
    fig = new_figure((HIST_ROW_PX[0], HIST_ROW_PX[1] * nrows))
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
    return embed(fig, "histograms", "Per-band histograms, input vs output",
                 "Fraction of valid pixels per bin over the input's valid range (every pixel of "
                 "both files, streamed); output values outside the range are counted in the "
                 "edge bins.",
                 "The output's histogram should follow the input's: a shift or a widened "
                 "histogram means the model changed the radiometry.")


def bands_figure(thumb, valid, display: Display, band_names: list[str]) -> FigureHTML | None:
    """Every band of the output thumbnail (``(bands, h, w)``) in grey levels, or ``None`` for a
    single band."""
    nb = thumb.shape[0]
    if nb < 2:
        return None
    ncols = min(nb, 4)
    nrows = -(-nb // ncols)
    h, w = thumb.shape[1:]
    panel_h = BANDS_PANEL_PX * h / w
    fig = new_figure((BANDS_PANEL_PX * ncols, round((panel_h + 24) * nrows)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - 20 / ((panel_h + 24) * nrows),
                        bottom=0.005, wspace=0.03, hspace=24 / panel_h)
    for b in range(nb):
        own = Display((b,), display.lo, display.hi, "")
        axes[b].imshow(own.rgba(thumb, valid), interpolation="nearest")
        axes[b].set_title(band_names[b], fontsize=9)
        hide(axes[b])
    for ax in axes[nb:]:
        ax.set_axis_off()
    return embed(fig, "bands", "Every band of the output",
                 "Each band of the output thumbnail in grey levels, with its own 2-98 % stretch.",
                 "Every band should look like a sharper version of the input band; a band that "
                 "is blank, noisy or blocky is a problem.")
