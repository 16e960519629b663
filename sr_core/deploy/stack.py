"""A single-machine Prefect stack: ``sr-pipeline stack up`` / ``down`` / ``status``.

``up`` starts ``prefect server start`` (SQLite in ``PREFECT_HOME``) in the background and waits for
its ``/api/health``, creates the process work pool ``sr-process`` and the global concurrency limit
``sr-gpu`` (1 slot) when they are missing, deploys ``deployments/prefect.yaml`` and starts a process
worker whose environment is this shell's plus the variables of an env file (S3 endpoint and
credentials; their values are never printed). ``down`` stops both by their PID files (SIGTERM to
each with its process group and descendants, SIGKILL after a timeout; :mod:`sr_core.deploy.daemon`).
Everything lives under ``HOME/stack/``: ``server.log``, ``worker.log``, ``server.pid``,
``worker.pid``, ``server.port`` and ``deployed.sha256`` (what was last deployed, so that a second
``up`` redeploys only after an edit).

This module never imports Prefect: it runs the ``prefect`` executable installed beside
``sys.executable`` and talks HTTP to the server's REST API.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sr_core.deploy import daemon
from sr_core.errors import InputError, SRError

POOL = "sr-process"
GPU_LIMIT = "sr-gpu"
PREFECT_FILE = Path("deployments") / "prefect.yaml"
DEPLOYMENTS = ("upscale_scene/upscale-scene", "upscale_archive/nightly-archive")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StackError(SRError, RuntimeError):
    """A process of the stack failed to start or to answer (CLI exit status 1)."""


@dataclass(frozen=True)
class StackPaths:
    """Where one stack keeps its state.

    Attributes:
        root: the repository root (holds ``deployments/prefect.yaml``; flows run from here).
        home: PREFECT_HOME (SQLite database, profiles); the stack's files go in ``home/stack``.
        port: TCP port of the server on 127.0.0.1.
    """

    root: Path
    home: Path
    port: int

    @property
    def run_dir(self) -> Path:
        return self.home / "stack"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    @property
    def port_file(self) -> Path:
        return self.run_dir / "server.port"


def prefect_exe() -> str:
    """The ``prefect`` executable beside ``sys.executable`` (else the one on PATH)."""
    exe = Path(sys.executable).parent / "prefect"
    return str(exe) if exe.is_file() else "prefect"


def read_env_file(path: Path) -> dict[str, str | None]:
    """Variables of an ``.env``-style file: one ``KEY=VALUE`` a line (``export`` allowed before
    it), blank lines and lines starting with ``#`` ignored, one pair of matching quotes around a
    value removed. An empty value maps to None (the worker gets no such variable).

    Raises:
        InputError: the file is unreadable, or a line is not ``KEY=VALUE`` (the message names the
            file and line number, never the line's content, which may hold a secret).
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the env file ({exc.__class__.__name__})") from None
    out: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.fullmatch(key):
            raise InputError(f"{path}:{number}: expected KEY=VALUE (KEY of letters, digits and _)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value or None
    return out


def _alive(pid: int, role: str) -> bool:
    return daemon.alive(pid, "prefect", role)


def live_pid(paths: StackPaths, role: str) -> int | None:
    """PID of the stack's ``role`` process (``server`` or ``worker``) if it runs, else None."""
    pid = daemon.read_int(paths.pid_file(role))
    return pid if pid is not None and _alive(pid, role) else None


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET {api_url}/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _api(api_url: str, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """``(HTTP status, parsed JSON or None)`` of one REST call; raises StackError when the server
    cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{api_url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        raise StackError(f"the Prefect server at {api_url} did not answer {method} {path}: "
                         f"{exc}") from None


def _base_env(paths: StackPaths) -> dict[str, str]:
    """This process's environment plus the stack's Prefect settings and the repository root on
    PYTHONPATH (the flows import ``flows.*``)."""
    pythonpath = os.pathsep.join(p for p in (str(paths.root), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ,
            "PREFECT_HOME": str(paths.home),
            "PREFECT_API_URL": paths.api_url,
            "PREFECT_UI_API_URL": paths.api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(paths.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONPATH": pythonpath}


def _spawn(paths: StackPaths, role: str, args: list[str], env: dict[str, str]) -> int:
    """Start ``prefect ARGS`` detached (see :func:`sr_core.deploy.daemon.spawn`), output appended to
    ``role.log``, PID in ``role.pid``; return the PID."""
    return daemon.spawn([prefect_exe(), *args], cwd=paths.root, env=env,
                        log=paths.log_file(role), pid_file=paths.pid_file(role))


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f" (last line: {lines[-1].strip()[:200]})" if lines else ""


def _wait_healthy(paths: StackPaths, pid: int, timeout_s: float) -> None:
    """Poll the health endpoint until it answers.

    Raises:
        StackError: the server exited, or did not answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not healthy(paths.api_url):
        log = paths.log_file("server")
        if not _alive(pid, "server"):
            raise StackError(f"the Prefect server (pid {pid}) exited before it answered; see "
                             f"{log}{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"the Prefect server did not answer {paths.api_url}/health within "
                             f"{timeout_s:g} s; see {log}")
        time.sleep(0.5)


def _prefect(paths: StackPaths, env: dict[str, str], *args: str, timeout_s: float = 300) -> str:
    """Run ``prefect ARGS`` from the repository root; return its stdout.

    Raises:
        StackError: it failed (the message ends with its last line of output).
    """
    try:
        res = subprocess.run([prefect_exe(), *args], cwd=paths.root, env=env, text=True,
                             capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StackError(f"`prefect {' '.join(args)}` did not finish in {timeout_s:g} s") from None
    if res.returncode:
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        last = lines[-1].strip()[:300] if lines else "no output"
        raise StackError(f"`prefect {' '.join(args)}` exited {res.returncode}: {last}")
    return res.stdout


def start_server(paths: StackPaths, timeout_s: float) -> tuple[int, bool]:
    """Start the server unless this stack's server already runs on this port; wait until healthy.

    Returns:
        ``(pid, started)``: started is False when a live server was reused.

    Raises:
        InputError: this stack's server runs on another port, or the port is taken by a program
            that is not this stack's server.
        StackError: the server did not come up (it is then stopped).
    """
    pid = live_pid(paths, "server")
    if pid is not None:
        running_port = daemon.read_int(paths.port_file)
        if running_port not in (None, paths.port):
            raise InputError(f"--port {paths.port}: this stack's server (pid {pid}) runs on port "
                             f"{running_port}; pass --port {running_port} or run "
                             f"`sr-pipeline stack down` first")
        _wait_healthy(paths, pid, timeout_s)
        return pid, False
    if _port_taken(paths.port):
        raise InputError(f"--port {paths.port}: the port is in use by a program this stack did not "
                         f"start (no live PID in {paths.pid_file('server')}); stop it or pass "
                         f"another --port")
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    pid = _spawn(paths, "server", ["server", "start", "--host", "127.0.0.1",
                                   "--port", str(paths.port)], _base_env(paths))
    paths.port_file.write_text(f"{paths.port}\n")
    try:
        _wait_healthy(paths, pid, timeout_s)
    except StackError:
        stop(paths, "server", timeout_s=10)
        raise
    return pid, True


def ensure_pool_and_limit(paths: StackPaths) -> list[str]:
    """Create the work pool ``sr-process`` (type process) and the global concurrency limit
    ``sr-gpu`` (1 slot) when missing; existing ones are left as they are.

    Returns:
        One line per object: created or already there.

    Raises:
        StackError: the server failed a request or the CLI failed.
    """
    env, done = _base_env(paths), []
    status, _ = _api(paths.api_url, "GET", f"/work_pools/{POOL}")
    if status == 404:
        _prefect(paths, env, "work-pool", "create", POOL, "--type", "process")
    elif status != 200:
        raise StackError(f"reading work pool {POOL} from {paths.api_url} answered HTTP {status}")
    done.append(f"work pool {POOL}: {'created' if status == 404 else 'already there'}")
    status, _ = _api(paths.api_url, "GET", f"/v2/concurrency_limits/{GPU_LIMIT}")
    if status == 404:
        status_new, _ = _api(paths.api_url, "POST", "/v2/concurrency_limits/",
                             {"name": GPU_LIMIT, "limit": 1, "active": True})
        if status_new not in (200, 201):
            raise StackError(f"creating the concurrency limit {GPU_LIMIT} answered HTTP "
                             f"{status_new}")
    elif status != 200:
        raise StackError(f"reading concurrency limit {GPU_LIMIT} answered HTTP {status}")
    done.append(f"global concurrency limit {GPU_LIMIT}: "
                f"{'created (1 slot)' if status == 404 else 'already there'}")
    return done


def _deploy_digest(paths: StackPaths) -> str:
    """SHA-256 over ``deployments/prefect.yaml`` and ``flows/*.py`` (their parameter schemas are
    read at deploy time)."""
    digest = hashlib.sha256()
    for path in [paths.root / PREFECT_FILE, *sorted((paths.root / "flows").glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def deploy(paths: StackPaths) -> str:
    """``prefect deploy --all`` from ``deployments/prefect.yaml``, skipped when both deployments
    exist and neither the file nor ``flows/*.py`` changed since the last deploy from this HOME
    (so parameters edited in the UI and a schedule resumed by hand stay as they are, across
    restarts too, until the file changes).

    Returns:
        One line saying what was done.

    Raises:
        StackError: ``prefect deploy`` failed.
    """
    digest, stamp = _deploy_digest(paths), paths.run_dir / "deployed.sha256"
    present = all(_api(paths.api_url, "GET", f"/deployments/name/{name}")[0] == 200
                  for name in DEPLOYMENTS)
    if present and stamp.is_file() and stamp.read_text().strip() == digest:
        return f"deployments: up to date ({', '.join(DEPLOYMENTS)})"
    _prefect(paths, _base_env(paths), "--no-prompt", "deploy", "--prefect-file",
             str(PREFECT_FILE), "--all")
    stamp.write_text(digest + "\n")
    return f"deployments: deployed {', '.join(DEPLOYMENTS)} from {PREFECT_FILE}"


def worker_env(paths: StackPaths, env_vars: dict[str, str | None]) -> dict[str, str]:
    """The worker's environment: the stack's (see :func:`_base_env`) with ``env_vars`` applied
    (None removes a variable)."""
    env = _base_env(paths)
    for key, value in env_vars.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def start_worker(paths: StackPaths, env_vars: dict[str, str | None]) -> tuple[int, bool]:
    """Start ``prefect worker start --pool sr-process`` unless this stack's worker runs.

    Returns:
        ``(pid, started)``: started is False when a live worker was reused (it keeps the
        environment it was started with).

    Raises:
        StackError: the worker exited within its first two seconds.
    """
    pid = live_pid(paths, "worker")
    if pid is not None:
        return pid, False
    pid = _spawn(paths, "worker", ["worker", "start", "--pool", POOL, "--type", "process"],
                 worker_env(paths, env_vars))
    time.sleep(2)
    if not _alive(pid, "worker"):
        log = paths.log_file("worker")
        paths.pid_file("worker").unlink(missing_ok=True)
        raise StackError(f"the Prefect worker (pid {pid}) exited at start; see {log}"
                         f"{_log_tail(log)}")
    return pid, True


def stop(paths: StackPaths, role: str, timeout_s: float = 30) -> str:
    """Stop the stack's ``role`` process with its process group and descendants (SIGTERM, SIGKILL
    after ``timeout_s``; see :func:`sr_core.deploy.daemon.stop_tree`); remove its PID file.

    Returns:
        One line saying what was stopped (or that nothing ran).
    """
    pid = live_pid(paths, role)
    clean = pid is None or daemon.stop_tree(pid, timeout_s)
    paths.pid_file(role).unlink(missing_ok=True)
    if pid is None:
        return f"{role}: not running"
    how = "stopped" if clean else f"killed (still running {timeout_s:g} s after SIGTERM)"
    return f"{role}: {how} (pid {pid})"


def _schedule_line(paths: StackPaths) -> str:
    status, dep = _api(paths.api_url, "GET", f"/deployments/name/{DEPLOYMENTS[1]}")
    if status != 200 or not isinstance(dep, dict):
        return f"{DEPLOYMENTS[1]}: not deployed"
    states = ["active" if s.get("active") else "paused" for s in dep.get("schedules") or []]
    return f"{DEPLOYMENTS[1]}: schedule {', '.join(states) or 'none'}"


def status_lines(paths: StackPaths) -> tuple[list[str], bool]:
    """What runs: the server (URL, healthy or not), the worker (PID), the nightly schedule.

    Returns:
        ``(lines, ok)``: ok is True when the server answers and the worker runs.
    """
    server, worker = live_pid(paths, "server"), live_pid(paths, "worker")
    port = daemon.read_int(paths.port_file) or paths.port
    here = StackPaths(paths.root, paths.home, port)
    up = server is not None and healthy(here.api_url)
    lines = [f"server: {'healthy' if up else 'not answering' if server else 'not running'}"
             + (f" at {here.ui_url} (pid {server})" if server else ""),
             f"worker: {f'running (pid {worker}, pool {POOL})' if worker else 'not running'}"]
    if up:
        lines.append(_schedule_line(here))
    return lines, up and worker is not None


def stack_up(paths: StackPaths, env_file: Path, *, env_file_required: bool, timeout_s: float,
             echo: Callable[[str], None]) -> None:
    """Bring the whole stack up (each step reuses what already runs); see the module docstring.

    Raises:
        InputError: no ``deployments/prefect.yaml`` under ``paths.root``; the env file is missing
            (when given explicitly) or has a bad line; the port is taken (see
            :func:`start_server`).
        StackError: a process failed to start or a Prefect command failed; what this call
            started is stopped again.
    """
    if not (paths.root / PREFECT_FILE).is_file():
        raise InputError(f"{paths.root / PREFECT_FILE}: not found; run `sr-pipeline stack up` "
                         f"from the repository root")
    env_vars: dict[str, str | None] = {}
    if env_file.is_file():
        env_vars = read_env_file(env_file)
    elif env_file_required:
        raise InputError(f"--env-file {env_file}: no such file (start from "
                         f"deployments/stack.env.example)")
    server_pid, started = start_server(paths, timeout_s)
    echo(f"server: {'started' if started else 'already running'} (pid {server_pid}), log "
         f"{paths.log_file('server')}")
    try:
        for line in [*ensure_pool_and_limit(paths), deploy(paths)]:
            echo(line)
        worker_pid, w_started = start_worker(paths, env_vars)
    except StackError:
        if started:
            stop(paths, "server", timeout_s=10)
        raise
    names = ", ".join(sorted(k for k, v in env_vars.items() if v is not None)) or "none"
    source = (f"variables from {env_file}: {names}" if env_file.is_file() else
              f"this shell's environment only (no {env_file})")
    echo(f"worker: started (pid {worker_pid}, pool {POOL}), log {paths.log_file('worker')}; "
         f"{source}" if w_started else
         f"worker: already running (pid {worker_pid}, pool {POOL}) with the environment it "
         f"started with (env file changed? `sr-pipeline stack down`, then `up`)")
    schedule = _schedule_line(paths)
    echo(schedule + (" (set its source and output_prefix, then activate it: see "
                     f"{PREFECT_FILE})" if schedule.endswith("paused") else ""))
    _echo_next(paths, echo)


def _echo_next(paths: StackPaths, echo: Callable[[str], None]) -> None:
    exe = Path(prefect_exe())
    try:
        exe = exe.relative_to(paths.root)
    except ValueError:
        pass
    echo(f"\nPrefect UI: {paths.ui_url}\nnext:\n  export PREFECT_API_URL={paths.api_url}\n"
         f"  {exe} deployment run upscale_scene/upscale-scene --param src=s3://BUCKET/in.tif "
         f"--param dst=s3://BUCKET/out.tif --watch\nstop: sr-pipeline stack down"
         + (f" --home {paths.home}" if paths.home != paths.root / ".prefect" else ""))


def stack_down(paths: StackPaths, timeout_s: float) -> list[str]:
    """Stop the worker, then the server (see :func:`stop`); remove their PID files.

    Returns:
        One line per process.
    """
    lines = [stop(paths, "worker", timeout_s), stop(paths, "server", timeout_s)]
    paths.port_file.unlink(missing_ok=True)
    return lines
