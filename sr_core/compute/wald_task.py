"""The Wald-protocol check as a Dask task, run on a worker beside the tiles (it shares the
worker's loaded model and opened stores with :mod:`sr_core.compute.infer`)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from sr_core.compute.infer import TileJob, job_model
from sr_core.compute.worker_io import open_stores


def wald_window_task(job: TileJob, window, data_range: float,
                     planes: list[int] | None = None) -> dict:
    """Dask task: the Wald-protocol check (:func:`sr_core.quality.wald.wald_check`) on one window of
    the staged input, run on a worker beside the tiles; on the given bands / planes only (all by
    default). Checked under each degradation of :data:`sr_core.imaging.degradations.REPORT`: the
    result is the first's (bicubic, with ``"degradation"``) plus ``"by_degradation"``: ``{name:
    {"model", "bicubic", "gain_db"}}`` (with ``job.consistency`` also ``"consistent"`` and
    ``"gain_consistent_db"``: the model's output back-projected, :func:`wald_check`)."""
    from sr_core.quality.wald import WaldSetup, wald_check

    model = job_model(job)
    image, valid_arr, _, _ = open_stores(job.input_store, job.output_store)
    rows, cols = window.slices()
    norm = job.normalization
    if planes is None:
        hr = image[:, rows, cols]
        valid = valid_arr[:, rows, cols]
    else:
        hr = np.stack([image[p, rows, cols] for p in planes])
        valid = np.stack([valid_arr[p, rows, cols] for p in planes])
        norm = replace(norm, offset=tuple(norm.offset[p] for p in planes),
                       span=tuple(norm.span[p] for p in planes))
    from sr_core.imaging.degradations import REPORT

    t0 = time.perf_counter()
    by = {d: wald_check(model, hr, valid, norm, data_range, WaldSetup(d, job.consistency))
          for d in REPORT}
    result = dict(by[REPORT[0]])
    keys = ("model", "bicubic", "gain_db", "consistent", "gain_consistent_db")
    result["by_degradation"] = {d: {k: r[k] for k in keys if k in r} for d, r in by.items()}
    if planes is not None:
        result["planes"] = list(planes)
    result["seconds"] = time.perf_counter() - t0
    result["worker_pid"] = os.getpid()
    return result
