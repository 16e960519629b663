"""A real Prefect stack for tests: ``prefect server start`` (SQLite in a temporary PREFECT_HOME),
the process work pool and the GPU concurrency limit, ``prefect deploy`` from
``deployments/prefect.yaml``, and a ``prefect worker start`` subprocess. Every process is started
in its own session and killed (with its children) by :meth:`PrefectStack.close`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL = "sr-process"


def _prefect_exe() -> str:
    exe = Path(sys.executable).parent / "prefect"
    return str(exe) if exe.is_file() else "prefect"


@dataclass
class PrefectStack:
    """Handles of the running stack.

    Attributes:
        api_url: ``http://127.0.0.1:PORT/api``; ui_url: the UI's base URL.
        env: the environment the CLI, server and worker run with.
        logs: folder of the server's and worker's logs.
    """

    api_url: str
    ui_url: str
    env: dict
    logs: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` from the repository root; raise with its output on failure."""
        res = subprocess.run([_prefect_exe(), *args], cwd=REPO, env=self.env, text=True,
                             capture_output=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} exited {res.returncode}:\n"
                               f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([_prefect_exe(), *args], cwd=REPO, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        """Stop the worker and the server, and everything they started (process groups)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:  # children (flow-run processes, uvicorn) share the group: make sure they are gone
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
            proc.log.close()  # type: ignore[attr-defined]
        self.procs.clear()


def _wait_healthy(stack: PrefectStack, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n"
                               f"{stack.log_tail('server')}")
        try:
            with urllib.request.urlopen(f"{stack.api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"prefect server did not answer within {timeout_s} s:\n"
                               f"{stack.log_tail('server')}")
        time.sleep(0.5)


def start_server(home: Path, port: int, extra_env: dict[str, str]) -> PrefectStack:
    """Spawn ``prefect server start`` (it comes up while the caller does other set-up; then call
    :func:`finish_stack`).

    Args:
        home: an empty folder for PREFECT_HOME (SQLite database, logs).
        port: a free TCP port on 127.0.0.1.
        extra_env: added to the environment of everything (e.g. the S3 endpoint).
    """
    env = {**os.environ, **extra_env,
           "PREFECT_HOME": str(home),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           # create scheduled runs soon after a deployment appears (default loop: 60 s)
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
           "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_CLI_PROMPT": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
               os.pathsep)}
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = PrefectStack(api_url=env["PREFECT_API_URL"], ui_url=f"http://127.0.0.1:{port}",
                         env=env, logs=logs)
    stack.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
    return stack


def finish_stack(stack: PrefectStack, *, gpu_slots: int = 1) -> PrefectStack:
    """Wait for the server, create the work pool and the ``sr-gpu`` global concurrency limit
    (``gpu_slots``), deploy ``deployments/prefect.yaml`` and start a process worker. On failure
    everything is stopped."""
    try:
        _wait_healthy(stack, stack.procs[0], 240)
        stack.cli("work-pool", "create", POOL, "--type", "process")
        stack.cli("global-concurrency-limit", "create", "sr-gpu", "--limit", str(gpu_slots))
        stack.cli("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
        stack.spawn("worker", "worker", "start", "--pool", POOL, "--limit", "4")
    except BaseException:
        stack.close()
        raise
    return stack
