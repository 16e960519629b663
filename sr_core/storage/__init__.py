"""Local paths and ``s3://bucket/key`` URLs behind one contract, :class:`Store`.

Modules: :mod:`~sr_core.storage.base` (the :class:`Store` contract, its typed errors
:class:`NotFound` and :class:`ConditionFailed`, local-file helpers), :mod:`~sr_core.storage.local`
(:class:`LocalStore`), :mod:`~sr_core.storage.s3` (:class:`S3Store`, the boto3 client, error
translation), :mod:`~sr_core.storage.links` (links a browser opens) and
:mod:`~sr_core.storage.security` (what may be read, SSE settings, log redaction).
:func:`store_for` picks a URI's store; the functions below are thin wrappers over it that keep
callers free of ``if is_s3(...)`` branches.

The pipeline reads a scene through :func:`fetch` (a local path is used in place, an S3 object is
downloaded into a scratch directory) and writes every output file completely to a temporary path
from :func:`temp_path_for` before :func:`publish` moves it into place. So a reader never sees a
partial output:

* local destination: the temporary file lies in the destination's own directory (hidden name
  ``.NAME.partial-<uuid>``), and :func:`publish` renames it with :func:`os.replace`, which is atomic
  on one file system;
* S3 destination: the temporary file lies in the scratch directory, and :func:`publish` uploads it
  with boto3's managed transfer (multipart above a threshold, SHA-256 checksums). An S3 object
  becomes visible only when its (multipart) upload completes.

:func:`check_destination` validates a destination up front so a bad DST fails before any work.

The S3 endpoint comes from the standard ``AWS_ENDPOINT_URL`` environment variable, which boto3
reads itself; credentials and region come from boto3's usual chain.

Errors: a missing object or bucket, or a malformed or unusable destination, is an
:class:`~sr_core.errors.InputError` (a missing one a :class:`NotFound`); access denied, an
unreachable endpoint, or a failed local write is a :class:`~sr_core.errors.StorageError`. Each
message is one line that names the URI.

May import :mod:`sr_core.errors` only (its submodules: the same, boto3 lazily).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from sr_core.errors import InputError, StorageError
from sr_core.storage.base import (
    MULTIPART_CHUNKSIZE,
    MULTIPART_THRESHOLD,
    Blob,
    ConditionFailed,
    NotFound,
    ObjectInfo,
    Store,
    Transfer,
    discard,
    fsync_path,
    is_s3,
    sha256_file,
)
from sr_core.storage.links import PRESIGN_MAX_S, BrowserLink, browser_link, presign_settings
from sr_core.storage.local import LocalStore
from sr_core.storage.s3 import UPLOAD_CHECKSUM, S3Store, parse_s3, s3_client

__all__ = [
    "MULTIPART_CHUNKSIZE", "MULTIPART_THRESHOLD", "PRESIGN_MAX_S", "UPLOAD_CHECKSUM", "Blob",
    "BrowserLink", "ConditionFailed", "InputError", "LocalStore", "NotFound", "ObjectInfo",
    "S3Store", "Store", "StorageError", "Transfer", "browser_link", "check_destination", "copy",
    "discard", "exists", "fetch", "fsync_path", "is_s3", "list_s3", "object_etag", "parse_s3",
    "presign_settings", "publish", "read_text", "remove_tree", "s3_client", "sha256_file",
    "store_for", "temp_path_for", "write_text",
]

#: The two stores (they hold no state: S3's client is cached per process by :func:`s3_client`).
LOCAL: Store = LocalStore()
S3: Store = S3Store()


def store_for(uri: str | os.PathLike) -> Store:
    """The store that holds ``uri``: :data:`S3` for an ``s3://`` URL, else :data:`LOCAL`."""
    return S3 if is_s3(uri) else LOCAL


def fetch(uri: str | os.PathLike, scratch_dir: str | os.PathLike) -> str:
    """Make a scene readable as a local file.

    Args:
        uri: a local path (returned as it is, nothing is copied or checked) or ``s3://bucket/key``.
        scratch_dir: directory for downloads (created if missing). The caller removes the
            downloaded file when done.

    Returns:
        A local path. For S3, a new file ``<scratch_dir>/<uuid>-<basename of key>``, downloaded with
        boto3's managed transfer (streamed to disk in parts, never whole in memory; s3transfer
        writes to a temporary name and renames when complete). A URL ending in ``/`` names a
        folder (e.g. a DICOM series): every object directly under that prefix is downloaded
        into a new local folder, which is returned.

    Raises:
        InputError: malformed S3 URL, or no such object or bucket.
        StorageError: access denied, endpoint unreachable, or the scratch file cannot be written.
    """
    return store_for(uri).fetch(os.fspath(uri), scratch_dir)


def temp_path_for(dst_uri: str | os.PathLike, scratch_dir: str | os.PathLike) -> str:
    """A fresh temporary path to write ``dst_uri``'s content to before :func:`publish`.

    Args:
        dst_uri: the final destination (local path or ``s3://bucket/key``).
        scratch_dir: where temporaries for S3 destinations go (created if missing).

    Returns:
        Local destination: ``<dst dir>/.<NAME>.partial-<uuid>``, a hidden name in the same
        directory, so :func:`publish` is an atomic rename. S3 destination:
        ``<scratch_dir>/<uuid>-<NAME>``. The file is not created.

    Raises:
        InputError: malformed S3 URL.
        StorageError: the scratch directory cannot be created.
    """
    return store_for(dst_uri).temp_path(os.fspath(dst_uri), scratch_dir)


def publish(local_file: str | os.PathLike, dst_uri: str | os.PathLike, *,
            multipart_threshold: int = MULTIPART_THRESHOLD,
            multipart_chunksize: int = MULTIPART_CHUNKSIZE) -> None:
    """Move a completely written temporary file to its destination, atomically.

    Args:
        local_file: the complete file, normally from :func:`temp_path_for` (for a local ``dst_uri``
            it must lie in the destination's directory so that the rename is atomic).
        dst_uri: local path or ``s3://bucket/key``; an existing destination is replaced.
        multipart_threshold, multipart_chunksize: S3 only, bytes; files at least
            ``multipart_threshold`` long are uploaded in parts of ``multipart_chunksize``.

    A folder (a DICOM series) is published as a whole: locally renamed into place (DST must not
    exist or be an empty folder), to S3 uploaded file by file under ``DST/`` (the objects appear
    one by one).

    Local: :func:`os.fsync`, then :func:`os.replace`. S3: ``upload_file`` with
    ``ChecksumAlgorithm="SHA256"`` (S3 verifies every part and stores the checksum; the object
    appears only when the upload completes) and the server-side encryption of
    :func:`sr_core.storage.security.sse_args` (``SR_S3_SSE``, ``SR_S3_SSE_KMS_KEY_ID``), then
    ``local_file`` is removed. On failure ``local_file`` is kept (the caller may retry, or
    :func:`discard` it).

    Raises:
        InputError: malformed S3 URL, no such bucket.
        StorageError: the rename or upload failed (access denied, endpoint unreachable,
            different file systems, ...).
    """
    store_for(dst_uri).publish(os.fspath(local_file), os.fspath(dst_uri),
                              Transfer(multipart_threshold, multipart_chunksize))


def copy(src_uri: str, dst_uri: str) -> None:
    """Copy a published file to another name at the same kind of destination, keeping its bytes.

    Local: a hard link (:func:`os.link`; no data copied; an existing ``dst_uri`` is replaced,
    missing parent folders are created), so a later :func:`os.replace` of ``src_uri`` leaves the
    copy's bytes alone. S3: a server-side copy (boto3's managed ``copy``: ``CopyObject``, or
    ``UploadPartCopy`` parts for objects of at least :data:`MULTIPART_THRESHOLD` bytes; nothing
    goes through this host) with ``ChecksumAlgorithm="SHA256"`` and the server-side encryption
    of :func:`sr_core.storage.security.sse_args`.

    Raises:
        InputError: malformed S3 URL, or no such object / bucket.
        StorageError: the link or copy failed.
    """
    store_for(dst_uri).copy(src_uri, dst_uri)


def remove_tree(uri: str) -> int:
    """Remove a local folder (or file), or every S3 object under the prefix ``uri`` + ``/``.

    Returns:
        How many files or objects were removed (0: nothing there).

    Raises:
        InputError: malformed S3 URL.
        StorageError: a listing or a deletion failed (S3 needs ``s3:DeleteObject``).
    """
    return store_for(uri).remove_tree(uri)


def exists(uri: str | os.PathLike) -> bool:
    """Whether a local file/directory or an S3 object exists.

    Raises:
        InputError: malformed S3 URL.
        StorageError: access denied or endpoint unreachable (S3).
    """
    return store_for(uri).exists(os.fspath(uri))


def object_etag(uri: str) -> str:
    """The ETag of an S3 object (changes when the object is rewritten).

    Raises:
        InputError: malformed S3 URL or no such object.
        StorageError: access denied or endpoint unreachable.
    """
    info = S3.stat(uri)
    if info is None:
        raise NotFound(f"{uri}: no such object")
    return info.version


def check_destination(dst_uri: str | os.PathLike, *, folder: bool | None = False) -> None:
    """Fail early, before any work, if ``dst_uri`` cannot be written.

    Local: the parent directory must exist (it is not created) and be writable, and ``dst_uri``
    must not be a directory (``folder=False``) or must not exist / be an empty directory
    (``folder=True``, the output is a folder of files); ``folder=None`` leaves that to a later
    check. S3: a valid ``s3://bucket/key`` URL (key not ending in ``/`` unless ``folder``) whose
    bucket exists (``HeadBucket``).

    Raises:
        InputError: the destination is unusable (missing parent directory, not writable, a
            directory, malformed URL, no such bucket).
        StorageError: access to the bucket denied or endpoint unreachable.
    """
    store_for(dst_uri).check_destination(os.fspath(dst_uri), folder=folder)


def read_text(uri: str | os.PathLike) -> str | None:
    """The text (UTF-8) of a small local file or S3 object, or ``None`` when it does not exist.

    Meant for small metadata files (manifests, STAC JSON); the whole content is held in memory.

    Raises:
        InputError: malformed S3 URL.
        StorageError: access denied, endpoint unreachable, or the local file cannot be read.
    """
    return store_for(uri).read_text(os.fspath(uri))


def write_text(uri: str | os.PathLike, text: str, scratch_dir: str | os.PathLike) -> None:
    """Write a small text file to a local path or S3 object, atomically (temporary file, then
    :func:`publish`). A local destination's parent directory must exist.

    Raises:
        InputError: malformed S3 URL, no such bucket.
        StorageError: the write, rename or upload failed.
    """
    tmp = temp_path_for(uri, scratch_dir)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        publish(tmp, uri)
    except OSError as exc:
        discard(tmp)
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"{uri}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        discard(tmp)
        raise


def list_s3(prefix_uri: str) -> Iterator[tuple[str, str, int]]:
    """Every object under an S3 prefix, through boto3's ``list_objects_v2`` paginator (so more
    than 1,000 keys are listed, page by page, never all held at once by this function).

    Args:
        prefix_uri: ``s3://bucket/prefix`` (the prefix may be empty: ``s3://bucket/``).

    Yields:
        ``(key, etag, size_bytes)`` per object, in S3's key order; the ETag without quotes.

    Raises:
        InputError: malformed URL or no such bucket.
        StorageError: access denied or endpoint unreachable.
    """
    for info in S3.list(prefix_uri):
        yield info.uri.split("/", 3)[3], info.version.strip('"'), info.size
