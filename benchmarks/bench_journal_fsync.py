"""Benchmark: what flushing the resume journal to disk costs (sr_core.publication.journal).

Before a tile's completion marker counts, its output chunk files (image and validity), their
folders, the marker's temporary file and the ``tiles`` folder are flushed with ``os.fsync``; the
staged input store is flushed before ``staged.json``. This runs a real scene (default: the
Landsat 7 sample, 791 x 718 px, 3 bands uint8) through ``run_upscale`` twice on an in-process
Dask cluster (one worker thread, so the journal calls can be timed from here), with the flushes
and with ``os.fsync`` made a no-op, and prints the time spent writing the journal in each
against the tile compute time and the run's wall time.

    .venv/bin/python benchmarks/bench_journal_fsync.py [--src FILE] [--model espcn-x2]
        [--tile-size 64] [--scratch DIR]

The cost depends on the scratch file system (``--scratch``): a local SSD or tmpfs flushes in
microseconds to a millisecond, a network volume takes longer.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from measure import REPO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(REPO / "samples" / "landsat7_RGB.byte.tif"))
    ap.add_argument("--model", default="espcn-x2")
    ap.add_argument("--tile-size", type=int, default=64)
    ap.add_argument("--scratch", default=None, help="scratch parent (default: system temp)")
    args = ap.parse_args()

    from distributed import LocalCluster

    from sr_core.pipeline import UpscaleConfig, run_upscale
    from sr_core.publication import journal

    spent = {"mark_tile": 0.0, "sync_tree": 0.0, "save_state": 0.0}
    for name in spent:
        real = getattr(journal, name)

        def timed(*a, _real=real, _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                spent[_name] += time.perf_counter() - t0

        setattr(journal, name, timed)

    def one_run(flush: bool) -> dict:
        for k in spent:
            spent[k] = 0.0
        real_fsync = os.fsync
        if not flush:  # what the journal cost before it flushed anything
            os.fsync = lambda fd: None
        try:
            with tempfile.TemporaryDirectory(dir=args.scratch) as tmp, \
                    LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                 dashboard_address=":0", silence_logs=logging.ERROR) as lc:
                t0 = time.perf_counter()
                run = run_upscale(UpscaleConfig(
                    src=args.src, dst=str(Path(tmp) / "out.tif"), model=args.model,
                    tile_size_px=args.tile_size, dask_address=lc.scheduler_address,
                    progress=False, scratch_dir=str(Path(tmp) / "scratch")))
                wall = time.perf_counter() - t0
        finally:
            os.fsync = real_fsync
        return {"wall": wall, "tiles": run.resume["tiles_run"],
                "compute": sum(t.seconds for t in run.tiles), **spent}

    one_run(False)  # warm-up (imports, model load, first cluster): not reported
    runs = {flush: one_run(flush) for flush in (True, False)}
    on, off = runs[True], runs[False]
    n = max(on["tiles"], 1)
    print(f"scene {args.src}: {on['tiles']} tiles of {args.tile_size} px, model {args.model}")
    print(f"{'':32s}{'fsync on':>10s}{'fsync off':>11s}")
    for key, label in (("wall", "run wall time, s"), ("compute", "tile compute (sum), s"),
                       ("mark_tile", "tile chunks + markers, s"),
                       ("sync_tree", "staged / output stores, s"),
                       ("save_state", "state records, s")):
        print(f"{label:32s}{on[key]:10.3f}{off[key]:11.3f}")
    extra = on["mark_tile"] - off["mark_tile"]
    print(f"flushing costs {1000 * extra / n:.2f} ms per tile "
          f"({100 * extra / max(on['compute'], 1e-9):.1f} % of tile compute) and "
          f"{on['sync_tree'] + on['save_state'] - off['sync_tree'] - off['save_state']:.3f} s "
          "once per run")


if __name__ == "__main__":
    main()
