"""The upscaling pipeline as stages: ingest -> tile -> infer -> stitch -> publish -> report.

The CLI (:func:`run_upscale`) and the Prefect flow (``flows/upscale_scene.py``) call the same stage
functions; the flow only wraps each one in a task. Every stage takes and returns small dataclasses,
so Prefect tracks scenes and stages while Dask runs the tiles.

Nothing is written at the destination until :func:`publish`: the output (a COG, or for medical
inputs a DICOM series, NIfTI file or pyramidal TIFF: :mod:`sr_core.formats`) and the reports are
built under a scratch directory (or a hidden temp name beside a local destination), validated
(:func:`validate_output`), and moved or uploaded into place only when complete; the manifest
(:mod:`sr_core.publication.manifest`) is written last, conditionally, and is what consumers trust.

Resume and concurrency (:mod:`sr_core.publication.journal`): the Zarr stores and a per-tile completion journal
live in a work directory named by the work key (input checksum, model hash, parameters), under
a lock; a rerun after a crash reuses the staged scene and every completed tile.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from sr_core import storage

from sr_core.publication import journal

from sr_core.publication import manifest
from sr_core.publication.claim import acquire as claim_destination
from sr_core.errors import BusyError, InputError, SRError, StorageError
from sr_core.publication.manifest import strip_ext as _strip_ext
from sr_core.formats import check_output, open_input, output_is_folder, write_output
from sr_core.compute.halo import HaloChoice, choose_halo
from sr_core.compute.infer import TileJob, TileResult, run_tiles, warm_worker
from sr_core.quality.metrics import data_range_for, psnr_from_sse
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.effective import EffectiveReach
from sr_core.imaging.normalize import Normalization, normalization_for
from sr_core.compute.retries import LOST_WORKER_RETRIES
from sr_core.formats.geotiff import SceneInfo
from sr_core.storage.security import check_source
from sr_core.compute.staging import StagedScene, create_output, stage_scene
from sr_core.geometry.tiling import PixelWindow, TileGrid, plan_tiles
from sr_core.compute.wald_task import wald_window_task

log = logging.getLogger(__name__)

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
        tiles_per_task: tiles per Dask task; ``None``: guided sizes (:func:`batch_sizes`).
        wald_window_px: edge of the scene window (HR px) that the Wald-protocol check uses.
        progress: show a progress bar (tiles done / total, MP/s).
        resources: Dask resources each tile task needs, e.g. ``{"GPU": 1}`` so inference lands
            only on workers started with ``--resources GPU=1`` (one per GPU); ``None``: any
            worker.
        input_fingerprint: the source's fingerprint when the caller already has it (the
            archive's listing); ``None``: computed at ingest (:func:`sr_core.publication.manifest.fingerprint`).
        precision: ``"auto"`` (bf16 autocast on a CUDA worker, fp32 on a CPU), ``"fp32"`` or
            ``"bf16"`` (:meth:`sr_core.models.base.SRModel.configure`).
        compile: run the network through ``torch.compile`` on the workers.
        tile_batch: tiles per forward pass on a worker; ``None``: 1 on a CPU, up to 4 MP of
            tiles on CUDA (:func:`sr_core.compute.infer.auto_tile_batch`).
        self_ensemble: average the model's output over the eight dihedral transforms of each
            tile and write the per-pixel standard deviation as an uncertainty layer
            (``--self-ensemble``; :mod:`sr_core.quality.uncertainty`: a COG ``DST_STEM.uncertainty.tif``
            for GeoTIFFs, the report's summary only for medical formats). The Wald check scores
            the ensemble too. Cost: about 7x the model's time (8 passes; ``bench_quality.py
            --self-ensemble`` measured x7.07 for edsr-x2, +0.04 dB Wald PSNR on its validation
            scenes).
        consistency: name of a degradation (:data:`sr_core.imaging.degradations.NAMED`) under which the
            output is corrected to reproduce the input by iterative back-projection
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


@dataclass(frozen=True)
class ModelInfo:
    """The model as the main process sees it: reference, descriptor, card (no weights) and its
    effective receptive field (:mod:`sr_core.models.effective`; ``None`` for bicubic)."""

    ref: str
    descriptor: ModelDescriptor
    card: dict
    reach: EffectiveReach | None = None


@dataclass
class Run:
    """State handed from stage to stage (small: paths and metadata, never pixels)."""

    cfg: UpscaleConfig
    scratch: str
    model: ModelInfo
    scene: SceneInfo | None = None
    staged: StagedScene | None = None
    normalization: Normalization | None = None
    grid: TileGrid | None = None
    output_store: str | None = None
    tiles: list[TileResult] = field(default_factory=list)
    wald: dict | None = None
    dask: dict = field(default_factory=dict)
    written: dict | None = None
    temp_output: str | None = None
    local_cog: str | None = None
    published: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    fingerprint: dict | None = None
    work_key: str | None = None
    work: str | None = None
    previous: manifest.Existing | None = None
    up_to_date: dict | None = None
    resume: dict = field(default_factory=dict)
    measures: dict | None = None
    staged_outputs: list[tuple[str, str, str]] = field(default_factory=list)
    uncertainty: dict | None = None  # the report's self_ensemble section (sr_core.quality.uncertainty)
    manifest: dict | None = None
    started: float = field(default_factory=time.perf_counter)
    halo: HaloChoice | None = None

    @property
    def halo_px(self) -> int:
        """The model's halo for this scene (:attr:`halo`, chosen by :func:`tile`; before that the
        analytic radius), a multiple of the model's size multiple, so every read window starts on
        the same ``size_multiple`` grid as the whole image (models that pixel-unshuffle or
        partition windows see the same blocks); plus :attr:`consistency_halo_px` with
        ``--consistency``."""
        d = self.model.descriptor
        if self.halo is not None:
            return self.halo.halo_px + self.consistency_halo_px
        return -(-d.receptive_field_px // d.size_multiple) * d.size_multiple \
            + self.consistency_halo_px

    @property
    def consistency_halo_px(self) -> int:
        """LR px of halo that ``--consistency``'s back-projection adds beyond the model's
        (:func:`sr_core.quality.consistency.consistency_halo_px`), rounded up to the model's size
        multiple so the total stays one; 0 without ``--consistency``."""
        if self.cfg.consistency is None:
            return 0
        from sr_core.quality.consistency import consistency_halo_px

        m = self.model.descriptor.size_multiple
        extra = consistency_halo_px(self.cfg.consistency, self.model.descriptor.scale)
        return -(-extra // m) * m


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
    :func:`sr_core.storage.security.check_source` (no ``http://``, ``/vsicurl/`` or other GDAL virtual
    paths; ``SR_ALLOWED_LOCAL_ROOTS``) and, for ``s3://``, :func:`sr_core.storage.parse_s3` (no
    ``..`` segments, leading ``/``, control characters or over-long keys).

    Raises:
        InputError: the source is refused.
    """
    check_source(cfg.src)
    if storage.is_s3(cfg.src):
        storage.parse_s3(cfg.src)


def resolve_model(ref: str | None, scale: int | None) -> ModelInfo:
    """The model's descriptor, card and effective receptive field in the main process (weights
    are loaded on workers).

    A shipped model is described from its card without importing torch
    (:func:`sr_core.models.catalog.describe_shipped`) and its effective receptive field read
    from the cache (:mod:`sr_core.models.effective`, keyed by the weights' SHA-256); so is a
    local weights file described before (:func:`_cached_checkpoint`). Anything else, or a cache
    miss, loads the model once here, which also checks the weights file before any work starts,
    and measures it (bounded by the probe's compute budget; cached).

    Raises:
        ModelError: unknown name, missing or malformed weights, or a scale it does not support.
    """
    from sr_core.models.catalog import DEFAULT_MODEL, describe_shipped
    from sr_core.models.effective import cached_reach

    ref = ref or DEFAULT_MODEL
    found = describe_shipped(ref, scale)
    if found is not None:
        sha = found[1].get("sha256")
        reach = cached_reach(sha) if sha else None
        if reach is not None or not sha:
            return ModelInfo(ref=ref, descriptor=found[0], card=found[1], reach=reach)
    key = _checkpoint_key(ref, scale)
    cached = _cached_checkpoint(ref, key)
    if cached is not None:
        return cached
    from sr_core.models.registry import load_model, model_reach

    model = load_model(ref, scale=scale, device="cpu")
    info = ModelInfo(ref=ref, descriptor=model.descriptor, card=model.card,
                     reach=model_reach(model))
    if key is not None and model.card.get("sha256") == key[0]:
        from sr_core.models.effective import save_description

        save_description(key[0], key[1], model.descriptor.to_dict(), model.card)
    return info


def _checkpoint_key(ref: str, scale: int | None) -> tuple[str, dict] | None:
    """For a local weights file: its SHA-256 and what else its description depends on (the file
    name, the scale asked for, the SHA-256 of the card beside it if any); else ``None``."""
    if storage.is_s3(ref) or not os.path.isfile(ref):
        return None
    card = os.path.splitext(ref)[0] + ".json"
    card_sha = storage.sha256_file(card) if os.path.isfile(card) else None
    name = os.path.splitext(os.path.basename(ref))[0]  # a card-less model's name
    return storage.sha256_file(ref), {"name": name, "scale": scale, "card_sha256": card_sha}


def _cached_checkpoint(ref: str, key: tuple[str, dict] | None) -> ModelInfo | None:
    """A local weights file described from the cache under ``key`` (:func:`_checkpoint_key`:
    its SHA-256, its card's and the scale; descriptor, card and effective receptive field)
    without importing torch; ``None`` when not cached. The workers still check the weights
    against the card when they load them."""
    if key is None:
        return None
    from sr_core.models.effective import cached_description, cached_reach

    found, reach = cached_description(*key), cached_reach(key[0])
    if found is None or reach is None:
        return None
    desc, card = found
    try:
        scales = desc.get("supported_scales")
        descriptor = ModelDescriptor(**{**desc, "supported_scales":
                                        tuple(scales) if scales else None})
    except TypeError:  # written by another version
        return None
    return ModelInfo(ref=ref, descriptor=descriptor, card=card, reach=reach)


def preflight(cfg: UpscaleConfig) -> SceneInfo | None:
    """Cheap checks before anything is started: options, the destination, and a local source.

    Returns:
        The validated local source (hand it to :func:`ingest` so it is not validated twice);
        ``None`` for an ``s3://`` source, which :func:`ingest` validates after fetching it.

    Raises:
        InputError: bad options, destination or local source file, or a destination that cannot
            hold the source's format.
    """
    check_options(cfg)
    check_source_option(cfg)
    storage.check_destination(cfg.dst, folder=None)
    if storage.is_s3(cfg.src):
        return None
    scene = open_input(cfg.src, name=cfg.src)
    _check_output(scene, cfg.dst)
    return scene


def _check_output(scene: SceneInfo, dst: str) -> None:
    check_output(scene, dst)
    storage.check_destination(dst, folder=output_is_folder(scene, dst))


def make_scratch(cfg: UpscaleConfig) -> str:
    """A new scratch directory for one run (Zarr stores, temporary files)."""
    parent = cfg.scratch_dir or os.environ.get("SR_SCRATCH") or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="sr-pipeline-", dir=parent)


def start(cfg: UpscaleConfig, scratch: str | None = None) -> Run:
    """Check options, source location and model; make the run's scratch directory unless given.

    Raises:
        InputError, ModelError: bad options, a refused source location, or a bad model.
    """
    t0 = time.perf_counter()
    check_options(cfg)
    check_source_option(cfg)
    model = resolve_model(cfg.model, cfg.scale)
    m = model.descriptor.size_multiple
    if cfg.tile_size_px % m:
        raise InputError(f"--tile-size {cfg.tile_size_px}: model {model.descriptor.name} needs "
                         f"tiles of a multiple of {m} px")
    cfg = replace(cfg, model=model.ref, scale=model.descriptor.scale)
    run = Run(cfg=cfg, scratch=scratch or make_scratch(cfg), model=model, started=t0)
    run.timings["start"] = time.perf_counter() - t0
    return run


@contextmanager
def timed(run: Run, stage: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``run.timings[stage]`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        run.timings[stage] = run.timings.get(stage, 0.0) + time.perf_counter() - t0


def ingest(run: Run, scene: SceneInfo | None = None) -> Run:
    """Check the destination, fetch the source (S3 -> scratch) and validate it.

    Args:
        run: a run after :func:`start`.
        scene: the local source as :func:`preflight` validated it; ``None`` validates here
            (decoding a DICOM series or checking a TIFF's extent once is enough).

    Raises:
        InputError: bad source file or destination; StorageError: S3 unreachable.
    """
    with timed(run, "ingest"):
        storage.check_destination(run.cfg.dst, folder=None)
        if scene is None:
            local = storage.fetch(run.cfg.src, run.scratch)
            scene = open_input(local, name=run.cfg.src)
            _check_output(scene, run.cfg.dst)
        run.scene = scene
        claim(run)
    return run


def expected_manifest(run: Run) -> dict:
    """The fields (:data:`sr_core.publication.manifest.MATCH_FIELDS`) a publication of this run has."""
    d = run.model.descriptor
    return {"manifest_version": manifest.MANIFEST_VERSION, "input": run.fingerprint,
            "weights_sha256": manifest.weights_sha256(run.model.card, d.name),
            "parameters": manifest.output_parameters(d.name, run.cfg.scale,
                                                     run.cfg.wald_window_px,
                                                     self_ensemble=run.cfg.self_ensemble,
                                                     consistency=run.cfg.consistency)}


def claim(run: Run) -> Run:
    """Fingerprint the input, take the lock of the run's work key and read DST's manifest.

    The work key (:func:`sr_core.publication.journal.work_key`) covers the input fingerprint, the model
    hash and every parameter that changes a tile (model, scale, tile size, halo, output format,
    software version); the per-scene normalisation follows from the input and is recorded with
    the staged scene. When DST already has a manifest for the same input, model and parameters
    whose outputs are all present, ``run.up_to_date`` is set to it and nothing needs doing.

    Raises:
        BusyError: another live run holds the same work key.
        InputError, StorageError: the input cannot be fingerprinted or DST's manifest read.
    """
    cfg, scene = run.cfg, run.scene
    run.fingerprint = cfg.input_fingerprint or manifest.fingerprint(
        cfg.src if storage.is_s3(cfg.src) else scene.path)
    # the halo follows from the model's measured reach and the scene's normalisation (both
    # fixed by the model hash and the input): the rule's version and the measurement stand for it
    reach = run.model.reach
    run.work_key = journal.work_key({
        "input": run.fingerprint, **expected_manifest(run), "tile_size_px": cfg.tile_size_px,
        "halo_rule": {"analytic_px": run.model.descriptor.receptive_field_px,
                      "reach": reach.curve if reach is not None else None},
        "self_ensemble": cfg.self_ensemble, "consistency": cfg.consistency,
        "format": scene.format, "dst": cfg.dst,
        "precision": cfg.precision,
        "sr_core": __import__("sr_core").__version__})
    run.work = journal.acquire(journal.work_root(cfg.scratch_dir), run.work_key, cfg.dst)
    journal.crash_point("claimed")
    run.previous = manifest.read(manifest.manifest_uri(cfg.dst))
    if run.previous is not None:
        found = run.previous.doc
        if manifest.mismatch(found, expected_manifest(run)) is None \
                and manifest.missing_output(found) is None:
            run.up_to_date = found
    return run


def tile(run: Run) -> Run:
    """Stage the scene into Zarr tiles, fix the per-scene normalisation, plan the tile grid and
    create the output Zarr.

    Raises:
        InputError: the scene has no valid pixel (all nodata, masked or NaN).
    """
    assert run.scene is not None
    scene = run.scene
    cfg = run.cfg
    work = run.work or run.scratch
    with timed(run, "tile"):
        store = os.path.join(work, "input.zarr")
        done = journal.load_state(work, "staged") if run.work else None
        if done is not None:  # a rerun: the scene was staged completely before
            run.staged = StagedScene(store, cfg.tile_size_px, tuple(done["band_min"]),
                                     tuple(done["band_max"]), tuple(done["valid_px"]))
        else:
            run.staged = stage_scene(scene, store, tile_size_px=cfg.tile_size_px)
            if run.work:
                journal.sync_tree(store)  # durable before the record says it is complete
                journal.save_state(work, "staged", {
                    "band_min": run.staged.band_min, "band_max": run.staged.band_max,
                    "valid_px": run.staged.valid_px})
        run.resume["staging_reused"] = done is not None
        journal.crash_point("staged")
        if not any(run.staged.valid_px):
            # policy (sr_core.formats.geotiff): nothing to super-resolve; refused before any model work
            raise InputError(f"{scene.name}: no valid pixels (every pixel is nodata, masked or "
                             "NaN); nothing to upscale")
        lo, hi = list(run.staged.band_min), list(run.staged.band_max)
        if scene.format != "geotiff":
            # the planes of a medical image share one unit: one normalisation for the volume
            # (per-plane min/max would make neighbouring slices disagree)
            lo = [float(np.nanmin(lo))] * len(lo) if not np.isnan(lo).all() else lo
            hi = [float(np.nanmax(hi))] * len(hi) if not np.isnan(hi).all() else hi
        run.normalization = normalization_for(scene.dtype, lo, hi)
        run.halo = scene_halo(run)
        if run.halo.whole_scene:  # within the whole-scene memory budget (sr_core.compute.halo)
            run.cfg = cfg = replace(cfg, tile_size_px=max(scene.height, scene.width))
        d = run.model.descriptor
        run.grid = plan_tiles(scene.height, scene.width, tile_size_px=cfg.tile_size_px,
                              halo_px=run.halo_px, min_read_px=d.min_size_px,
                              multiple=d.size_multiple)
        run.output_store = os.path.join(work, "output.zarr")
        if not (run.work and journal.load_state(work, "output")):
            create_output(run.output_store, scene, scale=cfg.scale, tile_size_px=cfg.tile_size_px,
                          self_ensemble=cfg.self_ensemble)
            if run.work:
                journal.sync_tree(run.output_store)
                journal.save_state(work, "output", {"normalisation": run.normalization.to_dict(),
                                                    "grid": [run.grid.rows, run.grid.cols]})
    return run


def scene_halo(run: Run) -> HaloChoice:
    """The halo of this scene's tiles (:func:`sr_core.compute.halo.choose_halo`): the tolerance follows
    from the scene's dtype and normalisation span (:func:`sr_core.models.effective.tolerance_for`).
    """
    from sr_core.models.effective import tolerance_for

    assert run.normalization is not None and run.scene is not None
    span = max(run.normalization.span)
    return choose_halo(run.model.descriptor, run.model.reach,
                       tolerance=tolerance_for(run.scene.dtype, span), span=span,
                       scene_px=run.scene.height * run.scene.width,
                       tile_size_px=run.cfg.tile_size_px)


def default_workers() -> int:
    """Local worker processes: 1. On a CPU, one process with all cores for torch's intra-op
    threads beat two single-threaded processes (see benchmarks/README figures)."""
    return 1


@contextmanager
def dask_client(address: str | None, workers: int | None, scratch: str,
                resources: dict[str, float] | None = None):
    """A ``distributed.Client``: to ``address`` when given, else to a new ``LocalCluster`` of
    ``workers`` worker processes (one thread each), closed on exit. ``resources`` (e.g.
    ``{"GPU": 1}``) are declared on every local worker; an existing cluster declares its own.

    Raises:
        SRError: the scheduler at ``address`` cannot be reached.
    """
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise SRError(f"--dask-address {address}: cannot reach the Dask scheduler ({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
    # adaptive mmap threshold: every large activation is then mmapped and page-faulted afresh.
    # Measured here: one EDSR forward pass 9.8 s in a plain process, 16.6 s in a worker with it,
    # 11.1 s without it. Our workers allocate tile-sized tensors, so they run without it.
    # Worker processes import distributed afresh, which sets its loggers to INFO (a dozen start-up
    # lines per worker in the user's terminal); the variable makes their level ERROR from the start.
    # A tile whose worker dies is run again on another worker, at most LOST_WORKER_RETRIES times
    # (sr_core.compute.retries); an existing cluster's scheduler has its own allowed-failures.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          # critical: a failing tile's traceback ("Compute Failed") is not
                          # printed by the worker; infer reports it in one line
                          "distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED":
                              "critical",
                          "distributed.scheduler.allowed-failures": LOST_WORKER_RETRIES}):
        cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1,
                               processes=True, dashboard_address=":0", local_directory=scratch,
                               silence_logs=logging.ERROR, resources=resources)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class ClusterStarter:
    """Starts the Dask cluster in a background thread so that its start-up (spawning workers,
    importing torch) overlaps ingest and staging."""

    def __init__(self, cfg: UpscaleConfig, scratch: str) -> None:
        self._cm = dask_client(cfg.dask_address, cfg.workers, scratch, cfg.resources)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future: Future = self._pool.submit(self._cm.__enter__)

    def warm(self, cfg: UpscaleConfig) -> None:
        """Load the model on every worker as soon as the cluster is up (queued behind its start);
        a failure here resurfaces in the first tile."""

        def _warm() -> None:
            client = self._future.result()
            try:
                client.run(warm_worker, cfg.model, cfg.scale, cfg.device,
                           torch_threads(client, cfg), cfg.precision, cfg.compile)
            except Exception:  # noqa: BLE001
                log.debug("worker warm-up failed", exc_info=True)

        self._warmed = self._pool.submit(_warm)

    def client(self):
        """The ``distributed.Client``, once the cluster is up and (if :meth:`warm` was called)
        every worker has loaded the model, so that ``infer`` times tiles, not worker start-up."""
        client = self._future.result()
        warmed = getattr(self, "_warmed", None)
        if warmed is not None:
            warmed.result()  # _warm swallows its own errors: a failure resurfaces in a tile
        return client

    def release(self) -> None:
        """Start closing the cluster in the background: the tiles are done, and stitching,
        publishing and reporting need no workers, so teardown (a second or two for a local
        cluster) overlaps them."""
        if getattr(self, "_closing", None) is None:
            self._closing = self._pool.submit(self._exit)

    def _exit(self) -> None:
        if self._future.exception() is None:
            self._cm.__exit__(None, None, None)

    def close(self) -> None:
        """Close the cluster (if :meth:`release` has not) and wait until it is closed."""
        try:
            self.release()
            self._closing.result()
        finally:
            self._pool.shutdown(wait=False)


def torch_threads(client, cfg: UpscaleConfig) -> int:
    """Torch intra-op threads per worker: this machine's cores over the local cluster's worker
    threads, so workers don't oversubscribe the cores; 0 (torch's default) on a remote cluster."""
    if cfg.dask_address:
        return 0
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
    return max(1, (os.cpu_count() or 1) // threads)


#: Auto batching starts with tasks of about 1 / ``TASKS_PER_THREAD`` of the remaining tiles per
#: worker thread, at most ``MAX_TILES_PER_TASK`` tiles each (work a lost worker takes with it).
TASKS_PER_THREAD = 4
MAX_TILES_PER_TASK = 16


def batch_sizes(n_tiles: int, threads: int, per_task: int | None = None) -> list[int]:
    """Tiles per Dask task, in submission order.

    With ``per_task`` set, tasks of that many tiles (the last one shorter). Otherwise guided
    self-scheduling (Polychronopoulos & Kuck, "Guided self-scheduling", IEEE Trans. Computers
    C-36(12), 1987): each task takes ``ceil(remaining / (TASKS_PER_THREAD * threads))`` tiles,
    clamped to ``1..MAX_TILES_PER_TASK``, so tasks shrink towards the end and the last ones are
    single tiles: no thread idles for more than about one tile while another finishes a long
    batch. Each task costs the scheduler ~9 ms here (``benchmarks/bench_overhead.py``): 256 small
    tiles as 256 tasks spent 9 % of a run on scheduling; guided, they are 34 tasks.

    Args:
        n_tiles: tiles to run (>= 0).
        threads: worker threads of the cluster (0 counts as 1).
        per_task: fixed tiles per task (>= 1), or ``None`` for the guided sizes.

    Returns:
        Positive integers summing to ``n_tiles`` (empty for 0 tiles).
    """
    if per_task:
        return [min(per_task, n_tiles - i) for i in range(0, n_tiles, per_task)]
    sizes, left, divisor = [], n_tiles, TASKS_PER_THREAD * max(1, threads)
    while left > 0:
        sizes.append(max(1, min(MAX_TILES_PER_TASK, -(-left // divisor))))
        left -= sizes[-1]
    return sizes


def _wald_window(scene: SceneInfo, scale: int, edge_px: int) -> PixelWindow:
    """A centred window of at most ``edge_px`` (a multiple of the scale) for the Wald check."""
    h = min(edge_px, scene.height) // scale * scale
    w = min(edge_px, scene.width) // scale * scale
    return PixelWindow((scene.height - h) // 2, (scene.width - w) // 2, h, w)


#: The Wald check of a medical volume looks at this many evenly spaced planes at most.
WALD_MAX_PLANES = 8


def _wald_planes(scene: SceneInfo) -> list[int] | None:
    """Planes for the Wald check: all bands of a GeoTIFF or small image; else evenly spaced."""
    if scene.format == "geotiff" or scene.count <= WALD_MAX_PLANES:
        return None
    return sorted({round(i * (scene.count - 1) / (WALD_MAX_PLANES - 1))
                   for i in range(WALD_MAX_PLANES)})


def _check_resources(info: dict, resources: dict[str, float] | None) -> None:
    """Refuse to submit tiles that no worker could run (they would wait forever).

    Raises:
        SRError: no worker of the cluster declares every resource in ``resources``.
    """
    if not resources:
        return
    for w in info.get("workers", {}).values():
        have = w.get("resources", {}) or {}
        if all(have.get(k, 0) >= v for k, v in resources.items()):
            return
    want = ", ".join(f"{k}={v:g}" for k, v in resources.items())
    raise SRError(f"Dask: no worker declares the resources {want} (start GPU workers with "
                  f"`dask worker ADDR --resources GPU=1`, one per GPU)")


def infer(run: Run, client, on_progress: Callable[[int, int, int], None] | None = None) -> Run:
    """Run every tile on the Dask cluster (and the Wald check beside them).

    Args:
        run: a run after :func:`tile`.
        client: a ``distributed.Client``.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)``.

    Raises:
        SRError: a tile failed on a worker (the message names the tile and the reason).
    """
    from distributed import KilledWorker, as_completed
    from distributed.comm.core import CommClosedError

    from sr_core.compute.lost_workers import watch_lost_workers

    assert run.grid is not None and run.normalization is not None and run.scene is not None
    cfg, scene = run.cfg, run.scene
    with timed(run, "infer"):
        info = client.scheduler_info()
        _check_resources(info, cfg.resources)
        n_workers = max(1, len(info.get("workers", {})))
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1
        job = TileJob(input_store=run.staged.store_path, output_store=run.output_store,
                      model_ref=cfg.model, scale=cfg.scale, device=cfg.device,
                      torch_threads=torch_threads(client, cfg),
                      normalization=run.normalization, nodata=scene.nodata, work=run.work,
                      precision=cfg.precision, compile=cfg.compile, tile_batch=cfg.tile_batch,
                      self_ensemble=cfg.self_ensemble, consistency=cfg.consistency)
        tiles = list(run.grid)
        todo = []
        for t in tiles:  # one small marker file at a time (bounded memory)
            rec = journal.completed_tile(run.work, t.row, t.col) if run.work else None
            if rec is None:
                todo.append(t)
            else:
                run.tiles.append(TileResult(**rec))
        reused = len(tiles) - len(todo)
        batches, i = [], 0
        for n in batch_sizes(len(todo), threads, cfg.tiles_per_task):
            batches.append(todo[i:i + n])
            i += n
        # the Wald check first: Dask runs tasks in submission order, so it overlaps the big
        # batches instead of running alone after the last tile
        drange = _data_range(run)
        window = _wald_window(scene, cfg.scale, cfg.wald_window_px)
        wald_future = client.submit(wald_window_task, job, window, drange,
                                    _wald_planes(scene), pure=False, resources=cfg.resources) \
            if min(window.height, window.width) >= 7 * cfg.scale else None
        futures = {client.submit(run_tiles, job, b, pure=False, resources=cfg.resources): b
                   for b in batches}
        watch_lost_workers(client, {f.key: f"{scene.name} tile ({b[0].row}, {b[0].col})"
                                    for f, b in futures.items()})
        done, out_px = reused, 0
        if on_progress:
            on_progress(done, len(tiles), 0)
        # this client's own loop: without it as_completed takes the process's default client,
        # another scene's when an archive runs scenes side by side, and after a lost worker
        # that mix of event loops failed tiles ("bound to a different event loop")
        for fut in as_completed(list(futures), loop=client.loop):
            batch = futures[fut]
            try:
                results = fut.result()
            except SRError:
                raise
            except KilledWorker as exc:
                t = batch[0]
                # Dask counts a death against every task assigned to the worker, so this may
                # be a tile queued beside the one that kills workers
                raise SRError(f"{scene.name}: Dask workers kept dying while running tile "
                              f"({t.row}, {t.col}) ({exc.allowed_failures + 1} died with it "
                              "assigned); gave up") from None
            except Exception as exc:  # noqa: BLE001 - a worker-side failure, reported by tile
                # the scheduler's death reaches the client either as distributed's own
                # "scheduler-connection-lost" or as its comm closing under it (connection reset)
                if "scheduler-connection-lost" in str(exc) or isinstance(exc, CommClosedError):
                    raise SRError(f"{scene.name}: lost the connection to the Dask scheduler "
                                  f"({len(run.tiles)} of {len(tiles)} tiles done and recorded); "
                                  "run again to resume") from None
                t = batch[0]
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    raise no_space(run.scratch) from None
                raise SRError(f"{scene.name}: tile ({t.row}, {t.col}) failed on a worker: "
                              f"{type(exc).__name__}: {exc}") from None
            run.tiles.extend(results)
            done += len(batch)
            out_px += sum(t.core.size_px for t in batch) * cfg.scale**2
            if on_progress:
                on_progress(done, len(tiles), out_px)
        run.wald = wald_future.result() if wald_future is not None else None
        run.resume.update({"tiles": len(tiles), "tiles_run": len(todo), "tiles_reused": reused,
                           "tiles_all_nodata": sum(t.skipped for t in run.tiles)})
        run.dask = {"workers": n_workers, "threads": threads, "tasks": len(batches) + (wald_future is not None),
                    "tiles_per_task_max": max(map(len, batches), default=0),
                    "scheduler": cfg.dask_address or "LocalCluster",
                    "devices": sorted({t.device for t in run.tiles}),
                    "precision": _precision(cfg.precision, {t.device for t in run.tiles}),
                    # compute inside the tasks, so scheduling overhead = infer wall - these / threads
                    "tile_compute_s": round(sum(t.seconds for t in run.tiles), 3),
                    "wald_compute_s": round(run.wald["seconds"], 3) if run.wald else 0.0}
    return run


def _precision(asked: str, devices: set[str]) -> str:
    """The precision the tiles ran in: ``asked``, or for ``"auto"`` bf16 on CUDA, fp32 on a
    CPU (``"fp32+bf16"`` when both kinds of worker ran tiles)."""
    if asked != "auto":
        return asked
    kinds = {"bf16" if d.startswith("cuda") else "fp32" for d in devices} or {"fp32"}
    return "+".join(sorted(kinds, reverse=True))


def stitch(run: Run) -> Run:
    """Write the output Zarr at a temporary path (nothing at DST yet): a COG, or the medical
    input's own format (:func:`sr_core.formats.write_output`); then re-open and check it
    (:func:`validate_output`). With the self-ensemble, the uncertainty layer is written beside
    it and summarised (:func:`sr_core.quality.uncertainty.stage`).

    Raises:
        StorageError: the output cannot be written.
        SRError: the written output fails validation (nothing is published).
    """
    from sr_core.quality import uncertainty

    assert run.scene is not None and run.output_store is not None
    with timed(run, "stitch"):
        run.temp_output = storage.temp_path_for(run.cfg.dst.rstrip("/"), run.scratch)
        run.written = write_output(run.output_store, run.scene, run.cfg.scale, run.temp_output,
                                   model_name=run.model.descriptor.name, dst_uri=run.cfg.dst)
        if run.written["format"] == "cog":
            run.local_cog = run.temp_output
        validate_output(run)
        if run.cfg.self_ensemble:
            run.uncertainty = uncertainty.stage(run)
    journal.crash_point("stitched")
    return run


def _check_stats(run: Run, stats: list[dict]) -> None:
    """Per band: valid pixels where the input had some, finite values, not all zero unless the
    input was."""
    staged, name = run.staged, run.cfg.dst
    for b, st in enumerate(stats):
        lo, hi = staged.band_min[b], staged.band_max[b]
        if staged.valid_px[b] == 0:
            continue
        if not st["valid_px"]:
            raise SRError(f"{name}: output band {b + 1} has no valid pixel (the input has "
                          f"{staged.valid_px[b]}); not published")
        if not (np.isfinite(st["min"]) and np.isfinite(st["max"])):
            raise SRError(f"{name}: output band {b + 1} holds non-finite values; not published")
        if st["min"] == st["max"] == 0 and not lo == hi == 0:
            raise SRError(f"{name}: output band {b + 1} is all zero but the input is not; "
                          "not published")


def _zarr_stats(store: str) -> list[dict]:
    """Per plane valid count, min and max of the output Zarr, one chunk at a time."""
    import zarr

    group = zarr.open_group(store, mode="r")
    image, valid = group["image"], group["valid"]
    planes, h, w = image.shape
    _, ch, cw = image.chunks
    out = []
    for p in range(planes):
        n, lo, hi = 0, np.inf, -np.inf
        for r in range(0, h, ch):
            for c in range(0, w, cw):
                ok = valid[p, r:r + ch, c:c + cw]
                if ok.any():
                    v = image[p, r:r + ch, c:c + cw][ok].astype(np.float64)
                    n, lo, hi = n + v.size, min(lo, v.min()), max(hi, v.max())
        out.append({"valid_px": n, "min": float(lo) if n else None,
                    "max": float(hi) if n else None})
    return out


def validate_output(run: Run) -> None:
    """Re-open the written output and check it before anything is published.

    COG: size, band count, dtype, CRS and affine transform (the input's, pixel size divided by
    the scale) as expected; statistics streamed from the file (:func:`measure_output`, kept for
    the report): every band with valid input has valid output, finite, and not all zero unless
    the input was. Medical outputs: re-opened with :func:`sr_core.formats.open_input` (size,
    planes, dtype); statistics of the output Zarr, as for a COG.

    Raises:
        SRError: a check failed (the message names DST and the check).
    """
    scene, s, dst = run.scene, run.cfg.scale, run.cfg.dst
    if run.written["format"] == "cog":
        import rasterio
        from affine import Affine

        with rasterio.open(run.temp_output) as ds:
            got = (ds.width, ds.height, ds.count, ds.dtypes[0])
            want = (scene.width * s, scene.height * s, scene.count, scene.dtype)
            if got != want:
                raise SRError(f"{dst}: written COG is {got}, expected {want}; not published")
            if (ds.crs.to_wkt() if ds.crs else None) != (
                    rasterio.crs.CRS.from_user_input(scene.crs).to_wkt() if scene.crs else None):
                raise SRError(f"{dst}: written COG has CRS {ds.crs}, expected {scene.crs}; "
                              "not published")
            t = Affine(*scene.transform[:6]) @ Affine.scale(1 / s)
            if not ds.transform.almost_equals(t, precision=1e-9):
                raise SRError(f"{dst}: written COG has transform {tuple(ds.transform)[:6]}, "
                              f"expected {tuple(t)[:6]}; not published")
        t0 = time.perf_counter()
        run.measures = measure_output(run)
        run.timings["report_measure"] = time.perf_counter() - t0
        _check_stats(run, run.measures["band_stats"]["output"])
        return
    path = run.temp_output
    if os.path.isfile(path):  # readers such as nibabel go by the extension: give them DST's name
        path = os.path.join(run.scratch, "check-" + os.path.basename(dst.rstrip("/")))
        storage.discard(path)
        os.symlink(os.path.abspath(run.temp_output), path)
    out = open_input(path, name=dst)
    got = (out.width, out.height, out.count)
    want = (scene.width * s, scene.height * s, scene.count)
    if got != want:
        raise SRError(f"{dst}: written output is {got} (width, height, planes), expected "
                      f"{want}; not published")
    _check_stats(run, _zarr_stats(run.output_store))


def _stage_text(run: Run, name: str, uri: str, text: str) -> None:
    """Write a small output file to its temporary path; :func:`publish` moves it into place."""
    tmp = storage.temp_path_for(uri, run.scratch)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    run.staged_outputs.append((name, tmp, uri))


def _sweep_partials(uri: str, keep: str) -> None:
    """Remove hidden temporaries of ``uri`` left beside a local destination by a run that was
    killed (``.NAME.partial-*``); this run holds the work lock."""
    import glob

    if storage.is_s3(uri):
        return
    path = os.path.abspath(uri.rstrip("/"))
    for old in glob.glob(os.path.join(os.path.dirname(path),
                                      f".{glob.escape(os.path.basename(path))}.partial-*")):
        if os.path.abspath(old) != os.path.abspath(keep):
            storage.discard(old)


def publish(run: Run, extra: dict[str, tuple[str, str]] | None = None,
            manifest_extra: dict | None = None) -> Run:
    """Publish every staged output, then the manifest, last and conditionally.

    Steps: every output's size and SHA-256 are read from the staged files; DST's publication
    claim is taken (:mod:`sr_core.publication.claim`: one writer at DST, across hosts too) and DST's
    manifest must still be the one read when the run started; a previous publication at DST
    (another input, model or parameters) is kept under side names and its manifest rewritten
    to list them (:func:`sr_core.publication.manifest.preserve`; one with missing files is retracted
    instead); the output, the reports and ``extra`` files are moved into place
    (local: fsync + :func:`os.replace`) or uploaded (S3, SHA-256 checksums); the manifest is
    written with a conditional write (:func:`sr_core.publication.manifest.commit`); the side copies are
    deleted, and so are the previous publication's files this one does not list again (its
    uncertainty layer after a run without ``--self-ensemble``). A crash between any two steps leaves DST's manifest describing either the complete
    previous publication or the complete new one (or none, when there was none before).

    Args:
        run: a run after :func:`report`.
        extra: more files to publish before the manifest, name -> (URI, text) (the archive's
            STAC item).
        manifest_extra: more fields for the manifest (the archive's scene id).

    Raises:
        BusyError: another run holds DST's claim, or published DST meanwhile (its result
            stands); nothing of this run was written at DST.
        InputError, StorageError: the destination cannot be written.
    """
    assert run.temp_output is not None and run.written is not None
    cfg = run.cfg
    with timed(run, "publish"):
        for name, (uri, text) in (extra or {}).items():
            _stage_text(run, name, uri, text)
        items = [("output", run.temp_output, cfg.dst)] + run.staged_outputs
        outputs = {name: manifest.describe(tmp, uri) for name, tmp, uri in items}
        muri = manifest.manifest_uri(cfg.dst)
        held = claim_destination(cfg.dst, run.scratch)  # one writer at DST, across hosts too
        try:
            found = manifest.read(muri)
            if (found and found.text) != (run.previous and run.previous.text):
                raise BusyError(f"{cfg.dst}: another run published this destination meanwhile; "
                                "this run's result was not published")
            # files of the previous publication this one does not replace (an uncertainty layer)
            stale = manifest.unlisted_outputs(run.previous.doc, outputs, cfg.dst) \
                if run.previous is not None else []
            if run.previous is not None:  # keep the previous publication trusted meanwhile
                run.previous = manifest.preserve(muri, cfg.dst, run.previous, run.scratch)
                journal.crash_point("preserved")
            for name, tmp, uri in items:
                held.check()
                _sweep_partials(uri, keep=tmp)
                storage.publish(tmp, uri)
                journal.crash_point(f"published:{name}")
            run.temp_output = None
            run.staged_outputs = []
            doc = manifest.build(expected_manifest(run), outputs, work_key=run.work_key or "",
                                 source=cfg.src, extra=manifest_extra)
            held.check()
            manifest.commit(muri, doc, run.previous, run.scratch)
            run.manifest = doc
            journal.crash_point("manifest")
            if run.previous is not None:
                manifest.drop_previous(cfg.dst)
            manifest.drop_unlisted(stale)
        finally:
            held.release()
        run.published.update({"output": cfg.dst, "format": run.written["format"],
                              "manifest": muri})
        if run.written["format"] == "cog":
            run.published["cog"] = cfg.dst
    return run


def _data_range(run: Run) -> float:
    """PSNR/SSIM data range: :func:`~sr_core.quality.metrics.data_range_for` for GeoTIFFs and 8-bit
    images; for other medical images the volume's valid value range (a 12-bit MR in uint16 or a
    CT in int16 would otherwise be judged against 65535)."""
    scene, staged = run.scene, run.staged
    if scene.format == "geotiff" or scene.dtype == "uint8":
        return data_range_for(scene.dtype, staged.band_min, staged.band_max)
    return data_range_for("float64", staged.band_min, staged.band_max)


def quality(run: Run) -> dict:
    """Quality figures of the run: Wald-protocol check and LR consistency (with
    ``--consistency`` also its ``"consistency"`` section, :func:`sr_core.quality.consistency.summarise`)."""
    assert run.scene is not None and run.staged is not None
    drange = _data_range(run)
    sse = sum(t.lr_sse for t in run.tiles)
    n = sum(t.valid_px for t in run.tiles)
    out = {
        "data_range": drange,
        "wald": run.wald,
        "lr_consistency": {
            "psnr_db": psnr_from_sse(sse, n, drange),
            "what": "SR output downsampled back by the scale (bicubic, antialiased) vs the input, "
                    "over valid pixels; higher is more consistent",
        },
    }
    if run.cfg.consistency is not None:
        from sr_core.quality.consistency import summarise

        out["consistency"] = summarise(run.cfg.consistency, run.cfg.scale, run.tiles, run.wald,
                                       drange)
    return out


def measure_output(run: Run) -> dict:
    """Stream the input and the published COG once each (bounded memory): per-band statistics,
    histograms, and the seam metric of the output's tile grid.

    Returns:
        ``{"seam": ..., "band_stats": {"input", "output"}, "histograms": {"input", "output"}}``
        (see :func:`sr_core.quality.metrics.seam_metric` and :class:`sr_core.quality.scan.RasterScan`).
    """
    from sr_core.quality.metrics import seam_metric
    from sr_core.quality.scan import scan_raster

    assert run.scene is not None and run.normalization is not None and run.local_cog
    norm = run.normalization
    ranges = [(o, o + s) for o, s in zip(norm.offset, norm.span, strict=True)]
    scan_in = scan_raster(run.scene.path, ranges, pair_profiles=False, name=run.scene.name)
    scan_out = scan_raster(run.local_cog, ranges, name=run.cfg.dst)
    seam = seam_metric(scan_out.col_pair_sum, scan_out.col_pair_n, scan_out.row_pair_sum,
                       scan_out.row_pair_n, tile_px=run.cfg.tile_size_px * run.cfg.scale,
                       scale=run.cfg.scale)
    return {"seam": seam,
            "band_stats": {"input": scan_in.band_stats(), "output": scan_out.band_stats()},
            "histograms": {"input": scan_in.histograms(), "output": scan_out.histograms()}}


def report(run: Run) -> Run:
    """Write the JSON, markdown and HTML reports to temporary files; :func:`publish` puts them
    beside the output.

    Timings ``report_measure`` (streaming statistics and seam metric) and ``report_html``
    (figures and page) are recorded in the JSON report. Should the HTML page fail (a bug in the
    figures), a warning is logged, ``report_html_error`` says why in the JSON report and the JSON
    and markdown are published all the same.
    """
    from sr_core.reports.html_report import build_medical_html, build_scene_html
    from sr_core.reports.report import build_report, to_markdown, write_json

    with timed(run, "report"):
        t0 = time.perf_counter()
        q = quality(run)
        # the streamed statistics and seam metric read COGs with rasterio; a medical output's
        # HTML page reads the run's Zarr stores instead (build_medical_html)
        measures = dict(run.measures or {})
        if run.local_cog and not measures:
            measures = measure_output(run)
            run.timings["report_measure"] = time.perf_counter() - t0
        if measures:
            q["seam"] = measures.pop("seam")
        rep = build_report(run, q, measures)
        t0 = time.perf_counter()
        json_uri, md_uri = run.cfg.report_paths()
        html_uri: str | None = run.cfg.html_report_path()
        html = None
        try:
            if run.local_cog:
                layer = next((tmp for name, tmp, _ in run.staged_outputs
                              if name == "uncertainty"), None)
                html = build_scene_html(rep, run.scene.path, run.local_cog,
                                        uncertainty_path=layer)
            else:
                html = build_medical_html(rep, run.staged.store_path, run.output_store)
        except Exception as exc:  # noqa: BLE001 - the pictures must not cost the JSON report
            log.warning("%s: no HTML report (%s: %s)", run.cfg.dst, type(exc).__name__, exc)
            rep["report_html_error"] = f"{type(exc).__name__}: {exc}"
            html = html_uri = None
        rep["timings_s"]["report_html"] = round(time.perf_counter() - t0, 3)
        pages = [(json_uri, write_json(rep)),
                 (md_uri, to_markdown(rep, html_uri.rsplit("/", 1)[-1] if html_uri else None))]
        if html_uri:
            pages.insert(0, (html_uri, html))
        for uri, text in pages:
            name = ("report_html" if uri == html_uri else "report_json" if uri == json_uri
                    else "report_md")
            _stage_text(run, name, uri, text)
        run.published["report_json"] = json_uri
        run.published["report_md"] = md_uri
        run.published["report_html"] = html_uri  # None when the page could not be made
        run.published["report"] = rep
    return run


def cleanup(run: Run) -> None:
    """Remove the run's scratch directory and any temporary output not published; release the
    work lock, removing the work directory once the output is published (or was up to date) and
    keeping it after a failure, so that a rerun resumes it. Its wall time is
    ``run.timings["cleanup"]`` (removing a large scene's Zarr stores takes a while)."""
    with timed(run, "cleanup"):
        if run.temp_output:
            storage.discard(run.temp_output)
        for _, tmp, _ in run.staged_outputs:
            storage.discard(tmp)
        if not os.environ.get("SR_KEEP_SCRATCH"):
            shutil.rmtree(run.scratch, ignore_errors=True)
        if run.work:
            journal.release(run.work,
                            remove=run.manifest is not None or run.up_to_date is not None)


def no_space(scratch: str) -> StorageError:
    """The one-line error of a full scratch file system (ENOSPC while staging or writing tiles)."""
    err = StorageError(f"{os.path.dirname(scratch) or scratch}: no space left on device for "
                       "the run's scratch files (free space or choose another --scratch-dir / "
                       "SR_SCRATCH)")
    err.no_space = True
    return err


def _drop_work(run: Run | None) -> None:
    """After a full disk, delete the run's work directory instead of keeping it for a resume:
    keeping it would keep the file system full (the tiles are redone on the next run)."""
    if run is None or not run.work:
        return
    root = os.path.dirname(run.work.rstrip("/"))
    journal.release(run.work, remove=True)
    run.work = None
    try:
        os.rmdir(root)  # the sr-work folder, when no other job's work is in it
    except OSError:
        pass


def run_upscale(cfg: UpscaleConfig,
                on_progress: Callable[[int, int, int], None] | None = None, *,
                extra: Callable[[Run], dict[str, tuple[str, str]]] | None = None,
                manifest_extra: dict | None = None) -> Run:
    """Run every stage for one scene (what ``sr-pipeline upscale`` does).

    Args:
        cfg: the job.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)``.
        extra: called after the report with the run; returns more files to publish before the
            manifest, name -> (URI, text) (the archive's STAC item).
        manifest_extra: more manifest fields (see :func:`publish`).

    Returns:
        The finished :class:`Run`; ``run.published`` holds the output, report and manifest
        locations and the report itself; ``run.resume`` the tiles run and reused. When DST
        already holds this result (``run.up_to_date``: its manifest), nothing is done.

    Raises:
        BusyError: another run holds the same job, or published DST first.
        InputError, ModelError, StorageError, SRError: as the stages do; nothing is left at DST
            that a manifest lists.
    """
    scene = preflight(cfg)
    scratch = make_scratch(cfg)
    # the cluster starts now: spawning workers overlaps loading the model here, fetching and
    # staging the scene
    cluster = ClusterStarter(cfg, scratch)
    run = None
    try:
        run = start(cfg, scratch)
        cluster.warm(run.cfg)
        ingest(run, scene)
        if run.up_to_date is not None:
            return run
        tile(run)
        with timed(run, "cluster_wait"):
            client = cluster.client()
        infer(run, client, on_progress)
        cluster.release()
        stitch(run)
        report(run)
        publish(run, extra(run) if extra else None, manifest_extra)
        return run
    except OSError as exc:  # StorageError included
        ours = getattr(exc, "no_space", False)  # already the one-line no_space() error
        if ours or exc.errno == errno.ENOSPC:
            # the workers first: a tile task still running would write its journal marker into
            # the work directory while it is being removed, and keep it
            cluster.close()
            _drop_work(run)
            if not ours:
                raise no_space(scratch) from None
        raise
    finally:
        cluster.close()
        if run is not None:
            cleanup(run)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
