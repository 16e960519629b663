"""Benchmark: sr-pipeline against the tilers users already know, side by side in one run.

On the same real scene, model, device and tile size, each method runs in its own process (so peak
RSS is its own; sampled every 50 ms over the whole process tree, Dask workers included):

1. **model alone**: the scene normalised and super-resolved in one forward pass (torch using every
   core). The floor for this machine; timed from the first forward pass to the result (no COG).
2. **sr-pipeline**: ``sr-pipeline upscale SRC DST --tile-size T`` as a subprocess, launch to exit:
   interpreter start, Dask cluster, Zarr staging, inference, COG writing and the quality report.
3. **MONAI** ``monai.inferers.sliding_window_inference`` (package ``monai``) over the whole
   in-memory scene, ROI ``T`` px, ``sw_batch_size`` 1, (a) its usual settings: overlap 0.25 and
   gaussian blending, and (b) overlap matched to ours (``2 * halo`` px of a ``T + 2 * halo`` px
   ROI) with constant blending; plus writing the in-memory result as a COG (the stitch and write
   it would need). Timed from the first window to the COG on disk.
4. **Real-ESRGAN-style loop**: a small reference harness written here (not Real-ESRGAN's code):
   the tiling loop of ``RealESRGANer.tile_process`` -- tiles of ``T`` px read with a fixed 10 px
   pad, run one at a time, the core pasted into a full in-memory output -- then the same COG write.

For each: wall seconds, output MP/s (output pixels of all bands / seconds), peak RSS, and the
maximum absolute difference from (1) over valid output pixels in output DN (seams show here).
All methods see the same input: the scene normalised per scene exactly as the pipeline does
(:func:`sr_core.imaging.normalize.normalization_for`), invalid pixels set to 0 in the model's range.

Models are registry names (``edsr-x2``, ``bicubic``, ...) or ``edsr-baseline-x4``: EDSR-baseline
(Lim et al., CVPRW 2017: 16 residual blocks, 64 features, RGB, x4) with random weights (seed 0),
written to a temporary safetensors file -- timing and seams do not depend on the weights.

``--mosaic EDGE`` runs on an ``EDGE`` x ``EDGE`` px mosaic of the scene (mirrored copies,
:func:`measure.build_mosaic`) instead: a larger real-content scene, where the pipeline's default
1024 px tiles give several tiles (on the 718 x 791 px sample one 1024 px tile is the whole scene).

    .venv/bin/python benchmarks/bench_compare.py [--scene samples/landsat7_RGB.byte.tif]
        [--models edsr-x2 edsr-baseline-x4] [--tile-size 512] [--device cpu] [--mosaic EDGE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import REPO, build_mosaic, run_measured

METHODS = ("alone", "pipeline", "monai_usual", "monai_matched", "realesrgan_loop")
REALESRGAN_PAD_PX = 10


def make_edsr_baseline_x4(folder: str) -> str:
    """EDSR-baseline x4 (RGB) with random weights (seed 0) in our format; returns the path."""
    import torch

    from sr_core.models.edsr import EDSR
    from sr_core.models.weights import save_model

    torch.manual_seed(0)
    args = {"scale": 4, "in_channels": 3, "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0,
            "rgb_range": 1.0}
    card = {"name": "edsr-baseline-x4", "architecture": "edsr", "arguments": args, "scale": 4,
            "in_channels": 3, "summary": "EDSR-baseline x4, random weights (benchmark only)"}
    return str(save_model(EDSR(**args), card, os.path.join(folder, "edsr_baseline_x4.safetensors")))


def prepared_input(scene: str):
    """The scene as every method sees it: ``(x, valid, norm, profile)`` with ``x`` the
    ``(bands, h, w)`` float32 normalised image, invalid pixels 0, ``valid`` ``(bands, h, w)``
    bool."""
    import rasterio

    from sr_core.imaging.normalize import normalization_for

    with rasterio.open(scene) as ds:
        data, valid = ds.read(), ds.read_masks() > 0
        profile = ds.profile.copy()
    lo = [float(data[b][valid[b]].min()) for b in range(data.shape[0])]
    hi = [float(data[b][valid[b]].max()) for b in range(data.shape[0])]
    norm = normalization_for(data.dtype, lo, hi)
    x = norm.to_model(data)
    x[~valid] = 0.0
    return np.ascontiguousarray(x, dtype=np.float32), valid, norm, profile


def write_cog(y_dn: np.ndarray, profile: dict, scale: int, path: str) -> None:
    """Write an in-memory ``(bands, H, W)`` output as a COG (DEFLATE, 512 px blocks, overviews),
    the settings ``sr_core.formats.cog`` uses."""
    import rasterio

    from sr_core.geometry.transforms import upscaled_transform

    prof = {"driver": "COG", "count": y_dn.shape[0], "height": y_dn.shape[1],
            "width": y_dn.shape[2], "dtype": y_dn.dtype, "crs": profile.get("crs"),
            "transform": upscaled_transform(profile["transform"], scale),
            "nodata": profile.get("nodata"), "compress": "DEFLATE", "blocksize": 512,
            "overviews": "AUTO", "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(y_dn)


def realesrgan_loop(model, x: np.ndarray, tile_px: int, pad_px: int) -> np.ndarray:
    """The tiling loop of Real-ESRGAN's ``RealESRGANer.tile_process``, re-written as a reference:
    each ``tile_px`` tile is read with ``pad_px`` of context (clipped at the border), run alone,
    and its core pasted into a full in-memory output. Returns ``(bands, h*s, w*s)`` float32."""
    s = model.scale
    bands, h, w = x.shape
    out = np.empty((bands, h * s, w * s), dtype=np.float32)
    for r0 in range(0, h, tile_px):
        for c0 in range(0, w, tile_px):
            r1, c1 = min(r0 + tile_px, h), min(c0 + tile_px, w)
            pr0, pc0 = max(r0 - pad_px, 0), max(c0 - pad_px, 0)
            pr1, pc1 = min(r1 + pad_px, h), min(c1 + pad_px, w)
            y = model.upscale(x[:, pr0:pr1, pc0:pc1])
            out[:, r0 * s:r1 * s, c0 * s:c1 * s] = y[:, (r0 - pr0) * s:(r1 - pr0) * s,
                                                     (c0 - pc0) * s:(c1 - pc0) * s]
    return out


def monai_sliding(model, x: np.ndarray, roi_px: int, overlap: float, blend: str) -> np.ndarray:
    """``monai.inferers.sliding_window_inference`` over the whole scene (bands as the batch for a
    1-channel model, band groups otherwise, as :class:`sr_core.models.base.SRModel` does)."""
    import torch
    from monai.inferers import sliding_window_inference

    c = model.descriptor.in_channels
    bands, h, w = x.shape
    t = torch.from_numpy(x)
    groups = -(-bands // c)
    if groups * c > bands:
        t = torch.cat([t, t[-1:].expand(groups * c - bands, h, w)])
    with torch.inference_mode():
        # SRModel._forward: the network as configured (memory format, precision), as a tile runs
        y = sliding_window_inference(t.reshape(groups, c, h, w), roi_size=(roi_px, roi_px),
                                     sw_batch_size=1, predictor=model._forward, overlap=overlap,
                                     mode=blend)
    s = model.scale
    return y.reshape(groups * c, h * s, w * s)[:bands].cpu().numpy()


def child(method: str, scene: str, model_ref: str, device: str, tile_px: int, out_npy: str,
          tmp: str) -> None:
    """Run one in-process method; print a JSON line; save the output (DN) to ``out_npy``."""
    import torch

    from sr_core.models.base import configure_for_device
    from sr_core.models.registry import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    x, valid, norm, profile = prepared_input(scene)
    # configured as the pipeline's workers run it (channels-last; bf16 on CUDA), for every method
    model = configure_for_device(load_model(model_ref, device=device))
    halo = model.descriptor.receptive_field_px
    t0 = time.perf_counter()
    if method == "alone":
        y = model.upscale(x)
    elif method == "realesrgan_loop":
        y = realesrgan_loop(model, x, tile_px, REALESRGAN_PAD_PX)
    elif method == "monai_usual":
        y = monai_sliding(model, x, tile_px, 0.25, "gaussian")
    elif method == "monai_matched":
        roi = tile_px + 2 * halo
        y = monai_sliding(model, x, roi, 2 * halo / roi, "constant")
    else:
        raise SystemExit(f"unknown method {method}")
    y_dn = norm.from_model(y)
    if method != "alone":
        write_cog(y_dn, profile, model.scale, os.path.join(tmp, f"{method}.tif"))
    seconds = time.perf_counter() - t0
    np.save(out_npy, y_dn)
    print(json.dumps({"seconds": seconds, "halo_px": halo, "scale": model.scale}))


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    """This machine's measured fp32 matmul rate (GFLOP/s) with torch using every core: the best of
    ``repeat`` ``(n x n) @ (n x n)`` products (2 n^3 FLOPs each)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def flops_per_output_value(model_ref: str) -> float:
    """FLOPs the model spends per output value (one band of one HR pixel), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on a 64 x 64 px LR input."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sr_core.models.registry import load_model

    model = load_model(model_ref, device="cpu")
    c, s = model.descriptor.in_channels, model.scale
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.module(torch.rand(1, c, 64, 64))
    return counter.get_total_flops() / (c * (64 * s) ** 2)


def max_diff(reference: np.ndarray, other: np.ndarray, valid_up: np.ndarray) -> float:
    """Largest |other - reference| over valid output pixels, in output DN."""
    d = np.abs(other.astype(np.float64) - reference.astype(np.float64))
    return float(d[valid_up].max())


def compare_model(scene: str, model_ref: str, device: str, tile_px: int, tmp: str) -> list[dict]:
    """All methods for one model; returns one row per method."""
    import rasterio

    py, rows, ref = sys.executable, [], None
    _, valid, _, _ = prepared_input(scene)
    for method in METHODS:
        out_npy = os.path.join(tmp, f"{method}.npy")
        if method == "pipeline":
            dst = os.path.join(tmp, "pipeline.tif")
            cmd = [str(Path(py).parent / "sr-pipeline"), "upscale", scene, dst, "--model",
                   model_ref, "--device", device, "--tile-size", str(tile_px), "--no-progress"]
            wall, rss, _ = run_measured(cmd)
            seconds = wall
            with rasterio.open(dst) as ds:
                y = ds.read()
            rep = json.loads(Path(tmp, "pipeline.report.json").read_text())
            extra = {"inside_s": rep["timings_s"]["total"], "tiles": rep["tiling"]["tiles"],
                     "halo_overhead": rep["tiling"]["halo_overhead"]}
        else:
            wall, rss, out = run_measured([py, __file__, "--child", method, "--scene", scene,
                                           "--models", model_ref, "--device", device,
                                           "--tile-size", str(tile_px), "--out", out_npy,
                                           "--tmp", tmp])
            info = json.loads(out.strip().splitlines()[-1])
            seconds, y, extra = info["seconds"], np.load(out_npy), {"process_s": wall}
            os.remove(out_npy)
        if method == "alone":
            ref = y
            scale = y.shape[1] // valid.shape[1]
            valid_up = np.repeat(np.repeat(valid, scale, axis=1), scale, axis=2)
        out_mp = y.size / 1e6
        rows.append({"model": model_ref, "method": method, "seconds": seconds,
                     "out_mp_per_s": out_mp / seconds, "peak_rss_mb": rss / 2**20,
                     "max_diff_dn": max_diff(ref, y, valid_up), **extra})
        print(f"  {model_ref:18} {method:16} {seconds:8.2f} s {out_mp / seconds:8.3f} MP/s "
              f"{rss / 2**20:7.0f} MB  max diff {rows[-1]['max_diff_dn']:.3f} DN", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=str(REPO / "samples/landsat7_RGB.byte.tif"))
    ap.add_argument("--models", nargs="+", default=["edsr-x2", "edsr-baseline-x4"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--mosaic", type=int, default=None, metavar="EDGE",
                    help="run on an EDGE x EDGE px mosaic of the scene")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.scene, args.models[0], args.device, args.tile_size, args.out,
              args.tmp)
        return
    rows, floors = [], {}
    gflops = matmul_gflops()
    print(f"measured fp32 matmul rate: {gflops:.1f} GFLOP/s ({os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.mosaic:
            build_mosaic(args.scene, args.mosaic, os.path.join(tmp, "mosaic.tif"))
            args.scene = os.path.join(tmp, "mosaic.tif")
        for ref in args.models:
            if ref == "edsr-baseline-x4":
                ref = make_edsr_baseline_x4(tmp)
            fpv = flops_per_output_value(ref)
            # the compute floor: output MP/s if every FLOP ran at the matmul rate
            floors[ref] = {"flops_per_output_value": fpv,
                           "floor_out_mp_per_s": gflops * 1e3 / fpv if fpv else None}
            rows += compare_model(args.scene, ref, args.device, args.tile_size, tmp)
    print(f"scene {args.scene} ({args.mosaic or 'not a'} px mosaic), device {args.device}, "
          f"{os.cpu_count()} cores, tile {args.tile_size} px")
    print(f"{'model':20}{'method':18}{'seconds':>9}{'MP/s':>9}{'RSS MB':>8}{'max diff DN':>13}"
          f"{'vs alone':>10}")
    for r in rows:
        alone = next(a for a in rows if a["model"] == r["model"] and a["method"] == "alone")
        print(f"{Path(r['model']).stem:20}{r['method']:18}{r['seconds']:9.2f}"
              f"{r['out_mp_per_s']:9.3f}{r['peak_rss_mb']:8.0f}{r['max_diff_dn']:13.3f}"
              f"{r['seconds'] / alone['seconds']:10.2f}")
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["method"]: r for r in rows if r["model"] == model}
        p = by["pipeline"]["out_mp_per_s"]
        print(f"{Path(model).stem}: pipeline throughput / MONAI usual "
              f"{p / by['monai_usual']['out_mp_per_s']:.2f}, / MONAI matched "
              f"{p / by['monai_matched']['out_mp_per_s']:.2f}, / Real-ESRGAN-style loop "
              f"{p / by['realesrgan_loop']['out_mp_per_s']:.2f}")
        fl = floors[model]
        if fl["floor_out_mp_per_s"]:
            print(f"{Path(model).stem}: {fl['flops_per_output_value'] / 1e3:.1f} kFLOP per output "
                  f"value; compute floor {fl['floor_out_mp_per_s']:.3f} MP/s; model alone reaches "
                  f"{by['alone']['out_mp_per_s'] / fl['floor_out_mp_per_s']:.0%} of it, the "
                  f"pipeline {p / fl['floor_out_mp_per_s']:.0%}")
    print(json.dumps({"benchmark": "compare_tilers", "scene": args.scene, "device": args.device,
                      "cores": os.cpu_count(), "tile_size_px": args.tile_size,
                      "mosaic_px": args.mosaic, "matmul_gflops": gflops, "floors": floors,
                      "runs": rows}))


if __name__ == "__main__":
    main()
