"""Background processes that outlive the command that started them: start one detached (its own
session, output to a log file, PID to a file), tell whether a PID is still that program, and stop
it with everything it started (SIGTERM, then SIGKILL after a timeout).

Process trees are read from ``/proc`` (Linux); elsewhere the process group is used alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def read_int(path: Path) -> int | None:
    """The integer in ``path`` (a PID or port file), or None when it is missing or not one."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, pid_file: Path) -> int:
    """Start ``argv`` detached: a session of its own (so its process group holds its children),
    stdin from /dev/null, stdout and stderr appended to ``log``; write its PID to ``pid_file``.

    Returns:
        The PID.

    Raises:
        OSError: the program cannot be started (e.g. not found).
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def alive(pid: int, *words: str) -> bool:
    """True when ``pid`` runs, is not a zombie and (where ``/proc`` exists) has every one of
    ``words`` among the file names of its command line (a reused PID of another program does
    not count)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    names = {Path(a.decode(errors="replace")).name for a in argv}
    return state != "Z" and all(w in names for w in words)


def _proc_table() -> dict[int, tuple[str, int, int]]:
    """``pid -> (state, parent pid, process group)`` from ``/proc`` (empty without it)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (fields[0], int(fields[1]), int(fields[2]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def family(leader: int, known: set[int]) -> set[int]:
    """Living processes (zombies excluded) among ``known``, the process group ``leader`` leads,
    and their descendants (which may run in sessions of their own). Without ``/proc``: the
    leader, while its group has a process."""
    table = _proc_table()
    if not table:
        try:
            os.killpg(leader, 0)
        except (ProcessLookupError, PermissionError):
            return set()
        return {leader}
    live = {p for p, (state, _, pgrp) in table.items()
            if state != "Z" and (pgrp == leader or p in known)}
    todo = list(live)
    while todo:
        parent = todo.pop()
        for p, (state, ppid, _) in table.items():
            if ppid == parent and state != "Z" and p not in live:
                live.add(p)
                todo.append(p)
    return live


def _signal_all(leader: int, pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            if pid == leader:
                os.killpg(leader, sig)  # started as its group's leader: the group gets it
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(leader: int, timeout_s: float) -> bool:
    """SIGTERM to ``leader`` (a process group leader), its group and its descendants; SIGKILL to
    whatever still runs ``timeout_s`` later.

    Returns:
        True when everything exited on SIGTERM, False when SIGKILL was needed.
    """
    procs = family(leader, {leader})
    _signal_all(leader, procs, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while procs and time.monotonic() < deadline:
        time.sleep(0.2)
        procs = family(leader, procs)
    if procs:
        _signal_all(leader, procs, signal.SIGKILL)
    return not procs
