"""The scene report as a typed object: what the JSON, markdown and HTML writers read.

:class:`SceneReport` holds one upscaled scene's report section by section; its
:meth:`SceneReport.to_dict` is the JSON document (the same keys in the same order as the report
has always had, non-finite floats written as strings) and :meth:`SceneReport.from_dict` reads such
a document back (a report written to disk, or the dict a run publishes). Sections whose content
depends on the format, writer or measurement (``input.geometry``, ``output``, ``quality``,
``self_ensemble``, ``dask``) stay plain JSON-ready dicts inside the typed object.

May import: the standard library only (the layer below the report writers).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

#: the top-level keys of a scene report, in the order they are written
SECTIONS = ("tool", "created", "input", "output", "model", "scale", "normalisation", "tiling",
            "dask", "resume", "timings_s", "throughput", "nodata_fraction", "warnings", "quality",
            "self_ensemble")


def clean(value):
    """JSON cannot hold inf/nan: write them as strings (recursively through dicts and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def _plain(obj) -> dict:
    """A flat dataclass as a dict in field order (values shared, not copied)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _default(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _pick(cls, d: dict | None, skip: tuple[str, ...] = ()) -> dict:
    """The arguments of a flat dataclass from a dict: its fields' keys (others ignored; missing
    ones take the field's default), but for the fields in ``skip``."""
    d = d or {}
    return {f.name: d[f.name] if f.name in d else _default(f) for f in fields(cls)
            if f.name not in skip}


@dataclass
class Tool:
    """The program that wrote the report: ``name`` (``"sr-pipeline"``) and ``version``."""

    name: str = ""
    version: str = ""

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class SceneInput:
    """The input scene's metadata (:meth:`sr_core.formats.geotiff.Scene.to_dict`).

    Attributes:
        name: the scene's URI or path; width, height: size (px); bands: band (plane) count.
        dtype: numpy dtype name; crs: CRS label or ``None``; transform: the six affine
            coefficients ``(a, b, c, d, e, f)`` (CRS units per px).
        nodata: nodata value or ``None``; mask: how validity is known (``"nodata"``,
            ``"per-dataset"``, ``"alpha"``, ``"nan"``, ``"none"``...).
        descriptions, colorinterp: per band, the file's description and colour label.
        file_bytes: size of the input file (bytes); format: ``"geotiff"``, ``"dicom"``,
            ``"nifti"`` or ``"wsi"``.
        geometry: a medical image's physical geometry (spacing, affine, MPP, VOI window); ``None``
            for GeoTIFF (then left out of the JSON).
        others: any further keys of the section, in order.
    """

    name: str = ""
    width: int = 0
    height: int = 0
    bands: int = 0
    dtype: str = ""
    crs: str | None = None
    transform: list[float] = field(default_factory=list)
    nodata: Any = None
    mask: str | None = None
    descriptions: list = field(default_factory=list)
    colorinterp: list = field(default_factory=list)
    file_bytes: int | None = None
    format: str = "geotiff"
    geometry: dict | None = None
    others: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = _plain(self)
        others = d.pop("others")
        if not d["geometry"]:
            del d["geometry"]
        return {**d, **others}

    @classmethod
    def from_dict(cls, d: dict | None) -> SceneInput:
        """The section from a report's ``input`` (missing keys take the defaults)."""
        d = d or {}
        args = _pick(cls, d, skip=("others",))
        return cls(**args, others={k: v for k, v in d.items() if k not in args})


@dataclass
class ModelSection:
    """The model that ran: ``ref`` (name or path given), ``descriptor``
    (:meth:`sr_core.models.descriptor.Descriptor.to_dict`), ``card`` (the model card without its
    ``arguments``) and ``arguments`` (the constructor arguments from the card)."""

    ref: str = ""
    descriptor: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    arguments: Any = None

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelSection:
        d = d or {}
        return cls(d.get("ref", ""), d.get("descriptor") or {}, d.get("card") or {},
                   d.get("arguments"))


@dataclass
class Tiling:
    """How the scene was cut into tiles.

    Attributes:
        tile_size_px: tile core edge (input px); halo_px: context read around each core (px).
        halo_rule, halo_reason, halo_choice: how the halo was chosen
            (:mod:`sr_core.compute.halo`; rule ``"analytic"`` when no choice was recorded).
        effective_receptive_field: the measured reach (:mod:`sr_core.models.effective`) or
            ``None``.
        grid: ``[rows, cols]`` of tiles; tiles: tile count; tiles_skipped_all_nodata: tiles with
            no valid pixel (no model work).
        read_px: input pixels read, halos included; halo_overhead: ``read_px`` / scene pixels.
    """

    tile_size_px: int = 0
    halo_px: int = 0
    halo_rule: str = "analytic"
    halo_reason: str | None = None
    halo_choice: dict | None = None
    effective_receptive_field: dict | None = None
    grid: list[int] = field(default_factory=lambda: [0, 0])
    tiles: int = 0
    tiles_skipped_all_nodata: int = 0
    read_px: int = 0
    halo_overhead: float | None = None

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Tiling:
        """The section from a report's ``tiling`` (missing keys take the defaults)."""
        return cls(**_pick(cls, d))


@dataclass
class Throughput:
    """Megapixels per second of wall time: input, output, and output over the inference stage
    alone (``None`` when it took no time)."""

    input_mp_per_s: float | None = None
    output_mp_per_s: float | None = None
    infer_output_mp_per_s: float | None = None

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Throughput:
        """The section from a report's ``throughput`` (missing keys are ``None``)."""
        return cls(**_pick(cls, d))


@dataclass
class SceneReport:
    """The quality report of one upscaled scene (:func:`sr_core.reports.report.build_scene_report`).

    Attributes:
        tool, created: the program and the time (ISO 8601, UTC) the report was made.
        input: the input scene; output: the output's URI, size, dtype, CRS and what its writer
            recorded (compression, blocks, overviews, bytes; a medical writer's geometry).
        model: the model, its descriptor and card; scale: the upscaling factor.
        normalisation: :meth:`sr_core.imaging.normalize.Normalization.to_dict`.
        tiling: the tile grid and halo; dask: the cluster's workers, tasks and devices.
        resume: tiles run in this run, reused from a killed run's journal, all-nodata.
        timings_s: seconds per stage and ``"total"``; throughput: megapixels per second.
        nodata_fraction: share of input values that are nodata, masked or not finite.
        warnings: what the user should know about an accepted input.
        quality: Wald-protocol PSNR/SSIM (``"wald"``: a dict, or a string saying why not),
            ``"lr_consistency"``, ``"seam"``, ``"consistency"``, ``"data_range"`` and
            ``"conventions"``.
        self_ensemble: the uncertainty layer's summary (``{"enabled": False}`` when off).
        band_stats, histograms: the streamed per-band statistics and histograms of input and
            output (:func:`sr_core.pipeline.measure_output`), ``None`` when not measured.
        extras: any further top-level sections, in order (e.g. ``report_html_error``).
    """

    tool: Tool = field(default_factory=Tool)
    created: str = ""
    input: SceneInput = field(default_factory=SceneInput)
    output: dict = field(default_factory=dict)
    model: ModelSection = field(default_factory=ModelSection)
    scale: int = 1
    normalisation: dict = field(default_factory=dict)
    tiling: Tiling = field(default_factory=Tiling)
    dask: Any = None
    resume: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    throughput: Throughput = field(default_factory=Throughput)
    nodata_fraction: Any = None
    warnings: list = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    self_ensemble: dict = field(default_factory=lambda: {"enabled": False})
    band_stats: dict | None = None
    histograms: dict | None = None
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON-ready report: sections in :data:`SECTIONS` order, then ``band_stats`` and
        ``histograms`` when measured, then :attr:`extras`; non-finite floats as strings."""
        d: dict = {}
        for name in SECTIONS:
            value = getattr(self, name)
            d[name] = value.to_dict() if hasattr(value, "to_dict") else value
        for name in ("band_stats", "histograms"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        d.update(self.extras)
        return clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> SceneReport:
        """Read a report back (a parsed ``*.report.json`` or a run's published report); sections
        an older report lacks take their defaults.

        Raises:
            TypeError: ``d`` is not a dict.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a scene report is a dict, not {type(d).__name__}")
        known = set(SECTIONS) | {"band_stats", "histograms"}
        return cls(
            tool=Tool(**_pick(Tool, d.get("tool"))), created=d.get("created", ""),
            input=SceneInput.from_dict(d.get("input")), output=d.get("output") or {},
            model=ModelSection.from_dict(d.get("model")), scale=d.get("scale", 1),
            normalisation=d.get("normalisation") or {}, tiling=Tiling.from_dict(d.get("tiling")),
            dask=d.get("dask"), resume=d.get("resume") or {}, timings_s=d.get("timings_s") or {},
            throughput=Throughput.from_dict(d.get("throughput")),
            nodata_fraction=d.get("nodata_fraction"), warnings=list(d.get("warnings") or []),
            quality=d.get("quality") or {},
            self_ensemble=d.get("self_ensemble") or {"enabled": False},
            band_stats=d.get("band_stats"), histograms=d.get("histograms"),
            extras={k: v for k, v in d.items() if k not in known})

    @property
    def wald(self) -> dict | None:
        """The Wald check's figures, or ``None`` when there was none (scene too small)."""
        w = self.quality.get("wald")
        return w if isinstance(w, dict) else None

    @property
    def seam(self) -> dict | None:
        """The seam metric, or ``None`` when it was not measured."""
        s = self.quality.get("seam")
        return s if isinstance(s, dict) else None


def as_report(rep: SceneReport | dict) -> SceneReport:
    """``rep`` as a :class:`SceneReport` (a dict is read with :meth:`SceneReport.from_dict`)."""
    return rep if isinstance(rep, SceneReport) else SceneReport.from_dict(rep)
