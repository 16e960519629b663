"""The Dask cluster a run computes on: start, connect, warm up, share, size the tasks, close.

Owns every place sr-pipeline talks to a Dask cluster as a whole: the client of a scene
(:func:`dask_client`: an existing scheduler, or a ``LocalCluster`` of worker processes), the
cluster started in the background while a scene is staged (:class:`ClusterStarter`), the one
cluster an archive run shares between scenes (:func:`shared_cluster`), torch threads per worker
(:func:`torch_threads`), tiles per task (:func:`batch_sizes`), quieting distributed's loggers
(:func:`quiet_distributed`) and telling a lost scheduler from a failed tile
(:func:`task_result`, :class:`~sr_core.errors.SchedulerLostError`).

May import: :mod:`sr_core.errors`, the rest of :mod:`sr_core.compute`, ``dask`` and
``distributed`` (lazily). Never the pipeline or anything above it: a config is read by its
attributes (an :class:`sr_core.pipeline.UpscaleConfig`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sr_core.compute.infer import warm_worker
from sr_core.errors import SchedulerLostError, SRError
from sr_core.storage.retries import LOST_WORKER_RETRIES

log = logging.getLogger(__name__)

#: Why distributed cancels a client's futures when the scheduler connection is gone.
SCHEDULER_LOST_REASON = "scheduler-connection-lost"


def quiet_distributed(client_too: bool = False) -> None:
    """Import distributed (its import sets its loggers to INFO: a dozen lines per worker and
    every scheduler and nanny event in the user's terminal or a flow's log), then set its loggers
    to ERROR. ``client_too``: ``distributed.client`` to CRITICAL as well, so that a lost scheduler
    is the caller's one-line error, not the client's traceback."""
    import distributed  # noqa: F401

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if client_too:
        logging.getLogger("distributed.client").setLevel(logging.CRITICAL)


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
            raise SRError(f"--dask-address {address}: cannot reach the Dask scheduler "
                          f"({exc})") from None
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
    # (sr_core.storage.retries); an existing cluster's scheduler has its own allowed-failures.
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
    importing torch) overlaps ingest and staging.

    Args:
        cfg: the job (an :class:`sr_core.pipeline.UpscaleConfig`): its ``dask_address``,
            ``workers`` and ``resources`` pick the cluster.
        scratch: the local workers' directory.
    """

    def __init__(self, cfg: Any, scratch: str) -> None:
        self._cm = dask_client(cfg.dask_address, cfg.workers, scratch, cfg.resources)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._future: Future = self._pool.submit(self._cm.__enter__)

    def warm(self, cfg: Any) -> None:
        """Load the model on every worker as soon as the cluster is up (queued behind its start);
        a failure here resurfaces in the first tile. ``cfg``: the job with its model resolved
        (``model``, ``scale``, ``device``, ``precision``, ``compile``)."""

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


def torch_threads(client, cfg: Any) -> int:
    """Torch intra-op threads per worker: this machine's cores over the local cluster's worker
    threads, so workers don't oversubscribe the cores; 0 (torch's default) on a remote cluster.
    ``cfg``: the job (its ``dask_address``)."""
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


def _scheduler_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is how the scheduler's death reaches a client: distributed cancelling the
    futures for :data:`SCHEDULER_LOST_REASON`, or the client's comm closing under it
    (connection reset)."""
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.comm.core import CommClosedError

    if isinstance(exc, CommClosedError):
        return True
    if isinstance(exc, FutureCancelledError):
        return exc.reason == SCHEDULER_LOST_REASON
    if isinstance(exc, FuturesCancelledError):
        return any(g.reason == SCHEDULER_LOST_REASON for g in exc.error_groups)
    return False


def task_result(future) -> Any:
    """``future.result()``, a lost scheduler raised as its own type.

    Raises:
        SchedulerLostError: the client lost the scheduler (its message is the caller's to
            write: this one names no scene).
        Exception: whatever the task raised on its worker, as it was raised.
    """
    try:
        return future.result()
    except Exception as exc:
        if _scheduler_lost(exc):
            raise SchedulerLostError("lost the connection to the Dask scheduler") from exc
        raise


@contextmanager
def shared_cluster(address: str | None, workers: int | None, scratch: str, *, gpu: bool = False,
                   dask_cuda: bool = False) -> Iterator[str]:
    """The one Dask cluster an archive run shares between its scenes.

    Args:
        address: an existing scheduler (checked here once); ``None`` starts a cluster for the run.
        workers: worker processes of a ``LocalCluster`` (default 1).
        scratch: the workers' local directory.
        gpu: declare the Dask resource ``GPU=1`` on every local worker (tile tasks then ask for
            it; see :attr:`sr_core.pipeline.UpscaleConfig.resources`).
        dask_cuda: start ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each with
            ``GPU=1``) instead of a ``LocalCluster``.

    Yields:
        The scheduler address.

    Raises:
        SRError: the scheduler cannot be reached, or dask-cuda is asked for but not installed.
    """
    if dask_cuda and not address:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise SRError("dask_cuda: dask-cuda is not installed (pip install "
                          "'sr-pipeline[gpu]')") from None
        from distributed import Client

        with LocalCUDACluster(resources={"GPU": 1}, dashboard_address=":0",
                              local_directory=scratch) as cluster, Client(cluster) as client:
            yield client.scheduler.address
        return
    with dask_client(address, workers, scratch, {"GPU": 1} if gpu else None) as client:
        yield client.scheduler.address
