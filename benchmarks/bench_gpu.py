"""Benchmark: how close ``sr-pipeline upscale`` gets to the device's compute floor, and how busy it
keeps a GPU during a scene.

For EDSR-baseline x4 (Lim et al., CVPRW 2017; random weights, as ``bench_compare.py`` makes it)
on a mosaic of a real scene (default: the Landsat 7 sample mirrored to 2048 x 2048 px), one
``sr-pipeline upscale`` run per configuration (default: ``--precision auto``, and with
``--compile``), each as a subprocess on a fresh local cluster:

* **output MP/s**: output pixels (all bands) / the ``infer`` stage's seconds (from the run's
  report), and / launch-to-exit wall seconds;
* **fraction of the compute floor**: output MP/s x FLOPs per output value (counted by
  ``torch.utils.flop_counter``) / the device's measured matmul rate, in the precision the tiles
  ran in (bf16 on CUDA, fp32 on a CPU: 8192^2 and 2048^2 products, best of 5);
* **GPU busy share** (CUDA only): ``nvidia-smi``'s utilisation of the GPU, sampled every 100 ms,
  averaged over the ``infer`` stage and over the whole run.

On a machine without CUDA it runs the same on the CPU (no busy share), so the script itself is
exercised where no GPU is lent: ``--device cpu --mosaic 512``. Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_gpu.py [--device cuda] [--mosaic 2048] [--tile-size 1024]
        [--configs auto compile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_compare import flops_per_output_value, make_edsr_baseline_x4
from measure import REPO, build_mosaic


def matmul_rate(device: str) -> tuple[float, str]:
    """Best-of-5 matmul rate (FLOP/s) of ``device`` in the precision its tiles run in."""
    import torch

    cuda = device == "cuda"
    dtype, n = (torch.bfloat16, 8192) if cuda else (torch.float32, 2048)
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, "bf16" if cuda else "fp32"


class GpuSampler:
    """``nvidia-smi`` utilisation (%) of GPU 0 every 100 ms, with perf-counter timestamps."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-i", "0", "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), float(line)))

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait()
        self._thread.join(timeout=5)

    def mean(self, t0: float, t1: float) -> float | None:
        """Mean utilisation (0..1) of the samples taken between ``t0`` and ``t1``."""
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(vals) / len(vals) / 100 if vals else None


def run_once(src: str, weights: str, device: str, tile_px: int, extra: list[str], tmp: str
             ) -> dict:
    """One ``sr-pipeline upscale``; returns its wall time, report timings and busy shares."""
    dst = os.path.join(tmp, f"out_{len(os.listdir(tmp))}.tif")
    cmd = [str(REPO / ".venv/bin/sr-pipeline"), "upscale", src, dst, "--model", weights,
           "--device", device, "--tile-size", str(tile_px), "--no-progress", *extra]
    sampler = GpuSampler() if device == "cuda" and shutil.which("nvidia-smi") else None
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    t1 = time.perf_counter()
    if sampler:
        sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    rep = json.loads(Path(dst.removesuffix(".tif") + ".report.json").read_text())
    timings = rep["timings_s"]
    # stages run in this order from launch; the infer window is where the GPU should be busy
    # the untimed part of the run (interpreter start, imports) comes first
    untimed = (t1 - t0) - sum(v for k, v in timings.items()
                              if not k.startswith("report_") and k != "total")
    before = sum(timings.get(k, 0.0) for k in ("start", "ingest", "tile", "cluster_wait"))
    infer_t0 = t0 + untimed + before
    out = {"wall_s": t1 - t0, "infer_s": timings["infer"], "dask": rep["dask"],
           "output_values": (rep["output"]["width"] * rep["output"]["height"]
                             * rep["output"]["count"])}
    if sampler:
        out["busy_infer"] = sampler.mean(infer_t0, infer_t0 + timings["infer"])
        out["busy_run"] = sampler.mean(t0, t1)
    for name in os.listdir(tmp):
        if name.startswith("out_"):
            os.remove(os.path.join(tmp, name))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=str(REPO / "samples/landsat7_RGB.byte.tif"))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--mosaic", type=int, default=2048)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--configs", nargs="+", default=["auto", "compile"],
                    choices=["auto", "fp32", "bf16", "compile"])
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine; run with --device cpu for the CPU "
              "figures (nothing measured)")
        return
    rate, rate_dtype = matmul_rate(args.device)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{os.cpu_count()}-core CPU"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_edsr_baseline_x4(tmp)
        flops = flops_per_output_value(weights)
        src = os.path.join(tmp, "mosaic.tif")
        build_mosaic(args.scene, args.mosaic, src)
        runs = os.path.join(tmp, "runs")
        os.mkdir(runs)
        for config in args.configs:
            extra = ["--compile"] if config == "compile" else ["--precision", config]
            r = run_once(src, weights, args.device, args.tile_size, extra, runs)
            mps_infer = r["output_values"] / r["infer_s"] / 1e6
            mps_wall = r["output_values"] / r["wall_s"] / 1e6
            rows.append({"config": config, "precision": r["dask"].get("precision"),
                         "wall_s": r["wall_s"], "infer_s": r["infer_s"],
                         "output_mp_per_s_infer": mps_infer, "output_mp_per_s_wall": mps_wall,
                         "floor_fraction_infer": mps_infer * 1e6 * flops / rate,
                         "busy_share_infer": r.get("busy_infer"),
                         "busy_share_run": r.get("busy_run"), "dask_tasks": r["dask"]["tasks"]})
    print(f"device: {gpu}; matmul {rate / 1e12:.2f} TFLOP/s ({rate_dtype}); EDSR-baseline x4 "
          f"{flops / 1e3:.1f} kFLOP per output value; mosaic {args.mosaic} px, tiles "
          f"{args.tile_size} px")
    print(f"{'config':<9}{'prec':<10}{'wall s':>8}{'infer s':>9}{'MP/s infer':>12}"
          f"{'MP/s wall':>11}{'floor':>8}{'busy infer':>12}{'busy run':>10}")
    for r in rows:
        busy = [f"{v:.0%}" if v is not None else "n/a"
                for v in (r["busy_share_infer"], r["busy_share_run"])]
        print(f"{r['config']:<9}{str(r['precision']):<10}{r['wall_s']:>8.1f}{r['infer_s']:>9.1f}"
              f"{r['output_mp_per_s_infer']:>12.2f}{r['output_mp_per_s_wall']:>11.2f}"
              f"{r['floor_fraction_infer']:>8.1%}{busy[0]:>12}{busy[1]:>10}")
    print(json.dumps({"benchmark": "gpu_floor", "device": gpu, "matmul_flops": rate,
                      "matmul_dtype": rate_dtype, "flops_per_output_value": flops,
                      "mosaic_px": args.mosaic, "tile_px": args.tile_size, "runs": rows}))


if __name__ == "__main__":
    sys.exit(main())
