"""Benchmark: peak RSS of ``sr-pipeline upscale`` as the scene grows (is memory flat in scene
size?).

Mosaics of a real scene (default: the Sentinel-2 L2A B04 band in ``tests/data``, uint16, 1098 x
1098 px, nodata 0) are built at each requested edge (default 2048, 8192 and 16384 px) by repeating
the scene, every other copy mirrored so neighbouring copies meet without a jump. Each mosaic is
written window by window (a tiled, DEFLATE-compressed GeoTIFF with the scene's CRS and pixel size),
so building it never holds the whole mosaic either. Then each runs through ``sr-pipeline upscale
--model bicubic --scale 2`` (a cheap model, so the run measures memory rather than compute; the
16384 px mosaic gives a 32768 x 32768 px output) and the peak RSS of the whole process tree (CLI
and Dask worker processes together, sampled every 50 ms) is recorded.

Prints a table, the ratio of the largest mosaic's peak RSS to the smallest's, and one JSON line.

    .venv/bin/python benchmarks/bench_memory.py [--sizes 2048 8192 16384] [--scene PATH]
        [--model bicubic] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import REPO, build_mosaic, run_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--scene", default=str(REPO / "tests/data/S2A_29RKH_20200219_L2A_B04.tif"))
    ap.add_argument("--model", default="bicubic")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--scratch", default=None, help="where mosaics and outputs go (needs ~3 GB "
                    "free for the 16384 px mosaic); default the system temp directory")
    args = ap.parse_args()
    cli = str(Path(sys.executable).parent / "sr-pipeline")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for edge in args.sizes:
            src = os.path.join(tmp, f"mosaic_{edge}.tif")
            dst = os.path.join(tmp, f"mosaic_{edge}_x{args.scale}.tif")
            build_mosaic(args.scene, edge, src)
            procs: dict[str, int] = {}
            wall, peak, _ = run_measured([cli, "upscale", src, dst, "--model", args.model,
                                          "--scale", str(args.scale), "--no-progress",
                                          "--scratch-dir", tmp], per_process=procs)
            rep = json.loads(Path(tmp, f"mosaic_{edge}_x{args.scale}.report.json").read_text())
            out_mp = (edge * args.scale) ** 2 / 1e6
            rows.append({"edge_px": edge, "out_edge_px": edge * args.scale, "seconds": wall,
                         "out_mp_per_s": out_mp / wall, "peak_rss_mb": peak / 2**20,
                         "tiles": rep["tiling"]["tiles"], "stages_s": rep["timings_s"],
                         "out_bytes": os.path.getsize(dst),
                         "per_process_peak_rss_mb": {k: v / 2**20 for k, v in procs.items()}})
            print(f"{edge:>6} px -> {edge * args.scale:>6} px: {wall:8.1f} s, "
                  f"{out_mp / wall:7.1f} output MP/s, peak RSS {peak / 2**20:7.0f} MB, "
                  f"{rep['tiling']['tiles']} tiles", flush=True)
            for label, rss in sorted(procs.items(), key=lambda kv: -kv[1]):
                print(f"        {rss / 2**20:7.0f} MB  pid {label}")
            for f in (src, dst):
                os.remove(f)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"scene {args.scene} mosaicked, model {args.model} x{args.scale}, {os.cpu_count()} cores")
    print(f"peak RSS largest / smallest: {ratio:.2f}  (largest {rows[-1]['peak_rss_mb']:.0f} MB)")
    print(json.dumps({"benchmark": "peak_rss_vs_scene_size", "model": args.model,
                      "scale": args.scale, "ratio_largest_smallest": ratio, "runs": rows}))


if __name__ == "__main__":
    main()
