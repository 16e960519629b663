"""Benchmark: the host (CPU) side of one tile, outside the model: what a worker does per tile
besides the forward pass, which caps throughput once a GPU makes the forward pass fast.

For one ``--tile-size`` px tile at ``--scale`` (default 1024 px at x4, 3 bands: a 4096 px
output core) of the Landsat 7 sample's content (mirrored to size), a stand-in model output (the
tile upsampled by nearest neighbour plus noise, float32) goes through the steps of
:func:`sr_core.compute.infer.finish_tile`, each timed ``--repeat`` times (median and slowest
printed): the LR-consistency downsampling, the nodata erosion, the conversion to the scene's dtype
(:meth:`sr_core.imaging.normalize.Normalization.from_model`) and the Zarr chunk writes. The
conversion is also timed side by side with the whole-array float64 formula it replaced (same
values).

Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_tile_host.py [--tile-size 1024] [--scale 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import rasterio
import torch
import zarr
from measure import REPO, build_mosaic

from sr_core.imaging.normalize import normalization_for
from sr_core.imaging.resample import downsample_bicubic
from sr_core.quality.metrics import erode_valid


def whole_array_from_model(norm, y: np.ndarray) -> np.ndarray:
    """The conversion as it was: one float64 temporary per arithmetic step over the whole tile."""
    off, spn = (c[:, None, None] for c in norm._coeffs(None, y.shape[0]))
    x = y.astype(np.float64) * spn + off
    info = np.iinfo(np.dtype(norm.dtype))
    return np.clip(np.rint(x), info.min, info.max).astype(norm.dtype)


def timed(fn, repeat: int) -> tuple[list[float], object]:
    """Wall seconds of each of ``repeat`` calls, and the last result. The first call counts: a
    worker meets each tile's arrays fresh (their pages faulted in), and the whole-array formula's
    time swings with that (0.4-1.7 s seen for one tile)."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=str(REPO / "samples/landsat7_RGB.byte.tif"))
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--halo", type=int, default=36, help="LR px (EDSR-baseline x4: 36)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    s, core, halo = args.scale, args.tile_size, args.halo
    read = core + 2 * halo
    with tempfile.TemporaryDirectory() as tmp:
        build_mosaic(args.scene, read, os.path.join(tmp, "tile.tif"))
        with rasterio.open(os.path.join(tmp, "tile.tif")) as ds:
            data, valid = ds.read(), ds.read_masks() > 0
        lo = [float(data[b][valid[b]].min()) for b in range(data.shape[0])]
        hi = [float(data[b][valid[b]].max()) for b in range(data.shape[0])]
        norm = normalization_for(data.dtype, lo, hi)
        x = norm.to_model(data)
        rng = np.random.default_rng(0)
        y = np.repeat(np.repeat(x, s, axis=1), s, axis=2)
        y += rng.normal(0, 0.01, y.shape).astype(np.float32)
        hr = slice(halo * s, (halo + core) * s)
        lr = slice(halo, halo + core)
        store = zarr.open_group(os.path.join(tmp, "out.zarr"), mode="w")
        shape, chunks = (data.shape[0], core * s, core * s), (data.shape[0], core * s, core * s)
        image = store.create_array("image", shape=shape, chunks=chunks, dtype=data.dtype,
                                   fill_value=0)
        mask = store.create_array("valid", shape=shape, chunks=chunks, dtype="bool",
                                  fill_value=False)
        rows = {}
        rows["normalise input (to_model)"], _ = timed(lambda: norm.to_model(data), args.repeat)
        rows["LR consistency downsampling"], _ = timed(
            lambda: downsample_bicubic(torch.from_numpy(y)[None], s)[0].numpy(), args.repeat)
        rows["nodata erosion"], _ = timed(lambda: erode_valid(valid, halo), args.repeat)
        rows["from_model, blocked (now)"], out = timed(
            lambda: norm.from_model(y[:, hr, hr]), args.repeat)
        rows["from_model, whole-array (before)"], before = timed(
            lambda: whole_array_from_model(norm, y[:, hr, hr]), args.repeat)
        assert np.array_equal(out, before)
        up = np.repeat(np.repeat(valid[:, lr, lr], s, axis=1), s, axis=2)
        rows["Zarr write, image chunk"], _ = timed(lambda: image.__setitem__(
            (slice(None), slice(None), slice(None)), out), args.repeat)
        rows["Zarr write, validity chunk"], _ = timed(lambda: mask.__setitem__(
            (slice(None), slice(None), slice(None)), up), args.repeat)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    total = sum(v for k, v in med.items() if "before" not in k)
    out_mp = out.size / 1e6
    print(f"one {core} px tile at x{s} ({data.shape[0]} bands, {out_mp:.1f} output MP), "
          f"{os.cpu_count()} cores, {args.repeat} runs each: median (slowest)")
    for k, v in rows.items():
        print(f"  {k:34} {med[k]:7.3f} s ({max(v):.3f})")
    gain = med["from_model, whole-array (before)"] / med["from_model, blocked (now)"]
    print(f"  host side per tile (now, medians)  {total:7.3f} s = {out_mp / total:.1f} output "
          f"MP/s; from_model {gain:.1f}x faster than before (same values)")
    print(json.dumps({"benchmark": "tile_host_side", "tile_px": core, "scale": s,
                      "bands": int(data.shape[0]), "cores": os.cpu_count(), "seconds": rows,
                      "median_s": med, "host_total_s": total,
                      "host_out_mp_per_s": out_mp / total}))


if __name__ == "__main__":
    main()
