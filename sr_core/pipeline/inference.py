"""The ``infer`` stage: every tile of a scene on the Dask cluster, the Wald check beside them,
resuming tiles a previous run completed; a failed tile, a lost worker or scheduler and a full
scratch disk each become one line naming the scene.

May import: :mod:`sr_core.errors`, :mod:`sr_core.compute` (cluster, tile inference, lost workers,
the Wald task), :mod:`sr_core.publication.journal`, the tiling and scene types and the
pipeline's run module; ``distributed`` lazily.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from sr_core.compute.cluster import batch_sizes, task_result, torch_threads
from sr_core.compute.infer import TileJob, TileResult, run_tiles
from sr_core.compute.wald_task import wald_window_task
from sr_core.errors import NoSpaceError, SchedulerLostError, SRError
from sr_core.formats import SceneInfo, format_named
from sr_core.geometry.tiling import PixelWindow, Tile
from sr_core.pipeline.run import Inference, Run, data_range, required, timed
from sr_core.publication import journal


def _wald_window(scene: SceneInfo, scale: int, edge_px: int) -> PixelWindow:
    """A centred window of at most ``edge_px`` (a multiple of the scale) for the Wald check."""
    h = min(edge_px, scene.height) // scale * scale
    w = min(edge_px, scene.width) // scale * scale
    return PixelWindow((scene.height - h) // 2, (scene.width - w) // 2, h, w)


#: The Wald check of a medical volume looks at this many evenly spaced planes at most.
WALD_MAX_PLANES = 8


def _wald_planes(scene: SceneInfo) -> list[int] | None:
    """Planes for the Wald check: all bands of a GeoTIFF or small image; else evenly spaced."""
    if not format_named(scene.format).planes_share_unit or scene.count <= WALD_MAX_PLANES:
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
        run: a run after :func:`~sr_core.pipeline.stages.tile`.
        client: a ``distributed.Client``.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)``.

    Raises:
        SRError: a tile failed on a worker (the message names the tile and the reason).
        SchedulerLostError: the client lost the Dask scheduler (completed tiles are recorded).
        NoSpaceError: the scratch file system filled up while a tile was written.
    """
    from sr_core.compute.lost_workers import watch_lost_workers

    cfg, scene, tiling = run.cfg, run.ingested("infer"), run.tiled("infer")
    with timed(run, "infer"):
        info = client.scheduler_info()
        _check_resources(info, cfg.resources)
        threads = _threads(info)
        job = _tile_job(run, client)
        tiles = list(tiling.grid)
        results: list[TileResult] = []
        todo = _tiles_to_run(run, tiles, results)
        batches, i = [], 0
        for n in batch_sizes(len(todo), threads, cfg.tiles_per_task):
            batches.append(todo[i:i + n])
            i += n
        # the Wald check first: Dask runs tasks in submission order, so it overlaps the big
        # batches instead of running alone after the last tile
        wald_future = _submit_wald(run, client, job)
        futures = {client.submit(run_tiles, job, b, pure=False, resources=cfg.resources): b
                   for b in batches}
        watch_lost_workers(client, {f.key: f"{scene.name} tile ({b[0].row}, {b[0].col})"
                                    for f, b in futures.items()})
        _collect(run, client, futures, results, on_progress)
        wald = wald_future.result() if wald_future is not None else None
        run.resume.update({"tiles": len(tiles), "tiles_run": len(todo),
                           "tiles_reused": len(tiles) - len(todo),
                           "tiles_all_nodata": sum(t.skipped for t in results)})
        run.inference = Inference(tiles=tuple(results), wald=wald,
                                  dask=_dask_summary(run, info, batches, results, wald))
    return run


def _threads(info: dict) -> int:
    """Worker threads of the cluster described by ``info`` (``client.scheduler_info()``)."""
    return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1


def _tile_job(run: Run, client) -> TileJob:
    """What every tile task of the run needs (small and picklable)."""
    cfg, tiling = run.cfg, run.tiled("infer")
    return TileJob(input_store=tiling.staged.store_path, output_store=tiling.output_store,
                   model_ref=required(cfg.model, "infer", "start"), scale=run.scale,
                   device=cfg.device, torch_threads=torch_threads(client, cfg),
                   normalization=tiling.normalization, nodata=run.ingested("infer").nodata,
                   work=run.work, precision=cfg.precision, compile=cfg.compile,
                   tile_batch=cfg.tile_batch, self_ensemble=cfg.self_ensemble,
                   consistency=cfg.consistency)


def _tiles_to_run(run: Run, tiles: list[Tile], results: list[TileResult]) -> list[Tile]:
    """The tiles no previous run completed; the completed ones' results join ``results``."""
    todo = []
    for t in tiles:  # one small marker file at a time (bounded memory)
        rec = journal.completed_tile(run.work, t.row, t.col) if run.work else None
        if rec is None:
            todo.append(t)
        else:
            results.append(TileResult(**rec))
    return todo


def _submit_wald(run: Run, client, job: TileJob):
    """Submit the Wald-protocol check of the scene's centred window; ``None`` when the window is
    too small for it (under 7 LR px a side)."""
    cfg, scene = run.cfg, run.ingested("infer")
    drange = data_range(run)
    window = _wald_window(scene, run.scale, cfg.wald_window_px)
    if min(window.height, window.width) < 7 * run.scale:
        return None
    return client.submit(wald_window_task, job, window, drange, _wald_planes(scene), pure=False,
                         resources=cfg.resources)


def _collect(run: Run, client, futures: dict, results: list[TileResult],
             on_progress: Callable[[int, int, int], None] | None) -> None:
    """Gather the tile tasks as they finish into ``results`` (which holds the reused tiles'
    results already), reporting progress.

    Args:
        futures: task future -> its batch of tiles.
    """
    from distributed import as_completed

    done, total = len(results), len(run.tiled("infer").grid)
    name = run.ingested("infer").name
    out_px = 0
    if on_progress:
        on_progress(done, total, 0)
    # this client's own loop: without it as_completed takes the process's default client,
    # another scene's when an archive runs scenes side by side, and after a lost worker
    # that mix of event loops failed tiles ("bound to a different event loop")
    for fut in as_completed(list(futures), loop=client.loop):
        batch = futures[fut]
        try:
            batch_results = task_result(fut)
        except SchedulerLostError:
            raise SchedulerLostError(f"{name}: lost the connection to the Dask "
                                     f"scheduler ({len(results)} of {total} tiles done and "
                                     "recorded); run again to resume") from None
        except SRError:
            raise
        except Exception as exc:  # noqa: BLE001 - a worker-side failure, reported by tile
            raise _tile_error(run, batch[0], exc) from None
        results.extend(batch_results)
        done += len(batch)
        out_px += sum(t.core.size_px for t in batch) * run.scale**2
        if on_progress:
            on_progress(done, total, out_px)


def _tile_error(run: Run, t: Tile, exc: Exception) -> SRError:
    """The one-line error of a tile task that failed on a worker with ``exc``."""
    from distributed import KilledWorker

    name = run.ingested("infer").name
    if isinstance(exc, KilledWorker):
        # Dask counts a death against every task assigned to the worker, so this may
        # be a tile queued beside the one that kills workers
        return SRError(f"{name}: Dask workers kept dying while running tile "
                       f"({t.row}, {t.col}) ({exc.allowed_failures + 1} died with it "
                       "assigned); gave up")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return NoSpaceError.for_scratch(run.scratch)
    return SRError(f"{name}: tile ({t.row}, {t.col}) failed on a worker: "
                   f"{type(exc).__name__}: {exc}")


def _dask_summary(run: Run, info: dict, batches: list[list[Tile]], results: list[TileResult],
                  wald: dict | None) -> dict:
    """The report's ``dask`` section: the cluster, its tasks and the compute they held."""
    cfg = run.cfg
    devices = {t.device for t in results}
    return {"workers": max(1, len(info.get("workers", {}))), "threads": _threads(info),
            "tasks": len(batches) + (wald is not None),
            "tiles_per_task_max": max(map(len, batches), default=0),
            "scheduler": cfg.dask_address or "LocalCluster",
            "devices": sorted(devices),
            "precision": _precision(cfg.precision, devices),
            # compute inside the tasks, so scheduling overhead = infer wall - these / threads
            "tile_compute_s": round(sum(t.seconds for t in results), 3),
            "wald_compute_s": round(wald["seconds"], 3) if wald else 0.0}


def _precision(asked: str, devices: set[str]) -> str:
    """The precision the tiles ran in: ``asked``, or for ``"auto"`` bf16 on CUDA, fp32 on a
    CPU (``"fp32+bf16"`` when both kinds of worker ran tiles)."""
    if asked != "auto":
        return asked
    kinds = {"bf16" if d.startswith("cuda") else "fp32" for d in devices} or {"fp32"}
    return "+".join(sorted(kinds, reverse=True))
