"""One planned scene of an archive through the one driver, as its summary row.

:func:`process_scene` runs a scene through :func:`sr_core.pipeline.run_upscale`, publishing its
STAC item with the outputs and its manifest last; :func:`run_scene` turns a failure into the
scene's ``failed`` row so one scene never stops the others; :class:`SceneResult` is the row.

May import: :mod:`sr_core.pipeline`, :mod:`sr_core.formats`, :mod:`sr_core.storage` and the
archive modules :mod:`~sr_core.archive.layout`, :mod:`~sr_core.archive.plan`,
:mod:`~sr_core.archive.stac` and :mod:`~sr_core.archive.summary`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from sr_core import storage
from sr_core.archive.layout import output_for
from sr_core.archive.plan import ScenePlan
from sr_core.archive.stac import stac_item
from sr_core.archive.summary import report_quality
from sr_core.errors import BusyError, SRError
from sr_core.formats import format_named
from sr_core.pipeline import ModelInfo, Run, UpscaleConfig, run_upscale


@dataclass
class SceneResult:
    """The outcome of one scene in an archive run (one row of the summary).

    Attributes:
        status: ``"done"``, ``"skipped"`` or ``"failed"``.
        reason: skipped and failed scenes only: the skip reason or the failure's one-line
            message (``None`` for a processed scene, and absent from :meth:`to_dict`).
        processed_because: processed (``done``) scenes only: why the plan processed it (``"no
            manifest"``, ``"input changed"``, ``"output COG missing"``, ...).
        seconds: wall time of the scene, failed ones included (0 when skipped); started /
            finished: UNIX times.
        output_mp_per_s: output megapixels per second of wall time; quality: Wald PSNR/SSIM of
            model and bicubic and the LR-consistency PSNR (dB), from the report.
    """

    scene_id: str
    uri: str
    status: str
    reason: str | None = None
    processed_because: str | None = None
    cog: str | None = None
    report: str | None = None
    stac: str | None = None
    seconds: float = 0.0
    started: float | None = None
    finished: float | None = None
    output_mp_per_s: float | None = None
    quality: dict = field(default_factory=dict)

    output: str | None = None
    format: str | None = None

    def to_dict(self) -> dict:
        """The summary row: every field, less ``reason`` and ``processed_because`` where they
        do not apply (``None``)."""
        row = asdict(self)
        for key in ("reason", "processed_because"):
            if row[key] is None:
                del row[key]
        return row


def process_scene(plan: ScenePlan, cfg: UpscaleConfig, model: ModelInfo,
                  scratch_dir: str | None = None,
                  on_progress: Callable[[int, int, int], None] | None = None
                  ) -> tuple[SceneResult, dict]:
    """Upscale one planned scene through every stage of :func:`sr_core.pipeline.run_upscale`,
    publishing its STAC item with the COG and reports, and its manifest last.

    Args:
        plan: the scene and its output paths.
        cfg: archive-wide options; ``src``/``dst``/``report`` are set per scene here. Pass
            ``dask_address`` of the archive's shared cluster.
        model: the resolved model (for the manifest).
        scratch_dir: where temporary files go.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)`` while
            the tiles run (:func:`sr_core.pipeline.infer`).

    Returns:
        ``(result, report)``: the summary row and the scene's report dict.

    Raises:
        InputError, ModelError, StorageError, SRError: as the pipeline stages do; no manifest is
            written then, so the scene is tried again by the next run (resuming its tiles).

    A scene that another run holds, or that another run published meanwhile, is a ``skipped``
    row saying so (no report).
    """
    scene, paths = plan.scene, plan.planned_paths("process_scene")
    if not storage.is_s3(paths.folder):
        os.makedirs(paths.folder, exist_ok=True)
    started = time.time()
    output = output_for(paths, scene.uri)
    job = replace(cfg, src=scene.uri, dst=output, report=paths.report_json, progress=False,
                  scratch_dir=scratch_dir or cfg.scratch_dir, input_fingerprint=scene.fingerprint)

    def stac_extra(run: Run) -> dict[str, tuple[str, str]]:
        # STAC items describe georeferenced outputs only; a medical output's lineage is in its
        # manifest and its physical geometry (spacing, affine, MPP) in its report
        info = run.ingested("stac_item")
        if not format_named(info.format).writes_raster or not info.crs:
            return {}
        return {"stac": (paths.stac, json.dumps(stac_item(run, scene, paths), indent=2) + "\n")}

    try:
        run = run_upscale(job, on_progress, extra=stac_extra,
                          manifest_extra={"scene_id": scene.scene_id})
    except BusyError as exc:
        return SceneResult(scene_id=scene.scene_id, uri=scene.uri, status="skipped",
                           reason=str(exc), cog=paths.cog), {}
    if run.up_to_date is not None:
        return skipped_result(replace(plan, reason="up to date (published by another run)")), {}
    rep = run.published["report"]
    fmt = run.published["format"]
    info = run.ingested("process_scene")
    cog = format_named(info.format).writes_raster
    stac = paths.stac if cog and info.crs else None
    finished = time.time()
    out_px = rep["output"]["width"] * rep["output"]["height"]
    result = SceneResult(
        scene_id=scene.scene_id, uri=scene.uri, status="done", processed_because=plan.reason,
        cog=output if cog else None, report=paths.report_json, stac=stac,
        output=output, format=fmt,
        seconds=round(finished - started, 3), started=started, finished=finished,
        output_mp_per_s=out_px / max(finished - started, 1e-9) / 1e6, quality=report_quality(rep))
    return result, rep


def run_scene(plan: ScenePlan, cfg: UpscaleConfig, model: ModelInfo,
              scratch_dir: str | None = None,
              on_progress: Callable[[int, int, int], None] | None = None
              ) -> tuple[SceneResult, dict, Exception | None]:
    """:func:`process_scene`, a failure included: a scene that raises becomes its ``failed`` row
    (:func:`failed_result`, with the seconds it ran), so one scene never stops the others.

    Returns:
        ``(result, report, error)``: ``error`` is what a failed scene raised (``None`` when it
        did not), for the caller to log: one line for a user's mistake
        (:data:`sr_core.errors.USER_ERRORS`), the traceback for anything else.

    Raises:
        Nothing but ``BaseException``s that are not ``Exception``s (an interrupt, a
        cancellation), which stop the run.
    """
    started = time.time()
    try:
        result, rep = process_scene(plan, cfg, model, scratch_dir, on_progress)
    except Exception as exc:  # noqa: BLE001 - the row says why; the caller logs it
        return failed_result(plan, exc, started), {}, exc
    return result, rep, None


def failed_result(plan: ScenePlan, exc: BaseException, started: float | None = None
                  ) -> SceneResult:
    """The summary row of a scene that failed: its reason is the error's first line; its
    seconds run from ``started`` (UNIX time) to now (0 without ``started``: a scene refused at
    planning, on which nothing ran)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, SRError):
        text = f"{type(exc).__name__}: {text}"
    now = time.time()
    return SceneResult(scene_id=plan.scene.scene_id, uri=plan.scene.uri, status="failed",
                       reason=text, started=started, finished=now,
                       seconds=round(now - started, 3) if started else 0.0)


def skipped_result(plan: ScenePlan) -> SceneResult:
    """The summary row of a scene whose output is up to date."""
    paths = plan.planned_paths("skipped_result")
    return SceneResult(scene_id=plan.scene.scene_id, uri=plan.scene.uri, status="skipped",
                       reason=plan.reason, report=paths.report_json,
                       cog=plan.outputs.get("cog", paths.cog),
                       stac=plan.outputs.get("stac", paths.stac),
                       output=plan.outputs.get("output", paths.cog),
                       format=plan.outputs.get("format", "cog"))
