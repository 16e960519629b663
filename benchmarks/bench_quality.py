"""Benchmark: the shipped models' quality on the held-out validation scenes under every evaluation
degradation, bicubic beside them, and each model's speed on this machine.

Quality: ``sr-pipeline evaluate`` (its code, :func:`sr_core.training.evaluate.evaluate`) on the
validation scenes listed in the shipped cards (looked up in ``../shared/data/geo`` and
``geo-train``), by the Wald protocol under bicubic, area and Gaussian (sigma 0.3 / 0.6 LR px) + area
degradations, PSNR / SSIM of the model and of bicubic and the gain. The per-scene table is written
to ``out/bench/quality.md``; the summary (mean and smallest gain per model and degradation) is
printed.

Self-ensemble (``--self-ensemble``): each model is also scored averaged over the 8 flips and
90-degree rotations of its input (``NAME+``, Lim et al. 2017), and the mean PSNR gain over the
plain model and the ratio of their model seconds (the cost) are printed per degradation.

Speed: each model alone (``SRModel.upscale``, channels-last fp32 as the workers run it) on a
``--size`` px single-band input, best of ``--repeat`` after a warm-up: output megapixels per
second.

    .venv/bin/python benchmarks/bench_quality.py [--models edsr-x2 edsr-x4 espcn-x2]
        [--window 768] [--size 512] [--repeat 3] [--self-ensemble] [--scenes N]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from measure import REPO

from sr_core.models.base import configure_for_device
from sr_core.models.catalog import SHIPPED, WEIGHTS_DIR
from sr_core.models.registry import load_model
from sr_core.training.evaluate import EvalConfig, evaluate, to_markdown

DATA = [REPO.parent / "shared" / "data" / "geo", REPO.parent / "shared" / "data" / "geo-train"]


def scenes_of(name: str) -> list[str]:
    card = json.loads((WEIGHTS_DIR / f"{SHIPPED[name]}.json").read_text())
    out = []
    for scene in card["training"]["validation_scenes"]:
        found = [d / scene for d in DATA if (d / scene).is_file()]
        if not found:
            raise SystemExit(f"{scene}: not in {', '.join(map(str, DATA))}")
        out.append(str(found[0]))
    return out


def output_mp_per_s(name: str, size: int, repeat: int) -> float:
    model = configure_for_device(load_model(name, device="cpu"), "fp32")
    x = np.random.default_rng(0).random((1, size, size), dtype=np.float32)
    model.upscale(x[:, :64, :64])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.upscale(x)
        best = min(best, time.perf_counter() - t0)
    return size * size * model.scale**2 / best / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["edsr-x2", "edsr-x4", "espcn-x2"])
    ap.add_argument("--window", type=int, default=768, help="Wald window edge, HR px")
    ap.add_argument("--size", type=int, default=512, help="speed test input edge, LR px")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--self-ensemble", action="store_true",
                    help="also score NAME+ (8 flips / rotations) and print its gain and cost")
    ap.add_argument("--scenes", type=int, default=None,
                    help="only the first N validation scenes of each model's card")
    args = ap.parse_args()
    out_dir = REPO / "out" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, tables, ensemble = [], [], []
    for name in args.models:
        scale = int(name.rsplit("-x", 1)[1])
        t0 = time.perf_counter()
        result = evaluate(EvalConfig(models=(name,), scale=scale,
                                     scenes=tuple(scenes_of(name)[:args.scenes]),
                                     window_px=args.window, self_ensemble=args.self_ensemble))
        ensemble += [{**e, "evaluate_s": round(time.perf_counter() - t0, 1)}
                     for e in result.self_ensemble]
        seconds = time.perf_counter() - t0
        tables.append(f"## {name}\n\n{to_markdown(result)}")
        speed = output_mp_per_s(name, args.size, args.repeat)
        for s in result.summary:
            if s["model"] == name:
                rows.append({"model": name, "degradation": s["dataset"].split(", ")[1][:-1],
                             "scenes": s["images"], "model_psnr_db": round(s["psnr_db"], 3),
                             "mean_gain_db": round(s["mean_gain_db"], 3),
                             "min_gain_db": round(s["min_gain_db"], 3),
                             "beats_bicubic": f"{s['beats_bicubic']}/{s['images']}",
                             "output_mp_per_s": round(speed, 3),
                             "evaluate_s": round(seconds, 1)})
    (out_dir / "quality.md").write_text("\n".join(tables), encoding="utf-8")
    print(f"{'model':<10} {'degradation':<13} {'scenes':>6} {'mean gain':>10} {'min gain':>9} "
          f"{'beats':>6} {'MP/s':>6}")
    for r in rows:
        print(f"{r['model']:<10} {r['degradation']:<13} {r['scenes']:>6} "
              f"{r['mean_gain_db']:>+10.2f} {r['min_gain_db']:>+9.2f} {r['beats_bicubic']:>6} "
              f"{r['output_mp_per_s']:>6.2f}")
    for name in args.models:
        gains = [r["mean_gain_db"] for r in rows if r["model"] == name]
        print(f"{name}: mean gain over all scenes and degradations {np.mean(gains):+.2f} dB")
    for e in ensemble:
        print(f"{e['model']}+ vs {e['model']} ({e['dataset']}, {e['images']} scenes): PSNR "
              f"{e['psnr_gain_db']:+.3f} dB mean, {e['min_gain_db']:+.3f} dB min; SSIM "
              f"{e['ssim_gain']:+.4f}; model time x{e['time_ratio']:.2f}")
    print(f"per-scene tables: {out_dir / 'quality.md'}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores")
    print(json.dumps({"bench": "quality", "window_px": args.window, "rows": rows,
                      **({"self_ensemble": ensemble} if args.self_ensemble else {})}))


if __name__ == "__main__":
    main()
