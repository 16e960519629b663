"""DICOM (PS3.10 files, read and written with pydicom): one file or a series folder.

Planes: instance by instance (sorted by InstanceNumber, then position along the slice normal),
frame by frame, colour sample by sample; plane ``p`` of instance ``i``, frame ``f``, sample ``c``
is ``(i * frames + f) * samples + c``. Each plane's rows and columns are upscaled.

Values: the *stored* values are staged and written (Bits Stored, Pixel Representation kept;
output clipped to the Bits Stored range) and Rescale Slope / Intercept are copied unchanged, so
Hounsfield units (or any modality unit) mean the same in the output. Pixels equal to the Pixel
Padding Value (outside a CT's field of view) are nodata: not seen by the model, padding again in
the output (upscaled by nearest neighbour), and no other output pixel takes that value.

Output: a new series (DICOM PS3.3): Rows / Columns times the scale, Pixel Spacing, Imager Pixel
Spacing and Nominal Scanned Pixel Spacing (also inside the functional groups of enhanced
multi-frame objects) divided by the scale, Image Position / Orientation (Patient) kept; new Series
and SOP Instance UIDs (:func:`pydicom.uid.generate_uid`); Image Type value 1 ``DERIVED``, a
Derivation Description naming the model, a Source Image Sequence referencing the original
instance; written uncompressed as Explicit VR Little Endian. Smallest / Largest Image Pixel Value
are dropped (they describe the input's pixels).

Validation (before any model work; never ``force=True``): every file must be a PS3.10 file with
pixel data of 8 or 16 bits that pydicom can decode. From each header, **before any pixel data is
decoded**: the size caps of :func:`sr_core.storage.security.check_size` (Rows x Columns against
``SR_MAX_PIXELS``; Rows x Columns x Number of Frames x Samples per Pixel x Bits Allocated / 8 x
the number of files against ``SR_MAX_DECODED_BYTES``), and the match with the folder's first
file (one series, size and pixel format). Then uncompressed pixel data must be as long as
Rows x Columns x frames x samples says (pydicom reads a truncated file without complaint), and
compressed pixel data is decoded once.

Patient data never leaves the dataset: :attr:`SceneInfo.geometry` holds geometry and pixel format
only, and messages name files and tags, never values.

Reading and the format's contract (:class:`Dicom`) are here; writing is in
:mod:`sr_core.formats.dicom_write`; what both use (the writer's metadata, the tags it changes,
the quiet pydicom context) is in :mod:`sr_core.formats.dicom_meta`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from sr_core.errors import InputError
from sr_core.formats.base import (
    Display,
    Format,
    SceneInfo,
    file_ext,
    first_line,
    pair,
    percentile_display,
)
from sr_core.formats.dicom_meta import (
    SPACING_TAGS,
    DicomMeta,
    _attr,
    _snake,
    quiet_pydicom,
)
from sr_core.geometry.tiling import PixelWindow
from sr_core.storage.security import check_size

_SKIPPED_NAMES = ("DICOMDIR",)


def _files_of(path: str, name: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if not f.startswith(".") and f.upper() not in _SKIPPED_NAMES
                   and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise InputError(f"{name}: folder holds no DICOM files")
    return files


def _label(name: str, path: str, f: str) -> str:
    return name if f == path else f"{name}: {os.path.basename(f)}"


def _read_header(f: str, label: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if os.path.getsize(f) == 0:
        raise InputError(f"{label}: empty file (0 bytes)")
    try:
        return pydicom.dcmread(f)  # never force=True: a non-DICOM file must fail here
    except InvalidDicomError:
        raise InputError(f"{label}: not a DICOM file (no DICM preamble / file meta)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on broken files
        raise InputError(f"{label}: unreadable DICOM file, truncated or corrupt "
                         f"({first_line(exc)})") from None


def _check_header(ds, label: str, name: str, instances: int) -> np.dtype:
    """Check the pixel format one dataset's header declares, and the size caps of
    :func:`sr_core.storage.security.check_size` for ``instances`` files of that size (the series,
    all of whose files must match), before any pixel data is read or decoded; return the dtype
    of its decoded pixels."""
    if "PixelData" not in ds:
        what = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) \
            else "no pixel data"
        raise InputError(f"{label}: {what}; only integer images are supported")
    bits = int(ds.get("BitsAllocated", 0))
    if bits not in (8, 16):
        raise InputError(f"{label}: Bits Allocated {bits} is not supported (8 or 16)")
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits == 8 and signed:
        raise InputError(f"{label}: signed 8-bit pixels are not supported")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1))
    if rows < 1 or cols < 1:
        raise InputError(f"{label}: Rows x Columns {rows} x {cols} is not an image")
    if samples not in (1, 3):
        raise InputError(f"{label}: Samples per Pixel {samples} is not supported (1 or 3)")
    if str(ds.get("PhotometricInterpretation", "")).startswith("PALETTE"):
        raise InputError(f"{label}: palette colour images are not supported")
    check_size(name, rows, cols, instances * frames * samples, bits // 8)
    return np.dtype(("i" if signed else "u") + str(bits // 8))


def _check_pixel_data(ds, label: str) -> None:
    """Check one dataset's pixel data (after :func:`_check_header`): uncompressed data must be
    as long as its header says; compressed data is decoded once (the only check a codec
    gives)."""
    from pydicom.uid import UncompressedTransferSyntaxes

    rows, cols = int(ds.Rows), int(ds.Columns)
    frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1))
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts in UncompressedTransferSyntaxes:
        need = rows * cols * frames * samples * int(ds.BitsAllocated) // 8
        have = len(ds.PixelData)
        if have < need:
            raise InputError(f"{label}: truncated pixel data ({have:,} of {need:,} bytes)")
        return
    try:
        ds.pixel_array  # noqa: B018 - decode once: the only check a codec gives
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{label}: cannot decode pixel data (transfer syntax {ts}: "
                         f"{first_line(exc)})") from None


def _padding(ds) -> int | None:
    """Pixel Padding Value (stored units) of a greyscale image without a Pixel Padding Range
    Limit, else ``None``: padding pixels lie outside the scanned field and are handled like
    nodata (not fed to the model, kept exactly in the output)."""
    value = ds.get("PixelPaddingValue")
    if value is None or "PixelPaddingRangeLimit" in ds or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    return int(value)


def _position_along_normal(ds) -> float:
    try:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        return float(np.dot(np.cross(iop[:3], iop[3:]), ipp))
    except (AttributeError, ValueError, TypeError):
        return 0.0


def open_dicom(path: str, name: str) -> SceneInfo:
    """Validate a DICOM file or series folder and describe it as planes.

    Args:
        path: a PS3.10 file, or a folder of them (one series).
        name: how messages and reports name it.

    Returns:
        A :class:`SceneInfo` with ``format="dicom"``, ``count`` = planes, ``meta`` a
        :class:`DicomMeta`.

    Raises:
        InputError: not DICOM, truncated or undecodable pixel data, unsupported pixel format,
            or a folder that mixes series, sizes or pixel formats.
    """
    with quiet_pydicom():
        return _open_dicom(path, name)


def _open_dicom(path: str, name: str) -> SceneInfo:
    files = _files_of(path, name)
    entries, first, dtype = [], None, None
    total_bytes = 0
    for f in files:
        label = _label(name, path, f)
        ds = _read_header(f, label)
        dt = _check_header(ds, label, name, len(files))
        total_bytes += os.path.getsize(f)
        key = (int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1),
               int(ds.get("SamplesPerPixel", 1)), dt.str,
               int(ds.get("BitsStored", 8 * dt.itemsize)),
               str(ds.get("SeriesInstanceUID", "")), _padding(ds))
        if first is None:
            first, dtype, ref = key, dt, ds
        elif key != first:
            what = ("series" if key[6] != first[6] else "size, pixel format or pixel padding")
            raise InputError(f"{label}: differs from the other files of the folder in {what}; "
                             "give one series")
        _check_pixel_data(ds, label)  # after the caps and the match: decodes compressed data
        entries.append((int(ds.get("InstanceNumber", 0) or 0), _position_along_normal(ds), f))
        del ds
    entries.sort(key=lambda e: (e[0], e[1]))
    if first is None or dtype is None:  # unreachable: _files_of never returns an empty list
        raise InputError(f"{name}: folder holds no DICOM files")
    rows, cols, frames, samples, _, bits_stored, _, padding = first
    photometric = str(ref.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples == 3:
        photometric = "RGB"  # pydicom decodes YBR to RGB
    spacing = {t: [float(v) for v in _attr(ref, "PixelMeasuresSequence", t)] for t in SPACING_TAGS
               if _attr(ref, "PixelMeasuresSequence", t)}
    voi = [_first(_attr(ref, "FrameVOILUTSequence", t)) for t in ("WindowCenter", "WindowWidth")]
    geometry = {
        "modality": str(ref.get("Modality", "")), "instances": len(entries), "frames": frames,
        "samples_per_pixel": samples, "rows": rows, "columns": cols,
        **{f"{_snake(t)}_mm": v for t, v in spacing.items()},
        "image_orientation_patient": [float(v) for v in _attr(
            ref, "PlaneOrientationSequence", "ImageOrientationPatient") or []],
        "slice_thickness_mm": float(ref.SliceThickness) if ref.get("SliceThickness") else None,
        "pixel_padding_value": padding,
        "bits_stored": bits_stored, "pixel_representation": int(ref.get("PixelRepresentation", 0)),
        "rescale_slope": float(_attr(ref, "PixelValueTransformationSequence", "RescaleSlope")
                               or 1),
        "rescale_intercept": float(_attr(ref, "PixelValueTransformationSequence",
                                         "RescaleIntercept") or 0),
        "rescale_type": str(_attr(ref, "PixelValueTransformationSequence", "RescaleType")
                            or "") or None,
        # the first VOI window (modality units), for display only
        "window_center": voi[0] if voi[1] else None, "window_width": voi[1] or None,
        "photometric": photometric,
        "transfer_syntax": str(ref.file_meta.get("TransferSyntaxUID", "")),
    }
    meta = DicomMeta(files=tuple(e[2] for e in entries), frames=frames, samples=samples,
                     bits_stored=bits_stored, signed=dtype.kind == "i", photometric=photometric)
    count = len(entries) * frames * samples
    return SceneInfo(
        path=path, name=name, height=rows, width=cols, count=count, dtype=dtype.name, crs=None,
        crs_label=None, transform=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        nodata=None if padding is None else float(padding),
        mask_kind="none" if padding is None else "nodata",
        descriptions=(None,) * count, colorinterp=("gray",) * count, units=(None,) * count,
        file_bytes=total_bytes, format="dicom", geometry=geometry, meta=meta)


def _first(value) -> float | None:
    """The first value of a number or multi-valued attribute, as float (``None`` if absent)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):  # MultiValue, list
        value = next(iter(value), None)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _planes_of(arr: np.ndarray, meta: DicomMeta) -> np.ndarray:
    """pydicom's ``(frames?, rows, cols, samples?)`` -> ``(frames * samples, rows, cols)``."""
    a = arr.reshape(meta.frames, arr.shape[-3 if meta.samples > 1 else -2],
                    arr.shape[-2 if meta.samples > 1 else -1], meta.samples)
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2).reshape(-1, a.shape[1], a.shape[2]))


def iter_blocks(scene: SceneInfo, tile_size_px: int
                ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
    """Stream the series instance by instance (all planes of one instance per block).

    Raises:
        InputError: an instance cannot be read or decoded.
    """
    import pydicom

    meta: DicomMeta = scene.meta
    per = meta.frames * meta.samples
    window = PixelWindow(0, 0, scene.height, scene.width)
    for i, f in enumerate(meta.files):
        label = _label(scene.name, scene.path, f)
        try:
            with quiet_pydicom():
                arr = pydicom.dcmread(f).pixel_array
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{label}: cannot decode pixel data ({first_line(exc)})") from None
        data = _planes_of(arr, meta).astype(scene.dtype, copy=False)
        valid = np.ones(data.shape, dtype=bool) if scene.nodata is None else data != scene.nodata
        yield slice(i * per, (i + 1) * per), window, data, valid


class Dicom(Format):
    """DICOM in, a DICOM series (or one ``.dcm``) out; a folder is a series."""

    name = "dicom"
    output_labels = {"dicom": "DICOM"}
    outputs = "a folder for the new series (or NAME.dcm for a single-instance input)"
    folder_is_series = True

    def sniff(self, path: str, head: bytes) -> bool:
        return os.path.isdir(path) or self.sniff_head(head)

    def sniff_head(self, head: bytes) -> bool:
        """``DICM`` at byte 128 (PS3.10)."""
        return head[128:132] == b"DICM"

    def open(self, path: str, name: str) -> SceneInfo:
        return self.within_size_caps(open_dicom(path, name), name)

    def iter_blocks(self, scene: SceneInfo, tile_size_px: int
                    ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
        return iter_blocks(scene, tile_size_px)

    def write(self, store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str, dst_uri: str) -> dict:
        from sr_core.formats.dicom_write import write_dicom

        return write_dicom(store_path, scene, scale, dst_path, model_name=model_name,
                           folder=self.output_is_folder(scene, dst_uri))

    def output_fits(self, scene: SceneInfo, ext: str) -> bool:
        return not ext.endswith((".tif", ".tiff", ".nii", ".nii.gz", ".svs"))

    def check_output(self, scene: SceneInfo, dst: str) -> None:
        """A ``.dcm`` destination holds one instance only."""
        if file_ext(dst).endswith(".dcm") and scene.meta.instances > 1:
            raise InputError(f"{dst}: the input series has {scene.meta.instances} instances; "
                             "give a folder name (no .dcm) for the new series")

    def output_is_folder(self, scene: SceneInfo, dst: str) -> bool:
        return not file_ext(dst).endswith(".dcm")

    def output_name(self, base: str, head: bytes) -> str:
        return base + ".dcm"

    def display_planes(self, rep: dict) -> tuple[list[int], str]:
        """The middle image of the series (instance x frame), RGB when it has three samples."""
        geo, count = rep["input"].get("geometry") or {}, int(rep["input"]["bands"])
        samples = int(geo.get("samples_per_pixel") or 1)
        images = count // samples
        m = images // 2
        where = (f"image {m + 1} of {images} (instance x frame, in series order)"
                 if images > 1 else "the image")
        if samples == 3:
            return [m * 3, m * 3 + 1, m * 3 + 2], f"{where}, RGB"
        return [m], f"{where} in grey levels"

    def display_window(self, rep: dict, planes: list[int], thumb: np.ndarray,
                       valid: np.ndarray, label: str) -> Display:
        """With a VOI window: the file's first Window Center / Width (modality units), taken
        back to stored values through Rescale Slope / Intercept (PS3.3 C.11.2; MONOCHROME1
        shown inverted); else :func:`~sr_core.formats.base.percentile_display`."""
        geo = rep["input"].get("geometry") or {}
        centre, width = geo.get("window_center"), geo.get("window_width")
        if len(planes) != 1 or centre is None or not width:
            return percentile_display(rep, planes, thumb, valid, label)
        m, b = geo.get("rescale_slope") or 1.0, geo.get("rescale_intercept") or 0.0
        lo, hi = (centre - width / 2 - b) / m, (centre + width / 2 - b) / m
        unit = geo.get("rescale_type") or "modality units"
        text = (f"{label}; window: the file's VOI window, centre {centre:g} / width {width:g} "
                f"{unit}")
        if geo.get("photometric") == "MONOCHROME1":
            lo, hi = hi, lo
            text += " (MONOCHROME1: low values white)"
        return Display((0,), (lo,), (hi,), text)

    def value_units(self, rep: dict) -> tuple[float, str]:
        """Rescale Slope's size, in Rescale Type (or "modality units")."""
        geo = rep["input"].get("geometry") or {}
        return abs(geo.get("rescale_slope") or 1.0), geo.get("rescale_type") or "modality units"

    def geometry_rows(self, rep: dict) -> list[tuple[str, str, str]]:
        """Modality, pixel spacings (divided by the scale), images, slice thickness, rescale."""
        geo, out, s = rep["input"].get("geometry") or {}, rep["output"], int(rep["scale"])
        rows = [("modality", geo.get("modality") or "?", geo.get("modality") or "?")]
        for key, what in (("pixel_spacing_mm", "Pixel Spacing (row x column, mm)"),
                          ("imager_pixel_spacing_mm", "Imager Pixel Spacing (mm)"),
                          ("nominal_scanned_pixel_spacing_mm",
                           "Nominal Scanned Pixel Spacing (mm)")):
            if geo.get(key):
                rows.append((what, pair(geo[key]), pair(out.get(key) or
                                                        [v / s for v in geo[key]])))
        rows.append(("images", f"{geo.get('instances')} instance(s) x {geo.get('frames')} frame(s)",
                     "the same"))
        if geo.get("slice_thickness_mm"):
            rows.append(("Slice Thickness (mm)", f"{geo['slice_thickness_mm']:g}", "kept"))
        unit = geo.get("rescale_type") or "modality units"
        rows.append(("values", f"stored x {geo.get('rescale_slope'):g} + "
                     f"{geo.get('rescale_intercept'):g} = {unit}",
                     "the same rescale (values in the original units)"))
        return rows


FORMAT = Dicom()
