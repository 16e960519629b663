"""Writing a DICOM series: the output Zarr as new instances of a derived series (the "Output"
paragraph of :mod:`sr_core.formats.dicom`: sizes and pixel spacings scaled, new UIDs, DERIVED
image type, a Source Image Sequence, Explicit VR Little Endian).

May import: :mod:`sr_core.formats.dicom_meta` (the reader's metadata and helpers), :mod:`.base`,
:mod:`sr_core.errors`, :mod:`sr_core.storage`; pydicom and zarr lazily.
"""

from __future__ import annotations

import os

import numpy as np

import sr_core
from sr_core.errors import StorageError
from sr_core.formats.base import SceneInfo, first_line
from sr_core.formats.dicom_meta import (
    DROPPED_TAGS,
    SPACING_TAGS,
    DicomMeta,
    _attr,
    _snake,
    quiet_pydicom,
)
from sr_core.storage import discard


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
    image = zarr.open_array(store_path, path="image", mode="r")
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
