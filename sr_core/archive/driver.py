"""The archive driver: every scene of an archive through the one scene driver, and a summary.

:func:`run_archive` is what ``flows/upscale_archive.py`` and :func:`sr_core.upscale_archive` run:
list the scenes, plan them (skip what a manifest says is up to date), start or join the one Dask
cluster all scenes share, run the scenes that need it (each through
:func:`sr_core.pipeline.run_upscale`), summarise the run and publish the summary. A caller that
wants each step tracked passes an :class:`ArchiveHooks`: the flow makes ``list-scenes``, ``plan``
and ``summary`` Prefect tasks and submits each scene as a task; the defaults call the steps
directly and run the scenes on a thread pool.

May import: :mod:`sr_core.pipeline`, :mod:`sr_core.compute` and the other archive modules (this one
is the archive's top).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

from sr_core.archive.plan import ScenePlan, plan_archive
from sr_core.archive.scenes import SceneResult, failed_result, run_scene, skipped_result
from sr_core.archive.sources import list_scenes
from sr_core.archive.summary import ArchiveRun, publish_summary, summarize
from sr_core.compute.cluster import shared_cluster
from sr_core.errors import USER_ERRORS, InputError
from sr_core.pipeline import ModelInfo, UpscaleConfig, check_options, resolve_model
from sr_core.pipeline.driver import StageWrapper, call_stage

log = logging.getLogger(__name__)

#: ``run_scenes(todo, cfg, model)``: run every plan (``cfg.dask_address`` is the shared
#: cluster) and yield ``(plan, row, report)`` for each, a failed scene as its ``failed`` row.
ScenesRunner = Callable[[list[ScenePlan], UpscaleConfig, ModelInfo],
                        Iterator[tuple[ScenePlan, SceneResult, dict]]]


@dataclass(frozen=True)
class ClusterSpec:
    """The one Dask cluster every scene of the run shares.

    Attributes:
        dask_address: scheduler of an existing cluster (``tcp://host:8786``); ``None`` starts a
            ``LocalCluster`` for the run.
        workers: worker processes of that LocalCluster (``None``: 1).
        gpu: tile tasks need the Dask resource ``GPU=1`` (a LocalCluster declares it).
        dask_cuda: start the LocalCluster with dask-cuda (one worker per GPU).
    """

    dask_address: str | None = None
    workers: int | None = None
    gpu: bool = False
    dask_cuda: bool = False


@dataclass(frozen=True)
class ArchiveJob:
    """One archive run.

    Attributes:
        source: the archive: ``s3://bucket/prefix/**/*.tif``, a local folder or glob, or a STAC
            ItemCollection / Catalog JSON (:func:`sr_core.archive.list_scenes`).
        output_prefix: where outputs go, a local folder or ``s3://`` prefix
            (:func:`sr_core.archive.output_paths`).
        cfg: the archive-wide job from :func:`prepare` (model resolved; ``src`` / ``dst`` are
            set per scene).
        model: the resolved model.
        stac_asset: STAC sources only: the key of the asset to upscale.
        cluster: the shared Dask cluster.
        max_scenes_in_flight: scenes run at a time (>= 1).
        run_id: names the run's summary under ``_runs/``; default a random UUID.
    """

    source: str
    output_prefix: str
    cfg: UpscaleConfig
    model: ModelInfo
    stac_asset: str = "data"
    cluster: ClusterSpec = ClusterSpec()
    max_scenes_in_flight: int = 2
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def prepare(cfg: UpscaleConfig) -> tuple[UpscaleConfig, ModelInfo]:
    """Check an archive-wide job and resolve its model once for every scene.

    Returns:
        ``(cfg, model)``: ``cfg`` with ``model`` and ``scale`` pinned to the resolved model's.

    Raises:
        InputError, ModelError: a bad option or model (one line).
    """
    check_options(cfg)
    model = resolve_model(cfg.model, cfg.scale)
    return replace(cfg, model=model.ref, scale=model.descriptor.scale), model


def scenes_in_threads(in_flight: int) -> ScenesRunner:
    """The default scene runner: :func:`sr_core.archive.run_scene` on ``in_flight`` threads
    (the tiles themselves run on the Dask cluster); a failed scene is logged (one line for a
    user's mistake, the traceback otherwise) and becomes its row."""
    def run(todo: list[ScenePlan], cfg: UpscaleConfig, model: ModelInfo):
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            futures = [(p, pool.submit(run_scene, p, cfg, model)) for p in todo]
            for p, fut in futures:
                row, rep, error = fut.result()
                if error is not None:
                    log.error("scene %s failed: %s", p.scene.scene_id, row.reason,
                              exc_info=None if isinstance(error, USER_ERRORS) else error)
                yield p, row, rep
    return run


@dataclass(frozen=True)
class ArchiveHooks:
    """How :func:`run_archive` runs its steps.

    Attributes:
        wrap: runs the named steps ``"list-scenes"``, ``"plan"`` and ``"summary"`` (as
            :data:`sr_core.pipeline.driver.StageWrapper`); default: call them directly.
        run_scenes: runs the scenes to process (:data:`ScenesRunner`); ``None``:
            :func:`scenes_in_threads` with the job's ``max_scenes_in_flight``.
        logger: where the run's two INFO lines go (what was listed, the summary's message);
            ``None``: this module's logger. The flow passes its run logger.
    """

    wrap: StageWrapper = call_stage
    run_scenes: ScenesRunner | None = None
    logger: logging.Logger | logging.LoggerAdapter | None = None


def run_archive(job: ArchiveJob, hooks: ArchiveHooks = ArchiveHooks()) -> dict:
    """Upscale every scene of an archive that is not up to date, and summarise the run.

    Returns:
        The run's summary (:func:`sr_core.archive.summarize`) with ``"written"``: name ->
        location of the summary files (``archive-summary.json``, the run's own copy under
        ``_runs/`` and ``archive-report.html``).

    Raises:
        InputError: the source cannot be listed (one line). A scene's failure never raises:
            it is that scene's ``failed`` row.
        StorageError: the summary cannot be written.
    """
    t0 = time.perf_counter()
    logger = hooks.logger or log
    scenes = hooks.wrap("list-scenes", partial(list_scenes, asset_key=job.stac_asset), job.source)
    plans = hooks.wrap("plan", plan_archive, scenes, job.output_prefix, job.cfg, job.model)
    todo = [p for p in plans if p.status == "todo"]
    results = {p.scene.scene_id: skipped_result(p) for p in plans if p.status == "skipped"}
    # a refused scene location or id (http://, an S3 key with ../) fails that scene only
    results.update({p.scene.scene_id: failed_result(p, InputError(p.reason))
                    for p in plans if p.status == "failed"})
    logger.info("%s: %d scenes, %d up to date, %d to process, %d refused", job.source, len(plans),
                sum(p.status == "skipped" for p in plans), len(todo),
                sum(p.status == "failed" for p in plans))
    reports: dict[str, dict] = {}
    if todo:
        runner = hooks.run_scenes or scenes_in_threads(job.max_scenes_in_flight)
        scratch = tempfile.mkdtemp(prefix="sr-archive-", dir=os.environ.get("SR_SCRATCH"))
        spec = job.cluster
        try:
            with shared_cluster(spec.dask_address, spec.workers, scratch, gpu=spec.gpu,
                                dask_cuda=spec.dask_cuda) as address:
                for p, row, rep in runner(todo, replace(job.cfg, dask_address=address),
                                          job.model):
                    results[p.scene.scene_id] = row
                    if row.status != "failed":
                        reports[p.scene.scene_id] = rep
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    this_run = ArchiveRun(job.source, job.output_prefix, job.run_id,
                          seconds=round(time.perf_counter() - t0, 3))
    summary = summarize([results[p.scene.scene_id] for p in plans], this_run, model=job.model,
                        cfg=job.cfg)
    written = hooks.wrap("summary", publish_summary, summary, reports, job.output_prefix)
    logger.info("%s", summary["message"])
    return summary | {"written": written}
