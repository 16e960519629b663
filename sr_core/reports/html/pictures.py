"""The pictures every scene page shares: thumbnail with the regions marked, input / bicubic /
model crops, the difference map and the tile grid, for a COG (rasterio) or a medical image's
planes (:class:`~sr_core.reports.html.sources.ZarrPlanes`) alike.

May import: :mod:`sr_core.imaging` (normalisation, the bicubic kernel), :mod:`sr_core.formats`
(the Display type), :mod:`sr_core.reports.document`, and sources, display and figures of this
package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sr_core.formats import Display
from sr_core.imaging.normalize import Normalization
from sr_core.reports.document import SceneReport
from sr_core.reports.html.display import Region, pick_regions
from sr_core.reports.html.figures import (
    FigureHTML,
    crops_figure,
    grid_figure,
    heatmap_figure,
    thumbnail_figure,
)
from sr_core.reports.html.sources import Decimated, read_window


@dataclass(frozen=True)
class ScenePair:
    """The input and output of a scene as the pictures read them.

    Attributes:
        src, out: read through ``read(window=)`` / ``read_masks(window=)`` (a rasterio dataset,
            or :class:`~sr_core.reports.html.sources.ZarrPlanes` for medical images); ``out``
            is ``src`` upscaled by the scale.
        norm: the run's normalisation of the bands read; display: the display mapping.
        in_thumb, out_thumb: decimated reads of input and output.
    """

    src: Any
    out: Any
    norm: Normalization
    display: Display
    in_thumb: Decimated
    out_thumb: Decimated


@dataclass(frozen=True)
class PictureOptions:
    """How the pictures are made.

    Attributes:
        scale: the upscaling factor; tile_px: tile core edge (input px); crop_px: crop edge
            (input px, clipped to the scene); seed: seed of the random region.
        units: the difference map's unit; value_scale: multiplies the differences (e.g. a DICOM
            Rescale Slope, so the map is in modality units).
    """

    scale: int
    tile_px: int
    crop_px: int
    seed: int
    units: str
    value_scale: float = 1.0


def normalization_of(rep: SceneReport) -> Normalization:
    """The run's normalisation as recorded in the report."""
    n = rep.normalisation
    return Normalization(n["method"], tuple(n["offset"]), tuple(n["span"]), n["dtype"])


def crop_set(src, out, reg: Region, scale: int, norm: Normalization) -> dict:
    """Input, bicubic (the Wald baseline's kernel, through Pillow: no torch in this process) and
    model for a region: ``{"input", "bicubic", "model"}`` -> ``(data (bands, h, w), valid
    bool)``, the last two at the output's resolution."""
    from sr_core.imaging.resample import upsample_bands_pillow

    lr, lr_valid = read_window(src, reg.row, reg.col, reg.size, reg.size)
    m = 3  # LR px of context for the bicubic kernel (support 2), clipped at the scene border
    r0, c0 = max(reg.row - m, 0), max(reg.col - m, 0)
    r1, c1 = min(reg.row + reg.size + m, src.height), min(reg.col + reg.size + m, src.width)
    ctx, ctx_valid = read_window(src, r0, c0, r1 - r0, c1 - c0)
    x = norm.to_model(ctx)
    x[~ctx_valid] = 0.0
    up = norm.from_model(upsample_bands_pillow(x, scale))
    n = reg.size * scale
    dr, dc = (reg.row - r0) * scale, (reg.col - c0) * scale
    bic = up[:, dr:dr + n, dc:dc + n]
    bic_valid = np.repeat(np.repeat(lr_valid, scale, axis=1), scale, axis=2)
    model = read_window(out, reg.row * scale, reg.col * scale, n, n)
    return {"input": (lr, lr_valid), "bicubic": (bic, bic_valid), "model": model}


def _difference(crops: dict, value_scale: float) -> np.ndarray:
    """``|model - bicubic|`` of a crop set, mean over bands, ``(h, w)`` float64, NaN where
    either is invalid."""
    (m, mv), (b, bv) = crops["model"], crops["bicubic"]
    d = np.abs(m.astype(np.float64) - b.astype(np.float64)) * abs(value_scale)
    d[~(mv & bv)] = np.nan
    return np.nanmean(d, axis=0) if np.isfinite(d).any() else np.full(d.shape[1:], np.nan)


def picture_figures(pair: ScenePair, opts: PictureOptions
                    ) -> tuple[list[FigureHTML], list[Region], Region | None]:
    """The thumbnail, crop, difference-map and tile-grid figures of a scene.

    Returns:
        ``(figures, regions A/B, region C or None)``.
    """
    src, out, scale = pair.src, pair.out, opts.scale
    crop_px = max(1, min(opts.crop_px, src.height, src.width))
    marked = pick_regions(pair.in_thumb, (src.height, src.width), pair.display, crop_px=crop_px,
                          tile_px=opts.tile_px, seed=opts.seed)
    regions = [r for r in marked if r.name != "C"]
    grid_reg = next((r for r in marked if r.name == "C"), None)
    figures = [thumbnail_figure(pair.out_thumb, pair.display, marked, scale)]
    diffs = []
    for reg in regions:
        crops = crop_set(src, out, reg, scale, pair.norm)
        figures.append(crops_figure(reg, crops, pair.display, scale))
        diffs.append((reg, _difference(crops, opts.value_scale)))
    figures.append(heatmap_figure(diffs, opts.units))
    if grid_reg:
        n = grid_reg.size * scale
        figures.append(grid_figure(grid_reg, read_window(out, grid_reg.row * scale,
                                                         grid_reg.col * scale, n, n),
                                   pair.display, scale, opts.tile_px))
    return figures, regions, grid_reg
