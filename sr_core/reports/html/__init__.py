"""Quality reports people can look at: one self-contained HTML page per scene and per archive run.

The scene report (:func:`build_scene_html`, :func:`build_medical_html`) shows the header (input,
output, model and its card, run), pictures and the numbers of the report, each with a one-line
explanation and the direction that is better; the archive page (:func:`build_archive_html`,
:func:`write_archive_report`) a sortable table of scenes with totals and plots. Every figure is a
matplotlib PNG embedded as a ``data:`` URI, so one file opens offline and can be published
anywhere. All pages read the typed report (:class:`sr_core.reports.document.SceneReport`).

Modules, bottom up:

* :mod:`.sources`: pixel reads (decimated thumbnails, windows; :class:`~.sources.ZarrPlanes` for
  a medical image's planes);
* :mod:`.display`: display maths (composite bands, stretch, crop regions);
* :mod:`.figures`: the matplotlib figure builders and the PNG embedding;
* :mod:`.uncertainty`: the self-ensemble's map and numbers; :mod:`.numbers`: the numbers table and
  the model card's summary; :mod:`.render`: the Jinja2 environment and text helpers;
* :mod:`.pictures`: the pictures every scene page shares (thumbnail, crops, difference map, grid);
* pages: :mod:`.scene_page` (GeoTIFF), :mod:`.medical_page` (DICOM, NIfTI, WSI, with the formats'
  display hints), :mod:`.archive_page`.

May import: :mod:`sr_core.errors`, :mod:`sr_core.imaging`, :mod:`sr_core.formats`,
:mod:`sr_core.reports.document`; numpy, rasterio, matplotlib, jinja2, zarr. Never the pipeline or
anything above it.
"""

from sr_core.reports.html.archive_page import ArchiveRow, build_archive_html, write_archive_report
from sr_core.reports.html.figures import (
                                          ARCHIVE_PLOT_PX,
                                          BANDS_PANEL_PX,
                                          CROPS_PX,
                                          DPI,
                                          GRID_PX,
                                          HEATMAP_PX,
                                          HIST_ROW_PX,
                                          SEAM_PROFILE_PX,
                                          FigureHTML,
                                          png_size,
)
from sr_core.reports.html.medical_page import build_medical_html
from sr_core.reports.html.numbers import quality_numbers
from sr_core.reports.html.render import link_for
from sr_core.reports.html.scene_page import CROP_LR_PX, build_scene_html

__all__ = ["ARCHIVE_PLOT_PX", "BANDS_PANEL_PX", "CROPS_PX", "CROP_LR_PX", "DPI", "GRID_PX",
           "HEATMAP_PX", "HIST_ROW_PX", "SEAM_PROFILE_PX", "ArchiveRow", "FigureHTML",
           "build_archive_html", "build_medical_html", "build_scene_html", "link_for", "png_size",
           "quality_numbers", "write_archive_report"]
