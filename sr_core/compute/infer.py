"""Worker-side inference: what one Dask task does with a batch of tiles.

A task receives a small, picklable :class:`TileJob` (store paths, a model *reference*, the
scene's normalisation) and a list of tiles. The model is loaded from its weights once per worker
process and cached there; it never travels inside the task graph.

For each tile the task reads the read window (core plus halo) from the input Zarr, runs the model,
crops the core, converts back to the scene's units and dtype, applies the upscaled validity mask
and writes the core to its one output chunk. It also measures LR consistency (the SR core
downsampled back by the scale versus the input core) so the report needs no second pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sr_core.compute.worker_io import chunk_files, io_threads, open_stores, trim_heap
from sr_core.geometry.tiling import Tile
from sr_core.imaging.normalize import Normalization
from sr_core.quality import uncertainty

_CACHE: dict[tuple, object] = {}
#: Images (bands, planes) per forward pass on a worker: bounds memory for volumes with hundreds
#: of planes; results do not depend on it.
MAX_BATCH = 16
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TileJob:
    """Everything a tile task needs, small enough to send with every task.

    Attributes:
        input_store, output_store: local paths of the input and output Zarr groups.
        model_ref: registry name or weights path (see :func:`sr_core.models.registry.load_model`).
        scale: upscaling factor.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; resolved on the worker.
        torch_threads: intra-op threads per worker process (cores / workers).
        normalization: the scene's normalisation.
        nodata: the scene's nodata value, or ``None``.
        work: the run's work directory (:mod:`sr_core.publication.journal`): each tile's completion
            marker is written there after its output chunks; ``None`` records nothing.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on a CPU), ``"fp32"`` or ``"bf16"``.
        compile: run the network through ``torch.compile``.
        tile_batch: tiles of one shape per forward pass; ``None``: :func:`auto_tile_batch`.
        self_ensemble: run the eight-transform self-ensemble and write the uncertainty layer.
        consistency: degradation name for the LR-consistency back-projection, or ``None``.
    """

    input_store: str
    output_store: str
    model_ref: str
    scale: int
    device: str
    torch_threads: int
    normalization: Normalization
    nodata: float | None
    work: str | None = None
    precision: str = "auto"
    compile: bool = False
    tile_batch: int | None = None
    self_ensemble: bool = False
    consistency: str | None = None


@dataclass(frozen=True)
class TileResult:
    """What one tile reports back (small).

    Attributes:
        row, col: tile index; seconds: the task's wall time from the previous tile's completion
        (or the task's start) to this one's: reading, the model, writing its chunks and, in a
        resumable run, its durable completion marker, overlapped as the task runs them (the
        tiles of a task sum to its wall time); valid_px: LR pixel
        values of the core compared for LR consistency (valid and not within reach of nodata);
        lr_sse: sum of squared errors of the SR core
        downsampled back against the input core, over valid values, in scene units squared;
        skipped: True when the tile had no valid pixel and the model was not run; device: where
        the model ran.
        consistency_sse: with ``--consistency`` only (else ``None``, also in journal records
        written before it existed): for each degradation of
        :data:`sr_core.imaging.degradations.REPORT`, ``{"before", "after", "after_unclipped",
        "unclipped_px"}``: the SSE of the core as written, degraded back, against the input core
        over the same ``valid_px`` values, scene units squared, without and with the
        back-projection, and with it over the ``unclipped_px`` values whose footprint holds no
        clipped output pixel (:func:`sr_core.quality.consistency.lr_sse`).
    """

    row: int
    col: int
    seconds: float
    valid_px: int
    lr_sse: float
    skipped: bool
    device: str
    consistency_sse: dict[str, dict[str, float]] | None = None


def get_model(model_ref: str, scale: int, device: str, torch_threads: int,
              precision: str = "auto", compile: bool = False):
    """The model for this worker process, loaded once, cached, and configured by
    :func:`sr_core.models.base.configure_for_device` (channels-last; bf16 on CUDA).

    Returns:
        An :class:`sr_core.models.base.SRModel`.

    Raises:
        ModelError: unknown model or unusable weights.
        InputError: an unknown precision.
    """
    import torch

    # OpenMP's thread count belongs to the calling thread, and Dask's nanny starts workers with
    # OMP_NUM_THREADS=1: set it in the thread that runs this task, every time.
    if torch_threads > 0 and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    key = (model_ref, scale, device, precision, compile)
    with _LOCK:
        if key not in _CACHE:
            from sr_core.models.base import configure_for_device
            from sr_core.models.registry import load_model

            model = load_model(model_ref, scale=scale, device=device)
            if model.max_batch is None:
                # a volume's planes are bands too: bound the images per forward pass
                model.max_batch = MAX_BATCH
            _CACHE[key] = configure_for_device(model, precision, compile)
        return _CACHE[key]


def job_model(job: TileJob):
    """:func:`get_model` for a :class:`TileJob`. With ``job.self_ensemble`` a copy with
    :attr:`~sr_core.models.base.SRModel.self_ensemble` on, sharing the loaded network, cached
    under its own key.

    Raises:
        ModelError: unknown model or unusable weights.
        InputError: an unknown precision.
    """
    plain = get_model(job.model_ref, job.scale, job.device, job.torch_threads, job.precision,
                      job.compile)
    if not job.self_ensemble:
        return plain
    key = (job.model_ref, job.scale, job.device, job.precision, job.compile, True)
    with _LOCK:
        return _CACHE.setdefault(key, replace(plain, self_ensemble=True))


#: A CUDA worker batches tiles up to this many LR pixels per forward pass (at most
#: ``MAX_TILE_BATCH`` tiles): 4 MP is four 1024 px tiles.
TILE_BATCH_LR_PX = 4 * 1024 * 1024
MAX_TILE_BATCH = 8


def auto_tile_batch(model, tile_px: int) -> int:
    """Tiles per forward pass when :attr:`TileJob.tile_batch` is not set: 1 on a CPU (torch
    already spreads one tile over every core); on CUDA as many as fit in
    :data:`TILE_BATCH_LR_PX` (1 to :data:`MAX_TILE_BATCH`), so small tiles fill the GPU.

    Args:
        model: the loaded model; tile_px: LR pixels of one tile's read window (>= 1).

    Returns:
        An integer from 1 to :data:`MAX_TILE_BATCH`.
    """
    if model.device.type != "cuda":
        return 1
    return max(1, min(MAX_TILE_BATCH, TILE_BATCH_LR_PX // max(1, tile_px)))


def _keep_off_nodata(out: np.ndarray, valid: np.ndarray, nodata: float | None) -> None:
    """Valid output values that happen to equal the nodata value are moved one step off it, so
    they are not read as nodata; invalid ones are set to nodata (NaN for floats without one)."""
    if nodata is None:
        if np.issubdtype(out.dtype, np.floating):
            out[~valid] = np.nan
        return
    clash = valid & (out == nodata)
    if clash.any():
        if np.issubdtype(out.dtype, np.integer):
            step = 1 if nodata < np.iinfo(out.dtype).max else -1
            out[clash] = nodata + step
        else:
            out[clash] = np.nextafter(out.dtype.type(nodata), out.dtype.type(np.inf))
    out[~valid] = nodata


def job_reach(job: TileJob, model) -> int:
    """LR px around a pixel that its SR value and the value downsampled back depend on."""
    return model.descriptor.receptive_field_px + 2


def warm_worker(model_ref: str, scale: int, device: str, torch_threads: int,
                precision: str = "auto", compile: bool = False) -> str:
    """Load the model on a worker ahead of the first tile (run while the scene is staged)."""
    return str(get_model(model_ref, scale, device, torch_threads, precision, compile).device)


@dataclass
class TileInput:
    """A tile's read window, as :func:`read_tile` returns it: ``data`` ``(bands, h, w)`` in the
    scene's dtype, ``valid`` bool of that shape, ``x`` the normalised float32 model input
    (``None`` when the core has no valid pixel), ``t0`` when reading started (perf counter)."""

    data: np.ndarray
    valid: np.ndarray
    x: np.ndarray | None
    t0: float


def read_tile(job: TileJob, tile: Tile, src_image, src_valid) -> TileInput:
    """Read a tile's window (core plus halo) from the input Zarr and normalise it.

    Args:
        src_image, src_valid: the staged input, ``(bands, H, W)`` in the scene's dtype and bool.

    Returns:
        A :class:`TileInput` (``x`` float32, normalised to [0, 1] nominally, 0 where invalid).

    Raises:
        OSError, zarr errors: the staged store cannot be read.
    """
    t0 = time.perf_counter()
    rrows, rcols = tile.read.slices()
    data = src_image[:, rrows, rcols]
    valid = src_valid[:, rrows, rcols]
    crows, ccols = tile.core_in_read.slices()
    x = None
    if valid[:, crows, ccols].any():
        x = job.normalization.to_model(data)
        x[~valid] = 0.0
    return TileInput(data, valid, x, t0)


#: What the model made of one tile (:func:`run_model`): ``(y, std)``.
ModelOutput = tuple[np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class OutputArrays:
    """The output Zarr's arrays a task writes its tiles' cores to.

    Attributes:
        image, valid: ``(bands, H*s, W*s)`` in the scene's dtype and bool (``zarr.Array``).
        uncertainty: the self-ensemble's ``uncertainty`` array (float32, shaped as ``image``),
            or ``None`` (no self-ensemble).
    """

    image: Any
    valid: Any
    uncertainty: Any = None

    def chunk_files(self, row: int, col: int) -> list[str]:
        """The files of tile ``(row, col)``'s chunks in every array
        (:func:`sr_core.compute.worker_io.chunk_files`)."""
        return [f for arr in (self.image, self.valid, self.uncertainty) if arr is not None
                for f in chunk_files(arr, row, col)]


def finish_tile(job: TileJob, tile: Tile, model, inp: TileInput, out: ModelOutput,
                dst: OutputArrays) -> TileResult:
    """Crop the SR core, measure LR consistency, convert to the scene's units and write the core
    to its one output chunk (all-nodata tiles: nodata, without the model).

    Args:
        out: ``(y, std)``: ``y`` the model's output for ``inp.x``, ``(bands, h*s, w*s)`` float32
            normalised, ``None`` when ``inp.x`` is; ``std`` the self-ensemble's standard
            deviation for ``inp.x``, shaped as ``y``, normalised units, or ``None``.
        dst: the output arrays; with ``dst.uncertainty`` the core's std is written there in
            scene units (:func:`sr_core.quality.uncertainty.scene_units`), NaN where the output is
            invalid.

    Returns:
        The tile's :class:`TileResult` (``seconds`` from the start of its read).

    Raises:
        OSError: the chunk cannot be written (ENOSPC on a full scratch disk).
    """
    import torch

    from sr_core.imaging.resample import downsample_bicubic
    from sr_core.quality.metrics import erode_valid

    s, (y, std) = job.scale, out
    data, valid = inp.data, inp.valid
    crows, ccols = tile.core_in_read.slices()
    core_valid = valid[:, crows, ccols]
    out_rows, out_cols = tile.core.scaled(s).slices()
    valid_up = np.repeat(np.repeat(core_valid, s, axis=1), s, axis=2)
    if y is None:
        fill = np.full(valid_up.shape, job.nodata if job.nodata is not None else 0,
                       dtype=data.dtype)
        _keep_off_nodata(fill, valid_up, job.nodata)
        dst.image[:, out_rows, out_cols] = fill
        dst.valid[:, out_rows, out_cols] = valid_up
        if dst.uncertainty is not None:
            dst.uncertainty[:, out_rows, out_cols] = np.full(valid_up.shape, np.nan,
                                                             dtype=np.float32)
        return TileResult(tile.row, tile.col, time.perf_counter() - inp.t0, 0, 0.0, True,
                          str(model.device))
    consistency_sse = None
    if job.consistency is not None:  # --consistency: correct y on the whole read window
        y, consistency_sse = _project(job, job.consistency, tile, model, inp, y)
    # LR consistency on the whole read window (the halo keeps the core free of edge effects).
    back = downsample_bicubic(torch.from_numpy(np.ascontiguousarray(y))[None], s)[0].numpy()
    back = job.normalization.from_model(back[:, crows, ccols]).astype(np.float64)
    ref = data[:, crows, ccols].astype(np.float64)
    # compare only where the SR core and its downsampling saw valid input (halo included)
    reach = job_reach(job, model)
    eval_valid = erode_valid(valid, reach)[:, crows, ccols]
    lr_sse = float(((back - ref)[eval_valid] ** 2).sum())
    hr_core = tile.core_in_read.scaled(s).slices()
    core = job.normalization.from_model(y[:, hr_core[0], hr_core[1]])
    _keep_off_nodata(core, valid_up, job.nodata)
    dst.image[:, out_rows, out_cols] = core
    dst.valid[:, out_rows, out_cols] = valid_up
    if dst.uncertainty is not None and std is not None:
        dst.uncertainty[:, out_rows, out_cols] = uncertainty.scene_units(
            std[:, hr_core[0], hr_core[1]], job.normalization, valid_up)
    return TileResult(tile.row, tile.col, time.perf_counter() - inp.t0, int(eval_valid.sum()),
                      lr_sse, False, str(model.device), consistency_sse)


def _project(job: TileJob, degradation: str, tile: Tile, model, inp: TileInput, y: np.ndarray
             ) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """``--consistency``: :func:`sr_core.quality.consistency.back_project` of the model output
    ``y`` (``(bands, h*s, w*s)`` float32, normalised) onto the read window's input ``inp.x``
    under ``degradation`` (``job.consistency``), on the model's device; the halo includes
    :func:`sr_core.quality.consistency.consistency_halo_px`, so the core equals the whole image's.

    Returns:
        ``(corrected y, {degradation: {"before", "after", "after_unclipped", "unclipped_px"}})``
        (see :class:`TileResult`).
    """
    from sr_core.quality.consistency import LRReference, back_project, lr_sse
    from sr_core.quality.metrics import erode_valid

    x = inp.x
    assert x is not None  # the model ran on this tile (``y``), so it had an input
    crows, ccols = tile.core_in_read.slices()
    eval_valid = erode_valid(inp.valid, job_reach(job, model))[:, crows, ccols]
    device = model.device if model.device.type == "cuda" else "cpu"
    projected = back_project(y, x, inp.valid, degradation, job.scale, device=device)
    ref = LRReference(inp.data[:, crows, ccols], job.normalization, tile.core_in_read,
                      eval_valid, job.scale, job.nodata)
    before, after = lr_sse(y, ref), lr_sse(projected, ref)
    return projected, {d: {"before": before[d][0], "after": after[d][0],
                           "after_unclipped": after[d][1], "unclipped_px": after[d][2]}
                       for d in before}


def run_model(model, inputs: list[TileInput], self_ensemble: bool) -> list[ModelOutput]:
    """The model on a group of tiles in one batch: per tile ``(y, std)``, ``y`` the output
    (the self-ensemble's mean with ``self_ensemble``), ``std`` the self-ensemble's standard
    deviation or ``None``; ``(None, None)`` for a tile without model input (``inp.x is None``).
    Arrays as :meth:`sr_core.models.base.SRModel.upscale_many_with_std` returns them."""
    xs = [inp.x for inp in inputs if inp.x is not None]
    pairs: Iterator[ModelOutput]
    if not xs:
        pairs = iter([])
    elif self_ensemble:
        pairs = iter(model.upscale_many_with_std(xs))
    else:
        pairs = ((y, None) for y in model.upscale_many(xs))
    return [next(pairs) if inp.x is not None else (None, None) for inp in inputs]


def _groups(tiles: list[Tile], batch: int) -> list[list[Tile]]:
    """Consecutive tiles cut into groups of at most ``batch`` sharing one read-window shape."""
    groups: list[list[Tile]] = []
    for t in tiles:
        shape = (t.read.height, t.read.width)
        if groups and len(groups[-1]) < batch and \
                (groups[-1][0].read.height, groups[-1][0].read.width) == shape:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def run_tiles(job: TileJob, tiles: list[Tile]) -> list[TileResult]:
    """Dask task: super-resolve a batch of tiles (see module docstring).

    The tiles run as a pipeline so the model (the GPU) is not kept waiting: a reader thread reads
    and normalises the next group of tiles while the model runs on the current one, and, on CUDA
    or with groups of several tiles, a writer thread finishes the previous group (LR
    consistency, conversion, chunk writes, journal markers); otherwise this thread does. Tiles of
    one read-window shape run ``job.tile_batch`` at a time in one forward pass
    (:func:`auto_tile_batch`). At most three groups are in memory at once.

    Args:
        job: the scene-wide :class:`TileJob`.
        tiles: tiles of the scene's grid; their cores are written to distinct output chunks.

    Returns:
        One :class:`TileResult` per tile, in order. With ``job.work`` set, each tile's completion
        marker is written as soon as its output chunks are
        (:func:`sr_core.publication.journal.mark_tile`), so a task killed part-way keeps the tiles
        it finished.

    Raises:
        ModelError: the model cannot be loaded on this worker.
    """
    task_t0 = time.perf_counter()
    model = job_model(job)
    src_image, src_valid, dst_image, dst_valid = open_stores(job.input_store, job.output_store)
    if not tiles:
        return []
    batch = job.tile_batch or auto_tile_batch(model, tiles[0].read.height * tiles[0].read.width)
    groups = _groups(tiles, batch)
    # the writer thread keeps a GPU busy; on a CPU one tile at a time, writing in this thread
    # holds one tile's output less (bench_memory) and the cores are the model's anyway
    overlap_writes = batch > 1 or model.device.type == "cuda"
    dst = OutputArrays(dst_image, dst_valid,
                       uncertainty.open_array(job.output_store) if job.self_ensemble else None)

    def read(group: list[Tile]) -> list[TileInput]:
        return [read_tile(job, t, src_image, src_valid) for t in group]

    def write(group: list[Tile], inputs: list[TileInput],
              outputs: list[ModelOutput]) -> list[tuple[TileResult, float]]:
        return _write_group(job, model, dst, group, inputs, outputs)

    results: list[tuple[TileResult, float]] = []  # with the time each tile was done
    reader, writer = io_threads()
    pending_read = reader.submit(read, groups[0])
    pending_write = None
    try:
        for i, group in enumerate(groups):
            inputs = pending_read.result()
            if i + 1 < len(groups):
                pending_read = reader.submit(read, groups[i + 1])
            outputs = run_model(model, inputs, job.self_ensemble)
            if pending_write is not None:
                results.extend(pending_write.result())
                pending_write = None
            if overlap_writes:
                pending_write = writer.submit(write, group, inputs, outputs)
            else:
                results.extend(write(group, inputs, outputs))
        if pending_write is not None:
            results.extend(pending_write.result())
    finally:  # after a failure, leave nothing running into the next task
        for pending in (pending_read, pending_write):
            if pending is not None:
                pending.cancel() or pending.exception()
        trim_heap()
    return _task_seconds(results, task_t0)


def _write_group(job: TileJob, model, dst: OutputArrays, group: list[Tile],
                 inputs: list[TileInput], outputs: list[ModelOutput]
                 ) -> list[tuple[TileResult, float]]:
    """Finish a group of tiles (:func:`finish_tile`) and, with ``job.work``, record each one's
    completion once its chunks are written; each result with the time it was done."""
    from sr_core.publication import journal

    done = []
    for t, inp, out in zip(group, inputs, outputs, strict=True):
        result = finish_tile(job, t, model, inp, out, dst)
        if job.work is not None:
            journal.mark_tile(job.work, result, dst.chunk_files(t.row, t.col), job.output_store)
        done.append((result, time.perf_counter()))
    return done


def _task_seconds(results: list[tuple[TileResult, float]], task_t0: float) -> list[TileResult]:
    """The tiles' results with their share of the task's wall time: reading, the model and
    writing overlap, so a tile's own wall time would count the waits; each tile gets the task
    time since the previous tile was done (they sum to the task's wall time, which is what the
    pipeline's scheduling-overhead figure subtracts)."""
    timed_results, last = [], task_t0
    for result, done_at in results:
        timed_results.append(replace(result, seconds=done_at - last))
        last = done_at
    return timed_results
