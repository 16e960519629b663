"""Worker-side input and output helpers of the tile tasks: the run's Zarr stores opened once per
worker process, the files of a tile's output chunks, the task's reader and writer threads, and
giving freed tile buffers back to the OS."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Literal

import zarr

if TYPE_CHECKING:
    import ctypes

_LOCK = threading.Lock()

_LIBC: ctypes.CDLL | Literal[False] | None = None  # libc once loaded (False: not glibc)


def trim_heap() -> None:
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


def io_threads():
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
