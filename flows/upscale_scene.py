"""Prefect flow ``upscale_scene``: one scene through ingest -> tile -> infer -> stitch -> report ->
publish (the reports are staged with the output; the manifest is written last): the flow calls
the one driver, :func:`sr_core.pipeline.run_upscale` (the same code path as the CLI), with a stage
wrapper (:func:`as_task`) that makes each stage a Prefect task. Prefect tracks the scene and its
six stages; the tiles run on Dask inside the ``infer`` task, so a scene costs six task runs
whatever its tile count.

Run it without a server (Prefect starts a temporary one) with::

    python -m flows.upscale_scene samples/landsat7_RGB.byte.tif out/landsat7_x2.tif
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, TypedDict, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.states import Failed, State

from sr_core import pipeline
from sr_core.compute.cluster import quiet_distributed
from sr_core.errors import USER_ERRORS
from sr_core.pipeline import Run, UpscaleConfig

# once per process, not inside each flow run, or every scheduler and nanny event lands in the
# flow's log
quiet_distributed()


def _never(task, task_run, state) -> bool:
    return False


class TaskOptions(TypedDict):
    """Options of ``prefect.task`` (typed, so ``@task(**options)`` type-checks)."""

    retries: int
    retry_condition_fn: Callable[[Any, Any, Any], bool]


#: Task options that make a failed task run one log line: Prefect's "Finished in state
#: Failed('<message>')" at ERROR. Without retries, Prefect 3.8 also logs "Task run failed with
#: exception/state ..." at ERROR when a task fails (``TaskRunEngine.handle_retry``), with the
#: traceback, or for a returned ``Failed`` state an empty one ("NoneType: None"); it does so only
#: once the task's retries are used up, and one retry that ``retry_condition_fn`` never grants
#: is never used up. Nothing is retried. A flow that re-raises an unexpected error still logs its
#: traceback ("Encountered exception during execution"); ``upscale_archive``'s scene task logs
#: it itself.
ONE_LINE_FAILURE: TaskOptions = {"retries": 1, "retry_condition_fn": _never}


#: A stage of the driver as its task receives it: ``stage(*args)`` runs it.
Stage = Callable[..., Run]


@task(name="ingest", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def ingest(stage: Stage, run: Run, scene=None) -> Run:
    return stage(run, scene)


@task(name="tile", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def tile(stage: Stage, run: Run) -> Run:
    return stage(run)


#: Prefect global concurrency limit counting GPU (inference) slots across flows; ``infer`` holds
#: one slot (``upscale_archive`` holds one per scene). Create it with ``prefect gcl create sr-gpu
#: --limit N``; without it nothing is limited.
GPU_LIMIT = "sr-gpu"


def limit_exists(name: str) -> bool:
    """Whether the Prefect server has the global concurrency limit ``name``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return False
    return True


def gpu_slot(name: str | None):
    """One slot of the global concurrency limit ``name``, or nothing when ``name`` is ``None``.

    Callers check :func:`limit_exists` first (once per flow run): asking a server for a slot of
    a limit it does not have costs a round trip and a warning per call, and on the SQLite-backed
    server Prefect starts by default each acquisition right after a task starts is often answered
    503 "database is locked" and retried by the client 2 s later (Prefect issue #18934)."""
    return concurrency(name, occupy=1, strict=False) if name else contextlib.nullcontext()


#: Progress artifact of ``infer``: at most one update per this many seconds (and per 1 %).
PROGRESS_MIN_INTERVAL_S = 2.0


class InferProgress:
    """``on_progress`` callback of :func:`sr_core.pipeline.infer` for the Prefect UI: a progress
    artifact (tiles done / total as a percentage; the description gives the tiles, output MP/s
    and ETA) created at the first call and updated as tiles finish, throttled by
    :class:`sr_core.compute.progress.ProgressMeter`, and a log line at every 10 %.

    ``pipeline.infer`` calls it in the task's own thread (its ``as_completed`` loop), so the
    run context that Prefect's artifact and logger calls need is there. A failed artifact
    request is logged once and publishing stops: the run's progress never costs the run.

    Args:
        key: artifact key (lowercase letters, digits and dashes); ``None`` shows the artifact on
            the run's page only.
        label: what the description names (the scene).
    """

    def __init__(self, key: str | None, label: str) -> None:
        from sr_core.compute.progress import ProgressMeter

        self.key, self.label = key, label
        self.meter = ProgressMeter(min_interval_s=PROGRESS_MIN_INTERVAL_S)
        self.artifact_id: UUID | None = None
        self.publishing = True
        self.logger = get_run_logger()

    def __call__(self, done: int, total: int, out_px: int) -> None:
        tick = self.meter.update(done, total, out_px)
        if tick.log:
            self.logger.info("%s", tick.line())
        if not (tick.publish and self.publishing):
            return
        description = f"{self.label}: {tick.line()}"
        try:
            if self.artifact_id is None:
                # called from a sync task: async_dispatch returns the id, not a coroutine
                self.artifact_id = cast(UUID, create_progress_artifact(
                    progress=tick.percent, key=self.key, description=description))
            else:
                update_progress_artifact(self.artifact_id, tick.percent, description=description)
        except Exception as exc:  # noqa: BLE001 - an API hiccup must not fail hours of tiles
            self.publishing = False
            self.logger.warning("infer: progress artifact not updated any more (%s: %s)",
                                type(exc).__name__, exc)


@task(name="infer", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def infer(stage: Stage, run: Run, client, on_progress=None) -> Run:
    """The tiles, holding one GPU slot; their progress is the ``infer-progress`` artifact (the
    driver's ``on_progress`` is ``None`` here: the artifact replaces it)."""
    progress = InferProgress("infer-progress", f"{run.cfg.src} -> {run.cfg.dst}")
    with gpu_slot(GPU_LIMIT if limit_exists(GPU_LIMIT) else None):
        return stage(run, client, progress)


@task(name="stitch", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def stitch(stage: Stage, run: Run) -> Run:
    return stage(run)


@task(name="publish", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def publish(stage: Stage, run: Run, extra=None, manifest_extra=None) -> Run:
    return stage(run, extra, manifest_extra)


def report_link(uri: str):
    """:func:`sr_core.storage.browser_link` of a published report; should that fail (an invalid
    ``SR_REPORT_LINK_EXPIRES_S``), a warning and the plain ``file://`` / ``s3://`` link."""
    from sr_core import storage
    from sr_core.errors import SRError
    from sr_core.reports.html import link_for

    try:
        return storage.browser_link(uri)
    except SRError as exc:
        get_run_logger().warning("report link: %s", exc)
        return storage.BrowserLink(link_for(uri), f"no browser link: {exc}")


@task(name="report", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def report(stage: Stage, run: Run) -> Run:
    """The reports, and the UI's artifacts of them: the HTML report's link, the markdown report
    and the quality table."""
    from sr_core.reports.report import quality_rows, to_markdown

    run = stage(run)
    rep = run.published["report"]
    # an absolute link a browser opens from the UI's page (a presigned URL for S3), the same in
    # the link artifact and the markdown one
    link = report_link(run.published["report_html"]) if run.published["report_html"] else None
    if link:
        create_link_artifact(link=link.url, link_text=f"HTML report: {run.cfg.dst}",
                             key="upscale-report-html",
                             description="Self-contained HTML quality report with pictures "
                                         "(crops, heat map, tile grid, histograms)"
                                         + (f"; {link.note}" if link.note else ""))
    create_markdown_artifact(markdown=to_markdown(rep, link.url if link else None,
                                                  link.note if link else None),
                             key="upscale-report",
                             description=f"sr-pipeline report for {run.cfg.src}")
    create_table_artifact(table=quality_rows(rep), key="upscale-quality",
                          description=f"Quality of {run.cfg.dst}: Wald PSNR/SSIM, LR consistency, "
                                      "seam ratio")
    return run


#: The stage tasks by the driver's stage names.
TASKS: dict[str, Callable[..., Run]] = {
    "ingest": ingest, "tile": tile, "infer": infer, "stitch": stitch, "report": report,
    "publish": publish}


def as_task(name: str, stage: Stage, *args) -> Run:
    """The driver's stage wrapper (:data:`sr_core.pipeline.StageWrapper`): run stage ``name`` as
    its Prefect task (:data:`TASKS`)."""
    return TASKS[name](stage, *args)


def scene_config(src: str, dst: str, *, model: str | None = None, scale: int | None = None,
                 tile_size: int = 1024, **options) -> UpscaleConfig:
    """The job of one ``upscale_scene`` run from the flow's parameters (the one place they are
    mapped onto :class:`~sr_core.pipeline.UpscaleConfig`'s fields: ``tile_size`` ->
    ``tile_size_px``, ``report_path`` -> ``report``; no progress bar)."""
    report = options.pop("report_path", None)
    return UpscaleConfig(src=src, dst=dst, model=model, scale=scale, tile_size_px=tile_size,
                         report=report, progress=False, **options)


@flow(name="upscale_scene")
def upscale_scene(src: str, dst: str, model: str | None = None, scale: int | None = None,
                  tile_size: int = 1024, device: str = "auto", dask_address: str | None = None,
                  workers: int | None = None, report_path: str | None = None,
                  precision: str = "auto", self_ensemble: bool = False,
                  consistency: str | None = None) -> dict | State:
    """Super-resolve one scene (local path or s3:// URL) into a COG, or a medical image into its
    own format (DICOM series, NIfTI, pyramidal TIFF), with a quality report.

    Args:
        src: Input GeoTIFF / COG: a local path or s3://bucket/key.
        dst: Output COG: a local path or s3://bucket/key (its folder or bucket must exist).
        model: Registry name (edsr, espcn, bicubic, edsr-x2, ...) or weights path; empty: edsr.
        scale: Upscaling factor; empty takes the model's own.
        tile_size: Tile core edge in input pixels (16..8192).
        device: auto (CUDA where a worker has it), cpu or cuda.
        dask_address: Scheduler of an existing Dask cluster; empty starts a LocalCluster.
        workers: Worker processes of the LocalCluster; empty: 1.
        report_path: Report JSON location; empty puts DST_STEM.report.json beside the COG.
        precision: auto (bf16 autocast on CUDA workers, fp32 on CPU), fp32 or bf16.
        self_ensemble: Average over the 8 flips/rotations; write an uncertainty COG (8x time).
        consistency: Degradation (bicubic, area, gaussian-0.3, gaussian-0.6) whose application
            to the output must reproduce the input (back-projection); empty: none.

    Returns:
        ``{"output": DST, "format": ..., "cog": DST (GeoTIFF input only), "report_json": ...,
        "report_md": ..., "report_html": ... (None if the page failed), "wald": {...},
        "seam": {...},
        "timings_s": {...}}`` (``timings_s``: seconds per stage, the cluster's start-up wait and
        teardown included).

    Raises:
        InputError, ModelError: a user's mistake (bad file, option or model). The stage's task
            run and the flow run fail with its one-line message, logged without a traceback
            (:data:`ONE_LINE_FAILURE`); ``return_state=True`` gives that ``Failed`` state.
        SRError: other failures, logged with their traceback.
    """
    cfg = scene_config(src, dst, model=model, scale=scale, tile_size=tile_size, device=device,
                       dask_address=dask_address, workers=workers, report_path=report_path,
                       precision=precision, self_ensemble=self_ensemble, consistency=consistency)
    try:
        run = pipeline.run_upscale(cfg, wrap=as_task)
    except USER_ERRORS as exc:
        # a user's mistake (here or in a stage, whose task run logged it in one line): the flow
        # run fails with its message and no traceback; calling the flow raises the error,
        # return_state=True gives this state
        return Failed(message=str(exc), data=exc)
    if run.up_to_date is not None:  # DST's manifest lists this very result
        return {"output": dst, "up_to_date": True,
                "manifest": run.up_to_date.get("outputs", {})}
    out = {k: v for k, v in run.published.items() if k != "report"}
    out["wald"] = run.published["report"]["quality"].get("wald")
    out["seam"] = run.published["report"]["quality"].get("seam")
    out["timings_s"] = dict(run.timings)
    out["resume"] = dict(run.resume)
    return out


def main(argv: list[str]) -> int:
    """``python -m flows.upscale_scene SRC DST``: run the flow with embedded defaults."""
    from sr_core.errors import BusyError, InputError, ModelError, SRError

    if len(argv) != 2:
        print("usage: python -m flows.upscale_scene SRC DST", file=sys.stderr)
        return 2
    try:
        # validate before the flow starts: a failed flow run logs a traceback, a user mistake
        # gets one line
        pipeline.preflight(UpscaleConfig(src=argv[0], dst=argv[1]))
        out = upscale_scene(argv[0], argv[1])
        # calling a flow raises the error of a Failed state it returns: ``out`` is the dict
        assert isinstance(out, dict)
    except (InputError, ModelError) as exc:
        print(f"upscale_scene: error: {exc}", file=sys.stderr)
        return 2
    except BusyError as exc:
        print(f"upscale_scene: busy: {exc}", file=sys.stderr)
        return 75
    except SRError as exc:
        print(f"upscale_scene: error: {exc}", file=sys.stderr)
        return 1
    if out.get("up_to_date"):
        print(f"up to date: {out['output']}; nothing to do")
        return 0
    print(f"{'COG' if out['format'] == 'cog' else out['format']}:    {out['output']}")
    html = f"{out['report_html']} (HTML), " if out.get("report_html") else ""
    print(f"report: {html}{out['report_json']} and {out['report_md']}")
    wald = out.get("wald")
    if isinstance(wald, dict):
        for d, r in (wald.get("by_degradation") or {"bicubic": wald}).items():
            print(f"Wald check ({d} degradation): model {r['model']['psnr_db']:.2f} dB / SSIM "
                  f"{r['model']['ssim']:.4f}; bicubic {r['bicubic']['psnr_db']:.2f} dB / SSIM "
                  f"{r['bicubic']['ssim']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
