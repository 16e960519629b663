"""The HTML report of one GeoTIFF scene: header (input, output, model and its card, run), pictures
(thumbnail of the output with the chosen regions marked; input nearest-neighbour, bicubic and model
crops at the same zoom for the region with most detail and a seeded random one; absolute-difference
heat map model vs bicubic; the tile grid over a crop at a tile corner; the seam profile; per-band
histograms of input and output; per-band panels) and the numbers of the report, each with a
one-line explanation and the direction that is better.

Pixels are read windowed: thumbnails through decimated reads (the COG's overviews), crops as small
windows; nothing is read at full resolution over the whole scene here (the streaming statistics
come from :mod:`sr_core.quality.scan` through the report).

May import: :mod:`sr_core.errors`, :mod:`sr_core.formats`, :mod:`sr_core.reports.document` and
the modules of this package below it; numpy and rasterio.
"""

from __future__ import annotations

import math
import os

import numpy as np
import rasterio

from sr_core.errors import InputError
from sr_core.formats import Display
from sr_core.reports.document import SceneReport, as_report
from sr_core.reports.html.display import STRETCH_PERCENTILES, composite_bands, stretch
from sr_core.reports.html.figures import (
    BANDS_PANEL_PX,
    FigureHTML,
    bands_figure,
    hist_figure,
    seam_figure,
)
from sr_core.reports.html.numbers import card_summary, quality_numbers
from sr_core.reports.html.pictures import (
    PictureOptions,
    ScenePair,
    normalization_of,
    picture_figures,
)
from sr_core.reports.html.render import render, to_json
from sr_core.reports.html.sources import open_raster, read_decimated
from sr_core.reports.html.uncertainty import uncertainty_map

#: crop edge in input (LR) pixels
CROP_LR_PX = 64


def build_scene_html(rep: SceneReport | dict, input_path: str, output_path: str, *,
                     seed: int = 0, crop_px: int = CROP_LR_PX,
                     uncertainty_path: str | None = None) -> str:
    """The per-scene HTML report: one self-contained page (figures embedded as PNG data URIs).

    Args:
        rep: the scene's report (:func:`sr_core.reports.report.build_scene_report`, with the seam
            metric, band statistics and histograms the pipeline adds; a JSON report dict is
            read with :meth:`~sr_core.reports.document.SceneReport.from_dict`).
        input_path: local path of the input scene (LR).
        output_path: local path of the output COG.
        seed: seed of the random crop region.
        crop_px: crop edge in input pixels (clipped to the scene).
        uncertainty_path: local path of the self-ensemble's uncertainty COG, shown as a map
            (:func:`sr_core.reports.html.uncertainty.uncertainty_map`); ``None``: no map.

    Returns:
        The HTML text (UTF-8; no external resources).

    Raises:
        InputError: a file cannot be opened or read, or the two files disagree on bands or scale.
    """
    rep = as_report(rep)
    scale = int(rep.scale)
    band_names = _band_names(rep)
    with open_raster(input_path) as src, open_raster(output_path) as out:
        if out.count != src.count or (out.width, out.height) != (src.width * scale,
                                                                 src.height * scale):
            raise InputError(f"{output_path}: is not {input_path} upscaled x{scale} "
                             f"({out.width} x {out.height} px, {out.count} bands)")
        in_thumb = read_decimated(src)
        bands, label = composite_bands(list(rep.input.colorinterp or []), src.count)
        display = Display(bands, *stretch(in_thumb.data, in_thumb.valid), label)
        small = read_decimated(out, BANDS_PANEL_PX)
        units = "DN" if np.issubdtype(np.dtype(rep.input.dtype), np.integer) else "scene units"
        pair = ScenePair(src, out, normalization_of(rep), display, in_thumb, read_decimated(out))
        figures, regions, grid_reg = picture_figures(pair, PictureOptions(
            scale=scale, tile_px=int(rep.tiling.tile_size_px), crop_px=crop_px, seed=seed,
            units=units))
    for extra in (seam_figure(rep.seam) if rep.seam is not None else None,
                  hist_figure(rep.histograms, band_names),
                  bands_figure(small.data, small.valid, display, band_names)):
        if extra is not None:
            figures.append(extra)
    if uncertainty_path:
        figures.append(uncertainty_map(uncertainty_path, units))
    sx, sy, units_gsd = _spacing(rep.input.transform, rep.input.crs)
    return render_scene_page(
        rep, figures, display, regions=regions, grid_region=grid_reg, band_names=band_names,
        stretch=f"{STRETCH_PERCENTILES[0]:g}-{STRETCH_PERCENTILES[1]:g} %",
        gsd={"in": (sx, sy), "out": (sx / scale, sy / scale), "units": units_gsd},
        out_name=os.path.basename(str(rep.output["uri"])))


def render_scene_page(rep: SceneReport, figures: list[FigureHTML], display: Display, *,
                      medical: dict | None = None, **context) -> str:
    """The scene page (``scene_report.html.j2``) of a report with its figures: the numbers and
    the model card's summary are taken from ``rep``; ``medical`` is ``{"format", "rows"}`` for a
    medical image (physical geometry instead of CRS and GSD); ``context`` gives the template's
    ``regions``, ``grid_region``, ``band_names``, ``stretch``, ``gsd`` and ``out_name``."""
    card = rep.model.card or {}
    return render("scene_report.html.j2", medical=medical, rep=rep, figures=figures,
                  display=display, numbers=quality_numbers(rep), card=card_summary(card),
                  card_json=to_json(card), **context)


def _spacing(transform: list[float], crs_label: str | None) -> tuple[float, float, str]:
    """Pixel spacing ``(x, y, units)`` of an affine transform's first six coefficients."""
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


def _band_names(rep: SceneReport) -> list[str]:
    """Per band, ``"band N"`` and its description or colour label when the file gives one."""
    inp = rep.input
    descs = inp.descriptions or []
    ci = inp.colorinterp or []
    names = []
    for b in range(inp.bands):
        label = descs[b] if b < len(descs) and descs[b] else None
        label = label or (ci[b] if b < len(ci) and ci[b] not in ("undefined", "gray") else None)
        names.append(f"band {b + 1}" + (f" ({label})" if label else ""))
    return names
