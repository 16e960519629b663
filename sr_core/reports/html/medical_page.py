"""The HTML report of a medical image (DICOM, NIfTI, whole-slide TIFF): the scene page with the
physical geometry in place of CRS and GSD, a window suited to the modality and one image of the
volume, read from the run's Zarr stores. What to show (planes, window, value units, geometry rows)
are the format's display hints (:mod:`sr_core.formats`), which read the JSON report dict.

May import: :mod:`sr_core.errors`, :mod:`sr_core.formats`, :mod:`sr_core.imaging`,
:mod:`sr_core.reports.document` and the modules of this package below it; numpy.
"""

from __future__ import annotations

import os
from dataclasses import replace

from sr_core.errors import InputError
from sr_core.formats import Display, geometry_rows, medical_display, medical_planes, value_units
from sr_core.imaging.normalize import Normalization
from sr_core.reports.document import SceneReport, as_report
from sr_core.reports.html.figures import BANDS_PANEL_PX, FigureHTML, bands_figure, hist_figure
from sr_core.reports.html.pictures import (
    PictureOptions,
    ScenePair,
    normalization_of,
    picture_figures,
)
from sr_core.reports.html.scene_page import CROP_LR_PX, render_scene_page
from sr_core.reports.html.sources import ZarrPlanes, medical_histograms


def build_medical_html(rep: SceneReport | dict, input_store: str, output_store: str, *,
                       seed: int = 0, crop_px: int = CROP_LR_PX) -> str:
    """The HTML report of a medical image (DICOM, NIfTI, whole-slide TIFF): the same page as
    :func:`~sr_core.reports.html.scene_page.build_scene_html` (thumbnail, crops input /
    bicubic / model, difference map, tile grid, histograms, numbers) with the physical geometry
    (pixel spacing, voxel size and affine, microns per pixel) in place of CRS and GSD, and a
    window suited to the modality (:func:`sr_core.formats.medical_display`). Pictures show one
    image of the volume (:func:`sr_core.formats.medical_planes`); the histograms pool every
    plane.

    Pixels are read from the run's staged input Zarr and output Zarr (the arrays the format's
    writer serialised), windowed: nothing is read whole beyond a decimated thumbnail. The page
    holds no patient data: ``rep`` carries geometry and pixel format only.

    Args:
        rep: the scene's report (its input's format not ``"geotiff"``; a JSON report dict is read
            with :meth:`~sr_core.reports.document.SceneReport.from_dict`).
        input_store, output_store: local paths of the run's input and output Zarr groups.
        seed: seed of the random crop region; crop_px: crop edge in input pixels.

    Returns:
        The HTML text (UTF-8; no external resources).

    Raises:
        InputError: the stores do not hold the input and its x-scale output.
    """
    rep = as_report(rep)
    doc = rep.to_dict()  # the formats' display hints read the JSON report
    scale = int(rep.scale)
    planes, where = medical_planes(doc)
    src, out = ZarrPlanes(input_store, planes), ZarrPlanes(output_store, planes)
    if (out.height, out.width) != (src.height * scale, src.width * scale):
        raise InputError(f"{output_store}: is not {input_store} upscaled x{scale}")
    full = normalization_of(rep)
    norm = Normalization(full.method, tuple(full.offset[p] for p in planes),
                         tuple(full.span[p] for p in planes), full.dtype)
    in_thumbs, out_thumbs = src.decimated(), out.decimated()
    display = medical_display(doc, planes, in_thumbs[0], in_thumbs[1], f"Shown: {where}")
    value_scale, units = value_units(doc)
    figures, regions, grid_reg = picture_figures(
        ScenePair(src, out, norm, display, in_thumbs, out_thumbs),
        PictureOptions(scale=scale, tile_px=int(rep.tiling.tile_size_px), crop_px=crop_px,
                       seed=seed, units=units, value_scale=value_scale))
    figures[0] = replace(figures[0], caption=(
        f"{where.capitalize()}, one output pixel in {out_thumbs[2]:g} along each axis"
        if out_thumbs[2] > 1
        else f"{where.capitalize()} at full resolution") + "; boxes mark the regions cropped "
        "below (A most detail, B random, C tile corner).")
    channels = 3 if len(planes) == 3 else 1
    names = (["red", "green", "blue"] if channels == 3
             else [f"all {rep.input.bands} planes, stored values"])
    figures += _plane_figures(rep, (input_store, output_store), norm, out, names, display)
    return render_scene_page(
        rep, figures, display, medical={"format": rep.input.format, "rows": geometry_rows(doc)},
        regions=regions, grid_region=grid_reg, band_names=names, stretch="", gsd=None,
        out_name=os.path.basename(str(rep.output["uri"]).rstrip("/")))


def _plane_figures(rep: SceneReport, stores: tuple[str, str], norm: Normalization,
                   out: ZarrPlanes, names: list[str], display: Display) -> list[FigureHTML]:
    """The histograms of every plane pooled per colour channel (none when the planes are not RGB
    triples throughout) and, for RGB, the per-band panels."""
    channels = len(names)
    ranges = [(float(norm.offset[c]), float(norm.offset[c] + norm.span[c]))
              for c in range(channels)]
    hist: dict | None = medical_histograms(*stores, channels, ranges)
    if channels == 3 and rep.input.bands % 3:
        hist = None  # planes are not RGB triples throughout
    small = out.decimated(BANDS_PANEL_PX) if channels == 3 else None
    figures = [hist_figure(hist, names) if hist else None,
               bands_figure(small[0], small[1], display, names) if small else None]
    return [f for f in figures if f is not None]
