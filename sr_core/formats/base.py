"""The format contract: what one image format (GeoTIFF/COG, DICOM, NIfTI, whole-slide TIFF) gives
the pipeline and the reports, so that neither branches on a format's name.

A format is one module of :mod:`sr_core.formats` holding one :class:`Format` subclass and its
instance ``FORMAT``; :data:`sr_core.formats.REGISTRY` lists them, in sniffing order. A format
answers five questions (as imageio's plugins and pydicom's pixel handlers do):

* **sniff**: is this file (its path and first bytes) mine?
* **open**: validate it and describe it (:class:`SceneInfo`), no pixels kept; **iter_blocks**:
  stream its pixels for staging;
* **write**: turn the output Zarr into the format's own container;
* **output name**: what a destination may look like (checked before any work) and how an archive
  names the output;
* **display hints**: what the reports need to draw it (which planes, the window or stretch, value
  units, the physical-geometry rows, the warnings and the one-line description of the input).

Also here: the value types and helpers every format shares (:class:`SceneInfo`,
:class:`Display`, :func:`percentile_display`, :func:`first_line`, :func:`quiet_tifffile`).

May import: :mod:`sr_core.errors`, :mod:`sr_core.geometry`, :mod:`sr_core.storage`, numpy (and
the format libraries lazily); never the layers above (models, pipeline, reports).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from sr_core.geometry.tiling import PixelWindow

#: display stretch of medical images without a VOI window in the file (percentiles, valid pixels)
MEDICAL_STRETCH_PERCENTILES = (0.5, 99.5)


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def file_ext(uri: str) -> str:
    """The lower-case extension(s) of a path or URI's last segment (``".nii.gz"``), or ``""``."""
    tail = str(uri).rstrip("/").rsplit("/", 1)[-1].lower()
    return tail[tail.find("."):] if "." in tail else ""


# ------------------------------------------------------------------------------- the scene

MaskKind = Literal["nodata", "per_dataset", "none"]


@dataclass(frozen=True)
class SceneInfo:
    """Metadata of one scene, read once at ingest.

    Attributes:
        path: local path of the file that is read.
        name: how messages and reports name it (the user's SRC, e.g. an ``s3://`` URL).
        height, width: size in pixels; count: number of bands.
        dtype: numpy dtype name, one of :data:`~sr_core.formats.geotiff.SUPPORTED_DTYPES`.
        crs: CRS as WKT (``None`` if the file has none); crs_label: short form (``"EPSG:32618"``).
        transform: affine transform ``(a, b, c, d, e, f)`` from pixel (col, row) to CRS coordinates.
        nodata: nodata value in scene units, or ``None``.
        mask_kind: ``"nodata"`` (a nodata value), ``"per_dataset"`` (an internal/external mask
            band), or ``"none"``. Non-finite float pixels always count as invalid too.
        descriptions, colorinterp, units: per band; tags: dataset tags; band_tags: per band.
        file_bytes: size of the file read (all files of a DICOM series folder).
        format: ``"geotiff"``, ``"dicom"``, ``"nifti"`` or ``"wsi"`` (see :mod:`sr_core.formats`).
        geometry: the physical geometry of a medical image (spacing, affine, MPP, ...; never
            patient data), shown in reports; empty for GeoTIFFs.
        meta: what the format's reader and writer need (file list, header facts); never reported.

    For a medical image the ``count`` axis holds *planes*: the 2-D images that are upscaled
    in-plane one by one (slices, frames, time points, colour samples; see each format's module).
    """

    path: str
    name: str
    height: int
    width: int
    count: int
    dtype: str
    crs: str | None
    crs_label: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    mask_kind: MaskKind
    descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    units: tuple[str | None, ...]
    tags: dict = field(default_factory=dict)
    band_tags: tuple[dict, ...] = ()
    file_bytes: int = 0
    format: str = "geotiff"
    geometry: dict = field(default_factory=dict)
    meta: Any = None

    @property
    def size_px(self) -> int:
        return self.height * self.width

    @property
    def chunk_planes(self) -> int:
        """Planes per Zarr chunk: all bands for a GeoTIFF (one chunk per tile), one for medical
        images (one chunk per tile and plane, so a writer can read plane by plane): one for a
        format whose planes share a unit (:attr:`Format.planes_share_unit`)."""
        from sr_core.formats import format_named

        return 1 if format_named(self.format).planes_share_unit else self.count

    def to_dict(self) -> dict:
        """JSON-ready metadata for reports."""
        return {
            "name": self.name, "width": self.width, "height": self.height, "bands": self.count,
            "dtype": self.dtype, "crs": self.crs_label or self.crs,
            "transform": list(self.transform),
            "nodata": self.nodata, "mask": self.mask_kind, "descriptions": list(self.descriptions),
            "colorinterp": list(self.colorinterp), "file_bytes": self.file_bytes,
            "format": self.format, **({"geometry": self.geometry} if self.geometry else {}),
        }


# ----------------------------------------------------------------------------- display mapping

@dataclass(frozen=True)
class Display:
    """How pixels become colours: which bands make the composite and each band's stretch.

    Attributes:
        bands: 0-based band indices shown as R, G, B (three) or grey (one).
        lo, hi: per band of the scene, the values mapped to 0 and 1 (scene units).
        label: the sentence the report prints about it.
    """

    bands: tuple[int, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    label: str

    def band01(self, data: np.ndarray, band: int) -> np.ndarray:
        """One band of ``(bands, h, w)`` scene values stretched to [0, 1] (float32, clipped)."""
        x = (data[band].astype(np.float64) - self.lo[band]) / (self.hi[band] - self.lo[band])
        return np.clip(np.nan_to_num(x, nan=0.0), 0, 1).astype(np.float32)

    def rgba(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(h, w, 4)`` float32 RGBA of a ``(bands, h, w)`` array; invalid pixels transparent."""
        chans = [self.band01(data, b) for b in self.bands]
        if len(chans) == 1:
            chans = chans * 3
        alpha = valid[list(self.bands)].all(axis=0).astype(np.float32)
        return np.dstack([*chans, alpha])


def percentile_display(rep: dict, planes: list[int], thumb: np.ndarray, valid: np.ndarray,
                       label: str) -> Display:
    """The default window of a medical image, in stored values: 8-bit RGB 0-255; otherwise each
    band between its :data:`MEDICAL_STRETCH_PERCENTILES` of valid input pixels.

    Args:
        rep: the scene's JSON report; planes: the planes shown (one or three);
        thumb, valid: ``(len(planes), h, w)`` float64 decimated input values and bool validity;
        label: the sentence saying what is shown.
    """
    n = len(planes)
    bands = tuple(range(n)) if n == 3 else (0,)
    if rep["input"]["dtype"] == "uint8" and n == 3:
        return Display(bands, (0.0,) * 3, (255.0,) * 3, f"{label}; values 0-255 as stored")
    lo, hi = [], []
    for bnd in range(n):
        vals = thumb[bnd][valid[bnd]]
        p0, p1 = np.percentile(vals, MEDICAL_STRETCH_PERCENTILES) if vals.size else (0.0, 1.0)
        lo.append(float(p0))
        hi.append(float(p1) if p1 > p0 else float(p0) + 1.0)
    pct = "-".join(f"{v:g}" for v in MEDICAL_STRETCH_PERCENTILES)
    return Display(bands, tuple(lo), tuple(hi),
                   f"{label}; window: the {pct} % percentiles of the valid input pixels shown")


def pair(v, nd: int = 6) -> str:
    """``"a x b x ..."`` of numbers (``nd`` significant digits), or ``"none"``."""
    return " x ".join(f"{float(x):.{nd}g}" for x in v) if v else "none"


# ------------------------------------------------------------------------------- the contract

class Format(ABC):
    """One image format: sniff, open, stream, write, name the output, and hint the display.

    Class attributes:
        name: the format's name, as :attr:`SceneInfo.format` and the reports write it.
        outputs: what DST may look like for this input (said when a destination is refused).
        planes_share_unit: the planes (the Zarr's first axis) are images or samples of one
            volume, series or colour image in one unit (medical formats): one normalisation
            for the volume, the PSNR/SSIM data range from the valid values (8-bit excepted),
            the Wald check on a few evenly spaced planes. ``False``: bands, each its own
            quantity (GeoTIFF).
        writes_raster: the output is a georeferenced raster file (a COG) that the reports and
            the output scan read directly; else they read the output Zarr.
        folder_is_series: a folder of files in this format is one scene (a DICOM series).
        output_labels: how ``sr-pipeline upscale`` names each output this format writes (by
            the ``"format"`` that :meth:`write` returns, e.g. ``{"cog": "COG"}``).
    """

    name: ClassVar[str]
    outputs: ClassVar[str]
    planes_share_unit: ClassVar[bool] = True
    writes_raster: ClassVar[bool] = False
    folder_is_series: ClassVar[bool] = False
    output_labels: ClassVar[Mapping[str, str]] = {}

    # ------------------------------------------------------------------------------ reading
    @abstractmethod
    def sniff(self, path: str, head: bytes) -> bool:
        """Whether the local file or folder ``path`` (``head``: its first bytes, decompressed
        when gzip, ``b""`` for a folder) is in this format."""

    def sniff_head(self, head: bytes) -> bool:
        """Whether the first bytes alone say this format (no file to open: an archive listing).
        Default: never (a format that needs more than the head, or the fallback)."""
        return False

    @abstractmethod
    def open(self, path: str, name: str) -> SceneInfo:
        """Validate the input and describe it; no pixels kept.

        Raises:
            InputError: missing, empty, truncated, corrupt or unsupported input (one line).
        """

    @staticmethod
    def within_size_caps(info: SceneInfo, name: str) -> SceneInfo:
        """``info`` once its grid (height x width x planes of its dtype) is within the size caps
        of :func:`sr_core.storage.security.check_size`: for formats whose reader learns the grid
        only by opening the file (a format that can check before reading, as GeoTIFF does,
        checks inside its own reader).

        Raises:
            InputError: the grid exceeds a cap (one line naming ``name``).
        """
        from sr_core.storage.security import check_size

        check_size(name, info.height, info.width, info.count, np.dtype(info.dtype).itemsize)
        return info

    @abstractmethod
    def iter_blocks(self, scene: SceneInfo, tile_size_px: int
                    ) -> Iterator[tuple[slice, PixelWindow, np.ndarray, np.ndarray]]:
        """The input's pixels for staging, as :func:`sr_core.formats.iter_blocks` yields them."""

    # ------------------------------------------------------------------------------ writing
    @abstractmethod
    def write(self, store_path: str, scene: SceneInfo, scale: int, dst_path: str, *,
              model_name: str, dst_uri: str) -> dict:
        """The output Zarr written as this format's container at ``dst_path``
        (:func:`sr_core.formats.write_output`)."""

    # -------------------------------------------------------------------------- output name
    @abstractmethod
    def output_fits(self, scene: SceneInfo, ext: str) -> bool:
        """Whether a destination with extension ``ext`` (:func:`file_ext`) can hold the output."""

    def check_output(self, scene: SceneInfo, dst: str) -> None:
        """Refuse a destination beyond the extension check (default: none).

        Raises:
            InputError: the destination cannot hold this input's output.
        """
        return None

    def output_is_folder(self, scene: SceneInfo, dst: str) -> bool:
        """Whether the output for ``dst`` is a folder of files rather than one file."""
        return False

    @abstractmethod
    def output_name(self, base: str, head: bytes) -> str:
        """An archive's output path for an input file: ``base`` (the output path without
        extension) plus the format's extension; ``head``: the input's first bytes."""

    # ------------------------------------------------------------------------ display hints
    def warnings(self, scene: SceneInfo) -> list[str]:
        """What the user should know about an accepted input (the report's ``warnings``)."""
        return []

    def describe_input(self, inp: dict) -> str:
        """The markdown report's line about the input (``inp``: the report's ``input``)."""
        return (f"- Input: {inp['format']}, {inp['width']} x {inp['height']} px, "
                f"{inp['bands']} planes, {inp['dtype']}; geometry "
                f"{_json_dumps(inp.get('geometry', {}))}")

    def display_planes(self, rep: dict) -> tuple[list[int], str]:
        """``(planes, label)``: the planes the HTML report shows and the sentence that says
        which (``rep``: the scene's JSON report)."""
        return [0], "the image in grey levels"

    def display_window(self, rep: dict, planes: list[int], thumb: np.ndarray,
                       valid: np.ndarray, label: str) -> Display:
        """The display window of the shown planes, in stored values
        (default :func:`percentile_display`)."""
        return percentile_display(rep, planes, thumb, valid, label)

    def value_units(self, rep: dict) -> tuple[float, str]:
        """``(value_scale, units)``: what one stored value step is worth and in which units,
        for the difference maps."""
        return 1.0, "stored values"

    def geometry_rows(self, rep: dict) -> list[tuple[str, str, str]]:
        """``(what, input, output)`` rows of the physical geometry (no patient data)."""
        return []


def _json_dumps(obj) -> str:
    import json

    return json.dumps(obj)
