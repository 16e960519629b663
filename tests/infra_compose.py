"""Read ``infra/compose.yaml`` the way Docker Compose does (``${VAR}`` interpolation from an env
file) and turn its services into local processes: the same command, environment and health check,
with service host names and container ports mapped to free ports on 127.0.0.1.

Used by ``tests/test_infra_stack.py`` (runs the stack natively) and ``tests/test_infra_validate.py``
(validates the interpolated file), so the commands CI runs are the ones the compose file holds.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
LOOPBACK = "127.0.0.1"
_BIND_ALL = ("0.0.0.0", "127.0.0.1", "localhost")

# Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}"
                  r"|([A-Za-z_][A-Za-z0-9_]*))")
_HOST_PORT = re.compile(r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]+):(\d{2,5})(?!\d)")


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a Compose env file (``#`` comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def interpolate(value, env: dict[str, str]):
    """Compose variable interpolation over a loaded YAML tree (strings only; keys are left).

    Raises:
        KeyError: a ``${VAR:?message}`` / ``${VAR?message}`` variable is missing (the message).
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        current = env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-") and missing:
            return arg
        if op in (":?", "?") and missing:
            raise KeyError(f"{name}: {arg}")
        return current or ""

    return _VAR.sub(sub, value)


def load_compose(env: dict[str, str]) -> dict:
    """``infra/compose.yaml`` with anchors merged and ``${VAR}`` interpolated from ``env``."""
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def default_services(compose: dict) -> list[str]:
    """Services ``docker compose up`` starts: those without ``profiles``."""
    return [name for name, svc in compose["services"].items() if not svc.get("profiles")]


def port_map(compose: dict, fixed: dict[str, dict[int, int]]) -> dict[str, dict[int, int]]:
    """For every service, its container ports (``expose``) -> a free port on 127.0.0.1;
    ``fixed`` gives ports already taken by stand-ins (e.g. ``{"minio": {9000: moto's port}}``)."""
    out: dict[str, dict[int, int]] = {}
    for name, svc in compose["services"].items():
        out[name] = {int(p): fixed.get(name, {}).get(int(p)) or free_port()
                     for p in svc.get("expose", [])}
    return out


@dataclass
class LocalService:
    """One compose service as a local process.

    Attributes:
        name: the service name.
        argv: its ``command`` (argv[0] resolved in this virtual environment when it lives there).
        env: its ``environment``, localized, on top of ``base_env``.
        health: its health check's argv (``CMD`` form), localized; None without one.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    health: list[str] | None


def _localize(text: str, own: str, ports: dict[str, dict[int, int]]) -> str:
    def sub(m: re.Match) -> str:
        host, port = m.group(1), int(m.group(2))
        if host in ports and port in ports[host]:
            return f"{LOOPBACK}:{ports[host][port]}"
        if host in _BIND_ALL and port in ports[own]:
            return f"{LOOPBACK}:{ports[own][port]}"
        return m.group(0)

    return _HOST_PORT.sub(sub, text).replace("0.0.0.0", LOOPBACK)


def _exe(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def local_service(compose: dict, name: str, ports: dict[str, dict[int, int]],
                  base_env: dict[str, str]) -> LocalService:
    """The service ``name`` with host names, bind addresses and container ports mapped to
    127.0.0.1 and the ports of :func:`port_map`; nothing else of its command or environment
    changes."""
    svc = compose["services"][name]
    own = ports[name]
    argv = [_localize(a, name, ports) for a in svc["command"]]
    argv = [str(own[int(a)]) if i and argv[i - 1] == "--port" and a.isdigit() and int(a) in own
            else a for i, a in enumerate(argv)]
    env = dict(base_env)
    for key, value in (svc.get("environment") or {}).items():
        value = _localize(str(value), name, ports)
        if key.endswith("_PORT") and value.isdigit() and int(value) in own:
            value = str(own[int(value)])
        env[key] = value
    health = None
    test = (svc.get("healthcheck") or {}).get("test")
    if test and test[0] == "CMD":
        health = [_localize(a, name, ports) for a in test[1:]]
        health[0] = _exe(health[0])
    argv[0] = _exe(argv[0])
    return LocalService(name=name, argv=argv, env=env, health=health)


class Processes:
    """Local processes, each in its own session (so its children go with it), logs in a folder."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, svc: LocalService) -> subprocess.Popen:
        log = open(self.logs / f"{svc.name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(svc.argv, cwd=REPO, env=svc.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs[svc.name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def wait_healthy(self, svc: LocalService, timeout_s: float) -> float:
        """Run the service's own health check until it passes; return the seconds waited."""
        t0 = time.monotonic()
        proc = self.procs.get(svc.name)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{svc.name} exited {proc.returncode}:\n{self.log_tail(svc.name)}")
            if subprocess.run(svc.health, cwd=REPO, env=svc.env, capture_output=True,
                              timeout=30).returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"{svc.name} not healthy within {timeout_s} s:\n"
                                   f"{self.log_tail(svc.name)}")
            time.sleep(0.5)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    pass
        for proc in reversed(list(self.procs.values())):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
            proc.log.close()  # type: ignore[attr-defined]
        self.procs.clear()
