"""Whole-slide images (tifffile): Aperio SVS and OME-TIFF, level 0, read lazily.

Reading: level 0 of the first series through tifffile's Zarr interface
(:meth:`tifffile.TiffFile.aszarr`), one chunk-sized window at a time: only the TIFF tiles under a
window are decoded, never the whole slide. Planes are the colour samples (RGB: 3 planes; greyscale:
1); ``uint8`` and ``uint16`` are supported.

Writing: a tiled (256 x 256 px, DEFLATE) pyramidal TIFF, streamed tile by tile from the output
Zarr; lower levels halve the previous one (2 x 2 mean, built chunk by chunk in the scratch Zarr)
until the image fits 512 px.

* SVS input -> the Aperio layout (page 0 full resolution with an Aperio description, page 1 a
  stripped thumbnail, then the tiled levels), which tifffile and OpenSlide read as SVS. The
  description keeps the input's ``key = value`` fields with ``MPP`` divided by the scale and
  ``AppMag`` multiplied by it.
* OME-TIFF input -> OME-TIFF with the levels in SubIFDs and ``PhysicalSizeX`` / ``PhysicalSizeY``
  divided by the scale.

In both, the TIFF resolution tags say the same pixel size (pixels per centimetre, multiplied by the
scale); without an MPP the input's resolution tags are multiplied by the scale.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sr_core.errors import InputError, StorageError
from sr_core.formats.base import Format, SceneInfo, first_line, pair, quiet_tifffile
from sr_core.formats.geotiff import check_tiff_extent
from sr_core.geometry.tiling import PixelWindow, plan_tiles
from sr_core.storage import discard

TILE_PX = 256
#: Pyramid levels stop once both sides fit this (px).
SMALLEST_LEVEL_PX = 512
_MPP = re.compile(r"(\|\s*MPP\s*=\s*)([0-9.eE+-]+)")
_APPMAG = re.compile(r"(\|\s*AppMag\s*=\s*)([0-9.eE+-]+)")


@dataclass(frozen=True)
class WsiMeta:
    """What the reader and writer need.

    Attributes:
        kind: ``"svs"`` or ``"ome"``; axes: level 0's axes (``"YXS"``, ``"YX"`` or ``"CYX"``).
        description: page 0's ImageDescription (kept in the output file, never reported).
        mpp: microns per pixel (x, y) or ``None``; resolution: page 0's (XResolution,
        YResolution, unit) or ``None``; photometric: ``"rgb"`` or ``"minisblack"``.
    """

    kind: str
    axes: str
    description: str
    mpp: tuple[float, float] | None
    resolution: tuple[float, float, int] | None
    photometric: str


def _mpp(tif, kind: str, description: str) -> tuple[float, float] | None:
    if kind == "svs":
        m = _MPP.search("|" + description.split("|", 1)[-1])
        return (float(m.group(2)),) * 2 if m else None
    try:
        import tifffile

        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
        x, y = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
        unit = pixels.get("PhysicalSizeXUnit", "µm")
        if x and y and unit in ("µm", "um"):
            return float(x), float(y)
    except Exception:  # noqa: BLE001 - OME metadata without pixel sizes
        pass
    return None


def open_wsi(path: str, name: str) -> SceneInfo:
    """Validate a whole-slide TIFF (SVS or OME-TIFF) and describe level 0 as planes.

    Raises:
        InputError: truncated file, unsupported axes or dtype, unreadable TIFF structure.
    """
    import tifffile

    file_bytes = os.path.getsize(path)
    check_tiff_extent(path, name, file_bytes)
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            kind = "svs" if tif.is_svs else "ome"
            series = tif.series[0]
            level = series.levels[0]
            axes, shape, dtype = level.axes, tuple(level.shape), np.dtype(level.dtype)
            page = tif.pages.first
            description = page.description or ""
            tags = page.tags
            res = None
            if "XResolution" in tags and "YResolution" in tags:
                xr, yr = tags["XResolution"].value, tags["YResolution"].value
                unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
                res = (xr[0] / xr[1], yr[0] / yr[1], unit)
            mpp = _mpp(tif, kind, description)
            photometric = "rgb" if "S" in axes and shape[axes.index("S")] in (3, 4) else \
                "minisblack"
            # decode one tile: a codec that is missing fails now, not on a worker
            import zarr

            arr = zarr.open_array(tif.aszarr(series=0, level=0), mode="r")
            np.asarray(arr[(slice(0, 1),) * arr.ndim])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile / codecs raise many types
        raise InputError(f"{name}: unreadable whole-slide TIFF ({first_line(exc)})") from None
    if axes not in ("YX", "YXS", "CYX"):
        raise InputError(f"{name}: level 0 has axes {axes} (shape {shape}); only YX, YXS and CYX "
                         "are supported")
    if dtype.name not in ("uint8", "uint16"):
        raise InputError(f"{name}: dtype {dtype.name} is not supported (uint8, uint16)")
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    count = 1 if axes == "YX" else shape[axes.index("S" if "S" in axes else "C")]
    geometry = {"kind": kind, "width": w, "height": h, "samples": count,
                "mpp": list(mpp) if mpp else None,
                "app_mag": _appmag(description) if kind == "svs" else None,
                "resolution": list(res) if res else None, "levels_in_input": len(series.levels)}
    meta = WsiMeta(kind=kind, axes=axes, description=description, mpp=mpp, resolution=res,
                   photometric=photometric)
    return SceneInfo(
        path=path, name=name, height=h, width=w, count=count, dtype=dtype.name, crs=None,
        crs_label=None, transform=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), nodata=None, mask_kind="none",
        descriptions=(None,) * count,
        colorinterp=(("red", "green", "blue", "alpha")[:count] if photometric == "rgb"
                     else ("gray",) * count),
        units=(None,) * count, file_bytes=file_bytes, format="wsi", geometry=geometry, meta=meta)


def _appmag(description: str) -> float | None:
    m = _APPMAG.search(description)
    return float(m.group(2)) if m else None


def iter_blocks(scene: SceneInfo, tile_size_px: int
                ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
    """Stream level 0 one chunk-sized window (all samples) at a time.

    Raises:
        InputError: a window cannot be decoded (corrupt tile).
    """
    import tifffile
    import zarr

    meta: WsiMeta = scene.meta
    with tifffile.TiffFile(scene.path) as tif:
        arr = zarr.open_array(tif.aszarr(series=0, level=0), mode="r")
        for t in plan_tiles(scene.height, scene.width, tile_size_px=tile_size_px, halo_px=0):
            rows, cols = t.core.slices()
            try:
                if meta.axes == "CYX":
                    data = np.asarray(arr[:, rows, cols])
                else:
                    data = np.asarray(arr[rows, cols])
                    data = data[None] if meta.axes == "YX" else data.transpose(2, 0, 1)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"{scene.name}: cannot decode level 0 at row {t.core.row_off}, "
                                 f"col {t.core.col_off} ({first_line(exc)})") from None
            data = np.ascontiguousarray(data)
            yield slice(0, scene.count), t.core, data, np.ones(data.shape, dtype=bool)


def build_levels(store_path: str, chunk_px: int = 1024) -> list:
    """Add the pyramid's lower levels to the output Zarr group, chunk by chunk.

    Each level is the previous one halved by a 2 x 2 mean (edge pixels of an odd side are
    repeated), rounded for integers, until both sides fit :data:`SMALLEST_LEVEL_PX`.

    Returns:
        The arrays, full resolution first, each ``(samples, h, w)``.
    """
    import zarr

    group = zarr.open_group(store_path, mode="r+")
    image = group["image"]
    if not isinstance(image, zarr.Array):
        raise InputError(f"{store_path}: 'image' is a group, not an array")
    levels = [image]
    while max(levels[-1].shape[1:]) > SMALLEST_LEVEL_PX:
        src = levels[-1]
        s, h, w = src.shape
        dst = group.create_array(f"level{len(levels)}", shape=(s, -(-h // 2), -(-w // 2)),
                                 chunks=(s, chunk_px, chunk_px), dtype=src.dtype,
                                 fill_value=0, overwrite=True)
        for t in plan_tiles(dst.shape[1], dst.shape[2], tile_size_px=chunk_px, halo_px=0):
            r0, c0 = t.core.row_off * 2, t.core.col_off * 2
            block = np.asarray(src[:, r0:r0 + 2 * t.core.height, c0:c0 + 2 * t.core.width])
            ph, pw = 2 * t.core.height - block.shape[1], 2 * t.core.width - block.shape[2]
            if ph or pw:
                block = np.pad(block, ((0, 0), (0, ph), (0, pw)), mode="edge")
            mean = block.reshape(s, t.core.height, 2, t.core.width, 2).mean(axis=(2, 4))
            if np.issubdtype(src.dtype, np.integer):
                mean = np.rint(mean)
            rows, cols = t.core.slices()
            dst[:, rows, cols] = mean.astype(src.dtype)
        levels.append(dst)
    return levels


def _tiles(level) -> Iterator[np.ndarray]:
    """Row-major 256 px tiles ``(256, 256, samples)`` of a ``(samples, h, w)`` array, read one
    strip of tile rows at a time."""
    s, h, w = level.shape
    for r in range(0, h, TILE_PX):
        strip = np.asarray(level[:, r:r + TILE_PX, :]).transpose(1, 2, 0)
        if s == 1:
            strip = strip[..., 0]
        for c in range(0, w, TILE_PX):
            yield strip[:, c:c + TILE_PX]


def _svs_description(meta: WsiMeta, scale: int, w: int, h: int, model_name: str) -> str:
    import sr_core

    fields = meta.description.split("|", 1)[1] if "|" in meta.description else ""
    fields = "|" + fields
    if meta.mpp:
        mpp_x = meta.mpp[0] / scale
        fields = _MPP.sub(lambda m: f"{m.group(1)}{mpp_x:.6g}", fields)
    fields = _APPMAG.sub(lambda m: f"{m.group(1)}{float(m.group(2)) * scale:g}", fields)
    return (f"Aperio Image Library (sr-pipeline {sr_core.__version__})\r\n{w}x{h} "
            f"({TILE_PX}x{TILE_PX}) super-resolved x{scale} by {model_name}{fields}")


def _resolution(meta: WsiMeta, scale: int) -> dict:
    if meta.mpp:
        return {"resolution": (1e4 / (meta.mpp[0] / scale), 1e4 / (meta.mpp[1] / scale)),
                "resolutionunit": "CENTIMETER"}
    if meta.resolution:
        x, y, unit = meta.resolution
        return {"resolution": (x * scale, y * scale), "resolutionunit": unit}
    return {}


def write_wsi(store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str) -> dict:
    """Write the output Zarr as a tiled pyramidal TIFF (see the module docstring).

    Args:
        store_path: output Zarr group (``image`` ``(samples, H*s, W*s)``); lower levels are
            added to it.
        scene: the input (``format == "wsi"``).
        scale: upscaling factor.
        dst_path: local path to write.
        model_name: recorded in the description.

    Returns:
        ``{"path", "format": "svs"|"ome-tiff", "width", "height", "levels", "mpp", "bytes"}``.

    Raises:
        StorageError: the file cannot be written; nothing is left at ``dst_path``.
    """
    import tifffile

    meta: WsiMeta = scene.meta
    h, w = scene.height * scale, scene.width * scale
    mpp = (meta.mpp[0] / scale, meta.mpp[1] / scale) if meta.mpp else None
    try:
        levels = build_levels(store_path)
        common = {"photometric": meta.photometric, "compression": "zlib",
                  "predictor": True, **_resolution(meta, scale)}
        dtype = levels[0].dtype

        def shape_of(level):
            s, lh, lw = level.shape
            return (lh, lw, s) if s > 1 else (lh, lw)

        if meta.kind == "svs":
            common["metadata"] = None  # no tifffile "shaped" JSON: readers must see Aperio
            with tifffile.TiffWriter(dst_path, bigtiff=True) as tif:
                tif.write(_tiles(levels[0]), shape=shape_of(levels[0]), dtype=dtype,
                          tile=(TILE_PX, TILE_PX),
                          description=_svs_description(meta, scale, w, h, model_name), **common)
                thumb = np.asarray(levels[-1][:]).transpose(1, 2, 0)
                thumb = thumb[..., 0] if thumb.shape[2] == 1 else thumb
                tif.write(thumb, description="Aperio Image Library thumbnail", **common)
                for level in levels[1:]:
                    tif.write(_tiles(level), shape=shape_of(level), dtype=dtype,
                              tile=(TILE_PX, TILE_PX), **common)
        else:
            metadata: dict[str, Any] = {"axes": "YXS", "Name": "sr-pipeline x" + str(scale)}
            if mpp:
                metadata.update(PhysicalSizeX=mpp[0], PhysicalSizeXUnit="µm",
                                PhysicalSizeY=mpp[1], PhysicalSizeYUnit="µm")
            with tifffile.TiffWriter(dst_path, bigtiff=True, ome=True) as tif:
                tif.write(_tiles(levels[0]), shape=shape_of(levels[0]), dtype=dtype,
                          tile=(TILE_PX, TILE_PX), subifds=len(levels) - 1, metadata=metadata,
                          **common)
                for level in levels[1:]:
                    tif.write(_tiles(level), shape=shape_of(level), dtype=dtype,
                              tile=(TILE_PX, TILE_PX), subfiletype=1, metadata=None, **common)
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, codec errors
        discard(dst_path)
        raise StorageError(f"{dst_path}: cannot write pyramidal TIFF ({first_line(exc)})") from None
    return {"path": dst_path, "format": "svs" if meta.kind == "svs" else "ome-tiff",
            "width": w, "height": h, "levels": [list(lv.shape[1:]) for lv in levels],
            "tile_px": TILE_PX, "mpp": list(mpp) if mpp else None,
            "bytes": os.path.getsize(dst_path), "compress": "DEFLATE"}


#: The first bytes of a classic or BigTIFF file, little- or big-endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_wsi(path: str) -> bool:
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return bool(tif.is_svs or tif.is_ome)
    except Exception:  # noqa: BLE001 - not parsable by tifffile: GDAL's open decides
        return False


class Wsi(Format):
    """Whole-slide TIFF (Aperio SVS, OME-TIFF) in, a tiled pyramidal TIFF of the same kind out."""

    name = "wsi"
    output_labels = {"svs": "SVS", "ome-tiff": "OME-TIFF"}
    outputs = "NAME.tif, NAME.tiff or NAME.svs (tiled pyramidal TIFF)"

    def sniff(self, path: str, head: bytes) -> bool:
        """A TIFF whose first page tifffile reads as Aperio SVS or OME-TIFF."""
        return head[:4] in TIFF_MAGIC and _is_wsi(path)

    def open(self, path: str, name: str) -> SceneInfo:
        return self.within_size_caps(open_wsi(path, name), name)

    def iter_blocks(self, scene: SceneInfo, tile_size_px: int
                    ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
        return iter_blocks(scene, tile_size_px)

    def write(self, store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str, dst_uri: str) -> dict:
        return write_wsi(store_path, scene, scale, dst_path, model_name=model_name)

    def output_fits(self, scene: SceneInfo, ext: str) -> bool:
        return ext.endswith((".tif", ".tiff", ".svs"))

    def output_name(self, base: str, head: bytes) -> str:
        return base + ".tif"

    def display_planes(self, rep: dict) -> tuple[list[int], str]:
        """Level 0, in RGB when it has three samples or more."""
        geo = rep["input"].get("geometry") or {}
        n = int(geo.get("samples") or int(rep["input"]["bands"]))
        return (list(range(3)), "level 0 in RGB") if n >= 3 else ([0], "level 0 in grey levels")

    def geometry_rows(self, rep: dict) -> list[tuple[str, str, str]]:
        """Microns per pixel (divided by the scale), apparent magnification, kind."""
        geo, s = rep["input"].get("geometry") or {}, int(rep["scale"])
        mpp = geo.get("mpp")
        rows = [("microns per pixel (x, y)", pair(mpp) if mpp else "not stated",
                 pair([v / s for v in mpp]) if mpp else "not stated")]
        if geo.get("app_mag"):
            rows.append(("apparent magnification", f"{geo['app_mag']:g}x",
                         f"{geo['app_mag'] * s:g}x"))
        rows.append(("kind", geo.get("kind") or "?", "pyramidal tiled TIFF"))
        return rows


FORMAT = Wsi()
