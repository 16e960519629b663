"""Staging a scene into Zarr tiles, and the output Zarr the tiles are written to.

Layout (zarr-python 3, Zarr format 3), one group per scene:

* input group: ``image`` ``(bands, H, W)`` in the scene's dtype and ``valid`` ``(bands, H, W)``
  bool, both chunked ``(P, T, T)`` with T the tile size in LR pixels and P =
  :attr:`SceneInfo.chunk_planes` (all bands for a GeoTIFF; 1 for the planes of a medical image).
* output group: ``image`` ``(bands, H*s, W*s)`` and ``valid`` likewise, chunked
  ``(P, T*s, T*s)``: the core of tile ``(r, c)`` is exactly output chunk ``(0, r, c)`` (GeoTIFF)
  or chunks ``(p, r, c)`` for every plane p (medical), so no two tasks ever write the same chunk.
  With the self-ensemble, ``uncertainty`` ``(bands, H*s, W*s)`` float32, chunked likewise.

Staging streams the source block by block (:func:`sr_core.formats.iter_blocks`: a chunk-sized
window for GeoTIFFs and whole-slide images, one plane for DICOM and NIfTI), so memory stays bounded
by one block whatever the scene size, and measures each band's valid minimum and maximum on the way
(the per-scene normalisation needs them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from sr_core.formats import SceneInfo


@dataclass(frozen=True)
class StagedScene:
    """A scene staged into a Zarr group.

    Attributes:
        store_path: local path of the Zarr group (arrays ``image`` and ``valid``).
        tile_size_px: chunk edge in LR pixels.
        band_min, band_max: per band, min and max of valid pixels in scene units (``nan`` if a
            band has no valid pixel).
        valid_px: per band, count of valid pixels.
    """

    store_path: str
    tile_size_px: int
    band_min: tuple[float, ...]
    band_max: tuple[float, ...]
    valid_px: tuple[int, ...]

    def nodata_fraction(self, scene: SceneInfo) -> float:
        """Fraction of pixel values (all bands) that are nodata, masked or non-finite, in [0, 1]."""
        total = scene.size_px * scene.count
        return 1.0 - (sum(self.valid_px) / total if total else 0.0)


def stage_scene(scene: SceneInfo, store_path: str, *, tile_size_px: int) -> StagedScene:
    """Copy a scene into a Zarr group chunked by tile, measuring per-band valid min/max.

    Args:
        scene: the validated scene (:func:`sr_core.formats.geotiff.open_scene`).
        store_path: local directory for the new Zarr group (overwritten).
        tile_size_px: chunk edge in LR pixels.

    Returns:
        The :class:`StagedScene`.

    Raises:
        InputError: a block of the source cannot be decoded (truncated or corrupt file).
    """
    from sr_core.formats import iter_blocks

    group = zarr.open_group(store_path, mode="w")
    shape = (scene.count, scene.height, scene.width)
    chunks = (scene.chunk_planes, tile_size_px, tile_size_px)
    image = group.create_array("image", shape=shape, chunks=chunks, dtype=scene.dtype,
                               fill_value=0)
    valid = group.create_array("valid", shape=shape, chunks=chunks, dtype="bool",
                               fill_value=False)
    lo = np.full(scene.count, np.inf)
    hi = np.full(scene.count, -np.inf)
    count = np.zeros(scene.count, dtype=np.int64)
    for planes, window, data, ok in iter_blocks(scene, tile_size_px):
        rows, cols = window.slices()
        image[planes, rows, cols] = data
        valid[planes, rows, cols] = ok
        for i, b in enumerate(range(scene.count)[planes]):
            vals = data[i][ok[i]]
            if vals.size:
                lo[b] = min(lo[b], float(vals.min()))
                hi[b] = max(hi[b], float(vals.max()))
                count[b] += vals.size
    lo[~np.isfinite(lo)] = np.nan
    hi[~np.isfinite(hi)] = np.nan
    return StagedScene(store_path, tile_size_px, tuple(map(float, lo)), tuple(map(float, hi)),
                       tuple(int(c) for c in count))


def create_output(store_path: str, scene: SceneInfo, *, scale: int, tile_size_px: int,
                  self_ensemble: bool = False) -> None:
    """Create the empty output Zarr group for a scene upscaled by ``scale``.

    Args:
        store_path: local directory for the new group (overwritten).
        scene: the input scene; the output keeps its band count and dtype.
        scale: integer upscaling factor.
        tile_size_px: tile core edge in LR pixels; output chunks are ``tile_size_px * scale``.
        self_ensemble: also create ``uncertainty``, float32 (the self-ensemble's standard deviation
            in scene units, NaN where invalid; :mod:`sr_core.quality.uncertainty`), shaped and
            chunked as ``image``, so each tile writes exactly one chunk of it too.
    """
    group = zarr.open_group(store_path, mode="w")
    shape = (scene.count, scene.height * scale, scene.width * scale)
    chunks = (scene.chunk_planes, tile_size_px * scale, tile_size_px * scale)
    fill = scene.nodata if scene.nodata is not None else 0
    group.create_array("image", shape=shape, chunks=chunks, dtype=scene.dtype, fill_value=fill)
    group.create_array("valid", shape=shape, chunks=chunks, dtype="bool", fill_value=False)
    if self_ensemble:
        group.create_array("uncertainty", shape=shape, chunks=chunks, dtype="float32",
                           fill_value=float("nan"))
