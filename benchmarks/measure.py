"""Measuring a command for the benchmarks: wall time and peak RSS of its whole process tree."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def run_measured(cmd: list[str], per_process: dict | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS of its process tree in bytes, stdout).

    Args:
        cmd: the command.
        per_process: if given, filled with ``{"pid NAME": peak RSS bytes}`` for every process of
            the tree (the command and, for example, its Dask scheduler and worker processes).

    Raises:
        SystemExit: the command exited non-zero.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    peak = 0
    peaks: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
            while not stop.is_set():
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                        label = f"{p.pid} {' '.join(p.cmdline()[1:3])[:60]}"
                    except psutil.Error:
                        continue
                    total += rss
                    peaks[label] = max(peaks.get(label, 0), rss)
                peak = max(peak, total)
                stop.wait(0.05)
        except psutil.Error:
            return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    if per_process is not None:
        per_process.update(peaks)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}")
    return wall, peak, out
