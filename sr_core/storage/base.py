"""The storage contract: :class:`Store`, what its methods return, and its typed errors.

A store holds objects named by URI (a local path for :class:`~sr_core.storage.local.LocalStore`,
``s3://bucket/key`` for :class:`~sr_core.storage.s3.S3Store`). Every method takes the full URI;
:func:`sr_core.storage.store_for` picks the store of a URI. The contract (tested once for every
backend by ``tests/test_store_contract.py``):

* :meth:`Store.read` returns the bytes with the object's **version** (S3: its ETag; local: a token
  of the file's inode, modification time and size). The version changes whenever the object is
  written; it is opaque (compare it, pass it back to :meth:`Store.put`).
* :meth:`Store.put` writes a small object whole, optionally **conditionally**: ``if_none_match``
  (only if no object is there) or ``if_match=<version>`` (only if it is still that version). A
  failed condition raises :class:`ConditionFailed`; a reader never sees a partial object.
* :meth:`Store.publish` moves a completely written local file into place atomically and leaves
  no temporary behind.
* :meth:`Store.list` yields every object under a prefix in key order; :meth:`Store.delete`
  removes one (a missing one is no error); :meth:`Store.exists` and :meth:`Store.stat` ask.
* A missing object is :class:`NotFound` (an :class:`~sr_core.errors.InputError`); access denied,
  an unreachable endpoint or a failed local write is a :class:`~sr_core.errors.StorageError`.

This module also holds the local-file helpers every layer uses (:func:`sha256_file`,
:func:`discard`, :func:`fsync_path`). It may import :mod:`sr_core.errors` only.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from sr_core.errors import InputError, StorageError

#: Files at least this large are uploaded in parts (bytes).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: Size of one part of a multipart upload (bytes; S3's minimum is 5 MiB).
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024


class NotFound(InputError):
    """No such object, file or bucket (the message names the URI)."""


class ConditionFailed(StorageError):
    """A conditional :meth:`Store.put` found another object (or none) than it was told to
    expect: another writer came first."""


@dataclass(frozen=True)
class Blob:
    """An object's content as read, with its version.

    Attributes:
        data: the bytes (all of them, or the first ``max_bytes``).
        version: the object's version (S3 ETag as S3 quotes it; local inode/mtime/size token).
    """

    data: bytes
    version: str

    def text(self) -> str:
        """The bytes as UTF-8 text (undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class ObjectInfo:
    """One object as :meth:`Store.stat` or :meth:`Store.list` sees it.

    Attributes:
        uri: its URI; size: its length in bytes; version: as in :class:`Blob`.
    """

    uri: str
    size: int
    version: str


@dataclass(frozen=True)
class Transfer:
    """How :meth:`Store.publish` uploads (S3 only; bytes): files of at least
    ``multipart_threshold`` go up in parts of ``multipart_chunksize``."""

    multipart_threshold: int = MULTIPART_THRESHOLD
    multipart_chunksize: int = MULTIPART_CHUNKSIZE


#: The transfer settings :meth:`Store.publish` uses unless told otherwise.
DEFAULT_TRANSFER = Transfer()


class Store(abc.ABC):
    """Local disk or S3 behind one contract (module docstring). Methods take full URIs."""

    @abc.abstractmethod
    def read(self, uri: str, *, max_bytes: int | None = None) -> Blob:
        """The object's bytes (the first ``max_bytes`` only: a ranged read) and version.

        Raises:
            NotFound: no such object or bucket.
            StorageError: access denied, endpoint unreachable, or the file cannot be read.
        """

    def read_text(self, uri: str) -> str | None:
        """The UTF-8 text of a small object, or ``None`` when it does not exist.

        Raises:
            StorageError: as :meth:`read`.
        """
        try:
            return self.read(uri).data.decode("utf-8")
        except NotFound:
            return None

    @abc.abstractmethod
    def stat(self, uri: str) -> ObjectInfo | None:
        """Size and version of an object, ``None`` when it does not exist.

        Raises:
            StorageError: access denied or endpoint unreachable.
        """

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether the object (or a local folder) exists.

        Raises:
            StorageError: access denied or endpoint unreachable.
        """

    @abc.abstractmethod
    def put(self, uri: str, data: bytes, *, if_none_match: bool = False,
            if_match: str | None = None, content_type: str | None = None) -> str:
        """Write a small object whole, atomically; with a condition, only if it holds.

        Args:
            uri: the object; data: its new bytes.
            if_none_match: write only if no object is there.
            if_match: write only if the object is still this version.
            content_type: the stored Content-Type (S3; ``None``: S3's default).

        Returns:
            The new object's version.

        Raises:
            ConditionFailed: the condition did not hold (nothing was written).
            NotFound: no such bucket.
            StorageError: the write failed.
        """

    @abc.abstractmethod
    def publish(self, local_file: str, uri: str, transfer: Transfer = DEFAULT_TRANSFER) -> None:
        """Move a complete local file (or folder) to ``uri``, atomically; see
        :func:`sr_core.storage.publish`."""

    @abc.abstractmethod
    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Every object whose URI starts with ``prefix_uri``, in key order (a missing prefix
        lists nothing).

        Raises:
            NotFound: no such bucket.
            StorageError: access denied or endpoint unreachable.
        """

    @abc.abstractmethod
    def delete(self, uri: str) -> None:
        """Remove one object; a missing one is no error.

        Raises:
            StorageError: the deletion failed.
        """

    @abc.abstractmethod
    def copy(self, src_uri: str, dst_uri: str) -> None:
        """Copy an object to another name in the same store; see :func:`sr_core.storage.copy`."""

    @abc.abstractmethod
    def remove_tree(self, uri: str) -> int:
        """Remove a folder / prefix; see :func:`sr_core.storage.remove_tree`."""

    @abc.abstractmethod
    def fetch(self, uri: str, scratch_dir: str | os.PathLike) -> str:
        """A local path holding the object; see :func:`sr_core.storage.fetch`."""

    @abc.abstractmethod
    def temp_path(self, dst_uri: str, scratch_dir: str | os.PathLike) -> str:
        """Where to write ``dst_uri``'s content before :meth:`publish`; see
        :func:`sr_core.storage.temp_path_for`."""

    @abc.abstractmethod
    def check_destination(self, dst_uri: str, *, folder: bool | None = False) -> None:
        """Fail early if ``dst_uri`` cannot be written; see
        :func:`sr_core.storage.check_destination`."""

    @abc.abstractmethod
    def fingerprint(self, uri: str) -> dict:
        """What identifies an input's bytes; see
        :func:`sr_core.publication.manifest.fingerprint`."""


def is_s3(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` is an ``s3://`` URL (case-insensitive scheme)."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 4 << 20) -> str:
    """Hex SHA-256 of a local file's bytes, read in ``chunk_bytes`` blocks (bounded memory).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def discard(temp: str | os.PathLike | None) -> None:
    """Remove a temporary file or folder; a missing one or any OS error is ignored."""
    if temp is None:
        return
    if os.path.isdir(temp):
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
        return
    try:
        os.remove(temp)
    except OSError:
        pass


def fsync_path(path: str, *, missing_ok: bool = False) -> None:
    """Flush one file's data, or one folder's entries, to disk (:func:`os.fsync`).

    Raises:
        FileNotFoundError: ``path`` does not exist (unless ``missing_ok``: then nothing happens).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
