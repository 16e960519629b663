"""Bounded retries for transient faults, each one logged: S3 requests and lost Dask workers.

S3 (every S3 call of the pipeline goes through boto3, see :mod:`sr_core.storage`; GDAL and zarr
never open ``s3://`` or ``/vsis3/`` paths, scenes are fetched to scratch first):

* botocore's ``standard`` retry mode retries throttling (503 SlowDown, 429), 500/502/503/504,
  connection errors (reset, refused, closed) and timeouts, with exponential backoff and jitter
  (at most 20 s per wait), up to :func:`s3_max_attempts` attempts per request. Each retry is
  logged at WARNING by :func:`log_s3_retries`: one line naming the operation, the bucket and key,
  the attempt and the fault (never a header, so never a credential or signature).
* s3transfer re-reads a download whose body broke off (reset mid-stream) up to
  :data:`S3_DOWNLOAD_ATTEMPTS` times; :func:`log_transfer_retries` turns its DEBUG line into one
  WARNING line.

Dask: a tile task whose worker process dies (killed, out of memory, ``os._exit``) is run again
on another worker by the scheduler, at most :data:`LOST_WORKER_RETRIES` times (Dask's
``distributed.scheduler.allowed-failures``); then the task fails with ``KilledWorker`` and the
scene fails with a one-line reason. :mod:`sr_core.compute.lost_workers` logs every such loss at
WARNING. Exceptions raised by a tile are not retried: every input a tile reads is local
and already validated, so a failing tile fails the same way again.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

#: Attempts per S3 request (the first one included) unless ``AWS_MAX_ATTEMPTS`` says otherwise.
S3_MAX_ATTEMPTS = 6
#: Seconds to open a connection to S3 / to wait for a response's next bytes, per attempt.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
#: Attempts of s3transfer to read a download's body (s3transfer's default, stated here).
S3_DOWNLOAD_ATTEMPTS = 5
#: Times the Dask scheduler reschedules a tile whose worker died (its ``allowed-failures``): a
#: tile is tried on at most ``LOST_WORKER_RETRIES + 1`` workers.
LOST_WORKER_RETRIES = 2


def s3_max_attempts() -> int:
    """Attempts per S3 request: ``AWS_MAX_ATTEMPTS`` (the AWS SDKs' own variable, attempts
    counting the first) when set to a whole number >= 1, else :data:`S3_MAX_ATTEMPTS`."""
    try:
        value = int(os.environ.get("AWS_MAX_ATTEMPTS", ""))
    except ValueError:
        return S3_MAX_ATTEMPTS
    return value if value >= 1 else S3_MAX_ATTEMPTS


def s3_retry_mode() -> str:
    """botocore retry mode: ``AWS_RETRY_MODE`` when it is ``standard`` or ``adaptive`` (adaptive
    also rate-limits the client after throttling), else ``standard``."""
    mode = os.environ.get("AWS_RETRY_MODE", "").strip().lower()
    return mode if mode in ("standard", "adaptive") else "standard"


def s3_config() -> Any:
    """The ``botocore.config.Config`` of the pipeline's S3 client: retry mode and attempts,
    connect and read timeouts."""
    from botocore.config import Config

    return Config(retries={"mode": s3_retry_mode(), "total_max_attempts": s3_max_attempts()},
                  connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S)


def _describe_fault(exception: BaseException | None, parsed: dict | None,
                    response: dict | None) -> str | None:
    """One short phrase for a failed attempt (``503 SlowDown``, ``ConnectionClosedError``), or
    ``None`` when the attempt succeeded."""
    if exception is not None:
        return type(exception).__name__
    status = (response or {}).get("status_code")
    if status is None or status < 300:
        return None
    code = str(((parsed or {}).get("Error") or {}).get("Code") or "")
    # a HEAD answer has no body: botocore then reports the status as the code
    return f"{status} {code}" if code and code != str(status) else f"HTTP {status}"


def _object_of(url: str) -> str:
    """``bucket/key`` of a path-style request URL, or the host for a virtual-hosted one; the
    query string (upload ids, never credentials with SigV4 headers) is dropped."""
    parts = urlsplit(url)
    path = unquote(parts.path).lstrip("/")
    return path or parts.hostname or "?"


def log_s3_retries(client: Any) -> None:
    """Log every retry of ``client``'s requests at WARNING, one line each::

        S3 retry 1 of 5: GetObject bucket/key after 503 SlowDown

    Two botocore events: ``response-received`` notes why an attempt failed in the request's
    context; ``request-created`` of a later attempt (only made when the retry policy retries)
    logs it. Nothing from the headers is logged.
    """

    def note(context: dict | None = None, exception=None, parsed_response=None,
             response_dict=None, **_: Any) -> None:
        if context is not None:
            fault = _describe_fault(exception, parsed_response, response_dict)
            if fault:
                context["sr_last_fault"] = fault

    def on_request(request=None, operation_name: str = "?", **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        retries = context.get("retries") or {}
        attempt = retries.get("attempt", 1)
        if attempt > 1:
            total = retries.get("max") or s3_max_attempts()
            log.warning("S3 retry %d of %d: %s %s after %s", attempt - 1, total - 1,
                        operation_name, _object_of(getattr(request, "url", "")),
                        context.get("sr_last_fault", "a transient error"))

    events = client.meta.events
    events.register("response-received.s3", note, unique_id="sr-note-s3-fault")
    events.register("request-created.s3", on_request, unique_id="sr-log-s3-retry")


class _TransferRetryFilter(logging.Filter):
    """Turns s3transfer's DEBUG "Retrying exception caught" into one WARNING line of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Retrying exception caught"):
            args = record.args if isinstance(record.args, tuple) else ()
            exc, done, total = (args + (None, None, None))[:3]
            attempt = (done if isinstance(done, int) else 0) + 1  # s3transfer counts from 0
            then = "retrying" if isinstance(total, int) and attempt < total else "giving up"
            log.warning("S3 download body failed (%s), attempt %d of %s; %s",
                        type(exc).__name__ if isinstance(exc, BaseException) else exc,
                        attempt, total, then)
            return False
        return logging.getLogger("s3transfer").isEnabledFor(record.levelno)


def log_transfer_retries() -> None:
    """Install :class:`_TransferRetryFilter` on ``s3transfer.download`` (once per process). Its
    other records pass as the ``s3transfer`` logger's own level would let them."""
    logger = logging.getLogger("s3transfer.download")
    if any(isinstance(f, _TransferRetryFilter) for f in logger.filters):
        return
    logger.addFilter(_TransferRetryFilter())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG)  # the filter sees the retry line and drops the rest
