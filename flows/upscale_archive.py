"""Prefect flow ``upscale_archive``: every scene of an archive (S3 prefix + glob, local folder, or
STAC ItemCollection / catalog) through the same stages as ``upscale_scene``, skipping scenes whose
published output is up to date, a bounded number of scenes in flight, one scene's failure never
stopping the others, and a summary at the end.

The flow runs :func:`sr_core.archive.run_archive` (the archive driver) with its steps as Prefect
task runs: ``list-scenes``, ``plan`` (reads every scene's manifest), one ``scene`` task per
scene that needs processing (it calls :func:`sr_core.archive.process_scene`, i.e. the six pipeline
stages, with the tiles on the archive's one shared Dask cluster), and ``summary``. A 1,000-scene
archive with everything to do is 1,003 task runs; a rerun with nothing to do is 3.

GPU slots across flows: each ``scene`` task holds one slot of the Prefect **global concurrency
limit** named by ``concurrency_limit`` (default ``sr-gpu``) while it runs, so all archive runs (and
``upscale_scene`` runs, whose ``infer`` task takes the same limit) together never run more scenes
than the limit allows. Create it once per server: ``prefect gcl create sr-gpu --limit 2``. Without
it the slots are not enforced: the flow checks once and logs one warning, and scenes then take no
slot (asking per scene for a missing limit cost a 503 retry, about 2 s, on the default SQLite
server). Inside one run, ``max_scenes_in_flight``
bounds the scenes submitted at a time.

Credentials never travel as parameters: boto3 takes them from the environment, its config files or
the IAM role; ``aws_credentials_block`` may name a prefect-aws ``AwsCredentials`` block instead
(prefect-aws installed separately), whose values are put in this flow run's process environment
and are never logged.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, get_run_context
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.upscale_scene import GPU_LIMIT, ONE_LINE_FAILURE, InferProgress, gpu_slot, limit_exists
from sr_core import archive, pipeline
from sr_core.archive import ScenePlan, SceneRef, SceneResult
from sr_core.compute.cluster import quiet_distributed
from sr_core.errors import USER_ERRORS, SRError
from sr_core.pipeline import ModelInfo, UpscaleConfig


class Processing(BaseModel):
    """How each scene is upscaled (the same options as ``sr-pipeline upscale``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("edsr", min_length=1, description=(
        "Model: a registry name (edsr, espcn, bicubic, edsr-x2, ...; `sr-pipeline models`) or a "
        "path to .safetensors weights with their JSON card beside them."))
    scale: int | None = Field(None, ge=2, le=16, description=(
        "Upscaling factor; empty takes the model's own (2 for the shipped models)."))
    tile_size: int = Field(1024, ge=pipeline.MIN_TILE_PX, le=pipeline.MAX_TILE_PX, description=(
        "Tile core edge in input pixels. Does not change the output (tiled = whole-image)."))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "Where workers run the model: auto uses CUDA where a worker has it."))
    wald_window: int = Field(512, ge=32, le=4096, description=(
        "Edge (px) of the centred window of each scene used for the Wald-protocol quality check."))


class Cluster(BaseModel):
    """The one Dask cluster shared by every scene of the run."""

    model_config = ConfigDict(extra="forbid")

    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|ucx|inproc)://\S+$", description=(
        "Scheduler of an existing Dask cluster (tcp://host:8786); empty starts a LocalCluster "
        "for this run."))
    workers: int | None = Field(None, ge=1, le=256, description=(
        "Worker processes of the LocalCluster (ignored with dask_address); empty: 1."))
    gpu: bool = Field(False, description=(
        "Tile tasks require the Dask resource GPU=1, so they only run on workers started with "
        "`--resources GPU=1` (one per GPU). A LocalCluster declares it on its workers."))
    dask_cuda: bool = Field(False, description=(
        "Start the LocalCluster with dask-cuda (one worker per GPU; needs the `gpu` extra)."))


def _use_aws_block(name: str | None) -> None:
    """Put a prefect-aws ``AwsCredentials`` block's values into this process's environment
    (read by boto3 here and by LocalCluster workers started afterwards). Never logged."""
    if not name:
        return
    try:
        from prefect_aws import AwsCredentials
    except ImportError:
        raise SRError(f"aws_credentials_block {name!r}: prefect-aws is not installed "
                      "(pip install prefect-aws)") from None
    creds = AwsCredentials.load(name)
    values = {
        "AWS_ACCESS_KEY_ID": creds.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.aws_secret_access_key.get_secret_value()
        if creds.aws_secret_access_key else None,
        "AWS_SESSION_TOKEN": creds.aws_session_token,
        "AWS_DEFAULT_REGION": creds.region_name,
        "AWS_ENDPOINT_URL": getattr(creds.aws_client_parameters, "endpoint_url", None),
    }
    for key, value in values.items():
        if value:
            os.environ[key] = str(value)


@task(name="list-scenes", cache_policy=NO_CACHE)
def list_scenes(step, source: str) -> list[SceneRef]:
    return step(source)


@task(name="plan", cache_policy=NO_CACHE)
def plan(step, scenes: list[SceneRef], output_prefix: str, cfg: UpscaleConfig,
         model: ModelInfo) -> list[ScenePlan]:
    return step(scenes, output_prefix, cfg, model)


@task(name="scene", cache_policy=NO_CACHE, **ONE_LINE_FAILURE)
def upscale_one(scene_plan: ScenePlan, cfg: UpscaleConfig, model: ModelInfo,
                limit: str | None) -> tuple[SceneResult, dict] | State:
    """One scene, every stage, holding one slot of the GPU concurrency limit meanwhile (none
    when ``limit`` is ``None``). Its tiles' progress is an unkeyed progress artifact of this
    task run (on the run's page; keyed, a 1,000-scene archive would add 1,000 keys) and a log
    line every 10 %.

    Returns:
        ``(row, report)``; for a scene that failed, a ``Failed`` state holding ``(row, {})``
        (the row with its reason and the seconds it ran) whose message is ``"<scene id>:
        <reason>"``: the task run fails and the flow goes on. Prefect logs that message as the
        run's one ``Finished in state Failed(...)`` line (:data:`ONE_LINE_FAILURE`); a user's
        mistake (:data:`~sr_core.errors.USER_ERRORS`: a bad file, model or option) gets no
        traceback, any other error's traceback is logged before it. Nothing is raised.
    """
    sid = scene_plan.scene.scene_id
    progress = InferProgress(None, sid)
    with gpu_slot(limit):
        row, rep, error = archive.run_scene(scene_plan, cfg, model, on_progress=progress)
    if error is None:
        return row, rep
    if not isinstance(error, USER_ERRORS):
        get_run_logger().error("scene %s failed", sid, exc_info=error)
    return Failed(message=f"{sid}: {row.reason}", data=(row, rep))


@task(name="summary", cache_policy=NO_CACHE)
def publish_summary(step, summary: dict, reports: dict[str, dict], output_prefix: str) -> dict:
    written = step(summary, reports, output_prefix)
    create_table_artifact(table=archive.summary_table(summary), key="archive-summary",
                          description=f"{summary['source']}: {summary['message']}")
    failed = [r for r in summary["results"] if r["status"] == "failed"]
    lines = [f"# Archive run: {summary['source']}", "", f"**{summary['message']}**", "",
             f"Outputs under `{output_prefix}`; JSON summary `{written['archive-summary.json']}`.",
             f"Model `{summary['model']}` (weights SHA-256 `{summary['weights_sha256'][:16]}...`)."]
    if failed:
        lines += ["", "## Failed scenes", "", "| scene | reason |", "|---|---|"]
        lines += [f"| {r['scene_id']} | {r['reason']} |" for r in failed]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="archive-summary-md",
                             description=summary["message"])
    return written


#: The archive driver's named steps as Prefect tasks.
TASKS: dict[str, Callable[..., Any]] = {"list-scenes": list_scenes, "plan": plan,
                                        "summary": publish_summary}


def as_task(name: str, step, *args):
    """The archive driver's step wrapper: run step ``name`` as its Prefect task (:data:`TASKS`)."""
    return TASKS[name](step, *args)


#: The defaults of the flow's ``processing`` and ``cluster`` parameters (never modified).
DEFAULT_PROCESSING, DEFAULT_CLUSTER = Processing(), Cluster()


def _flow_run_id() -> str:
    """The id of the flow run this is called in.

    Raises:
        SRError: not called inside a flow run.
    """
    ctx = get_run_context()
    if not isinstance(ctx, FlowRunContext) or ctx.flow_run is None:
        raise SRError("internal: upscale_archive outside its flow run")
    return str(ctx.flow_run.id)


# Prefect types ``task_runner`` as TaskRunner[PrefectFuture[Any]], invariant in the future type,
# which its own ThreadPoolTaskRunner (of PrefectConcurrentFuture) does not match
@flow(name="upscale_archive",
      task_runner=ThreadPoolTaskRunner(max_workers=64))  # type: ignore[arg-type]
def upscale_archive(
    source: Annotated[str, Field(min_length=1)],
    output_prefix: Annotated[str, Field(min_length=1)],
    stac_asset: Annotated[str, Field(min_length=1)] = "data",
    processing: Processing = DEFAULT_PROCESSING,
    cluster: Cluster = DEFAULT_CLUSTER,
    max_scenes_in_flight: Annotated[int, Field(ge=1, le=64)] = 2,
    concurrency_limit: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = GPU_LIMIT,
    aws_credentials_block: str | None = None,
) -> dict:
    """Upscale every scene of an archive that is not up to date; summarise the run.

    Args:
        source: The archive: s3://bucket/prefix/**/*.tif (a prefix and a glob), a local folder
            (every **/*.tif) or local glob, or a STAC ItemCollection / Catalog / Collection JSON
            (local or s3://).
        output_prefix: Where outputs go (a local folder or s3:// prefix):
            PREFIX/<scene>/<model>_x<scale>/<stem>.tif (medical inputs: .nii.gz, .dcm, a DICOM
            series folder, a pyramidal .tif) with its reports, STAC item (georeferenced outputs
            only) and manifest, and PREFIX/archive-summary.json. Medical archives need a glob
            that lists them (s3://bucket/prefix/**/*); a folder of DICOM files is one scene.
        stac_asset: STAC sources only: key of the asset to upscale in each item.
        processing: Model, scale, tile size, device and Wald window for every scene.
        cluster: The Dask cluster shared by all scenes of this run (LocalCluster or an address;
            GPU resources).
        max_scenes_in_flight: Scenes submitted at a time in this run (GPU slots across runs are
            counted by the concurrency limit).
        concurrency_limit: Prefect global concurrency limit counting GPU slots; each scene holds
            one while it runs. Create it with `prefect gcl create sr-gpu --limit N`.
        aws_credentials_block: Optional name of a prefect-aws AwsCredentials block; otherwise the
            environment / IAM role. Never put keys in parameters.

    Returns:
        ``{"done", "skipped", "failed", "message", "summary": URI of archive-summary.json}``.
    """
    quiet_distributed()
    _use_aws_block(aws_credentials_block)
    cluster = Cluster.model_validate(cluster)
    cfg, model = archive.prepare(archive_config(Processing.model_validate(processing), cluster))
    job = archive.ArchiveJob(source, output_prefix, cfg, model, stac_asset=stac_asset,
                             cluster=archive.ClusterSpec(**cluster.model_dump()),
                             max_scenes_in_flight=max_scenes_in_flight,
                             run_id=_flow_run_id())
    hooks = archive.ArchiveHooks(wrap=as_task, logger=get_run_logger(),
                                 run_scenes=scene_tasks(max_scenes_in_flight, concurrency_limit))
    summary = archive.run_archive(job, hooks)
    return {k: summary[k] for k in ("done", "skipped", "failed", "message")} | {
        "summary": summary["written"]["archive-summary.json"]}


def archive_config(processing: Processing, cluster: Cluster) -> UpscaleConfig:
    """The archive-wide job (the one place the flow's parameters map onto
    :class:`~sr_core.pipeline.UpscaleConfig`: ``tile_size`` -> ``tile_size_px``, ``wald_window``
    -> ``wald_window_px``, ``gpu`` -> ``resources``); :func:`sr_core.archive.prepare` checks it
    and resolves its model."""
    return UpscaleConfig(src="<archive>", dst="<outputs>", model=processing.model,
                         scale=processing.scale, tile_size_px=processing.tile_size,
                         device=processing.device, wald_window_px=processing.wald_window,
                         resources={"GPU": 1} if cluster.gpu else None, progress=False)


def _existing_limit(name: str, in_flight: int, logger) -> str | None:
    """``name`` when the Prefect server has that global concurrency limit; else ``None``, with
    one warning (scenes are then bounded by ``in_flight`` only)."""
    if limit_exists(name):
        return name
    logger.warning("global concurrency limit %r does not exist on this Prefect server: scenes "
                   "are bounded by max_scenes_in_flight=%d only (create it with `prefect gcl "
                   "create %s --limit N`)", name, in_flight, name)
    return None


def scene_tasks(in_flight: int, limit_name: str):
    """The archive driver's scene runner (:data:`sr_core.archive.driver.ScenesRunner`): one
    ``scene`` task per plan, at most ``in_flight`` submitted at a time, each holding a slot of
    the global concurrency limit ``limit_name`` when the server has it."""

    def run(todo: list[ScenePlan], cfg: UpscaleConfig, model: ModelInfo):
        logger = get_run_logger()
        limit = _existing_limit(limit_name, in_flight, logger)
        slots = threading.BoundedSemaphore(in_flight)
        futures = []
        for p in todo:
            slots.acquire()
            fut = upscale_one.with_options(task_run_name=f"scene {p.scene.scene_id}").submit(
                p, cfg, model, limit)
            fut.add_done_callback(lambda _f: slots.release())
            futures.append((p, fut))
        for p, fut in futures:
            fut.wait()
            outcome = fut.result(raise_on_failure=False)
            if isinstance(outcome, tuple):  # the task's row: done, skipped or failed (logged)
                yield p, *outcome
            else:  # the task run crashed or was cancelled before it could make the row
                exc = outcome if isinstance(outcome, BaseException) \
                    else SRError(fut.state.message)
                row = archive.failed_result(p, exc)
                logger.warning("%s: failed: %s", p.scene.scene_id, row.reason)
                yield p, row, {}
    return run


def main(argv: list[str]) -> int:
    """``python -m flows.upscale_archive SOURCE OUTPUT_PREFIX [MODEL]``: run the flow once."""
    if len(argv) not in (2, 3):
        print("usage: python -m flows.upscale_archive SOURCE OUTPUT_PREFIX [MODEL]",
              file=sys.stderr)
        return 2
    processing = Processing(model=argv[2]) if len(argv) == 3 else Processing()
    try:
        out = upscale_archive(argv[0], argv[1], processing=processing)
    except SRError as exc:
        print(f"upscale_archive: error: {exc}", file=sys.stderr)
        return 2
    print(out["message"])
    print(f"summary: {out['summary']}")
    return 1 if out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
