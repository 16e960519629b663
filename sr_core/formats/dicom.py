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
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sr_core.errors import InputError, StorageError
from sr_core.formats import first_line
from sr_core.formats.geotiff import SceneInfo
from sr_core.storage.security import check_size
from sr_core.storage import discard
from sr_core.geometry.tiling import PixelWindow

#: Spacing attributes divided by the scale (row spacing \\ column spacing, mm).
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
#: Attributes that describe the input's pixel values and would be wrong for the output.
DROPPED_TAGS = ("SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries")
_SKIPPED_NAMES = ("DICOMDIR",)


@dataclass(frozen=True)
class DicomMeta:
    """What the writer needs (no patient data).

    Attributes:
        files: instance files in plane order.
        frames: frames per instance; samples: samples per pixel.
        bits_stored: Bits Stored; signed: Pixel Representation 1.
        photometric: Photometric Interpretation of the decoded pixels.
    """

    files: tuple[str, ...]
    frames: int
    samples: int
    bits_stored: int
    signed: bool
    photometric: str

    @property
    def instances(self) -> int:
        return len(self.files)

    def value_range(self) -> tuple[int, int]:
        """The stored values Bits Stored and Pixel Representation allow."""
        b = self.bits_stored
        return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if self.signed else (0, (1 << b) - 1)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records while it reads or writes: its validation
    messages quote element values (``Invalid value for VR DA: '...'``), which may be patient
    data, and stray warnings would break the CLI's one-line errors."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


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
    :func:`sr_core.storage.security.check_size` for ``instances`` files of that size (the series, all
    of whose files must match), before any pixel data is read or decoded; return the dtype of
    its decoded pixels."""
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
               int(ds.get("SamplesPerPixel", 1)), dt.str, int(ds.get("BitsStored", 8 * dt.itemsize)),
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


def _attr(ds, group: str, tag: str):
    """``tag`` of the dataset, else of its enhanced multi-frame functional groups: the
    ``group`` macro (e.g. ``PixelMeasuresSequence``) of the Shared Functional Groups Sequence,
    else of the first frame's Per-frame Functional Groups item (DICOM PS3.3 C.7.6.16)."""
    if ds.get(tag) not in (None, ""):
        return ds.get(tag)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(seq) or []
        for item in items[:1]:
            for macro in item.get(group) or []:
                if macro.get(tag) not in (None, ""):
                    return macro.get(tag)
    return None


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


def _snake(tag: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(tag))


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


def _scaled_spacing(ds, scale: int) -> None:
    from pydicom.valuerep import DSfloat

    def fix(item) -> None:
        for tag in SPACING_TAGS:
            if tag in item and item.get(tag):
                setattr(item, tag, [DSfloat(float(v) / scale, auto_format=True)
                                    for v in item.get(tag)])

    fix(ds)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq, []):
            for measures in group.get("PixelMeasuresSequence", []):
                fix(measures)


def derived_dataset(ds, pixels: np.ndarray, meta: DicomMeta, scale: int, series_uid: str,
                    model_name: str):
    """Turn one input dataset (header) into the output instance holding ``pixels``.

    Args:
        ds: the input instance, read with pydicom (modified in place).
        pixels: ``(frames, rows*s, cols*s[, samples])`` stored values in the input's dtype.
        meta: the series' :class:`DicomMeta`; scale: the upscaling factor.
        series_uid: the new Series Instance UID; model_name: recorded in Derivation Description.

    Returns:
        ``ds``, ready to save.
    """
    import sr_core
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for tag in DROPPED_TAGS:
        if tag in ds:
            delattr(ds, tag)
    lo, hi = meta.value_range()
    arr = np.clip(pixels, lo, hi).astype(pixels.dtype)
    if meta.frames == 1:
        arr = arr[0]
    ds.set_pixel_data(arr, meta.photometric, meta.bits_stored, generate_instance_uid=True)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    _scaled_spacing(ds, scale)
    image_type = [str(v) for v in ds.get("ImageType", [])] or ["DERIVED", "SECONDARY"]
    image_type[0] = "DERIVED"
    if len(image_type) < 2:
        image_type.append("SECONDARY")
    ds.ImageType = image_type
    ds.DerivationDescription = (f"Super-resolved x{scale} in-plane by sr-pipeline "
                                f"{sr_core.__version__}, model {model_name}")[:1024]
    ds.SourceImageSequence = [source]
    if ds.get("SeriesDescription"):
        ds.SeriesDescription = f"{ds.SeriesDescription} SR x{scale}"[-64:]
    return ds


def write_dicom(store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
                model_name: str, folder: bool | None = None) -> dict:
    """Write the output Zarr as a new DICOM series (see the module docstring).

    Args:
        store_path: output Zarr group (``image`` ``(planes, H*s, W*s)``).
        scene: the input (``format == "dicom"``).
        scale: upscaling factor.
        dst_path: local temporary path: a file (single-instance input) or a folder to create,
            which receives ``IM00001.dcm``, ``IM00002.dcm``, ... in plane order.
        model_name: recorded in Derivation Description.
        folder: write a folder; ``None``: a folder unless ``dst_path`` ends in ``.dcm``.

    Returns:
        ``{"path", "format": "dicom", "files", "rows", "columns", "pixel_spacing_mm", ...}``.

    Raises:
        StorageError: a file cannot be written (nothing is left at ``dst_path``).
    """
    import pydicom
    import zarr
    from pydicom.uid import generate_uid

    meta: DicomMeta = scene.meta
    image = zarr.open_group(store_path, mode="r")["image"]
    single = not folder if folder is not None else dst_path.lower().endswith(".dcm")
    if single and meta.instances > 1:
        raise StorageError(f"{dst_path}: {meta.instances} instances need a folder")
    series_uid = generate_uid()
    per = meta.frames * meta.samples
    h, w = scene.height * scale, scene.width * scale
    written = []
    try:
        if not single:
            os.makedirs(dst_path)
        with quiet_pydicom():
            for i, f in enumerate(meta.files):
                planes = np.asarray(image[i * per:(i + 1) * per])
                pixels = planes.reshape(meta.frames, meta.samples, h, w).transpose(0, 2, 3, 1)
                if meta.samples == 1:
                    pixels = pixels[..., 0]
                ds = pydicom.dcmread(f)
                del ds.PixelData
                ds = derived_dataset(ds, np.ascontiguousarray(pixels), meta, scale, series_uid,
                                     model_name)
                out = dst_path if single else os.path.join(dst_path, f"IM{i + 1:05d}.dcm")
                ds.save_as(out, enforce_file_format=True)
                written.append(out)
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, encoder refusals
        discard(dst_path)
        raise StorageError(f"{dst_path}: cannot write DICOM ({first_line(exc)})") from None
    with quiet_pydicom():
        check = pydicom.dcmread(written[0])
    return {
        "path": dst_path, "format": "dicom", "files": len(written), "rows": int(check.Rows),
        "columns": int(check.Columns), "transfer_syntax": str(check.file_meta.TransferSyntaxUID),
        **{f"{_snake(t)}_mm": [float(v) for v in _attr(check, "PixelMeasuresSequence", t)]
           for t in SPACING_TAGS if _attr(check, "PixelMeasuresSequence", t)},
        "bytes": sum(os.path.getsize(p) for p in written),
    }
