"""Fault injection for the tests: an HTTP proxy in front of ``moto_server`` that answers chosen
S3 requests with 503 SlowDown or resets their connection, a Dask worker preload that kills the
worker process running a chosen tile, a real full disk (a small tmpfs), and a sampler of the peak
RSS of a process tree.

The proxy sits at the HTTP layer, so the pipeline's real S3 client (boto3 through
``AWS_ENDPOINT_URL``) and its retry policy are what is tested; nothing is patched in the code
under test.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "content-length"}


@dataclass
class Rule:
    """Answer requests whose method is ``method`` (``None``: any) and whose unquoted path
    contains ``match`` with ``fault``, the first ``times`` times (``None``: always).

    Faults: ``"503"`` (SlowDown, before the upstream sees the request), ``"reset"`` (TCP reset
    instead of an answer; the upstream never sees it), ``"reset-body"`` (the upstream's answer
    is forwarded with its full Content-Length, then the connection is reset half-way through the
    body).
    """

    fault: str
    match: str = ""
    method: str | None = None
    times: int | None = 1
    hits: int = 0


class S3FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 forwarding to ``upstream`` (the moto endpoint).

    Attributes:
        url: the proxy's endpoint (``http://127.0.0.1:PORT``).
        requests: every request seen, as ``(method, path, outcome)`` with outcome ``"ok"`` or
            the fault.
    """

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends a TCP RST, the client sees "connection reset"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True

            def _handle(self) -> None:
                body = self._body()
                path = unquote(self.path)
                rule = proxy._match(self.command, path)
                proxy._record(self.command, path, rule.fault if rule else "ok")
                if rule is not None and rule.fault == "503":
                    self.send_response_only(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                if rule is not None and rule.fault == "reset":
                    self._reset()
                    return
                status, reason, headers, data = proxy._forward(self.command, self.path,
                                                               self.headers, body)
                self.send_response_only(status, reason)
                length = None
                for k, v in headers:
                    if k.lower() == "content-length":
                        length = v
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length",
                                 length if self.command == "HEAD" and length else str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if rule is not None and rule.fault == "reset-body" and len(data) > 1:
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, fault: str, match: str = "", *, method: str | None = None,
            times: int | None = 1) -> Rule:
        """Add a :class:`Rule` (checked in the order added) and return it."""
        rule = Rule(fault=fault, match=match, method=method, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def count(self, match: str, method: str | None = None, outcome: str | None = None) -> int:
        """Requests seen whose path contains ``match`` (and method / outcome, when given)."""
        with self._lock:
            return sum(match in p and method in (None, m) and outcome in (None, o)
                       for m, p, o in self.requests)

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method not in (None, method) or rule.match not in path:
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                return rule
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.requests.append((method, path, outcome))

    def _forward(self, method: str, path: str, headers, body: bytes):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ----------------------------------------------------------------------------- killed workers

#: Environment variable read by :func:`dask_setup` in every Dask worker: JSON
#: ``{"shape": [H, W], "tile": [ROW, COL], "once": PATH or null}``.
KILL_ENV = "SR_TEST_KILL_TILE"
#: This file, as a Dask worker preload (``distributed.worker.preload``).
PRELOAD = os.path.abspath(__file__)


def dask_setup(worker) -> None:
    """Dask worker preload hook: when :data:`KILL_ENV` is set, the worker process ends with
    ``os._exit(1)`` right after it ran the model on tile ``tile`` of a scene whose input is
    ``shape`` (LR px) and wrote that tile's chunk, before the task returns. With ``once`` (a
    path) only the first worker to get there dies (it creates the file, ``O_EXCL``); without it
    every worker that runs the tile dies (a poison tile)."""
    plan = os.environ.get(KILL_ENV)
    if not plan:
        return
    plan = json.loads(plan)
    shape, where, once = tuple(plan["shape"]), tuple(plan["tile"]), plan.get("once")
    import sr_core.compute.infer as infer

    original = infer.finish_tile

    def finish_tile(job, tile, model, inp, out, dst):
        result = original(job, tile, model, inp, out, dst)
        lr_shape = tuple(n // job.scale for n in dst.image.shape[-2:])
        if lr_shape == shape and (tile.row, tile.col) == where:
            if once is None or _claim(once):
                os._exit(1)
        return result

    infer.finish_tile = finish_tile


def _claim(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# ----------------------------------------------------------------------------------- full disk

def small_tmpfs(path: str, size: str = "8m") -> str | None:
    """Mount a tmpfs of ``size`` at ``path`` (a real file system that fills up: ENOSPC).

    Returns:
        ``None`` when mounted (unmount with :func:`unmount`), else why it could not be (no
        privilege to mount in this container).
    """
    os.makedirs(path, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", path],
                         capture_output=True, text=True)
    return None if res.returncode == 0 else (res.stderr.strip() or f"mount exited {res.returncode}")


def unmount(path: str) -> None:
    subprocess.run(["umount", path], check=False, capture_output=True)


# ------------------------------------------------------------------------------------- memory

class PeakRSS:
    """Samples the resident set size of a process and all its descendants (psutil) every
    ``interval_s`` in a thread; ``peak`` is the largest sum seen (bytes), ``peak_procs`` how many
    processes made it, ``start`` the sum when the block was entered (what earlier work in this
    process tree already held), ``growth`` = ``peak - start``."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.1) -> None:
        import psutil

        self._root = psutil.Process(pid or os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = 0
        self.start = 0
        self.peak_procs = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total, n = 0, 0
        for p in [self._root, *self._root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                n += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_procs = total, n

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __enter__(self) -> PeakRSS:
        self._sample()
        self.start = self.peak
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate()`` until true or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
