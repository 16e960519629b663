"""Output Zarr -> Cloud-Optimized GeoTIFF, streaming chunk by chunk.

The pipeline writes each scene's super-resolved pixels into a Zarr v3 group (the *output Zarr*):

* array ``"image"``: ``(count, H * s, W * s)`` in the scene's dtype and units, chunks
  ``(count, T * s, T * s)`` (``T`` = tile size in LR pixels, ``s`` = scale); nodata pixels already
  hold the scene's nodata value (NaN for float scenes without one);
* array ``"valid"``: same shape, bool, the validity mask upscaled by nearest neighbour.

:func:`write_cog` turns it into a COG in two streaming steps, with memory bounded by one Zarr
chunk (plus GDAL's block cache) whatever the scene size:

1. every Zarr chunk is read once and written as whole tiles of a temporary tiled GeoTIFF
   (ZSTD level 1, ``BIGTIFF=IF_SAFER``) in the destination's directory, with CRS, transform,
   nodata, band metadata, tags and (for ``mask_kind == "per_dataset"``) an internal dataset mask;
2. GDAL's COG driver (``CreateCopy``, :func:`rasterio.shutil.copy`) builds overviews
   (``OVERVIEWS=AUTO``: halvings until the image fits one block) and writes the COG layout
   (IFDs first, overviews before full resolution, tiles in order); GDAL keeps intermediate
   overviews in temporary files next to the destination, not in memory.

Overviews use ``average`` resampling by default: the outputs are continuous quantities
(reflectance, radiance, elevation). Categorical rasters (class maps) would need ``nearest`` or
``mode``; they are not super-resolved by this pipeline. GDAL's ``average`` ignores nodata and
masked pixels.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window

from sr_core.errors import InputError, StorageError
from sr_core.formats.base import SceneInfo, first_line
from sr_core.geometry.transforms import upscaled_transform

#: Compressions for which a predictor helps (``PREDICTOR=YES``: horizontal differencing for
#: integers, floating-point predictor for floats).
_PREDICTOR_COMPRESSIONS = {"DEFLATE", "LZW", "ZSTD", "LZMA"}
#: Compression of the temporary GeoTIFF: fast, lossless; re-encoded by the COG driver.
_STAGE_COMPRESSION = {"compress": "ZSTD", "zstd_level": 1}
_STAGE_FALLBACK_COMPRESSION = {"compress": "DEFLATE", "zlevel": 1}


def _open_output(store_path: str, scene: SceneInfo, scale: int, array: str = "image"
                 ) -> tuple[Any, Any]:
    """Open the output Zarr's ``array`` (``image``, or the self-ensemble's ``uncertainty``) and
    ``valid`` arrays and check them against the contract."""
    import zarr

    try:
        group = zarr.open_group(store_path, mode="r")
        image, valid = group[array], group["valid"]
    except (FileNotFoundError, KeyError) as exc:
        raise InputError(f"{store_path}: not an output Zarr with arrays '{array}' and 'valid' "
                         f"({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for unreadable stores
        raise StorageError(f"{store_path}: cannot open output Zarr ({first_line(exc)})") from None
    if not isinstance(image, zarr.Array) or not isinstance(valid, zarr.Array):
        raise InputError(f"{store_path}: '{array}' and 'valid' must be arrays, not groups")
    expected = (scene.count, scene.height * scale, scene.width * scale)
    if tuple(image.shape) != expected:
        raise InputError(f"{store_path}: '{array}' has shape {tuple(image.shape)}, expected "
                         f"{expected} (bands, height x {scale}, width x {scale})")
    if tuple(valid.shape) != expected:
        raise InputError(f"{store_path}: 'valid' has shape {tuple(valid.shape)}, "
                         f"expected {expected}")
    if np.dtype(image.dtype) != np.dtype(scene.dtype):
        raise InputError(f"{store_path}: '{array}' has dtype {image.dtype}, expected "
                         f"{scene.dtype}")
    if np.dtype(valid.dtype) != np.dtype(bool):
        raise InputError(f"{store_path}: 'valid' has dtype {valid.dtype}, expected bool")
    return image, valid


def _stage_windows(height: int, width: int, chunk_h: int, chunk_w: int, blocksize: int
                   ) -> tuple[int, int, list[Window]]:
    """Tile size of the temporary GeoTIFF and the windows to write it in.

    The temporary file's tiles are the largest multiple of 16 (TIFF's tile unit) that divides the
    Zarr chunk and is at most ``blocksize``: each window is one chunk, decoded once and written as
    whole tiles, and the COG driver then reads small tiles (no re-decoding of huge tiles). When no
    such size exists (e.g. 500 px chunks), tiles of ``blocksize`` are used and each window (one
    tile) reads the few chunks it overlaps.

    Returns:
        ``(tile_h, tile_w, windows)``; the windows partition the ``height x width`` image, each made
        of whole tiles (clipped at the right and bottom edges).
    """
    def tile_for(chunk: int) -> int | None:
        for size in range(min(chunk, blocksize) // 16 * 16, 0, -16):
            if chunk % size == 0:
                return size
        return None

    tile_h, tile_w = tile_for(chunk_h), tile_for(chunk_w)
    if tile_h is None or tile_w is None:
        tile_h = tile_w = step_h = step_w = blocksize
    else:
        step_h, step_w = chunk_h, chunk_w
    windows = [
        Window(col, row, min(step_w, width - col), min(step_h, height - row))
        for row in range(0, height, step_h)
        for col in range(0, width, step_w)
    ]
    return tile_h, tile_w, windows


def _stage_profile(scene: SceneInfo, scale: int, tile_h: int, tile_w: int) -> dict:
    height, width = scene.height * scale, scene.width * scale
    return {
        "driver": "GTiff", "width": width, "height": height, "count": scene.count,
        "dtype": scene.dtype, "crs": scene.crs,
        "transform": upscaled_transform(scene.transform, scale),
        "nodata": scene.nodata, "tiled": True, "blockxsize": tile_w, "blockysize": tile_h,
        "interleave": "pixel", "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",  # blocks are compressed on every core (same bytes as one)
    }


def _apply_metadata(dst: Any, scene: SceneInfo, scale: int, extra_tags: dict | None) -> None:
    """Band descriptions, colour interpretation, units, dataset and band tags, SR tags.

    Band tags named ``STATISTICS_*`` (GDAL's cached statistics of the input) are dropped.
    """
    for bidx in range(1, scene.count + 1):
        desc = scene.descriptions[bidx - 1] if bidx - 1 < len(scene.descriptions) else None
        if desc:
            dst.set_band_description(bidx, desc)
        unit = scene.units[bidx - 1] if bidx - 1 < len(scene.units) else None
        if unit:
            dst.set_band_unit(bidx, unit)
        band_tags = scene.band_tags[bidx - 1] if bidx - 1 < len(scene.band_tags) else {}
        # The input's STATISTICS_* describe the input pixels, not the output: not carried.
        band_tags = {str(k): str(v) for k, v in band_tags.items()
                     if not str(k).startswith("STATISTICS_")}
        if band_tags:
            dst.update_tags(bidx, **band_tags)
    if len(scene.colorinterp) == scene.count:
        try:
            dst.colorinterp = [ColorInterp[name] for name in scene.colorinterp]
        except (KeyError, ValueError, RasterioError):
            pass  # an interpretation GTiff cannot store: GDAL's default is kept
    tags = {str(k): str(v) for k, v in scene.tags.items()}
    tags["SR_SCALE"] = str(scale)
    tags.update({str(k): str(v) for k, v in (extra_tags or {}).items()})
    dst.update_tags(**tags)


def _cog_options(scene: SceneInfo, compress: str, blocksize: int, overview_resampling: str
                 ) -> dict[str, str]:
    compress = compress.upper()
    opts = {
        "COMPRESS": compress, "BLOCKSIZE": str(blocksize), "OVERVIEWS": "AUTO",
        "RESAMPLING": overview_resampling, "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",  # compression on every core (GDAL COG driver option)
    }
    if compress in _PREDICTOR_COMPRESSIONS:
        opts["PREDICTOR"] = "YES"  # 2 (horizontal) for integers, 3 (floating point) for floats
    return opts


@dataclass(frozen=True)
class CogOptions:
    """Options of :func:`write_cog`; the defaults suit the pipeline's outputs.

    Attributes:
        compress: COG compression (``DEFLATE``, ``ZSTD``, ``LZW``, ``LERC``, ``NONE``, ...).
            ``PREDICTOR=YES`` is added for DEFLATE/LZW/ZSTD/LZMA.
        blocksize: COG tile edge in pixels (multiple of 16, >= 128).
        overview_resampling: GDAL resampling for the overviews; ``average`` suits continuous data.
        extra_tags: dataset tags to add, e.g. ``{"SR_MODEL": "edsr-x2"}``. ``SR_SCALE`` is always
            written.
        cache_mb: GDAL block cache (``GDAL_CACHEMAX``, MiB) while writing. GDAL's default, 5 % of
            RAM, made the process grow by ~1.2 GiB for a 791 MiB image on a 24 GiB machine; with
            256 MiB it grew by ~45 MiB and ran faster, but still by 256 MiB more for a 32768 px
            output than for a 4096 px one. 64 MiB holds two rows of 512 px blocks of a 32768 px
            wide uint16 output, which is all a streamed write needs.
        array: the Zarr array written: ``"image"``, or ``"uncertainty"`` (the self-ensemble's
            standard deviation, float32; :mod:`sr_core.quality.uncertainty` passes a ``scene``
            whose dtype, nodata and band metadata describe it).
    """

    compress: str = "DEFLATE"
    blocksize: int = 512
    overview_resampling: str = "average"
    extra_tags: dict | None = None
    cache_mb: int = 64
    array: str = "image"


def write_cog(store_path: str | os.PathLike, scene: SceneInfo, scale: int,
              dst_path: str | os.PathLike, options: CogOptions | None = None) -> dict:
    """Write the output Zarr as a Cloud-Optimized GeoTIFF, streaming (bounded memory).

    Args:
        store_path: local path of the output Zarr group (see the module docstring for its contract:
            ``image`` ``(count, H*scale, W*scale)`` in ``scene.dtype``, ``valid`` same shape bool).
        scene: the input scene's metadata (CRS, transform, nodata, mask kind, band metadata, tags).
        scale: integer upscaling factor the Zarr was written at.
        dst_path: local path of the COG to write (normally a temporary path from
            :func:`sr_core.storage.temp_path_for`; an existing file is replaced). Its directory
            must exist; the temporary GeoTIFF and GDAL's overview temporaries are made there.
        options: compression, tile size, overview resampling, extra tags, GDAL cache and the
            array written (:class:`CogOptions`; its defaults when None).

    Returns:
        ``{"path", "width", "height", "count", "dtype", "crs", "transform" (6 floats), "nodata",
        "mask", "blocksize", "compress", "overviews" (decimation factors, e.g. [2, 4]),
        "layout" ("COG"), "bytes"}``.

    Raises:
        InputError: the Zarr does not follow the contract (shape, dtype, missing arrays), or an
            option is invalid (scale, blocksize).
        StorageError: the Zarr cannot be read, the GeoTIFF cannot be written (disk full, no
            permission), or GDAL's result is not a valid COG. No partial ``dst_path`` is left.
    """
    store_path, dst_path = os.fspath(store_path), os.fspath(dst_path)
    opts = options if options is not None else CogOptions()
    compress, blocksize = opts.compress, opts.blocksize
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale!r}")
    if blocksize < 128 or blocksize % 16:
        raise InputError(f"blocksize must be a multiple of 16 and >= 128, got {blocksize}")
    arrays = _open_output(store_path, scene, scale, opts.array)
    dst_dir = os.path.dirname(os.path.abspath(dst_path))
    stage = os.path.join(dst_dir, f".{os.path.basename(dst_path)}.stage-{uuid.uuid4().hex}.tif")
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=int(opts.cache_mb)):
            _write_stage(stage, arrays, scene, scale, blocksize, opts.extra_tags)
            rasterio.shutil.copy(stage, dst_path, driver="COG",
                                 **_cog_options(scene, compress, blocksize,
                                                 opts.overview_resampling))
    except (InputError, StorageError):
        _remove(dst_path)
        raise
    except (RasterioError, OSError) as exc:
        _remove(dst_path)
        raise StorageError(f"{dst_path}: cannot write COG ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zarr decode errors and the like
        _remove(dst_path)
        raise StorageError(f"{dst_path}: cannot write COG from {store_path} "
                           f"({first_line(exc)})") from None
    finally:
        _remove(stage)
        _remove(stage + ".msk")

    problems = validate_cog(dst_path)
    if problems:
        _remove(dst_path)
        raise StorageError(f"{dst_path}: GDAL's output is not a valid COG ({'; '.join(problems)})")
    return _describe_cog(dst_path, scene, blocksize, compress)


def _write_stage(stage: str, arrays: tuple[Any, Any], scene: SceneInfo, scale: int,
                 blocksize: int, extra_tags: dict | None) -> None:
    """Step 1 of :func:`write_cog`: every chunk of the output Zarr's ``(image, valid)`` arrays
    read once and written as whole tiles of the temporary tiled GeoTIFF ``stage`` (metadata
    and, for a per-dataset mask, the internal mask included)."""
    image, valid = arrays
    height, width = scene.height * scale, scene.width * scale
    chunk_h, chunk_w = int(image.chunks[1]), int(image.chunks[2])
    tile_h, tile_w, windows = _stage_windows(height, width, chunk_h, chunk_w, blocksize)
    write_mask = scene.mask_kind == "per_dataset" and "alpha" not in scene.colorinterp
    profile = _stage_profile(scene, scale, tile_h, tile_w)
    try:
        dst = rasterio.open(stage, "w", **profile, **_STAGE_COMPRESSION)
    except RasterioError:
        dst = rasterio.open(stage, "w", **profile, **_STAGE_FALLBACK_COMPRESSION)
    with dst:
        _apply_metadata(dst, scene, scale, extra_tags)
        for win in windows:
            rows = slice(win.row_off, win.row_off + win.height)
            cols = slice(win.col_off, win.col_off + win.width)
            dst.write(np.asarray(image[:, rows, cols]), window=win)
            if write_mask:
                ok = np.asarray(valid[:, rows, cols]).any(axis=0)
                dst.write_mask(ok.astype(np.uint8) * np.uint8(255), window=win)


def _describe_cog(dst_path: str, scene: SceneInfo, blocksize: int, compress: str) -> dict:
    """:func:`write_cog`'s description of the written COG, read back from the file."""
    with rasterio.open(dst_path) as out:
        return {
            "path": dst_path, "width": out.width, "height": out.height, "count": out.count,
            "dtype": out.dtypes[0], "crs": out.crs.to_string() if out.crs else None,
            "transform": list(out.transform)[:6], "nodata": out.nodata, "mask": scene.mask_kind,
            "blocksize": blocksize, "compress": compress.upper(),
            "overviews": out.overviews(1), "layout": "COG",
            "bytes": os.path.getsize(dst_path),
        }


def validate_cog(path: str | os.PathLike) -> list[str]:
    """Check that a file is a Cloud-Optimized GeoTIFF (what can be checked without rio-cogeo).

    Checks: GDAL's ``IMAGE_STRUCTURE`` metadata says ``LAYOUT=COG`` (set from the file's ghost
    header, which the COG driver writes); every image (full resolution, overviews, masks) is tiled;
    an image larger than one tile has overviews; all IFDs come before the image data; overviews'
    tiles are stored before the full-resolution tiles (smallest first), so a reader fetches the
    header in one request and each level contiguously.

    Args:
        path: local path of the file.

    Returns:
        The problems found, each one short phrase; empty when the file is a valid COG.
    """
    import tifffile

    path = os.fspath(path)
    problems: list[str] = []
    try:
        with rasterio.open(path) as src:
            if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
                problems.append("IMAGE_STRUCTURE has no LAYOUT=COG")
            # (rasterio's profile says tiled=False when one block spans the whole width, e.g. a
            # 512 px wide COG of 512 px blocks: the TIFF tags below decide whether it is tiled)
            bw, bh = src.block_shapes[0][1], src.block_shapes[0][0]
            if (src.width > bw or src.height > bh) and not src.overviews(1):
                problems.append("no overviews although the image is larger than one tile")
    except RasterioError as exc:
        return [f"not readable by GDAL ({first_line(exc)})"]
    try:
        with tifffile.TiffFile(path) as tif:
            # (tif.pages yields TiffPage unless frames were asked for: aspage() never runs)
            pages = [p if isinstance(p, tifffile.TiffPage) else p.aspage() for p in tif.pages]
            ifd_end = max(p.offset for p in pages)
            first_data = math.inf
            data_starts = []
            for p in pages:
                if not p.is_tiled:
                    problems.append(f"IFD at byte {p.offset} is not tiled")
                offsets = [o for o, c in zip(p.dataoffsets, p.databytecounts, strict=False) if c]
                if offsets:
                    first_data = min(first_data, min(offsets))
                    data_starts.append((p.imagewidth, min(offsets)))
            if first_data < ifd_end:
                problems.append("an IFD lies after image data")
            # Full resolution (the widest image) must be stored last.
            if data_starts:
                widest = max(w for w, _ in data_starts)
                full_start = min(o for w, o in data_starts if w == widest)
                if any(o > full_start for w, o in data_starts if w < widest):
                    problems.append("overview data stored after full-resolution data")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"not parsable as TIFF ({first_line(exc)})")
    return problems


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
