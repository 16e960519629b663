"""NIfTI-1 / NIfTI-2 volumes (nibabel), ``.nii`` or ``.nii.gz``: 2-D, 3-D, 4-D (and up).

Planes: the volume is upscaled **in-plane, along voxel axes 0 and 1 (i, j)**, slice by slice;
every other index (k, t, ...) is a plane, in file order (k fastest, then t): plane ``p`` is
``data[:, :, k, t]`` with ``(k, t) = unravel_index(p, shape[2:], order="F")``. It is staged
transposed, rows = j and columns = i, so that a plane's bytes in C order are the NIfTI file's
order (i fastest) and the writer streams planes straight to the file.

Values: the stored (unscaled) values are staged and written in the header's dtype and byte order;
``scl_slope`` / ``scl_inter``, ``xyzt_units``, ``cal_min`` / ``cal_max``, intent, the q/s-form
codes and header extensions are kept, so the scaled values mean the same.

Geometry: voxel sizes along i and j are divided by the scale and both the sform and the qform are
replaced by ``A @ M``, with ``M`` mapping an output voxel index ``I`` to the input's continuous
voxel coordinate ``(I + 0.5) / s - 0.5`` along i and j. So the *outer corner* of the volume stays
put (voxel (0, 0, 0)'s centre moves by ``-(1 - 1/s) / 2`` input voxels along i and j): the
upscaled volume covers exactly the same extent and overlays the original in a viewer, the same
convention as the GeoTIFF path (whose pixel-corner transform keeps its origin).

Validation: nibabel reads the header; the file must hold all the voxel bytes the header promises
(for ``.nii.gz`` the gzip stream is read through once, in bounded chunks, so a truncated or corrupt
stream fails here), and the dtype must be one of :data:`sr_core.formats.geotiff.SUPPORTED_DTYPES`.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sr_core.errors import InputError, StorageError
from sr_core.formats.base import Format, SceneInfo, first_line, pair
from sr_core.formats.geotiff import SUPPORTED_DTYPES
from sr_core.geometry.tiling import PixelWindow
from sr_core.storage import discard

_READ_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class NiftiMeta:
    """What the reader and writer need.

    Attributes:
        shape: the volume's shape (i, j, k, t, ...); dtype: stored dtype with byte order
        (``numpy.dtype.str``); offset: byte offset of the voxel data; gz: gzip-compressed.
    """

    shape: tuple[int, ...]
    dtype: str
    offset: int
    gz: bool

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return self.shape[2:] or (1,)

    def plane_index(self, p: int) -> tuple[int, ...]:
        """The (k, t, ...) index of plane ``p`` (file order: k fastest)."""
        return tuple(int(v) for v in np.unravel_index(p, self.plane_shape, order="F"))[
            : len(self.shape) - 2]


def file_header(path: str):
    """The header as stored in the file. (A loaded image's ``header`` has ``scl_slope`` /
    ``scl_inter`` reset to NaN: nibabel moves the scaling into the array proxy.)"""
    import nibabel as nib

    gz = open(path, "rb").read(2) == b"\x1f\x8b"
    klass = type(nib.load(path).header)
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        return klass.from_fileobj(f)


def _stream_bytes(path: str, gz: bool) -> int:
    """Bytes of the (decompressed) file, read once in bounded chunks."""
    if not gz:
        return os.path.getsize(path)
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            total += len(chunk)
    return total


def open_nifti(path: str, name: str) -> SceneInfo:
    """Validate a NIfTI file and describe it as planes (see the module docstring).

    Raises:
        InputError: unreadable header, truncated or corrupt data, an unsupported dtype, or fewer
            than two dimensions.
    """
    import nibabel as nib
    from nibabel.arrayproxy import ArrayProxy

    gz = open(path, "rb").read(2) == b"\x1f\x8b"
    try:
        img = nib.load(path)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on broken headers
        raise InputError(f"{name}: not a readable NIfTI file ({first_line(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{name}: not a single-file NIfTI image ({type(img).__name__})")
    hdr = img.header
    shape = tuple(int(v) for v in img.shape)
    if len(shape) < 2 or min(shape) < 1:
        raise InputError(f"{name}: NIfTI shape {shape} has no 2-D planes")
    dtype = hdr.get_data_dtype()
    if dtype.newbyteorder("=").name not in SUPPORTED_DTYPES:
        raise InputError(f"{name}: NIfTI dtype {dtype.name} is not supported (supported: "
                         f"{', '.join(SUPPORTED_DTYPES)})")
    if not isinstance(img.dataobj, ArrayProxy):  # nib.load always gives a proxy
        raise InputError(f"{name}: NIfTI image data is not file-backed")
    offset = int(img.dataobj.offset)  # vox_offset may be 0 (unset) in the header
    need = offset + math.prod(shape) * dtype.itemsize
    try:
        have = _stream_bytes(path, gz)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: truncated or corrupt gzip stream ({first_line(exc)})") from None
    if have < need:
        raise InputError(f"{name}: truncated NIfTI (header promises {need:,} bytes of header and "
                         f"voxels, the file has {have:,})")
    zooms = [float(z) for z in hdr.get_zooms()]
    space, time_unit = hdr.get_xyzt_units()
    slope, inter = file_header(path).get_slope_inter()
    geometry = {
        "shape": list(shape), "voxel_size": zooms, "units": {"space": space, "time": time_unit},
        "affine": np.asarray(img.affine, dtype=float).round(9).tolist(),
        "sform_code": int(hdr["sform_code"]), "qform_code": int(hdr["qform_code"]),
        "scl_slope": slope, "scl_inter": inter, "dtype": dtype.name,
        "in_plane_axes": [0, 1],
    }
    meta = NiftiMeta(shape=shape, dtype=dtype.str, offset=offset, gz=gz)
    count = math.prod(meta.plane_shape)
    native = dtype.newbyteorder("=").name
    return SceneInfo(
        path=path, name=name, height=shape[1], width=shape[0], count=count, dtype=native,
        crs=None, crs_label=None, transform=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), nodata=None,
        mask_kind="none", descriptions=(None,) * count, colorinterp=("gray",) * count,
        units=(None,) * count, file_bytes=os.path.getsize(path), format="nifti",
        geometry=_clean(geometry), meta=meta)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def iter_blocks(scene: SceneInfo, tile_size_px: int
                ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
    """Stream the volume plane by plane, stored (unscaled) values, rows = j, columns = i.

    Raises:
        InputError: a plane cannot be read (file changed or corrupt).
    """
    from nibabel.arrayproxy import ArrayProxy

    meta: NiftiMeta = scene.meta
    # slope 1, intercept 0: the stored values, whatever scl_slope / scl_inter say
    proxy = ArrayProxy(scene.path, (meta.shape, np.dtype(meta.dtype), meta.offset, 1.0, 0.0),
                       keep_file_open=True)
    window = PixelWindow(0, 0, scene.height, scene.width)
    for p in range(scene.count):
        idx = meta.plane_index(p)
        try:
            plane = np.asarray(proxy[(slice(None), slice(None), *idx)])
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{scene.name}: cannot read plane {idx} "
                             f"({first_line(exc)})") from None
        data = np.ascontiguousarray(plane.T, dtype=scene.dtype)[None]
        valid = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
        yield slice(p, p + 1), window, data, valid


def in_plane_matrix(scale: int, ndim: int = 3) -> np.ndarray:
    """``M`` (4 x 4): output voxel index -> input voxel coordinate, corner-preserving along i, j."""
    m = np.eye(4)
    for axis in range(min(2, ndim)):
        m[axis, axis] = 1.0 / scale
        m[axis, 3] = 0.5 / scale - 0.5
    return m


def output_header(hdr, shape: tuple[int, ...], scale: int, model_name: str):
    """The output header: shape and in-plane zooms scaled, both affines moved by
    :func:`in_plane_matrix`, codes, units, dtype, scaling and extensions kept."""
    out = hdr.copy()
    new_shape = (shape[0] * scale, shape[1] * scale, *shape[2:])
    zooms = list(hdr.get_zooms())
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    out.set_data_shape(new_shape)
    zooms[0] /= scale
    zooms[1] /= scale
    out.set_zooms(zooms)
    m = in_plane_matrix(scale)
    if qform is not None:
        out.set_qform(qform @ m, code=int(qcode))
    if sform is not None:
        out.set_sform(sform @ m, code=int(scode))
    out["descrip"] = f"sr-pipeline x{scale} in-plane {model_name}"[:79].encode()
    return out


def write_nifti(store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
                model_name: str, compress: bool | None = None) -> dict:
    """Stream the output Zarr into a NIfTI file, plane by plane (see the module docstring).

    Args:
        store_path: output Zarr group (``image`` ``(planes, j*s, i*s)``).
        scene: the input (``format == "nifti"``).
        scale: upscaling factor.
        dst_path: local path to write (a temporary name: ``compress`` says whether to gzip).
        model_name: recorded in the header's ``descrip``.
        compress: gzip the file; ``None`` gzips when ``dst_path`` ends in ``.gz``.

    Returns:
        ``{"path", "format": "nifti", "shape", "voxel_size", "affine", "bytes"}``.

    Raises:
        StorageError: the file cannot be written; nothing is left at ``dst_path``.
    """
    import zarr

    meta: NiftiMeta = scene.meta
    compress = dst_path.endswith(".gz") if compress is None else compress
    hdr = output_header(file_header(scene.path), meta.shape, scale, model_name)
    dtype = np.dtype(meta.dtype)
    image = zarr.open_array(store_path, path="image", mode="r")
    try:
        with (gzip.open(dst_path, "wb", compresslevel=6) if compress
              else open(dst_path, "wb")) as f:
            hdr.write_to(f)
            pos = f.tell()
            f.write(b"\x00" * (int(hdr.get_data_offset()) - pos))
            for p in range(scene.count):
                f.write(np.asarray(image[p]).astype(dtype, copy=False).tobytes(order="C"))
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, header errors
        discard(dst_path)
        raise StorageError(f"{dst_path}: cannot write NIfTI ({first_line(exc)})") from None
    # read the header back (nibabel's load() goes by the file name, a temporary one here)
    with (gzip.open(dst_path, "rb") if compress else open(dst_path, "rb")) as f:
        out = type(hdr).from_fileobj(f)
    return {"path": dst_path, "format": "nifti", "gzip": compress,
            "shape": [int(v) for v in out.get_data_shape()],
            "voxel_size": [float(z) for z in out.get_zooms()],
            "affine": np.asarray(out.get_best_affine(), dtype=float).round(9).tolist(),
            "bytes": os.path.getsize(dst_path)}


#: NIfTI-1 magic at byte 344 (single file ``n+1``, pair ``ni1``); NIfTI-2 magic at byte 4.
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = (b"n+2\x00",)


class Nifti(Format):
    """NIfTI-1 / NIfTI-2 in, NIfTI out (gzip when DST ends in ``.gz``)."""

    name = "nifti"
    output_labels = {"nifti": "NIfTI"}
    outputs = "NAME.nii or NAME.nii.gz"

    def sniff(self, path: str, head: bytes) -> bool:
        return self.sniff_head(head)

    def sniff_head(self, head: bytes) -> bool:
        """``n+1`` / ``ni1`` at byte 344 (NIfTI-1) or ``n+2`` at byte 4 (NIfTI-2), of the
        decompressed stream."""
        return head[344:348] in _NIFTI1_MAGIC or head[4:8] in _NIFTI2_MAGIC

    def open(self, path: str, name: str) -> SceneInfo:
        return self.within_size_caps(open_nifti(path, name), name)

    def iter_blocks(self, scene: SceneInfo, tile_size_px: int
                    ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
        return iter_blocks(scene, tile_size_px)

    def write(self, store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str, dst_uri: str) -> dict:
        return write_nifti(store_path, scene, scale, dst_path, model_name=model_name,
                           compress=dst_uri.lower().endswith(".gz"))

    def output_fits(self, scene: SceneInfo, ext: str) -> bool:
        return ext.endswith((".nii", ".nii.gz"))

    def output_name(self, base: str, head: bytes) -> str:
        """``.nii.gz`` for a gzip-compressed input (``head`` as read, not decompressed)."""
        return base + (".nii.gz" if head[:2] == b"\x1f\x8b" else ".nii")

    def display_planes(self, rep: dict) -> tuple[list[int], str]:
        """The middle slice (k) of the first time point."""
        inp = rep["input"]
        geo = inp.get("geometry") or {}
        shape = list(geo.get("shape") or [inp["width"], inp["height"]])
        k = shape[2] // 2 if len(shape) > 2 else 0
        t = " of the first volume" if len(shape) > 3 and math.prod(shape[3:]) > 1 else ""
        return [k], (f"slice k = {k} (of {shape[2]}){t}, voxel axis i across, j down, in grey "
                     "levels" if len(shape) > 2 else "the image in grey levels")

    def value_units(self, rep: dict) -> tuple[float, str]:
        """``scl_slope``'s size when the header sets one, else stored values."""
        geo = rep["input"].get("geometry") or {}
        if geo.get("scl_slope") not in (None, 0):
            return abs(geo["scl_slope"]), "values after scl_slope"
        return 1.0, "stored values"

    def geometry_rows(self, rep: dict) -> list[tuple[str, str, str]]:
        """Voxel size, shape, affine (voxel -> world) and the header's value scaling."""
        geo, out = rep["input"].get("geometry") or {}, rep["output"]
        units = geo.get("units") or {}
        vs = geo.get("voxel_size") or []
        rows = [("voxel size (i x j x k ...)", f"{pair(vs)} {units.get('space') or ''}",
                 f"{pair(out.get('voxel_size') or [])} {units.get('space') or ''}"),
                ("shape", pair(geo.get("shape") or [], 9), pair(out.get("shape") or [], 9)),
                ("affine (voxel -> world)", _json(geo.get("affine")), _json(out.get("affine")))]
        if geo.get("scl_slope") is not None:
            rows.append(("scl_slope / scl_inter", f"{geo['scl_slope']} / {geo.get('scl_inter')}",
                         "kept"))
        return rows


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)


FORMAT = Nifti()
