"""Local disk as a :class:`~sr_core.storage.base.Store`.

Objects are files named by their path. Every write goes to a hidden temporary in the
destination's own folder (``.NAME.partial-<uuid>``), is flushed to disk (:func:`os.fsync`), and
is then renamed into place (:func:`os.replace`, atomic on one file system) or, for a write that
must not replace anything, hard-linked (:func:`os.link`, which fails if the name exists).

A file's *version* is a token of its inode, modification time (ns) and size: every write makes a
new inode, so the token changes whenever the file is written. ``put(if_match=...)`` takes an
exclusive :func:`fcntl.flock` on the file it expects to replace, checks that the name still
points at that inode and that its version is the expected one, then renames the new content
over it: of two such writers exactly one wins (the other finds a new inode), and a reader sees
the old file or the new one, never neither.

May import :mod:`sr_core.errors` and :mod:`sr_core.storage.base` only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator

from sr_core.errors import InputError, StorageError
from sr_core.storage.base import (
    DEFAULT_TRANSFER,
    Blob,
    ConditionFailed,
    NotFound,
    ObjectInfo,
    Store,
    Transfer,
    discard,
    fsync_path,
    sha256_file,
)


def _version(st: os.stat_result) -> str:
    """The version token of a file from its ``stat``."""
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _fsync(path: str) -> None:
    """Flush a file's (or every file in a folder's) data to disk."""
    files = [os.path.join(path, n) for n in os.listdir(path)] if os.path.isdir(path) else [path]
    for name in files:
        fsync_path(name)


class LocalStore(Store):
    """Files on local disk (see the module docstring)."""

    def read(self, uri: str, *, max_bytes: int | None = None) -> Blob:
        path = os.fspath(uri)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read() if max_bytes is None else f.read(max_bytes)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        except OSError as exc:
            raise StorageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return Blob(data, _version(st))

    def stat(self, uri: str) -> ObjectInfo | None:
        path = os.fspath(uri)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"{path}: cannot examine ({exc.strerror or exc})") from None
        return ObjectInfo(path, st.st_size, _version(st))

    def exists(self, uri: str) -> bool:
        return os.path.exists(uri)

    def put(self, uri: str, data: bytes, *, if_none_match: bool = False,
            if_match: str | None = None, content_type: str | None = None) -> str:
        path = os.fspath(uri)
        tmp = self.temp_path(path, "")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                version = _version(os.fstat(f.fileno()))
            if if_none_match:
                try:
                    os.link(tmp, path)  # fails if the name exists
                except FileExistsError:
                    raise ConditionFailed(f"{path}: already exists") from None
            elif if_match is not None:
                _replace_if(path, tmp, if_match)
            else:
                os.replace(tmp, path)
            fsync_path(os.path.dirname(os.path.abspath(path)))
        except ConditionFailed:
            raise
        except OSError as exc:
            raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from None
        finally:
            discard(tmp)
        return version

    def publish(self, local_file: str, uri: str, transfer: Transfer = DEFAULT_TRANSFER) -> None:
        local_file = os.fspath(local_file)
        dst = os.fspath(uri).rstrip("/") or os.fspath(uri)
        try:  # a folder too: renamed onto a missing or empty folder
            _fsync(local_file)  # the bytes are on disk before the name points at them
            os.replace(local_file, dst)
        except OSError as exc:
            raise StorageError(f"{dst}: cannot move {local_file} into place "
                               f"({exc.strerror or exc})") from None

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        prefix = os.fspath(prefix_uri)
        top = prefix if prefix.endswith(os.sep) else (os.path.dirname(prefix) or ".")
        found = []
        for folder, _, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                path = os.path.relpath(path) if top == "." else path
                if path.startswith(prefix):
                    found.append(path)
        for path in sorted(found):
            info = self.stat(path)
            if info is not None:
                yield info

    def delete(self, uri: str) -> None:
        path = os.fspath(uri)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"{path}: cannot remove ({exc.strerror or exc})") from None

    def copy(self, src_uri: str, dst_uri: str) -> None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(dst_uri)), exist_ok=True)
            discard(dst_uri)
            os.link(src_uri, dst_uri)
        except OSError as exc:
            raise StorageError(f"{dst_uri}: cannot link {src_uri} there "
                               f"({exc.strerror or exc})") from None

    def remove_tree(self, uri: str) -> int:
        path = os.fspath(uri)
        if not os.path.lexists(path):
            return 0
        n = sum(len(files) for _, _, files in os.walk(path)) if os.path.isdir(path) else 1
        discard(path)
        if os.path.lexists(path):
            raise StorageError(f"{path}: cannot remove")
        return n

    def fetch(self, uri: str, scratch_dir: str | os.PathLike) -> str:
        return os.fspath(uri)

    def temp_path(self, dst_uri: str, scratch_dir: str | os.PathLike) -> str:
        dst = os.path.abspath(os.fspath(dst_uri))
        return os.path.join(os.path.dirname(dst),
                            f".{os.path.basename(dst)}.partial-{uuid.uuid4().hex}")

    def check_destination(self, dst_uri: str, *, folder: bool | None = False) -> None:
        dst = os.fspath(dst_uri)
        if not dst:
            raise InputError("destination path is empty")
        if folder is False and os.path.isdir(dst):
            raise InputError(f"{dst}: is a directory (give a file name)")
        if folder and os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
            raise InputError(f"{dst}: exists and is not an empty folder (give a new folder name)")
        dst = dst.rstrip("/") or dst
        parent = os.path.dirname(os.path.abspath(dst))
        if not os.path.isdir(parent):
            raise InputError(f"{dst}: parent directory does not exist ({parent})")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{dst}: parent directory is not writable ({parent})")

    def fingerprint(self, uri: str) -> dict:
        if os.path.isdir(uri):
            h, size, n = hashlib.sha256(), 0, 0
            for name in sorted(os.listdir(uri)):
                path = os.path.join(uri, name)
                if os.path.isfile(path):
                    h.update(f"{name}\0{sha256_file(path)}\n".encode())
                    size, n = size + os.path.getsize(path), n + 1
            return {"sha256": h.hexdigest(), "size": size, "files": n}
        if not os.path.isfile(uri):
            raise InputError(f"{uri}: no such file")
        return {"sha256": sha256_file(uri), "size": os.path.getsize(uri)}


def _replace_if(path: str, tmp: str, expected: str) -> None:
    """Rename ``tmp`` over ``path`` only if ``path`` is still version ``expected`` (an exclusive
    ``flock`` on the file it replaces keeps two such writers apart).

    Raises:
        ConditionFailed: ``path`` is missing, or another version.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConditionFailed(f"{path}: no longer exists") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same or _version(os.fstat(fd)) != expected:
            raise ConditionFailed(f"{path}: changed since it was read")
        os.replace(tmp, path)
    finally:
        os.close(fd)
