"""Resume and concurrency: the run's work directory, its lock, and the per-tile journal.

A run works in a **deterministic work directory** named by its *work key*: the SHA-256 of the
input's fingerprint (SHA-256 and size of a local file, ETag and size of an S3 object), the model
weights' SHA-256, and every parameter that changes a tile (model, scale, tile size, halo, output
format, work layout version). A run killed at any point (``kill -9`` of the CLI or flow process,
of the Dask scheduler, of a worker) and started again with the same key finds the same directory::

    WORK_ROOT/sr-work/<key>/
        input.zarr/      the staged scene          (reused once ``staged.json`` exists)
        staged.json      per-band min/max/valid count and the normalisation, written after staging
        output.zarr/     the output tiles          (reused once ``output.json`` exists)
        output.json      written after the empty output Zarr is created
        tiles/r<row>_c<col>.json   one marker per completed tile (its :class:`TileResult`)
    WORK_ROOT/sr-work/<key>.lock   the run lock (PID and host of the holder)

A tile's marker is written by the worker **after** the tile's output chunks (image and validity)
are written **and flushed to disk** (:func:`os.fsync` of the chunk files and of their folders),
with a temporary name, itself flushed, then :func:`os.replace` and a flush of the ``tiles``
folder, so a marker always means a complete chunk, also after a power loss or a kernel crash
(which lose what is only in the page cache; ``kill -9`` of a process does not). Likewise
``staged.json`` is written after the staged store is flushed, ``output.json`` after the empty
output store is. A tile without a marker is run again (its chunk, complete or not, is rewritten
whole: each output tile is exactly one Zarr chunk). All-nodata tiles get a marker too (``skipped``:
no model work). Markers are one small file per tile: the main process reads them one at a time.

``WORK_ROOT`` is ``--scratch-dir``, else ``$SR_SCRATCH``, else the system temp directory. The work
directory is removed after a successful publication and kept after a failure (a rerun resumes it;
remove ``WORK_ROOT/sr-work`` to reclaim the space).

The lock is :func:`fcntl.flock` on ``<key>.lock``: the kernel releases it when its holder dies
(``kill -9`` included), so a stale lock never blocks a rerun; the file holds the holder's PID and
host for the message a second run prints. It covers runs on one host that share the work root;
runs on several hosts (or with other scratch folders or models) publishing to one destination
are kept apart by the destination's publication claim (:mod:`sr_core.publication.claim`) and the
manifest's conditional write (:mod:`sr_core.publication.manifest`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import asdict

from sr_core.errors import BusyError, StorageError
from sr_core.storage import fsync_path

#: Version of the work directory layout; part of every work key.
WORK_VERSION = 1
#: Environment variable naming a crash point (tests): the process ``os._exit(CRASH_EXIT)``s there.
CRASH_ENV = "SR_CRASH_AT"
CRASH_EXIT = 86

_HELD: dict[str, int] = {}  # lock path -> open file descriptor (this process)
_HELD_LOCK = threading.Lock()


def crash_point(name: str) -> None:
    """Exit the process at once (no cleanup, like ``kill -9``) when ``$SR_CRASH_AT`` names this
    point. Tests use it to crash a real CLI process between the steps of a publication."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(CRASH_EXIT)


def work_root(scratch_dir: str | None) -> str:
    """``<scratch_dir or $SR_SCRATCH or tempdir>/sr-work`` (created)."""
    parent = scratch_dir or os.environ.get("SR_SCRATCH") or tempfile.gettempdir()
    root = os.path.join(parent, "sr-work")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{root}: cannot create the work directory ({exc.strerror})") from None
    return root


def work_key(parts: dict) -> str:
    """Hex SHA-256 of ``parts`` (JSON, keys sorted) with :data:`WORK_VERSION`."""
    text = json.dumps({"work_version": WORK_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def acquire(root: str, key: str, what: str) -> str:
    """Take the run lock of ``key`` without waiting and return the work directory.

    Args:
        root: the work root (:func:`work_root`).
        key: the work key (:func:`work_key`).
        what: how the message names the job (e.g. the destination).

    Returns:
        ``root/key`` (created).

    Raises:
        BusyError: another live process holds the lock (message: its PID and host).
    """
    path = os.path.join(root, f"{key}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BusyError(f"{what}: another run ({holder}) is producing this output; "
                            "not started") from None
        # the holder before us may have removed the file after releasing it: lock the live one
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    with _HELD_LOCK:
        _HELD[path] = fd
    work = os.path.join(root, key)
    os.makedirs(os.path.join(work, "tiles"), exist_ok=True)
    return work


def release(work: str, *, remove: bool) -> None:
    """Release the lock of ``work`` (taken by :func:`acquire` in this process); with ``remove``,
    delete the work directory and the lock file first (after a successful publication)."""
    path = work.rstrip("/") + ".lock"
    with _HELD_LOCK:
        fd = _HELD.pop(path, None)
    if remove:
        shutil.rmtree(work, ignore_errors=True)
        if fd is not None:
            try:
                os.remove(path)
            except OSError:
                pass
    if fd is not None:
        os.close(fd)


def sync_files(paths, root: str) -> None:
    """Make files written under ``root`` durable: :func:`os.fsync` each file, then each folder
    from its parent up to ``root`` (so a new file's name, and a new folder's, survive a power
    loss too). Each folder is flushed once.

    Args:
        paths: files under ``root`` (missing ones are skipped).
        root: the folder they were written in (e.g. a Zarr array's folder).
    """
    root = os.path.abspath(root)
    folders: set[str] = set()
    for path in paths:
        fsync_path(path, missing_ok=True)  # Zarr stores no chunk of fill values only
        d = os.path.dirname(os.path.abspath(path))
        while d.startswith(root) and d not in folders:
            folders.add(d)
            d = os.path.dirname(d)
    for d in sorted(folders, key=len, reverse=True):  # deepest first
        fsync_path(d, missing_ok=True)


def sync_tree(root: str) -> None:
    """:func:`sync_files` for every file under ``root`` (a staged Zarr store)."""
    sync_files([os.path.join(d, f) for d, _, files in os.walk(root) for f in files], root)


def write_json(path: str, doc: dict) -> None:
    """Write ``doc`` to ``path`` atomically and durably: a temporary name, flushed to disk, then
    :func:`os.replace`, then the folder's entries flushed (so after a power loss the name
    points at complete content, or is absent)."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_state(work: str, name: str, doc: dict) -> None:
    """Record a finished step of the run (``staged``, ``output``) as ``work/<name>.json``."""
    write_json(os.path.join(work, f"{name}.json"), doc)


def load_state(work: str, name: str) -> dict | None:
    """The record :func:`save_state` wrote, or ``None`` (step not finished)."""
    return _read_json(os.path.join(work, f"{name}.json"))


def tile_marker(work: str, row: int, col: int) -> str:
    """Path of tile ``(row, col)``'s completion marker."""
    return os.path.join(work, "tiles", f"r{row}_c{col}.json")


def mark_tile(work: str, result, chunk_files=(), chunk_root: str | None = None) -> None:
    """Record a completed tile (worker side, after its output chunks are written): the chunk
    files are flushed to disk first (:func:`sync_files`), then the marker is written durably.

    Args:
        work: the run's work directory.
        result: the tile's :class:`sr_core.compute.infer.TileResult`.
        chunk_files: the tile's output chunk files; chunk_root: the folder they lie under (the
            output Zarr store).
    """
    if chunk_files:
        sync_files(chunk_files, chunk_root or work)
    write_json(tile_marker(work, result.row, result.col), asdict(result))


def completed_tile(work: str, row: int, col: int) -> dict | None:
    """The recorded :class:`~sr_core.compute.infer.TileResult` fields of a completed tile, or
    ``None``."""
    return _read_json(tile_marker(work, row, col))
