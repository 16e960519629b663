"""Benchmark: what the quality reports cost relative to the run.

Runs ``sr-pipeline upscale`` (as a library call, the CLI's code path) on a real scene and prints
the stage timings from its JSON report: the run's stages, the report's streaming pass over input
and output (``report_measure``: per-band statistics, histograms, seam metric) and the HTML page
(``report_html``: windowed reads, matplotlib figures, template). The HTML page is then built again
in the same (warm) process, so the second figure excludes the one-off import of matplotlib.
Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_report.py [--scene samples/landsat7_RGB.byte.tif]
        [--model edsr-x2] [--tile-size 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from measure import REPO


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(REPO / "samples" / "landsat7_RGB.byte.tif"))
    ap.add_argument("--model", default="edsr-x2")
    ap.add_argument("--tile-size", type=int, default=1024)
    args = ap.parse_args()

    import logging

    import distributed  # noqa: F401 - quiet its loggers after import

    logging.getLogger("distributed").setLevel(logging.ERROR)
    from sr_core.pipeline import UpscaleConfig, run_upscale
    from sr_core.reports.html import build_scene_html

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.tif"
        t0 = time.perf_counter()
        run = run_upscale(UpscaleConfig(src=args.scene, dst=str(dst), model=args.model,
                                        tile_size_px=args.tile_size, progress=False))
        wall = time.perf_counter() - t0
        rep = run.published["report"]
        t1 = time.perf_counter()
        build_scene_html(rep, args.scene, str(dst))
        warm_html = time.perf_counter() - t1
        html_bytes = Path(run.published["report_html"]).stat().st_size
    t = rep["timings_s"]
    report_s = run.timings["report"]
    rows = [(k, v) for k, v in t.items() if k not in ("total",)] + [
        ("report stage (measure + HTML + JSON/md, published)", report_s),
        ("HTML page again, warm process", warm_html),
        ("whole run (wall)", wall)]
    print(f"scene {args.scene}, model {args.model}, output {rep['output']['width']} x "
          f"{rep['output']['height']} px x {rep['output']['bands']} band(s)")
    for k, v in rows:
        print(f"  {k:<55} {v:8.2f} s")
    print(f"  report stage share of the run: {100 * report_s / wall:.1f} %; HTML file "
          f"{html_bytes / 1e6:.2f} MB")
    print(json.dumps({"scene": args.scene, "model": args.model, "wall_s": round(wall, 2),
                      "report_s": round(report_s, 2), "report_measure_s": t.get("report_measure"),
                      "report_html_s": t.get("report_html"), "html_warm_s": round(warm_html, 2),
                      "html_bytes": html_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
