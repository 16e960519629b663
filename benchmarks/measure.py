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


def build_mosaic(scene: str, edge_px: int, dst: str, block_px: int = 1024) -> None:
    """Write an ``edge_px`` x ``edge_px`` mosaic of ``scene`` (band 1 .. n) to ``dst``.

    The scene is tiled with alternate copies mirrored; one ``block_px`` window is held at a time.
    """
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene) as src:
        data = src.read()  # the small real scene itself, once
        h, w = src.height, src.width
        profile = src.profile.copy()
        transform = src.transform
    profile.update(driver="GTiff", width=edge_px, height=edge_px, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    profile.pop("photometric", None)
    rows = np.arange(edge_px)
    cols = np.arange(edge_px)
    # mirrored repetition: index i of the mosaic reads index m(i) of the scene
    r_idx = np.where((rows // h) % 2 == 0, rows % h, h - 1 - rows % h)
    c_idx = np.where((cols // w) % 2 == 0, cols % w, w - 1 - cols % w)
    with rasterio.open(dst, "w", **profile) as out:
        out.transform = transform  # same origin and pixel size as the scene
        for r0 in range(0, edge_px, block_px):
            for c0 in range(0, edge_px, block_px):
                rr = r_idx[r0:r0 + block_px]
                cc = c_idx[c0:c0 + block_px]
                block = data[:, rr][:, :, cc]
                out.write(block, window=Window(c0, r0, len(cc), len(rr)))
