"""The job of one scene: :class:`UpscaleConfig` (every option of ``sr-pipeline upscale``) and the
checks that refuse nonsensical options or a refused source before any work.

May import: :mod:`sr_core.errors`, :mod:`sr_core.storage`, :mod:`sr_core.publication.manifest`
(report names) and, lazily, :mod:`sr_core.quality.consistency` (degradation names).
"""

from __future__ import annotations

from dataclasses import dataclass

from sr_core import storage
from sr_core.errors import InputError
from sr_core.publication.manifest import strip_ext as _strip_ext
from sr_core.storage.security import check_source

MIN_TILE_PX, MAX_TILE_PX = 16, 8192
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class UpscaleConfig:
    """One upscaling job. Defaults are the embedded defaults of ``sr-pipeline upscale``.

    Attributes:
        src: input GeoTIFF / COG, DICOM file or series folder, NIfTI, SVS / OME-TIFF: local path
            or ``s3://bucket/key`` (``s3://bucket/prefix/`` for a DICOM series folder).
        dst: output: local path or ``s3://bucket/key``; a COG for GeoTIFF input, else the input's
            own format (:func:`sr_core.formats.check_output`).
        model: registry name (``sr-pipeline models``) or weights path; default the shipped EDSR.
        scale: upscaling factor; ``None`` takes the model's own.
        tile_size_px: tile core edge in LR pixels, 16..8192.
        device: ``"auto"`` (CUDA when the worker has it), ``"cpu"`` or ``"cuda"``.
        dask_address: scheduler of an existing Dask cluster; ``None`` starts a ``LocalCluster``
            with worker processes.
        workers: worker processes of the local cluster (default 1; torch threads per worker are
            cores / workers).
        report: report JSON path or URL; ``None`` puts ``DST_STEM.report.json`` (and ``.md``) beside
            the COG.
        scratch_dir: parent of the run's scratch directory (Zarr stores, temp files); default the
            system temp directory or ``$SR_SCRATCH``.
        tiles_per_task: tiles per Dask task; ``None``: guided sizes
            (:func:`sr_core.compute.cluster.batch_sizes`).
        wald_window_px: edge of the scene window (HR px) that the Wald-protocol check uses.
        progress: show a progress bar (tiles done / total, MP/s).
        resources: Dask resources each tile task needs, e.g. ``{"GPU": 1}`` so inference lands
            only on workers started with ``--resources GPU=1`` (one per GPU); ``None``: any
            worker.
        input_fingerprint: the source's fingerprint when the caller already has it (the archive's
            listing); ``None``: computed at ingest
            (:func:`sr_core.publication.manifest.fingerprint`).
        precision: ``"auto"`` (bf16 autocast on a CUDA worker, fp32 on a CPU), ``"fp32"`` or
            ``"bf16"`` (:meth:`sr_core.models.base.SRModel.configure`).
        compile: run the network through ``torch.compile`` on the workers.
        tile_batch: tiles per forward pass on a worker; ``None``: 1 on a CPU, up to 4 MP of
            tiles on CUDA (:func:`sr_core.compute.infer.auto_tile_batch`).
        self_ensemble: average the model's output over the eight dihedral transforms of each tile
            and write the per-pixel standard deviation as an uncertainty layer (``--self-ensemble``;
            :mod:`sr_core.quality.uncertainty`: a COG ``DST_STEM.uncertainty.tif`` for GeoTIFFs, the
            report's summary only for medical formats). The Wald check scores the ensemble too.
            Cost: about 7x the model's time (8 passes; ``bench_quality.py --self-ensemble`` measured
            x7.07 for edsr-x2, +0.04 dB Wald PSNR on its validation scenes).
        consistency: name of a degradation (:data:`sr_core.imaging.degradations.NAMED`) under which
            the output is corrected to reproduce the input by iterative back-projection
            (``--consistency``); ``None``: no correction.
    """

    src: str
    dst: str
    model: str | None = None
    scale: int | None = None
    tile_size_px: int = 1024
    device: str = "auto"
    dask_address: str | None = None
    workers: int | None = None
    report: str | None = None
    scratch_dir: str | None = None
    tiles_per_task: int | None = None
    wald_window_px: int = 512
    progress: bool = True
    resources: dict[str, float] | None = None
    input_fingerprint: dict | None = None
    precision: str = "auto"
    compile: bool = False
    tile_batch: int | None = None
    self_ensemble: bool = False
    consistency: str | None = None

    def report_paths(self) -> tuple[str, str]:
        """(JSON, markdown) locations of the report."""
        base = self.report or _strip_ext(self.dst) + ".report.json"
        md = _strip_ext(base) + ".md" if base.endswith(".json") else base + ".md"
        return base, md

    def html_report_path(self) -> str:
        """Location of the HTML report: beside the JSON report, ``.html`` for ``.json``."""
        base = self.report_paths()[0]
        return _strip_ext(base) + ".html" if base.endswith(".json") else base + ".html"



def check_options(cfg: UpscaleConfig) -> None:
    """Refuse nonsensical options before any work.

    Raises:
        InputError: tile size, scale, device, workers or Wald window out of range, or an unknown
            ``--consistency`` degradation.
    """
    if not (MIN_TILE_PX <= cfg.tile_size_px <= MAX_TILE_PX):
        raise InputError(f"--tile-size {cfg.tile_size_px}: must be between {MIN_TILE_PX} and "
                         f"{MAX_TILE_PX} pixels")
    if cfg.scale is not None and not (2 <= cfg.scale <= 16):
        raise InputError(f"--scale {cfg.scale}: must be a whole number between 2 and 16")
    if cfg.device not in DEVICES:
        raise InputError(f"--device {cfg.device}: must be one of {', '.join(DEVICES)}")
    if cfg.workers is not None and cfg.workers < 1:
        raise InputError(f"--workers {cfg.workers}: must be at least 1")
    if cfg.tiles_per_task is not None and cfg.tiles_per_task < 1:
        raise InputError(f"tiles_per_task {cfg.tiles_per_task}: must be at least 1")
    if cfg.precision not in PRECISIONS:
        raise InputError(f"--precision {cfg.precision}: must be one of {', '.join(PRECISIONS)}")
    if cfg.tile_batch is not None and cfg.tile_batch < 1:
        raise InputError(f"tile_batch {cfg.tile_batch}: must be at least 1")
    if cfg.src.rstrip("/") == cfg.dst.rstrip("/"):
        raise InputError(f"{cfg.dst}: destination is the source; choose another DST")
    if cfg.consistency is not None:
        from sr_core.quality.consistency import check_degradation

        check_degradation(cfg.consistency)


def check_source_option(cfg: UpscaleConfig) -> None:
    """Refuse a source that is not ``s3://`` or an allowed local path before anything opens it:
    :func:`sr_core.storage.security.check_source` (no ``http://``, ``/vsicurl/`` or other GDAL
    virtual paths; ``SR_ALLOWED_LOCAL_ROOTS``) and, for ``s3://``, :func:`sr_core.storage.parse_s3`
    (no ``..`` segments, leading ``/``, control characters or over-long keys).

    Raises:
        InputError: the source is refused.
    """
    check_source(cfg.src)
    if storage.is_s3(cfg.src):
        storage.parse_s3(cfg.src)

