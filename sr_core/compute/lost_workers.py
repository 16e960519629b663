"""Lost Dask workers, logged: one WARNING line per tile task whose worker died.

The scheduler reschedules such a task on another worker up to its ``allowed-failures``
(:data:`sr_core.storage.retries.LOST_WORKER_RETRIES` on the clusters the pipeline starts), then
fails it with ``KilledWorker``. The scheduler says so only at the end, in its own log;
:class:`LostWorkerLog` (a scheduler plugin) publishes every loss on the event topic
:data:`LOST_WORKER_TOPIC` and :func:`watch_lost_workers` logs the ones of the caller's tiles in the
caller's process.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger(__name__)

#: Dask event topic of :class:`LostWorkerLog`.
LOST_WORKER_TOPIC = "sr-lost-worker"




class LostWorkerLog(SchedulerPlugin):
    """Scheduler plugin: when a worker dies while a task is assigned to it (the scheduler then
    reschedules the task, or fails it with ``KilledWorker`` past ``allowed-failures``), publish
    ``{"key", "lost", "allowed"}`` on :data:`LOST_WORKER_TOPIC` (``lost``: workers that died
    with this task so far)."""

    name = "sr-lost-worker-log"
    idempotent = True

    def __init__(self) -> None:
        self.scheduler = None
        self._seen: dict = {}

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs) -> None:
        if start != "processing" or finish not in ("released", "erred") or self.scheduler is None:
            return
        ts = self.scheduler.tasks.get(key)
        lost = getattr(ts, "suspicious", 0) if ts is not None else 0
        if lost <= self._seen.get(key, 0):
            return
        self._seen[key] = lost
        if len(self._seen) > 100_000:  # a long-lived scheduler: forget old keys
            self._seen.clear()
        self.scheduler.log_event(LOST_WORKER_TOPIC, {
            "key": str(key), "lost": int(lost), "allowed": int(self.scheduler.allowed_failures)})


def watch_lost_workers(client: Any, describe: dict[str, str]) -> None:
    """Register :class:`LostWorkerLog` on ``client``'s scheduler and log at WARNING, once per
    loss, the tasks in ``describe`` (task key -> what it is, e.g. ``"scene.tif tile (0, 1)"``)
    whose worker died. A scheduler that refuses the plugin (no ``sr_core`` there) is noted at
    DEBUG: the retries happen all the same, unlogged."""

    def on_event(event) -> None:
        _, msg = event
        key = msg.get("key") if isinstance(msg, dict) else None
        what = describe.get(key) if isinstance(key, str) else None
        if what is None:
            return
        lost, allowed = msg["lost"], msg["allowed"]
        then = (f"Dask runs it again (retry {lost} of {allowed})" if lost <= allowed
                else "giving up")
        log.warning("Dask worker died with %s assigned (%d of at most %d workers); %s",
                    what, lost, allowed + 1, then)

    try:
        client.register_plugin(LostWorkerLog(), name=LostWorkerLog.name)
    except Exception:  # noqa: BLE001 - logging must not cost the run
        log.debug("cannot register the lost-worker log on the scheduler", exc_info=True)
        return
    client.subscribe_topic(LOST_WORKER_TOPIC, on_event)
