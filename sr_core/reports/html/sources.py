"""Pixel reads for the HTML reports: decimated thumbnails and small windows, never a whole scene.

A COG is read through rasterio (thumbnails from its overviews, crops as windows); a medical image's
planes are read from the run's Zarr stores through :class:`ZarrPlanes`, which answers the same
``read(window=)`` / ``read_masks(window=)`` calls, so the figure code reads both alike.

May import: :mod:`sr_core.errors`, :mod:`sr_core.formats`, numpy, rasterio, zarr (lazily).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from sr_core.errors import InputError
from sr_core.formats.geotiff import ALLOWED_DRIVERS

#: longest side of the thumbnails (px)
THUMB_MAX_PX = 800


class Decimated(NamedTuple):
    """A decimated read: ``data`` float64 ``(bands, h, w)`` in scene units, ``valid`` bool
    ``(bands, h, w)``, ``factor`` dataset pixels per thumbnail pixel (>= 1)."""

    data: np.ndarray
    valid: np.ndarray
    factor: float


def open_raster(path: str):
    """Open a local raster for the report (GeoTIFF drivers only).

    Raises:
        InputError: the file cannot be opened.
    """
    try:
        return rasterio.open(path, driver=ALLOWED_DRIVERS)
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"{path}: cannot open for the HTML report ({str(exc).splitlines()[0]})"
                         ) from None


def read_decimated(ds, max_px: int = THUMB_MAX_PX) -> Decimated:
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
    return Decimated(data, valid, ds.height / h)


def read_window(ds, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data (bands, h, w) in the dataset's dtype, valid bool (bands, h, w))`` of the window at
    ``(row, col)`` (px); non-finite float values are invalid."""
    win = Window(col, row, w, h)
    data = ds.read(window=win)
    valid = ds.read_masks(window=win) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


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

        group: Any = zarr.open_group(store_path, mode="r")
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

    def decimated(self, max_px: int = THUMB_MAX_PX) -> Decimated:
        """Every ``f``-th pixel (nearest neighbour, ``f`` the smallest step that fits ``max_px``):
        ``(data float64, valid bool, f)`` as :func:`read_decimated`; only the sampled pixels are
        held."""
        f = max(1, math.ceil(max(self.height, self.width) / max_px))
        step = slice(None, None, f)
        data = self._stack(self._image, step, step).astype(np.float64)
        valid = self._stack(self._valid, step, step) & np.isfinite(data)
        return Decimated(data, valid, float(f))


def medical_histograms(input_store: str, output_store: str, channels: int,
                       ranges: list[tuple[float, float]], bins: int = 64) -> dict:
    """Histograms of every plane of input and output, pooled per colour channel (plane ``p``
    is channel ``p % channels``), streamed block by block from the Zarr stores.

    Returns:
        ``{"input": {"ranges", "counts"}, "output": {...}}`` as
        :func:`sr_core.reports.html.figures.hist_figure` reads them; values outside a range fall
        in the edge bins.
    """
    import zarr

    out = {}
    for key, path in (("input", input_store), ("output", output_store)):
        group: Any = zarr.open_group(path, mode="r")
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
