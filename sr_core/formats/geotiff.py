"""Opening, validating and reading a georeferenced scene (GeoTIFF / COG) with rasterio.

Validation happens before any model work and turns every user mistake into one
:class:`~sr_core.errors.InputError` line that names the file: missing, empty (0 bytes), not a
GeoTIFF, truncated, unsupported dtype (complex, palette, int8, int32, int64, ...), or a header
larger than the size caps of :func:`sr_core.storage.security.check_size` (checked before any
pixel is read).

Policies for odd but readable scenes:

* only GDAL's GTiff driver opens a scene (:data:`ALLOWED_DRIVERS`): a VRT, HTML page or any
  other format renamed ``.tif`` is refused, so a scene cannot pull other files in;
* no CRS: the scene is upscaled and the output COG has no CRS either (pixel coordinates only);
  the report's ``warnings`` and the log say so;
* a rotated or sheared affine transform is kept: the output's is ``transform * scale(1 / s)``,
  rotation terms included;
* no valid pixel at all (every pixel nodata, masked or NaN): refused after staging, before any
  model work, with nothing written at the destination
  (:func:`sr_core.pipeline.tile`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from sr_core.errors import InputError
from sr_core.formats.base import Format, MaskKind, SceneInfo
from sr_core.geometry.tiling import PixelWindow
from sr_core.storage.security import check_size

#: dtypes the pipeline reads and writes back unchanged.
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")
#: The GDAL driver a scene is opened with: GTiff reads GeoTIFFs and COGs (GDAL's COG driver only
#: writes), and naming it refuses everything else, e.g. a VRT renamed .tif.
ALLOWED_DRIVERS = "GTiff"

def check_tiff_extent(path: str, name: str, file_bytes: int) -> None:
    """Refuse a TIFF whose strips or tiles point past the end of the file (truncated download)."""
    import tifffile

    from sr_core.formats.base import quiet_tifffile

    try:
        # tifffile logs tags it cannot parse (a float32 GDAL_NODATA of -3.4028230607370965e+38);
        # rasterio reads them fine, so a user need not see that
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                offsets, counts = page.dataoffsets, page.databytecounts
                if not offsets:
                    continue
                end = max(o + c for o, c in zip(offsets, counts, strict=False) if c)
                if end > file_bytes:
                    raise InputError(
                        f"{name}: truncated TIFF (image data runs to byte {end:,} but the file "
                        f"has {file_bytes:,} bytes)")
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - not parsable by tifffile: GDAL's open decides below
        return


def open_scene(path: str | os.PathLike, name: str | None = None) -> SceneInfo:
    """Validate a scene and read its metadata (no pixels).

    Args:
        path: local path of a GeoTIFF / COG.
        name: how to name it in messages (defaults to ``path``).

    Returns:
        The scene's :class:`SceneInfo`.

    Raises:
        InputError: missing, empty, not a GeoTIFF (VRT and other drivers are refused), truncated,
            a palette raster, a dtype outside :data:`SUPPORTED_DTYPES`, or over the size caps
            (``SR_MAX_PIXELS``, ``SR_MAX_DECODED_BYTES``).
    """
    path = os.fspath(path)
    name = name or path
    if not os.path.exists(path):
        raise InputError(f"{name}: no such file")
    if not os.path.isfile(path):
        raise InputError(f"{name}: not a file")
    file_bytes = os.path.getsize(path)
    if file_bytes == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # no geotransform: the no-CRS policy below says so in the report, in our own words
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path, driver=ALLOWED_DRIVERS)
    except RasterioError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "not recognized as" in reason or "not recognised as" in reason:
            reason = "not recognised as a GeoTIFF"
        raise InputError(f"{name}: not a readable GeoTIFF ({reason})") from None
    with src:
        dtypes = set(src.dtypes)
        if len(dtypes) != 1:
            raise InputError(f"{name}: bands have different dtypes {sorted(dtypes)}; not supported")
        dtype = src.dtypes[0]
        if dtype.startswith("complex") or dtype.startswith("c"):
            raise InputError(f"{name}: complex dtype {dtype} is not supported (take the "
                             "amplitude first)")
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"{name}: dtype {dtype} is not supported (supported: "
                             f"{', '.join(SUPPORTED_DTYPES)})")
        check_size(name, src.height, src.width, src.count, np.dtype(dtype).itemsize)
        if ColorInterp.palette in src.colorinterp:
            raise InputError(f"{name}: palette (colour-mapped) raster is not supported; expand it "
                             "to RGB first (gdal_translate -expand rgb)")
        flags = src.mask_flag_enums[0]
        if src.nodata is not None:
            mask_kind: MaskKind = "nodata"
        elif MaskFlags.per_dataset in flags and MaskFlags.all_valid not in flags:
            mask_kind = "per_dataset"
        else:
            mask_kind = "none"
        crs = src.crs
        info = SceneInfo(
            path=path, name=name, height=src.height, width=src.width, count=src.count,
            dtype=dtype, crs=crs.to_wkt() if crs else None,
            crs_label=(crs.to_string() if crs else None),
            transform=tuple(src.transform)[:6], nodata=src.nodata, mask_kind=mask_kind,
            descriptions=tuple(src.descriptions),
            colorinterp=tuple(ci.name for ci in src.colorinterp),
            units=tuple(src.units), tags=dict(src.tags()),
            band_tags=tuple(dict(src.tags(b)) for b in range(1, src.count + 1)),
            file_bytes=file_bytes,
        )
    check_tiff_extent(path, name, file_bytes)
    return info


def read_window(src: rasterio.DatasetReader, window: PixelWindow, *, name: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read pixels and their validity for one window.

    Args:
        src: an open dataset (from ``rasterio.open(info.path)``).
        window: pixel window inside the scene.
        name: the scene's name for error messages.

    Returns:
        ``(data, valid)``: ``data`` is ``(bands, h, w)`` in the scene's dtype and units; ``valid``
        is ``(bands, h, w)`` bool, False where the pixel is nodata, masked or non-finite.

    Raises:
        InputError: the file cannot be decoded at this window (truncated or corrupt).
    """
    rw = rasterio.windows.Window(window.col_off, window.row_off, window.width, window.height)
    try:
        data = src.read(window=rw)
        valid = src.read_masks(window=rw) > 0
    except RasterioError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{name}: cannot read pixels at row {window.row_off}, col "
                         f"{window.col_off} (file corrupt or truncated: {reason})") from None
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


def iter_blocks(scene: SceneInfo, tile_size_px: int
                ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
    """Stream a GeoTIFF for staging: one chunk-sized window of all bands at a time.

    Yields:
        ``(planes, window, data, valid)`` as :func:`sr_core.formats.iter_blocks` describes.

    Raises:
        InputError: a block cannot be decoded (truncated or corrupt file).
    """
    from sr_core.geometry.tiling import plan_tiles

    with rasterio.open(scene.path, driver=ALLOWED_DRIVERS) as src:
        for tile in plan_tiles(scene.height, scene.width, tile_size_px=tile_size_px, halo_px=0):
            data, ok = read_window(src, tile.core, name=scene.name)
            yield slice(0, scene.count), tile.core, data, ok


#: Destination extensions that name a medical container (refused for a GeoTIFF input).
_MEDICAL_EXTS = (".nii", ".nii.gz", ".dcm", ".svs")


class GeoTiff(Format):
    """GeoTIFF / COG in, COG out (:mod:`sr_core.formats.cog`); the fallback of the registry:
    anything no other format claims is opened here, so GDAL's own validation names the
    problem."""

    name = "geotiff"
    outputs = "a COG path (.tif)"
    planes_share_unit = False
    writes_raster = True
    output_labels = {"cog": "COG"}

    def sniff(self, path: str, head: bytes) -> bool:
        return True

    def open(self, path: str, name: str) -> SceneInfo:
        return open_scene(path, name)  # checks the size caps itself, before the TIFF's extent

    def iter_blocks(self, scene: SceneInfo, tile_size_px: int
                    ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
        return iter_blocks(scene, tile_size_px)

    def write(self, store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str, dst_uri: str) -> dict:
        from sr_core.formats.cog import CogOptions, write_cog

        tags = {"SR_SCALE": str(scale), "SR_MODEL": model_name}
        out = write_cog(store_path, scene, scale, dst_path, CogOptions(extra_tags=tags))
        return {"format": "cog", **out}

    def output_fits(self, scene: SceneInfo, ext: str) -> bool:
        return not ext.endswith(_MEDICAL_EXTS)

    def output_name(self, base: str, head: bytes) -> str:
        return base + ".tif"

    def warnings(self, scene: SceneInfo) -> list[str]:
        """A GeoTIFF without a CRS gives an output without one (the no-CRS policy above)."""
        if not scene.crs and tuple(scene.transform) == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
            return ["input is not georeferenced (no CRS, no geotransform): the output COG is not "
                    "either (pixel coordinates only)"]
        if not scene.crs:
            return ["input has no CRS: the output COG has none either (pixel coordinates only)"]
        return []

    def describe_input(self, inp: dict) -> str:
        return (f"- Input: {inp['width']} x {inp['height']} px, {inp['bands']} bands, "
                f"{inp['dtype']}, CRS {inp['crs']}, nodata {inp['nodata']}")


FORMAT = GeoTiff()
