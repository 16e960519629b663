"""The self-ensemble's uncertainty layer: per output pixel, the standard deviation of the model's
eight outputs over the dihedral transforms of its input (``--self-ensemble``;
:mod:`sr_core.models.ensemble`: Timofte, Rothe & Van Gool, CVPR 2016; Lim et al., EDSR+, CVPR
Workshops 2017).

Where it lives:

* workers write it into the output Zarr's ``uncertainty`` array (``(bands, H*s, W*s)`` float32,
  chunked as ``image``; :func:`sr_core.compute.staging.create_output`), in the scene's units
  (:func:`scene_units`), NaN where the output is nodata;
* for a GeoTIFF scene :func:`stage` writes it as a COG ``DST_STEM.uncertainty.tif`` (float32, one
  band per output band, the output's width, height, CRS and affine transform, nodata NaN; the
  same streaming COG writer as the output, :func:`sr_core.formats.cog.write_cog`) at a temporary
  path; :func:`sr_core.pipeline.publish` moves it into place with the output and lists it in the
  manifest's ``outputs`` as ``"uncertainty"``;
* medical formats (DICOM, NIfTI, whole-slide images) get no layer file: their containers have no
  place for a float32 companion on the same grid that viewers would show as such; the summary
  (:func:`summarize`) is recorded in the report only.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sr_core.errors import SRError
from sr_core.imaging.normalize import Normalization

if TYPE_CHECKING:  # workers import this module: no rasterio, boto3 or manifest code for them
    from sr_core.formats import SceneInfo

#: The output Zarr array that holds the layer.
ARRAY = "uncertainty"
#: Transforms averaged by the self-ensemble (the dihedral group D4).
TRANSFORMS = 8
#: Histogram bins per band over [0, 1] normalised units for the p95 (:func:`summarize`).
HIST_BINS = 1 << 14

_LOCK = threading.Lock()
_OPEN: dict[str, object] = {}
_OPEN_KEPT = 4


def uncertainty_uri(dst: str) -> str:
    """Where the layer of output ``dst`` is published: ``DST_STEM.uncertainty.tif``."""
    from sr_core.publication.manifest import strip_ext

    return strip_ext(dst) + ".uncertainty.tif"


def scene_units(std: np.ndarray, norm: Normalization, valid: np.ndarray) -> np.ndarray:
    """The self-ensemble's standard deviation in the scene's units.

    Args:
        std: ``(bands, h, w)`` float32 >= 0, normalised model units (a tile's output core).
        norm: the scene's normalisation (one span per band of ``std``).
        valid: ``(bands, h, w)`` bool, the output's validity.

    Returns:
        ``(bands, h, w)`` float32: ``std * span[band]`` (the normalisation is affine, so a
        standard deviation scales by the span alone), NaN where not ``valid``.
    """
    span = np.broadcast_to(np.asarray(norm.span, dtype=np.float32), (std.shape[0],))
    out = std * span[:, None, None]
    out[~valid] = np.nan
    return out.astype(np.float32, copy=False)


def open_array(output_store: str):
    """The output Zarr's ``uncertainty`` array, opened once per worker process and cached (the
    last few stores), like :func:`sr_core.compute.worker_io.open_stores`.

    Raises:
        KeyError: the store has no such array (created without ``self_ensemble``).
    """
    import zarr

    with _LOCK:
        if output_store not in _OPEN:
            while len(_OPEN) >= _OPEN_KEPT:
                _OPEN.pop(next(iter(_OPEN)))
            _OPEN[output_store] = zarr.open_group(output_store, mode="r+")[ARRAY]
        return _OPEN[output_store]


def summarize(output_store: str, norm: Normalization) -> list[dict]:
    """Per band mean, 95th percentile and maximum of the layer over valid pixels, streamed one
    chunk at a time (memory: one chunk and a histogram).

    The p95 comes from a histogram of ``std / span`` over [0, 1] in :data:`HIST_BINS` bins: it
    is the upper edge of the bin where the cumulative count reaches 95 % (at most ``span /
    16384`` above the exact value), capped at the maximum.

    Args:
        output_store: the output Zarr group (arrays ``uncertainty`` and ``valid``).
        norm: the scene's normalisation (per band spans, scene units).

    Returns:
        Per band ``{"band", "valid_px", "mean", "p95", "max"}``, scene units; ``None`` figures
        for a band without valid pixels.
    """
    import zarr

    unc = zarr.open_array(output_store, path=ARRAY, mode="r")
    valid = zarr.open_array(output_store, path="valid", mode="r")
    bands, h, w = unc.shape
    cp, ch, cw = unc.chunks
    spans = np.broadcast_to(np.asarray(norm.span, dtype=np.float64), (bands,))
    hist = np.zeros((bands, HIST_BINS), dtype=np.int64)
    total, count, top = np.zeros(bands), np.zeros(bands, dtype=np.int64), np.zeros(bands)
    for p0 in range(0, bands, cp):
        for r in range(0, h, ch):
            for c in range(0, w, cw):
                u = np.asarray(unc[p0:p0 + cp, r:r + ch, c:c + cw])
                ok = np.asarray(valid[p0:p0 + cp, r:r + ch, c:c + cw]) & np.isfinite(u)
                for i in range(u.shape[0]):
                    v = u[i][ok[i]].astype(np.float64)
                    if not v.size:
                        continue
                    b = p0 + i
                    total[b] += v.sum()
                    count[b] += v.size
                    top[b] = max(top[b], float(v.max()))
                    idx = np.minimum((v / spans[b] * HIST_BINS).astype(np.int64), HIST_BINS - 1)
                    hist[b] += np.bincount(idx, minlength=HIST_BINS)
    out: list[dict[str, Any]] = []
    for b in range(bands):
        n = int(count[b])
        if not n:
            out.append({"band": b + 1, "valid_px": 0, "mean": None, "p95": None, "max": None})
            continue
        k = int(np.searchsorted(np.cumsum(hist[b]), 0.95 * n))
        p95 = min(float(top[b]), (k + 1) / HIST_BINS * float(spans[b]))
        out.append({"band": b + 1, "valid_px": n, "mean": float(total[b] / n), "p95": p95,
                    "max": float(top[b])})
    return out


def layer_scene(scene: SceneInfo) -> SceneInfo:
    """The metadata the layer's COG is written with: the scene's grid, CRS and band units;
    float32, nodata NaN, one band per output band described ``std of <band>``."""
    names = [(scene.descriptions[b] if b < len(scene.descriptions) else None)
             or f"band {b + 1}" for b in range(scene.count)]
    return replace(scene, dtype="float32", nodata=float("nan"), mask_kind="nodata",
                   descriptions=tuple(f"std of {n}" for n in names), colorinterp=(),
                   tags={}, band_tags=())


def write_layer(output_store: str, scene: SceneInfo, scale: int, path: str) -> dict:
    """Write the layer of a GeoTIFF scene as a COG at ``path`` (a temporary path) and check its
    grid against the output's.

    Returns:
        :func:`sr_core.formats.cog.write_cog`'s description of the file.

    Raises:
        StorageError: the COG cannot be written.
        SRError: the written file's size, band count, CRS or transform is not the output's.
    """
    import rasterio
    from rasterio.crs import CRS

    from sr_core.formats.cog import CogOptions, write_cog
    from sr_core.geometry.transforms import upscaled_transform

    tags = {"SR_SCALE": str(scale), "SR_LAYER": "self-ensemble std",
            "SR_TRANSFORMS": str(TRANSFORMS)}
    written = write_cog(output_store, layer_scene(scene), scale, path,
                        CogOptions(extra_tags=tags, array=ARRAY))
    want_crs = CRS.from_user_input(scene.crs).to_wkt() if scene.crs else None
    with rasterio.open(path) as ds:
        got = (ds.width, ds.height, ds.count, ds.dtypes[0])
        want = (scene.width * scale, scene.height * scale, scene.count, "float32")
        if got != want or (ds.crs.to_wkt() if ds.crs else None) != want_crs or \
                not ds.transform.almost_equals(upscaled_transform(scene.transform, scale),
                                               precision=1e-9):
            raise SRError(f"{path}: uncertainty COG is {got}, CRS {ds.crs}, transform "
                          f"{tuple(ds.transform)[:6]}; not the output's grid; not published")
    return written


def stage(run) -> dict:
    """The layer of a finished run (after :func:`sr_core.pipeline.stitch`): written beside the
    output for a GeoTIFF scene (queued in ``run.staged_outputs`` as ``"uncertainty"``, so
    :func:`sr_core.pipeline.publish` publishes it and the manifest lists it) and summarised.

    Returns:
        The report's ``self_ensemble`` section: ``{"enabled": True, "transforms": 8,
        "uncertainty_uri"`` (``None`` for medical formats), ``"units"``, ``"bands"``
        (:func:`summarize`), ``"what"}``.

    Raises:
        StorageError, SRError: as :func:`write_layer`.
    """
    from sr_core import storage
    from sr_core.formats import format_named

    uri = None
    if format_named(run.scene.format).writes_raster:  # a COG output: the layer is one too
        uri = uncertainty_uri(run.cfg.dst)
        tmp = storage.temp_path_for(uri, run.scratch)
        write_layer(run.output_store, run.scene, run.cfg.scale, tmp)
        run.staged_outputs.append(("uncertainty", tmp, uri))
    return {"enabled": True, "transforms": TRANSFORMS, "uncertainty_uri": uri,
            "units": "scene units",
            "bands": summarize(run.output_store, run.normalization),
            "what": "per output pixel, the population standard deviation of the model's outputs "
                    "over the 8 flips and 90-degree rotations of its input (self-ensemble; the "
                    "output is their mean); 0 where the model is equivariant"
                    + ("" if uri else "; no layer file for this format (summary only)")}
