"""Image formats: detected from the file's content, staged as 2-D planes, written back natively.

One pipeline serves every format. Each format is one module implementing the
:class:`~sr_core.formats.base.Format` contract, and :data:`REGISTRY` lists them, in sniffing
order; callers look a format up by content (:func:`detect`, :func:`format_for_head`) or by name
(:func:`format_named`) and never branch on its name. A format contributes:

* ``sniff``: whether a file (path and first bytes) is in the format;
* ``open(path, name) -> SceneInfo``: validation before any model work (one-line
  :class:`~sr_core.errors.InputError` naming the file) and the metadata the writer needs;
* ``iter_blocks(scene, tile_size_px)``: the pixels, streamed into the input Zarr as
  ``(planes, window, data, valid)`` blocks (:func:`iter_blocks`);
* ``write(store_path, scene, scale, dst_path, ...) -> dict``: the output Zarr turned into the
  format's own container (:func:`write_output`);
* the output name: which destinations fit (:func:`check_output`) and an archive's output path;
* display hints for the reports: planes shown, window or stretch, value units, geometry rows
  (:func:`medical_planes`, :func:`medical_display`, :func:`value_units`, :func:`geometry_rows`).

The formats (format: detected by; planes, the Zarr's first axis; written as):

* ``geotiff``: anything else (rasterio / GDAL's GTiff driver decides); bands; COG
  (:mod:`sr_core.formats.cog`);
* ``dicom``: ``DICM`` at byte 128, or a folder (a series); instances x frames x samples; a DICOM
  series (:mod:`.dicom`);
* ``nifti``: ``n+1`` / ``ni1`` at byte 344 (NIfTI-1) or ``n+2`` at byte 4 (NIfTI-2), gzip or
  not; every (k, t, ...) of the volume; NIfTI (:mod:`.nifti`);
* ``wsi``: a TIFF whose first page is Aperio SVS or OME-TIFF; colour samples; tiled pyramidal
  TIFF (:mod:`.wsi`).

Each plane is upscaled in-plane only: rows and columns of every plane are multiplied by the scale,
the other axes (slices, time, frames) are kept.

Modules: :mod:`.base` (the contract, shared helpers), :mod:`.geotiff` and :mod:`.cog` (GeoTIFF
in, COG out), :mod:`.dicom`, :mod:`.nifti`, :mod:`.wsi`. May import: :mod:`sr_core.errors`,
:mod:`sr_core.geometry`, :mod:`sr_core.storage` (and the format libraries); nothing above.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator

import numpy as np

from sr_core.errors import InputError
from sr_core.formats import dicom, geotiff, nifti, wsi
from sr_core.formats.base import Display, Format, SceneInfo, file_ext
from sr_core.geometry.tiling import PixelWindow

#: Every format, in sniffing order: the first whose ``sniff`` says yes reads the input; GeoTIFF,
#: last, takes anything else (GDAL's own validation names the problem).
REGISTRY: tuple[Format, ...] = (dicom.FORMAT, nifti.FORMAT, wsi.FORMAT, geotiff.FORMAT)
FORMATS = tuple(f.name for f in REGISTRY)

#: What DST may look like for each input format (checked before any work).
OUTPUTS = {f.name: f.outputs for f in REGISTRY}

__all__ = ["FORMATS", "OUTPUTS", "REGISTRY", "Display", "Format", "SceneInfo", "check_output",
           "detect", "detect_format", "format_for_head", "format_named", "geometry_rows",
           "iter_blocks", "medical_display", "medical_planes", "open_input", "output_is_folder",
           "value_units", "write_output"]


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


def format_named(name: str | None) -> Format:
    """The registered format called ``name`` (a report's ``input.format``; ``None``: GeoTIFF,
    as reports written before formats were recorded).

    Raises:
        KeyError: no format has that name.
    """
    name = name or geotiff.FORMAT.name
    for fmt in REGISTRY:
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown image format {name!r} (known: {', '.join(FORMATS)})")


def format_for_head(head: bytes) -> Format | None:
    """The format the first bytes of a file say, without opening it further (an archive
    listing: gzip-compressed NIfTI too, when ``head`` holds enough of the stream), or ``None``
    when the bytes alone do not tell (a GeoTIFF or whole-slide TIFF, or anything else)."""
    if head[:2] == b"\x1f\x8b":
        import zlib

        try:
            head = zlib.decompressobj(wbits=31).decompress(head, 512)
        except zlib.error:
            return None
    return next((fmt for fmt in REGISTRY if fmt.sniff_head(head)), None)


def detect(path: str) -> Format:
    """The format of a local file or folder, from its content (not its name).

    Args:
        path: local path (a folder is taken as a DICOM series).

    Returns:
        The first format of :data:`REGISTRY` that sniffs it; GeoTIFF for anything unrecognised,
        missing or empty, so GDAL's own validation names the problem.
    """
    if os.path.isdir(path):
        head = b""
    elif not os.path.isfile(path) or os.path.getsize(path) == 0:
        return geotiff.FORMAT  # open_scene names the problem (missing, empty)
    else:
        head = _head(path)
    return next(fmt for fmt in REGISTRY if fmt.sniff(path, head))


def detect_format(path: str) -> str:
    """The name of :func:`detect`'s format: one of :data:`FORMATS`."""
    return detect(path).name


def open_input(path: str | os.PathLike, name: str | None = None) -> SceneInfo:
    """Detect the format and validate the input; no pixels are kept.

    Args:
        path: local file (or DICOM series folder).
        name: how messages and reports name it (the user's SRC).

    Returns:
        The input's :class:`~sr_core.formats.base.SceneInfo` with ``format`` set.

    Raises:
        InputError: missing, empty, truncated, corrupt or unsupported input, or larger than the
            size caps of :func:`sr_core.storage.security.check_size` (one line).
    """
    path = os.fspath(path)
    return detect(path).open(path, name or path)


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
    yield from format_named(scene.format).iter_blocks(scene, tile_size_px)


def output_is_folder(scene: SceneInfo, dst: str) -> bool:
    """Whether the output for ``dst`` is a folder of files (a DICOM series) rather than one file."""
    return format_named(scene.format).output_is_folder(scene, dst)


def check_output(scene: SceneInfo, dst: str) -> None:
    """Refuse a destination that cannot hold this input's output container.

    The output container follows the input's format; DST's extension picks among its variants:
    ``.nii`` or ``.nii.gz`` (NIfTI), a folder or ``NAME.dcm`` (DICOM: a file only for a single
    instance), ``.tif`` / ``.tiff`` / ``.svs`` (whole-slide image); a medical extension for a
    GeoTIFF input is refused, as is a GeoTIFF extension for a medical input.

    Raises:
        InputError: the extension does not fit the input's format.
    """
    fmt = format_named(scene.format)
    if not fmt.output_fits(scene, file_ext(dst)):
        raise InputError(f"{dst}: a {fmt.name} input is written as {fmt.outputs}; this "
                         "destination's extension does not fit")
    fmt.check_output(scene, dst)


def write_output(store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
                 model_name: str, dst_uri: str | None = None) -> dict:
    """Write the output Zarr in the input's format (see the list in the module docstring).

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
    return format_named(scene.format).write(store_path, scene, scale, dst_path,
                                            model_name=model_name,
                                            dst_uri=str(dst_uri or dst_path))


# -------------------------------------------------------------- display hints, by report

def medical_planes(rep: dict) -> tuple[list[int], str]:
    """The planes a medical report shows and the sentence that says which.

    Returns:
        ``(planes, label)``: the middle image of the volume or series (middle slice of the first
        time point for NIfTI, middle instance and frame for DICOM), its three colour samples
        when it has them (DICOM RGB, whole-slide RGB), else its one plane
        (the format's :meth:`~sr_core.formats.base.Format.display_planes`).
    """
    return format_named(rep["input"]["format"]).display_planes(rep)


def medical_display(rep: dict, planes: list[int], thumb: np.ndarray, valid: np.ndarray,
                    label: str) -> Display:
    """The display window of a medical image, in stored values.

    DICOM with a VOI window: the file's first Window Center / Width (modality units), taken back
    to stored values through Rescale Slope / Intercept (PS3.3 C.11.2; MONOCHROME1 shown inverted).
    8-bit RGB: 0-255. Otherwise each band between its
    :data:`~sr_core.formats.base.MEDICAL_STRETCH_PERCENTILES` of valid input pixels
    (the format's :meth:`~sr_core.formats.base.Format.display_window`).

    Args:
        rep: the scene's JSON report; planes: from :func:`medical_planes`;
        thumb, valid: ``(len(planes), h, w)`` float64 decimated input values and bool validity;
        label: the sentence saying what is shown.
    """
    return format_named(rep["input"]["format"]).display_window(rep, planes, thumb, valid, label)


def value_units(rep: dict) -> tuple[float, str]:
    """``(value_scale, units)`` of a report's image for the difference maps: DICOM Rescale Slope
    in Rescale Type, NIfTI ``scl_slope``, else ``(1.0, "stored values")``."""
    return format_named(rep["input"]["format"]).value_units(rep)


def geometry_rows(rep: dict) -> list[tuple[str, str, str]]:
    """``(what, input, output)`` rows of a medical image's physical geometry (no patient data)."""
    return format_named(rep["input"]["format"]).geometry_rows(rep)
