"""Benchmark: the network's memory format, NCHW (PyTorch's default) against channels-last (NHWC),
for every architecture in the registry, side by side in one process.

Why: :func:`sr_core.models.base.configure_for_device` runs every model channels-last, on a CPU
too, because oneDNN's NHWC convolutions were faster for each architecture on this project's
machine. This script is where that claim is measured. Each architecture is built with its
paper's default arguments at x2 (random weights, seed 0; timing does not depend on the weights),
then timed on a ``--size`` px random input, best of ``--repeat`` forward passes after a warm-up,
first in NCHW and then converted to channels-last; the largest absolute difference between the
two outputs (values in [0, 1]) shows the layout changes rounding only.

Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_layout.py [--size 192] [--repeat 2] [--device cpu]
        [--architectures edsr vdsr ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sr_core.models.registry import ARCHITECTURES, build_module


def best_time(module: torch.nn.Module, x: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    """Best wall seconds of ``repeat`` forward passes of ``x`` (after one small warm-up)."""
    with torch.inference_mode():
        module(x[..., :32, :32])
        best, y = float("inf"), None
        for _ in range(repeat):
            t0 = time.perf_counter()
            y = module(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=192, help="input edge, LR px")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES),
                    choices=list(ARCHITECTURES), metavar="NAME")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    print(f"{'architecture':14}{'NCHW (s)':>10}{'NHWC (s)':>10}{'speed-up':>10}{'max diff':>11}")
    for arch in args.architectures:
        if arch == "bicubic":
            continue  # no convolutions
        torch.manual_seed(0)
        module = build_module(arch, scale=2).eval().to(args.device)
        # the first convolution's input channels (RRDBNet at x2 unshuffles 3 -> 12 itself)
        channels = 3 if arch == "rrdbnet" else next(module.parameters()).shape[1]
        x = torch.rand(1, channels, args.size, args.size, device=args.device)
        nchw, y_nchw = best_time(module, x, args.repeat)
        module = module.to(memory_format=torch.channels_last)
        nhwc, y_nhwc = best_time(module, x.contiguous(memory_format=torch.channels_last),
                                 args.repeat)
        diff = float((y_nchw - y_nhwc).abs().max())
        rows.append({"architecture": arch, "nchw_s": nchw, "nhwc_s": nhwc,
                     "speedup": nchw / nhwc, "max_abs_diff": diff})
        print(f"{arch:14}{nchw:10.3f}{nhwc:10.3f}{nchw / nhwc:9.2f}x{diff:11.1e}", flush=True)
    print(json.dumps({"benchmark": "memory_format", "device": args.device,
                      "cores": os.cpu_count(), "input_px": args.size, "runs": rows}))


if __name__ == "__main__":
    main()
