"""The ``stitch`` stage and the checks of its output: the output Zarr written at a temporary path
in the output's format (:func:`stitch`), re-opened and checked before anything is published
(:func:`validate_output`), and a COG's streamed statistics and seam metric
(:func:`measure_output`, kept for the report).

May import: :mod:`sr_core.storage`, :mod:`sr_core.formats`, :mod:`sr_core.quality` (metrics,
scan, uncertainty), :mod:`sr_core.publication.journal` and the pipeline's run module.
"""

from __future__ import annotations

import os
import time

import numpy as np

from sr_core import storage
from sr_core.errors import SRError
from sr_core.formats import format_named, open_input, write_output
from sr_core.pipeline.run import Run, required, timed
from sr_core.publication import journal


def stitch(run: Run) -> Run:
    """Write the output Zarr at a temporary path (nothing at DST yet): a COG, or the medical
    input's own format (:func:`sr_core.formats.write_output`); then re-open and check it
    (:func:`validate_output`). With the self-ensemble, the uncertainty layer is written beside
    it and summarised (:func:`sr_core.quality.uncertainty.stage`).

    Raises:
        StorageError: the output cannot be written.
        SRError: the written output fails validation (nothing is published).
    """
    from sr_core.quality import uncertainty

    scene, tiling = run.ingested("stitch"), run.tiled("stitch")
    with timed(run, "stitch"):
        temp_output = storage.temp_path_for(run.cfg.dst.rstrip("/"), run.scratch)
        run.temp_output = temp_output
        run.written = write_output(tiling.output_store, scene, run.scale, temp_output,
                                   model_name=run.model.descriptor.name, dst_uri=run.cfg.dst)
        if format_named(scene.format).writes_raster:
            run.local_cog = temp_output
        validate_output(run)
        if run.cfg.self_ensemble:
            run.uncertainty = uncertainty.stage(run)
    journal.crash_point("stitched")
    return run


def _check_stats(run: Run, stats: list[dict]) -> None:
    """Per band: valid pixels where the input had some, finite values, not all zero unless the
    input was."""
    staged, name = run.tiled("validate_output").staged, run.cfg.dst
    for b, st in enumerate(stats):
        lo, hi = staged.band_min[b], staged.band_max[b]
        if staged.valid_px[b] == 0:
            continue
        if not st["valid_px"]:
            raise SRError(f"{name}: output band {b + 1} has no valid pixel (the input has "
                          f"{staged.valid_px[b]}); not published")
        if not (np.isfinite(st["min"]) and np.isfinite(st["max"])):
            raise SRError(f"{name}: output band {b + 1} holds non-finite values; not published")
        if st["min"] == st["max"] == 0 and not lo == hi == 0:
            raise SRError(f"{name}: output band {b + 1} is all zero but the input is not; "
                          "not published")


def _zarr_stats(store: str) -> list[dict]:
    """Per plane valid count, min and max of the output Zarr, one chunk at a time."""
    import zarr

    image = zarr.open_array(store, path="image", mode="r")
    valid = zarr.open_array(store, path="valid", mode="r")
    planes, h, w = image.shape
    _, ch, cw = image.chunks
    out = []
    for p in range(planes):
        n, lo, hi = 0, np.inf, -np.inf
        for r in range(0, h, ch):
            for c in range(0, w, cw):
                ok = np.asarray(valid[p, r:r + ch, c:c + cw])
                if ok.any():
                    v = np.asarray(image[p, r:r + ch, c:c + cw])[ok].astype(np.float64)
                    n, lo, hi = n + v.size, min(lo, v.min()), max(hi, v.max())
        out.append({"valid_px": n, "min": float(lo) if n else None,
                    "max": float(hi) if n else None})
    return out


def validate_output(run: Run) -> None:
    """Re-open the written output and check it before anything is published.

    COG: size, band count, dtype, CRS and affine transform (the input's, pixel size divided by
    the scale) as expected; statistics streamed from the file (:func:`measure_output`, kept for
    the report): every band with valid input has valid output, finite, and not all zero unless
    the input was. Medical outputs: re-opened with :func:`sr_core.formats.open_input` (size,
    planes, dtype); statistics of the output Zarr, as for a COG.

    Raises:
        SRError: a check failed (the message names DST and the check).
    """
    scene, s, dst = run.ingested("validate_output"), run.scale, run.cfg.dst
    required(run.written, "validate_output", "stitch")  # stitch has written the output
    temp_output = required(run.temp_output, "validate_output", "stitch")
    if format_named(scene.format).writes_raster:
        import rasterio
        from affine import Affine

        with rasterio.open(temp_output) as ds:
            got = (ds.width, ds.height, ds.count, ds.dtypes[0])
            want = (scene.width * s, scene.height * s, scene.count, scene.dtype)
            if got != want:
                raise SRError(f"{dst}: written COG is {got}, expected {want}; not published")
            if (ds.crs.to_wkt() if ds.crs else None) != (
                    rasterio.crs.CRS.from_user_input(scene.crs).to_wkt() if scene.crs else None):
                raise SRError(f"{dst}: written COG has CRS {ds.crs}, expected {scene.crs}; "
                              "not published")
            t = Affine(*scene.transform[:6]) @ Affine.scale(1 / s)
            if not ds.transform.almost_equals(t, precision=1e-9):
                raise SRError(f"{dst}: written COG has transform {tuple(ds.transform)[:6]}, "
                              f"expected {tuple(t)[:6]}; not published")
        t0 = time.perf_counter()
        run.measures = measure_output(run)
        run.timings["report_measure"] = time.perf_counter() - t0
        _check_stats(run, run.measures["band_stats"]["output"])
        return
    path = temp_output
    if os.path.isfile(path):  # readers such as nibabel go by the extension: give them DST's name
        path = os.path.join(run.scratch, "check-" + os.path.basename(dst.rstrip("/")))
        storage.discard(path)
        os.symlink(os.path.abspath(temp_output), path)
    out = open_input(path, name=dst)
    size = (out.width, out.height, out.count)
    expected = (scene.width * s, scene.height * s, scene.count)
    if size != expected:
        raise SRError(f"{dst}: written output is {size} (width, height, planes), expected "
                      f"{expected}; not published")
    _check_stats(run, _zarr_stats(run.tiled("validate_output").output_store))


def measure_output(run: Run) -> dict:
    """Stream the input and the published COG once each (bounded memory): per-band statistics,
    histograms, and the seam metric of the output's tile grid.

    Returns:
        ``{"seam": ..., "band_stats": {"input", "output"}, "histograms": {"input", "output"}}``
        (see :func:`sr_core.quality.metrics.seam_metric` and
        :class:`sr_core.quality.scan.RasterScan`).
    """
    from sr_core.quality.metrics import seam_metric
    from sr_core.quality.scan import scan_raster

    scene, norm = run.ingested("measure_output"), run.tiled("measure_output").normalization
    local_cog = required(run.local_cog, "measure_output", "stitch")
    ranges = [(o, o + s) for o, s in zip(norm.offset, norm.span, strict=True)]
    scan_in = scan_raster(scene.path, ranges, pair_profiles=False, name=scene.name)
    scan_out = scan_raster(local_cog, ranges, name=run.cfg.dst)
    seam = seam_metric(scan_out.col_pair_sum, scan_out.col_pair_n, scan_out.row_pair_sum,
                       scan_out.row_pair_n, tile_px=run.cfg.tile_size_px * run.scale,
                       scale=run.scale)
    return {"seam": seam,
            "band_stats": {"input": scan_in.band_stats(), "output": scan_out.band_stats()},
            "histograms": {"input": scan_in.histograms(), "output": scan_out.histograms()}}
