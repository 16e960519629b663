"""Image formats: detected from the file's content, staged as 2-D planes, written back natively.

One pipeline serves every format. A format contributes three things:

* ``open_<format>(path, name) -> SceneInfo``: validation before any model work (one-line
  :class:`~sr_core.errors.InputError` naming the file) and the metadata the writer needs;
* ``iter_blocks(scene, tile_size_px)``: the pixels, streamed into the input Zarr as
  ``(planes, window, data, valid)`` blocks (:func:`iter_blocks`);
* ``write_<format>(store_path, scene, scale, dst_path, model_name) -> dict``: the output Zarr
  turned into the format's own container.

| format | detected by | planes (the Zarr's first axis) | written as |
|---|---|---|---|
| ``geotiff`` | anything else (rasterio / GDAL's GTiff driver decides) | bands | COG (:mod:`sr_core.formats.cog`) |
| ``dicom`` | ``DICM`` at byte 128, or a folder (a series) | instances x frames x samples | a DICOM series (:mod:`.dicom`) |
| ``nifti`` | ``n+1`` / ``ni1`` at byte 344 (NIfTI-1) or ``n+2`` at byte 4 (NIfTI-2), gzip or not | every (k, t, ...) of the volume | NIfTI (:mod:`.nifti`) |
| ``wsi`` | a TIFF whose first page is Aperio SVS or OME-TIFF | colour samples | tiled pyramidal TIFF (:mod:`.wsi`) |

Each plane is upscaled in-plane only: rows and columns of every plane are multiplied by the scale,
the other axes (slices, time, frames) are kept.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from sr_core.errors import InputError
from sr_core.formats.geotiff import SceneInfo
from sr_core.storage.security import check_size
from sr_core.geometry.tiling import PixelWindow

FORMATS = ("geotiff", "dicom", "nifti", "wsi")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = (b"n+2\x00",)

#: What DST may look like for each input format (checked before any work).
OUTPUTS = {
    "geotiff": "a COG path (.tif)",
    "dicom": "a folder for the new series (or NAME.dcm for a single-instance input)",
    "nifti": "NAME.nii or NAME.nii.gz",
    "wsi": "NAME.tif, NAME.tiff or NAME.svs (tiled pyramidal TIFF)",
}


def _head(path: str, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        head = f.read(n)
    if head[:2] == b"\x1f\x8b":  # gzip: look at the start of the decompressed stream
        try:
            with gzip.open(path, "rb") as f:
                return f.read(n)
        except (OSError, EOFError):
            return head
    return head


@contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Keep tifffile's warnings about broken files off stderr: the caller turns them into one
    InputError line."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_wsi(path: str) -> bool:
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return bool(tif.is_svs or tif.is_ome)
    except Exception:  # noqa: BLE001 - not parsable by tifffile: GDAL's open decides
        return False


def format_of_head(head: bytes) -> str | None:
    """The format the first bytes of a file say, without opening it further: ``"dicom"``,
    ``"nifti"`` (gzip-compressed too, when ``head`` holds enough of the stream), ``"tiff"`` (a
    GeoTIFF or a whole-slide TIFF: :func:`detect_format` tells them apart) or ``None``."""
    if head[:2] == b"\x1f\x8b":
        import zlib

        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 512)
        except zlib.error:
            return None
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in _NIFTI1_MAGIC or head[4:8] in _NIFTI2_MAGIC:
        return "nifti"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    return None


def detect_format(path: str) -> str:
    """The format of a local file or folder, from its content (not its name).

    Args:
        path: local path (a folder is taken as a DICOM series).

    Returns:
        One of :data:`FORMATS`; ``"geotiff"`` for anything unrecognised, so GDAL's own
        validation names the problem.
    """
    if os.path.isdir(path):
        return "dicom"
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return "geotiff"  # open_scene names the problem (missing, empty)
    head = _head(path)
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in _NIFTI1_MAGIC or head[4:8] in _NIFTI2_MAGIC:
        return "nifti"
    if head[:4] in _TIFF_MAGIC and _is_wsi(path):
        return "wsi"
    return "geotiff"


def open_input(path: str | os.PathLike, name: str | None = None) -> SceneInfo:
    """Detect the format and validate the input; no pixels are kept.

    Args:
        path: local file (or DICOM series folder).
        name: how messages and reports name it (the user's SRC).

    Returns:
        The input's :class:`~sr_core.formats.geotiff.SceneInfo` with ``format`` set.

    Raises:
        InputError: missing, empty, truncated, corrupt or unsupported input, or larger than the
            size caps of :func:`sr_core.storage.security.check_size` (one line).
    """
    path = os.fspath(path)
    name = name or path
    fmt = detect_format(path)
    if fmt == "dicom":
        from sr_core.formats.dicom import open_dicom

        info = open_dicom(path, name)
    elif fmt == "nifti":
        from sr_core.formats.nifti import open_nifti

        info = open_nifti(path, name)
    elif fmt == "wsi":
        from sr_core.formats.wsi import open_wsi

        info = open_wsi(path, name)
    else:
        from sr_core.formats.geotiff import open_scene

        return open_scene(path, name)  # checks the size caps itself, before the TIFF's extent
    check_size(name, info.height, info.width, info.count, np.dtype(info.dtype).itemsize)
    return info


def iter_blocks(scene: SceneInfo, tile_size_px: int
                ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
    """Stream the input's pixels for staging, one bounded block at a time.

    Args:
        scene: from :func:`open_input`.
        tile_size_px: the Zarr chunk edge (GeoTIFF and WSI blocks are chunk-sized windows; DICOM
            and NIfTI blocks are whole planes).

    Yields:
        ``(planes, window, data, valid)``: a slice of the plane axis, the window of rows and
        columns, ``data`` ``(len(planes), h, w)`` in the scene's dtype and stored units, and
        ``valid`` of the same shape, bool.

    Raises:
        InputError: a block cannot be decoded (truncated or corrupt file).
    """
    if scene.format == "dicom":
        from sr_core.formats.dicom import iter_blocks as blocks
    elif scene.format == "nifti":
        from sr_core.formats.nifti import iter_blocks as blocks
    elif scene.format == "wsi":
        from sr_core.formats.wsi import iter_blocks as blocks
    else:
        from sr_core.formats.geotiff import iter_blocks as blocks
    yield from blocks(scene, tile_size_px)


def output_is_folder(scene: SceneInfo, dst: str) -> bool:
    """Whether the output for ``dst`` is a folder of files (a DICOM series) rather than one file."""
    return scene.format == "dicom" and not _ext(dst).endswith(".dcm")


def _ext(uri: str) -> str:
    tail = str(uri).rstrip("/").rsplit("/", 1)[-1].lower()
    return tail[tail.find("."):] if "." in tail else ""


def check_output(scene: SceneInfo, dst: str) -> None:
    """Refuse a destination that cannot hold this input's output container.

    The output container follows the input's format; DST's extension picks among its variants:
    ``.nii`` or ``.nii.gz`` (NIfTI), a folder or ``NAME.dcm`` (DICOM: a file only for a single
    instance), ``.tif`` / ``.tiff`` / ``.svs`` (whole-slide image); a medical extension for a
    GeoTIFF input is refused, as is a GeoTIFF extension for a medical input.

    Raises:
        InputError: the extension does not fit the input's format.
    """
    ext = _ext(dst)
    medical_ext = ext.endswith((".nii", ".nii.gz", ".dcm", ".svs"))
    fmt = scene.format
    ok = {
        "geotiff": not medical_ext,
        "nifti": ext.endswith((".nii", ".nii.gz")),
        "dicom": not ext.endswith((".tif", ".tiff", ".nii", ".nii.gz", ".svs")),
        "wsi": ext.endswith((".tif", ".tiff", ".svs")),
    }[fmt]
    if not ok:
        raise InputError(f"{dst}: a {fmt} input is written as {OUTPUTS[fmt]}; this destination's "
                         f"extension does not fit")
    if fmt == "dicom" and ext.endswith(".dcm") and scene.meta.instances > 1:
        raise InputError(f"{dst}: the input series has {scene.meta.instances} instances; give a "
                         "folder name (no .dcm) for the new series")


def write_output(store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
                 model_name: str, dst_uri: str | None = None) -> dict:
    """Write the output Zarr in the input's format (see the table in the module docstring).

    Args:
        store_path: the output Zarr group (``image`` ``(planes, H*s, W*s)``, ``valid``).
        scene: the input scene.
        scale: the upscaling factor.
        dst_path: local temporary path (a folder for a DICOM series) to write.
        model_name: the model's registry name, recorded in the output's metadata.
        dst_uri: the final destination, whose extension picks the variant (``.nii.gz``: gzip;
            ``.dcm``: one DICOM file rather than a folder); default ``dst_path``.

    Returns:
        What was written (``path``, ``format``, sizes, geometry), for the report.

    Raises:
        StorageError: the output cannot be written; nothing is left at ``dst_path``.
    """
    dst_uri = str(dst_uri or dst_path)
    if scene.format == "dicom":
        from sr_core.formats.dicom import write_dicom

        return write_dicom(store_path, scene, scale, dst_path, model_name=model_name,
                           folder=output_is_folder(scene, dst_uri))
    if scene.format == "nifti":
        from sr_core.formats.nifti import write_nifti

        return write_nifti(store_path, scene, scale, dst_path, model_name=model_name,
                           compress=dst_uri.lower().endswith(".gz"))
    if scene.format == "wsi":
        from sr_core.formats.wsi import write_wsi

        return write_wsi(store_path, scene, scale, dst_path, model_name=model_name)
    from sr_core.formats.cog import write_cog

    out = write_cog(store_path, scene, scale, dst_path,
                    extra_tags={"SR_SCALE": str(scale), "SR_MODEL": model_name})
    return {"format": "cog", **out}


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
