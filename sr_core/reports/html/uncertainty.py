"""The self-ensemble's uncertainty layer in the HTML scene report: a map and the numbers.

The map is drawn from a decimated read of the uncertainty COG
(:mod:`sr_core.quality.uncertainty`; GDAL serves it from the COG's overviews, averaged), never
the full-resolution array, with the same matplotlib-to-PNG machinery as the other figures
(:mod:`sr_core.reports.html.figures`).

May import: :mod:`sr_core.reports.document`, the sources and figures of this package, numpy.
"""

from __future__ import annotations

import numpy as np

from sr_core.reports.document import SceneReport
from sr_core.reports.html.figures import FigureHTML, embed, hide, new_figure
from sr_core.reports.html.sources import THUMB_MAX_PX, open_raster, read_decimated

#: the map's colour scale runs from 0 to this percentile of the decimated layer
MAP_PERCENTILE = 99.0
#: room for the colour bar beside the map (px)
COLORBAR_PX = 110


def uncertainty_map(path: str, units: str, max_px: int = THUMB_MAX_PX) -> FigureHTML:
    """The uncertainty layer as a map: per pixel the mean over bands of the standard deviation
    of the eight self-ensemble outputs, decimated to at most ``max_px`` on its longest side.

    Args:
        path: local path of the uncertainty COG (float32, nodata NaN).
        units: the scene's unit for the colour bar (``"DN"``, ``"scene units"``).
        max_px: longest side of the map in pixels.

    Returns:
        The embedded figure (``id`` ``"uncertainty"``).

    Raises:
        InputError: the file cannot be opened.
    """
    with open_raster(path) as ds:
        data, valid, factor = read_decimated(ds, max_px)
    data[~valid] = np.nan
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(data).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(data, axis=0) / np.maximum(counts, 1), np.nan)
    finite = mean[np.isfinite(mean)]
    vmax = float(np.percentile(finite, MAP_PERCENTILE)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    h, w = mean.shape
    fig = new_figure((w + COLORBAR_PX, h))
    ax = fig.add_axes((0, 0, w / (w + COLORBAR_PX), 1))
    im = ax.imshow(np.ma.masked_invalid(mean), cmap="magma", vmin=0, vmax=vmax,
                   interpolation="nearest")
    hide(ax)
    cax = fig.add_axes((w / (w + COLORBAR_PX) + 0.02 * COLORBAR_PX / (w + COLORBAR_PX), 0.1,
                        0.15 * COLORBAR_PX / (w + COLORBAR_PX), 0.8))
    fig.colorbar(im, cax=cax, label=f"std ({units})")
    where = f"decimated {factor:.1f} x from its overviews" if factor > 1.01 else \
        "at full resolution"
    return embed(fig, "uncertainty", "Self-ensemble uncertainty",
                 "Standard deviation of the model's outputs over the 8 flips and 90-degree "
                 f"rotations of its input, mean over bands, from the uncertainty COG ({where}); "
                 f"colour scale 0 to its {MAP_PERCENTILE:g}th percentile; nodata transparent.",
                 "Low everywhere is better: bright areas are where the model's answer depends "
                 "on the orientation of what it sees (invented texture, aliasing); edges are "
                 "expected to be brighter than flat areas.")


def uncertainty_numbers(rep: SceneReport) -> list[dict]:
    """The self-ensemble's rows for the report's numbers table (``{name, model, bicubic, unit,
    meaning, better}``): per band the mean, p95 and max standard deviation; none when off."""
    se = rep.self_ensemble or {}
    if not se.get("enabled"):
        return []
    rows = []
    for b in se.get("bands", []):
        for key, label in (("mean", "mean"), ("p95", "95th percentile"), ("max", "maximum")):
            rows.append({"name": f"Self-ensemble std, band {b['band']}, {label}",
                         "model": b.get(key), "bicubic": None, "unit": "scene units",
                         "meaning": "standard deviation over the 8 flips/rotations of the "
                                    "input, per output pixel (the output is their mean)",
                         "better": "lower"})
    return rows
