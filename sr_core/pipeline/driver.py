"""THE driver: :func:`run_upscale` runs one scene through every stage, in order, for every entry
point (the CLI, the ``upscale_scene`` flow, an archive's scenes, a notebook). An entry point that
wants more around a stage (a Prefect task, a progress artifact) passes a stage wrapper
(:data:`StageWrapper`); none repeats the sequence. The driver owns what surrounds the stages:
the Dask cluster started in the background and torn down as soon as the tiles are done, the
scratch directory, a full scratch disk (:class:`~sr_core.errors.NoSpaceError`) and the final
:func:`cleanup`.

May import: :mod:`sr_core.compute.cluster`, :mod:`sr_core.publication.journal`,
:mod:`sr_core.storage` and every other module of :mod:`sr_core.pipeline`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from typing import Any

from sr_core import storage
from sr_core.compute.cluster import ClusterStarter
from sr_core.errors import NoSpaceError
from sr_core.pipeline.config import UpscaleConfig
from sr_core.pipeline.inference import infer
from sr_core.pipeline.output import stitch
from sr_core.pipeline.publishing import publish
from sr_core.pipeline.reporting import report
from sr_core.pipeline.run import Run, make_scratch, timed
from sr_core.pipeline.stages import ingest, preflight, start, tile
from sr_core.publication import journal

#: Runs one stage of the driver: called as ``wrap(name, stage, *args)`` with the stage's name
#: (``"ingest"``, ``"tile"``, ``"infer"``, ``"stitch"``, ``"report"``, ``"publish"``), its
#: function and its arguments; returns what ``stage(*args)`` returns (the :class:`Run`). The
#: flows' wrapper makes each stage a Prefect task of that name.
StageWrapper = Callable[..., Any]


def call_stage(name: str, stage: Callable[..., Run], *args: Any) -> Run:
    """The default :data:`StageWrapper`: call the stage directly."""
    return stage(*args)


def run_upscale(cfg: UpscaleConfig,
                on_progress: Callable[[int, int, int], None] | None = None, *,
                extra: Callable[[Run], dict[str, tuple[str, str]]] | None = None,
                manifest_extra: dict | None = None, wrap: StageWrapper = call_stage) -> Run:
    """Run every stage for one scene (what ``sr-pipeline upscale`` does).

    Args:
        cfg: the job.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)``.
        extra: called after the report with the run; returns more files to publish before the
            manifest, name -> (URI, text) (the archive's STAC item).
        manifest_extra: more manifest fields (see :func:`~sr_core.pipeline.publishing.publish`).
        wrap: runs each stage (:data:`StageWrapper`); default: called directly.

    Returns:
        The finished :class:`Run`; ``run.published`` holds the output, report and manifest
        locations and the report itself; ``run.resume`` the tiles run and reused;
        ``run.timings`` seconds per stage, the cluster's start-up wait (``cluster_wait``) and
        teardown included. When DST already holds this result (``run.up_to_date``: its
        manifest), nothing is done.

    Raises:
        BusyError: another run holds the same job, or published DST first.
        NoSpaceError: the scratch file system filled up; the run's work directory is deleted
            (keeping it for a resume would keep the disk full).
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
        run = wrap("ingest", ingest, run, scene)
        if run.up_to_date is not None:
            return run
        run = wrap("tile", tile, run)
        with timed(run, "cluster_wait"):
            client = cluster.client()
        run = wrap("infer", infer, run, client, on_progress)
        cluster.release()  # teardown overlaps stitch, report and publish
        run = wrap("stitch", stitch, run)
        run = wrap("report", report, run)
        return wrap("publish", publish, run, extra(run) if extra else None, manifest_extra)
    except NoSpaceError:  # already the one-line error
        # the workers first: a tile task still running would write its journal marker into
        # the work directory while it is being removed, and keep it
        cluster.close()
        _drop_work(run)
        raise
    except OSError as exc:  # StorageError included
        if exc.errno != errno.ENOSPC:
            raise
        cluster.close()
        _drop_work(run)
        raise NoSpaceError.for_scratch(scratch) from None
    finally:
        _finish(cluster, run, scratch)


def _finish(cluster: ClusterStarter, run: Run | None, scratch: str) -> None:
    """Close the cluster (its wall time is ``run.timings["teardown"]``) and :func:`cleanup`."""
    if run is None:
        cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)
        return
    with timed(run, "teardown"):
        cluster.close()
    cleanup(run)


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
