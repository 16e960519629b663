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

import os
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import zarr

from sr_core.normalize import Normalization
from sr_core.tiling import Tile

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
        work: the run's work directory (:mod:`sr_core.journal`): each tile's completion marker
            is written there after its output chunks; ``None`` records nothing.
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
    """

    row: int
    col: int
    seconds: float
    valid_px: int
    lr_sse: float
    skipped: bool
    device: str


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
    """:func:`get_model` for a :class:`TileJob`."""
    return get_model(job.model_ref, job.scale, job.device, job.torch_threads, job.precision,
                     job.compile)


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


def finish_tile(job: TileJob, tile: Tile, model, inp: TileInput, y: np.ndarray | None,
                dst_image, dst_valid) -> TileResult:
    """Crop the SR core, measure LR consistency, convert to the scene's units and write the core
    to its one output chunk (all-nodata tiles: nodata, without the model).

    Args:
        y: the model's output for ``inp.x``, ``(bands, h*s, w*s)`` float32 normalised; ``None``
            when ``inp.x`` is.
        dst_image, dst_valid: the output Zarr arrays, ``(bands, H*s, W*s)``.

    Returns:
        The tile's :class:`TileResult` (``seconds`` from the start of its read).

    Raises:
        OSError: the chunk cannot be written (ENOSPC on a full scratch disk).
    """
    import torch

    from sr_core.metrics import erode_valid
    from sr_core.resample import downsample_bicubic

    s = job.scale
    data, valid = inp.data, inp.valid
    crows, ccols = tile.core_in_read.slices()
    core_valid = valid[:, crows, ccols]
    out_rows, out_cols = tile.core.scaled(s).slices()
    valid_up = np.repeat(np.repeat(core_valid, s, axis=1), s, axis=2)
    if y is None:
        fill = np.full(valid_up.shape, job.nodata if job.nodata is not None else 0,
                       dtype=data.dtype)
        _keep_off_nodata(fill, valid_up, job.nodata)
        dst_image[:, out_rows, out_cols] = fill
        dst_valid[:, out_rows, out_cols] = valid_up
        return TileResult(tile.row, tile.col, time.perf_counter() - inp.t0, 0, 0.0, True,
                          str(model.device))
    # LR consistency on the whole read window (the halo keeps the core free of edge effects).
    back = downsample_bicubic(torch.from_numpy(np.ascontiguousarray(y))[None], s)[0].numpy()
    back = job.normalization.from_model(back[:, crows, ccols]).astype(np.float64)
    ref = data[:, crows, ccols].astype(np.float64)
    # compare only where the SR core and its downsampling saw valid input (halo included)
    reach = job_reach(job, model)
    eval_valid = erode_valid(valid, reach)[:, crows, ccols]
    lr_sse = float(((back - ref)[eval_valid] ** 2).sum())
    hr_core = tile.core_in_read.scaled(s).slices()
    out = job.normalization.from_model(y[:, hr_core[0], hr_core[1]])
    _keep_off_nodata(out, valid_up, job.nodata)
    dst_image[:, out_rows, out_cols] = out
    dst_valid[:, out_rows, out_cols] = valid_up
    return TileResult(tile.row, tile.col, time.perf_counter() - inp.t0, int(eval_valid.sum()),
                      lr_sse, False, str(model.device))


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
        marker is written as soon as its output chunks are (:func:`sr_core.journal.mark_tile`),
        so a task killed part-way keeps the tiles it finished.

    Raises:
        ModelError: the model cannot be loaded on this worker.
    """
    from sr_core import journal

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

    def read(group):
        return [read_tile(job, t, src_image, src_valid) for t in group]

    def write(group, inputs, outputs):
        done = []
        for t, inp, y in zip(group, inputs, outputs, strict=True):
            result = finish_tile(job, t, model, inp, y, dst_image, dst_valid)
            if job.work is not None:
                journal.mark_tile(job.work, result, chunk_files(dst_image, t.row, t.col)
                                  + chunk_files(dst_valid, t.row, t.col), job.output_store)
            done.append((result, time.perf_counter()))
        return done

    results: list[tuple[TileResult, float]] = []  # with the time each tile was done
    reader, writer = _io_threads()
    pending_read = reader.submit(read, groups[0])
    pending_write = None
    try:
        for i, group in enumerate(groups):
            inputs = pending_read.result()
            if i + 1 < len(groups):
                pending_read = reader.submit(read, groups[i + 1])
            xs = [inp.x for inp in inputs if inp.x is not None]
            ys = iter(model.upscale_many(xs) if xs else [])
            outputs = [next(ys) if inp.x is not None else None for inp in inputs]
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
        _trim_heap()
    # reading, the model and writing overlap, so a tile's own wall time would count the waits;
    # each tile gets the task time since the previous tile was done (they sum to the task's wall
    # time, which is what the pipeline's scheduling-overhead figure subtracts)
    timed_results, last = [], task_t0
    for result, done_at in results:
        timed_results.append(replace(result, seconds=done_at - last))
        last = done_at
    return timed_results


_LIBC = None  # libc once loaded (False: not glibc)


def _trim_heap() -> None:
    """Give the tiles' freed buffers back to the OS (glibc ``malloc_trim``; nothing elsewhere).
    The task's threads allocate tile-sized arrays, each from its own malloc arena, and glibc
    keeps freed blocks of up to 32 MB in them: without this the worker's peak memory grew with
    the number of tasks (``benchmarks/bench_memory.py``: 1108 -> 1043 MB at 256 tiles)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_THREADS = threading.local()


def _io_threads():
    """The calling thread's reader and writer (one thread each), kept for the worker's life:
    Dask runs tasks on long-lived threads, and new threads per task would each take a fresh
    malloc arena, so the worker's memory would grow with the number of tasks."""
    from concurrent.futures import ThreadPoolExecutor

    pools = getattr(_THREADS, "pools", None)
    if pools is None:
        pools = _THREADS.pools = (ThreadPoolExecutor(1, "sr-read"),
                                  ThreadPoolExecutor(1, "sr-write"))
    return pools


def chunk_files(arr, row: int, col: int) -> list[str]:
    """The files of output tile ``(row, col)``'s chunks in a local Zarr array (one per chunk
    along the plane axis; each tile's core is one chunk of the row and column axes)."""
    root = os.path.join(str(arr.store_path.store.root), arr.path)
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    return [os.path.join(root, *encode((b, row, col)).split("/"))
            for b in range(arr.cdata_shape[0])]


_STORES: dict[tuple[str, str], tuple] = {}
_STORES_KEPT = 4


def open_stores(input_store: str, output_store: str) -> tuple:
    """The Zarr arrays of one run, opened once per worker process and cached (opening reads the
    group and array metadata: a measurable cost per task when tiles are small). The last
    ``_STORES_KEPT`` runs are kept.

    Returns:
        ``(image, valid, out_image, out_valid)``: input ``(bands, H, W)`` in the scene's dtype and
        bool validity, output ``(bands, H*scale, W*scale)`` likewise (``zarr.Array`` objects).

    Raises:
        FileNotFoundError, zarr errors: a store is missing (the run's scratch was removed).
    """
    key = (input_store, output_store)
    with _LOCK:
        if key not in _STORES:
            src = zarr.open_group(input_store, mode="r")
            dst = zarr.open_group(output_store, mode="r+")
            while len(_STORES) >= _STORES_KEPT:
                _STORES.pop(next(iter(_STORES)))
            _STORES[key] = (src["image"], src["valid"], dst["image"], dst["valid"])
        return _STORES[key]


def wald_window_task(job: TileJob, window, data_range: float,
                     planes: list[int] | None = None) -> dict:
    """Dask task: the Wald-protocol check (:func:`sr_core.metrics.wald_check`) on one window of
    the staged input, run on a worker beside the tiles; on the given bands / planes only (all by
    default). Checked under each degradation of :data:`sr_core.degradations.REPORT`: the result
    is the first's (bicubic, with ``"degradation"``) plus ``"by_degradation"``: ``{name:
    {"model", "bicubic", "gain_db"}}``."""
    from sr_core.metrics import wald_check

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
    from sr_core.degradations import REPORT

    t0 = time.perf_counter()
    by = {d: wald_check(model, hr, valid, norm, data_range, d) for d in REPORT}
    result = dict(by[REPORT[0]])
    result["by_degradation"] = {d: {k: r[k] for k in ("model", "bicubic", "gain_db")}
                                for d, r in by.items()}
    if planes is not None:
        result["planes"] = list(planes)
    result["seconds"] = time.perf_counter() - t0
    result["worker_pid"] = os.getpid()
    return result
