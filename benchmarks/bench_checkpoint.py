"""Benchmark: a third-party transformer checkpoint without a model card, from the command to the
first tile, and its memory on a large scene.

Checkpoints (random weights, seed 0, in spandrel's layouts, written as safetensors without a
card, so the pipeline must recognise them and measure their receptive field itself; timing and
memory do not depend on the weights):

* ``craft-x4``: CRAFT (Li et al., "Feature Modulation Transformer: Cross-Refinement and Spatial
  Attention...", ICCV 2023) with spandrel's default x4 hyper-parameters (48 features, 4 groups
  of 2 blocks, window 16).
* ``swinir-light-x4``: SwinIR-light (Liang et al., ICCVW 2021: 60 features, 4 x 6 Swin layers,
  window 8, pixel-shuffle-direct upsampler), x4.

Start-up: ``sr-pipeline upscale`` on a 128 x 128 px crop of the bundled sample as a subprocess
with a fresh ``SR_MODEL_CACHE`` (the first time: recognise, probe, cache) and again with the
same cache. Times from the launch: to the tiles' dispatch (the progress bar appears at 0, after
the model is recognised and probed, the scene staged and the halo chosen) and to the first tile
done (one tile of the model's own inference later); the probe's seconds come from the report.

Memory (``--memory``): peak RSS of the whole process tree (Dask workers included) for a 512 and
a 2048 px scene (mosaics of the sample), ``--tile-size 512``, and their ratio.

    .venv/bin/python benchmarks/bench_checkpoint.py [--models craft-x4 swinir-light-x4] [--memory]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import REPO, build_mosaic, run_measured

CLI = [sys.executable, "-m", "sr_core.cli"]


def make_checkpoint(name: str, folder: str) -> str:
    """Write ``name``'s random-weight checkpoint (no card); returns its path."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    if name == "craft-x4":
        from spandrel.architectures.CRAFT import CRAFT

        net = CRAFT(upscale=4)
    elif name == "swinir-light-x4":
        from spandrel.architectures.SwinIR import SwinIR

        net = SwinIR(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                     depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                     upsampler="pixelshuffledirect", resi_connection="1conv")
    else:
        raise SystemExit(f"unknown checkpoint {name}")
    path = os.path.join(folder, f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def crop(src: str, dst: str, edge: int) -> None:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as f:
        win = Window(200, 200, edge, edge)
        profile = {**f.profile, "width": edge, "height": edge,
                   "transform": f.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        profile["tiled"] = False
        with rasterio.open(dst, "w", **profile) as out:
            out.write(f.read(window=win))


def first_tile(model: str, src: str, dst: str, cache: str) -> dict:
    """Launch the CLI; seconds to the first tile done and to exit."""
    env = {**os.environ, "SR_MODEL_CACHE": cache}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "upscale", src, dst, "--model", model, "--tile-size", "64",
                             "--progress"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True, bufsize=1)
    start = first = None
    buf = ""
    while True:
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
        if ch != "[":  # a bar line is complete up to its counts: "| 3/12 ["
            continue
        counts = re.findall(r"\| *(\d+)/\d+ \[", buf[-80:])
        if counts and start is None:  # the bar appears, at 0, when the tiles are dispatched
            start = time.perf_counter() - t0
        if counts and first is None and int(counts[-1]) >= 1:
            first = time.perf_counter() - t0
    out = proc.stdout.read()
    proc.wait()
    total = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{model}: exit {proc.returncode}: {buf[-500:]}")
    report = json.loads(Path(dst).with_suffix(".report.json").read_text())
    reach = report["tiling"].get("effective_receptive_field") or {}
    return {"dispatch_s": start, "first_tile_s": first, "total_s": total,
            "probe_s": reach.get("seconds"),
            "probe_cached": reach.get("cached"),
            "halo_rule": report["tiling"]["halo_rule"], "halo_px": report["tiling"]["halo_px"],
            "tiles": report["tiling"]["tiles"], "stdout": out.strip().splitlines()[:1]}


def memory(model: str, scene: str, tmp: str) -> dict:
    rows = {}
    for edge in (512, 2048):
        src = os.path.join(tmp, f"mosaic-{edge}.tif")
        build_mosaic(scene, edge, src)
        dst = os.path.join(tmp, f"out-{edge}.tif")
        wall, peak, _ = run_measured([*CLI, "upscale", src, dst, "--model", model,
                                      "--tile-size", "512", "--no-progress"])
        rows[edge] = {"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20)}
    rows["ratio"] = round(rows[2048]["peak_rss_mb"] / rows[512]["peak_rss_mb"], 3)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["craft-x4", "swinir-light-x4"])
    ap.add_argument("--scene", default=str(REPO / "samples/landsat7_RGB.byte.tif"))
    ap.add_argument("--memory", action="store_true", help="also the 512 vs 2048 px memory run")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "crop128.tif")
        crop(args.scene, src, 128)
        base = first_tile("bicubic", src, os.path.join(tmp, "bicubic.tif"),
                          os.path.join(tmp, "cache-bicubic"))
        results["bicubic"] = base
        print(f"bicubic (no weights, no probe: the pipeline's fixed start): tiles dispatched "
              f"{base['dispatch_s']:.1f} s, first tile done {base['first_tile_s']:.1f} s",
              flush=True)
        for name in args.models:
            path = make_checkpoint(name, tmp)
            cache = os.path.join(tmp, f"cache-{name}")
            cold = first_tile(path, src, os.path.join(tmp, f"{name}-1.tif"), cache)
            warm = first_tile(path, src, os.path.join(tmp, f"{name}-2.tif"), cache)
            results[name] = {"cold": cold, "warm": warm}
            print(f"{name}: tiles dispatched {cold['dispatch_s']:.1f} s after the command the "
                  f"first time (probe {cold['probe_s']} s), {warm['dispatch_s']:.1f} s with the "
                  f"cache (read from it: {warm['probe_cached']}); first tile done "
                  f"{cold['first_tile_s']:.1f} / {warm['first_tile_s']:.1f} s; halo "
                  f"{cold['halo_px']} px ({cold['halo_rule']}), {cold['tiles']} tiles; exit "
                  f"{cold['total_s']:.1f} / {warm['total_s']:.1f} s", flush=True)
            if args.memory:
                mem = memory(path, args.scene, tmp)
                results[name]["memory"] = mem
                print(f"{name}: peak RSS 512 px {mem[512]['peak_rss_mb']} MB "
                      f"({mem[512]['wall_s']} s), 2048 px {mem[2048]['peak_rss_mb']} MB "
                      f"({mem[2048]['wall_s']} s): ratio {mem['ratio']}", flush=True)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
