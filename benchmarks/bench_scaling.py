"""Benchmark: how the pipeline's throughput changes from 1 to 2 Dask workers, and where its time
goes (tile inference, staging, COG encoding), for ``docs/scaling.md``.

On a mosaic of a real scene (default: 2048 x 2048 px of the Landsat 7 sample, 3 bands uint8,
mirrored copies as ``bench_memory.py`` builds them), the same model and tile size,
``sr-pipeline upscale`` runs with 1 worker process (torch using every core) and with 2 worker
processes (cores split between them), side by side. From each run's
report: the inference stage's output MP/s, the COG encoding rate (output bytes, uncompressed,
per second of the stitch stage), staging rate, and the share of wall time of each stage.
Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_scaling.py [--scene PATH] [--mosaic 2048]
        [--model espcn-x2] [--tile-size 256] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from measure import build_mosaic, run_measured

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "samples/landsat7_RGB.byte.tif"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=SAMPLE)
    ap.add_argument("--mosaic", type=int, default=2048)
    ap.add_argument("--model", default="espcn-x2")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    cli = str(Path(sys.executable).parent / "sr-pipeline")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scene = os.path.join(tmp, "scene.tif")
        build_mosaic(str(REPO / args.scene), args.mosaic, scene)
        for n in args.workers:
            dst = os.path.join(tmp, f"out_{n}.tif")
            wall, rss, _ = run_measured([cli, "upscale", scene, dst, "--model", args.model,
                                         "--tile-size", str(args.tile_size), "--workers", str(n),
                                         "--no-progress"])
            rep = json.loads(Path(tmp, f"out_{n}.report.json").read_text())
            t = rep["timings_s"]
            out = rep["output"]
            out_px = out["width"] * out["height"]
            raw_mb = out_px * out["count"] * np.dtype(out["dtype"]).itemsize / 1e6
            rows.append({
                "workers": n, "wall_s": wall, "peak_rss_mb": rss / 2**20,
                "tiles": rep["tiling"]["tiles"], "infer_s": t["infer"],
                "infer_out_mp_s": out_px / 1e6 / t["infer"],
                "stitch_s": t["stitch"], "cog_encode_mb_s": raw_mb / t["stitch"],
                "tile_stage_s": t["tile"], "stages_s": t, "output_raw_mb": raw_mb,
                "cog_mb": os.path.getsize(dst) / 1e6,
            })
    print(f"scene {args.scene} ({args.mosaic} px mosaic), model {args.model}, tiles of "
          f"{args.tile_size} px, {os.cpu_count()} cores")
    print(f"{'workers':>8}{'wall s':>9}{'infer s':>9}{'infer MP/s':>12}{'stitch s':>10}"
          f"{'COG MB/s':>10}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['workers']:>8}{r['wall_s']:9.2f}{r['infer_s']:9.2f}{r['infer_out_mp_s']:12.3f}"
              f"{r['stitch_s']:10.2f}{r['cog_encode_mb_s']:10.1f}{r['peak_rss_mb']:13.0f}")
    if len(rows) >= 2:
        print(f"inference speed-up {rows[0]['workers']} -> {rows[-1]['workers']} workers: "
              f"{rows[-1]['infer_out_mp_s'] / rows[0]['infer_out_mp_s']:.2f}x")
    print(json.dumps({"benchmark": "scaling", "scene": args.scene, "mosaic_px": args.mosaic,
                      "model": args.model, "tile_size_px": args.tile_size,
                      "cores": os.cpu_count(), "runs": rows}))


if __name__ == "__main__":
    main()
