"""Local paths and ``s3://bucket/key`` URLs behind one small interface.

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
:class:`~sr_core.errors.InputError`; access denied, an unreachable endpoint, or a failed local
write is a :class:`~sr_core.errors.StorageError`. Each message is one line that names the URI.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

from sr_core.errors import InputError, StorageError
from sr_core.storage.security import check_key, redact_s3_logs, safe_file_name, sse_args

#: Files at least this large are uploaded in parts (bytes).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: Size of one part of a multipart upload (bytes; S3's minimum is 5 MiB).
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024
#: Checksum S3 computes and stores with each uploaded object (and each part).
UPLOAD_CHECKSUM = "SHA256"

_S3_URL = re.compile(r"^s3://(?P<bucket>[^/]*)/?(?P<key>.*)$", re.IGNORECASE | re.DOTALL)
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}

_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


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


def is_s3(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` is an ``s3://`` URL (case-insensitive scheme)."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def parse_s3(uri: str) -> tuple[str, str]:
    """Split an ``s3://bucket/key`` URL.

    Args:
        uri: the URL.

    Returns:
        ``(bucket, key)``; the key has no leading slash and is never empty.

    Raises:
        InputError: not an ``s3://`` URL, no or an invalid bucket name, no key, or a key that
            :func:`sr_core.storage.security.check_key` refuses (``..`` or empty segments, a leading
            ``/``, control characters, over 1,024 bytes).
    """
    m = _S3_URL.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise InputError(f"{uri}: not an S3 URL (expected s3://BUCKET/KEY)")
    bucket, key = m.group("bucket"), m.group("key")
    if not bucket:
        raise InputError(f"{uri}: malformed S3 URL: no bucket (expected s3://BUCKET/KEY)")
    if not _BUCKET.match(bucket):
        raise InputError(f"{uri}: malformed S3 URL: invalid bucket name {bucket!r}")
    if not key:
        raise InputError(f"{uri}: malformed S3 URL: no key (expected s3://BUCKET/KEY)")
    return bucket, check_key(key, uri)


def s3_client() -> Any:
    """The process's boto3 S3 client (created once per process, endpoint and retry settings;
    thread-safe).

    Retries (:mod:`sr_core.compute.retries`): botocore's ``standard`` mode (it retries throttling such as
    503 SlowDown, 5xx answers, connection resets and timeouts, with exponential backoff and
    jitter) up to 6 attempts per request (``AWS_MAX_ATTEMPTS`` overrides, ``AWS_RETRY_MODE=adaptive``
    adds client-side rate limiting), connect timeout 10 s, read timeout 60 s; every retry is
    logged at WARNING, one line without credentials. Log records of boto3, botocore, s3transfer
    and urllib3 are redacted (:func:`sr_core.storage.security.redact_s3_logs`), so even botocore's DEBUG
    request dumps carry no access key id, session token or signature. The endpoint is boto3's own
    ``AWS_ENDPOINT_URL`` handling; the cache is keyed on that variable, the retry settings and
    the process id, so a forked or spawned worker builds its own client.

    Returns:
        A ``botocore.client.S3`` client.
    """
    from sr_core.compute import retries

    key = (os.getpid(), os.environ.get("AWS_ENDPOINT_URL"), retries.s3_max_attempts(),
           retries.s3_retry_mode())
    client = _clients.get(key)
    if client is not None:
        return client
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            import boto3

            session = boto3.session.Session()  # the default session is not thread-safe
            redact_s3_logs(session.get_credentials())  # even botocore's DEBUG dumps
            client = session.client("s3", config=retries.s3_config())
            retries.log_s3_retries(client)
            retries.log_transfer_retries()
            _clients[key] = client
    return client


def _client_error(exc: BaseException) -> Any | None:
    """The botocore ClientError that ``exc`` is or was raised from, if any."""
    from botocore.exceptions import ClientError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ClientError):
            return exc
        last = getattr(exc, "last_exception", None)  # boto3 RetriesExceededError
        exc = exc.__cause__ or exc.__context__ or last
        seen += 1
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _s3_error(uri: str, exc: BaseException, *, missing: str = "no such object") -> Exception:
    """Turn a boto3 / botocore / s3transfer exception into a one-line SR error naming ``uri``."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    ce = _client_error(exc)
    if ce is not None:
        err = ce.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(ce.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or (not code and status == "404"):
            if code == "NoSuchBucket":
                return InputError(f"{uri}: no such bucket")
            return InputError(f"{uri}: {missing}")
        if code in _DENIED or status == "403":
            return StorageError(f"{uri}: access denied ({code or status})")
        message = err.get("Message") or status
        tries = ce.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0
        after = f" (gave up after {tries + 1} attempts)" if tries else ""
        return StorageError(f"{uri}: S3 error {code}: {message}".rstrip(": ") + after)
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID / "
                            "AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{uri}: cannot reach S3 ({_first_line(exc)})")
    return StorageError(f"{uri}: S3 transfer failed ({_first_line(exc)})")


def _transfer_config(multipart_threshold: int, multipart_chunksize: int) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=multipart_threshold,
                          multipart_chunksize=multipart_chunksize)


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
    if not is_s3(uri):
        return os.fspath(uri)
    uri = str(uri)
    bucket, key = parse_s3(uri)
    if key.endswith("/"):
        return _fetch_prefix(uri, bucket, key, scratch_dir)
    local = _scratch_file(scratch_dir, key)
    try:
        s3_client().download_file(bucket, key, local, Config=_transfer_config(
            MULTIPART_THRESHOLD, MULTIPART_CHUNKSIZE))
    except OSError as exc:
        discard(local)
        if isinstance(exc, (ConnectionError, TimeoutError)):
            raise _s3_error(uri, exc) from None
        # local disk (botocore's own errors are not OSErrors)
        raise StorageError(f"{uri}: cannot write {local} ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
        discard(local)
        raise _s3_error(uri, exc) from None
    return local


def _fetch_prefix(uri: str, bucket: str, prefix: str, scratch_dir: str | os.PathLike) -> str:
    """Download the objects directly under ``prefix`` into a new folder (see :func:`fetch`)."""
    folder = _scratch_file(scratch_dir, prefix)
    os.makedirs(folder)
    client = s3_client()
    try:
        keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix, Delimiter="/")
                for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
        if not keys:
            raise InputError(f"{uri}: no objects under this prefix")
        for key in keys:
            check_key(key, f"s3://{bucket}/{key}")
            client.download_file(bucket, key, os.path.join(folder, safe_file_name(key)),
                                 Config=_transfer_config(MULTIPART_THRESHOLD, MULTIPART_CHUNKSIZE))
    except InputError:
        discard(folder)
        raise
    except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
        discard(folder)
        raise _s3_error(uri, exc, missing="no such bucket") from None
    return folder


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
    if is_s3(dst_uri):
        _, key = parse_s3(str(dst_uri))
        return _scratch_file(scratch_dir, key)
    dst = os.path.abspath(os.fspath(dst_uri))
    return os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.partial-{uuid.uuid4().hex}")


def _scratch_file(scratch_dir: str | os.PathLike, key: str) -> str:
    """A fresh file name in ``scratch_dir`` (created if missing) for the S3 object ``key``.

    Raises:
        StorageError: the scratch directory cannot be created.
    """
    scratch_dir = os.fspath(scratch_dir)
    try:
        os.makedirs(scratch_dir, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{scratch_dir}: cannot create scratch directory ({exc.strerror})"
                           ) from None
    # the key's last part, sanitised and shortened: never a path (``..``), never over NAME_MAX
    return os.path.join(scratch_dir, f"{uuid.uuid4().hex[:12]}-{safe_file_name(key)}")


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

    Local: :func:`os.fsync`, then :func:`os.replace`. S3: ``upload_file`` with ``ChecksumAlgorithm="SHA256"`` (S3
    verifies every part and stores the checksum; the object appears only when the upload
    completes) and the server-side encryption of :func:`sr_core.storage.security.sse_args`
    (``SR_S3_SSE``, ``SR_S3_SSE_KMS_KEY_ID``), then ``local_file`` is removed. On failure
    ``local_file`` is kept (the caller may retry, or :func:`discard` it).

    Raises:
        InputError: malformed S3 URL, no such bucket.
        StorageError: the rename or upload failed (access denied, endpoint unreachable,
            different file systems, ...).
    """
    local_file = os.fspath(local_file)
    if not is_s3(dst_uri):
        dst = os.fspath(dst_uri).rstrip("/") or os.fspath(dst_uri)
        try:  # a folder too: renamed onto a missing or empty folder
            _fsync(local_file)  # the bytes are on disk before the name points at them
            os.replace(local_file, dst)
        except OSError as exc:
            raise StorageError(f"{dst}: cannot move {local_file} into place "
                               f"({exc.strerror or exc})") from None
        return
    if os.path.isdir(local_file):
        base = str(dst_uri).rstrip("/")
        for name in sorted(os.listdir(local_file)):
            publish(os.path.join(local_file, name), f"{base}/{name}",
                    multipart_threshold=multipart_threshold,
                    multipart_chunksize=multipart_chunksize)
        discard(local_file)
        return
    uri = str(dst_uri)
    bucket, key = parse_s3(uri)
    extra = {"ChecksumAlgorithm": UPLOAD_CHECKSUM, **sse_args()}
    try:
        s3_client().upload_file(
            local_file, bucket, key, ExtraArgs=extra,
            Config=_transfer_config(multipart_threshold, multipart_chunksize))
    except FileNotFoundError:
        raise StorageError(f"{uri}: local file {local_file} to upload does not exist") from None
    except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
        raise _s3_error(uri, exc, missing="no such bucket") from None
    discard(local_file)


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
    if not is_s3(dst_uri):
        try:
            os.makedirs(os.path.dirname(os.path.abspath(dst_uri)), exist_ok=True)
            discard(dst_uri)
            os.link(src_uri, dst_uri)
        except OSError as exc:
            raise StorageError(f"{dst_uri}: cannot link {src_uri} there "
                               f"({exc.strerror or exc})") from None
        return
    src_bucket, src_key = parse_s3(src_uri)
    bucket, key = parse_s3(dst_uri)
    try:
        s3_client().copy({"Bucket": src_bucket, "Key": src_key}, bucket, key,
                         ExtraArgs={"ChecksumAlgorithm": UPLOAD_CHECKSUM, **sse_args()},
                         Config=_transfer_config(MULTIPART_THRESHOLD, MULTIPART_CHUNKSIZE))
    except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
        raise _s3_error(f"{src_uri} -> {dst_uri}", exc) from None


def remove_tree(uri: str) -> int:
    """Remove a local folder (or file), or every S3 object under the prefix ``uri`` + ``/``.

    Returns:
        How many files or objects were removed (0: nothing there).

    Raises:
        InputError: malformed S3 URL.
        StorageError: a listing or a deletion failed (S3 needs ``s3:DeleteObject``).
    """
    if not is_s3(uri):
        path = os.fspath(uri)
        if not os.path.lexists(path):
            return 0
        n = sum(len(files) for _, _, files in os.walk(path)) if os.path.isdir(path) else 1
        discard(path)
        if os.path.lexists(path):
            raise StorageError(f"{path}: cannot remove")
        return n
    prefix = uri.rstrip("/") + "/"
    bucket, _ = parse_s3(prefix)
    n = 0
    for key, _, _ in list(list_s3(prefix)):
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(f"s3://{bucket}/{key}", exc) from None
        n += 1
    return n


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


def _fsync(path: str) -> None:
    """Flush a file's (or every file in a folder's) data to disk."""
    files = [os.path.join(path, n) for n in os.listdir(path)] if os.path.isdir(path) else [path]
    for name in files:
        fsync_path(name)


def exists(uri: str | os.PathLike) -> bool:
    """Whether a local file/directory or an S3 object exists.

    Raises:
        InputError: malformed S3 URL.
        StorageError: access denied or endpoint unreachable (S3).
    """
    if not is_s3(uri):
        return os.path.exists(uri)
    uri = str(uri)
    bucket, key = parse_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001
        err = _s3_error(uri, exc)
        if isinstance(err, InputError):
            return False
        raise err from None
    return True


def object_etag(uri: str) -> str:
    """The ETag of an S3 object (changes when the object is rewritten).

    Raises:
        InputError: malformed S3 URL or no such object.
        StorageError: access denied or endpoint unreachable.
    """
    bucket, key = parse_s3(uri)
    try:
        return str(s3_client().head_object(Bucket=bucket, Key=key)["ETag"])
    except Exception as exc:  # noqa: BLE001
        raise _s3_error(uri, exc) from None


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
    if not is_s3(dst_uri):
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
        return
    uri = str(dst_uri)
    bucket, key = parse_s3(uri)
    if key.endswith("/") and folder is False:
        raise InputError(f"{uri}: names a prefix, not an object key")
    try:
        s3_client().head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001
        raise _s3_error(uri, exc, missing="no such bucket") from None


def read_text(uri: str | os.PathLike) -> str | None:
    """The text (UTF-8) of a small local file or S3 object, or ``None`` when it does not exist.

    Meant for small metadata files (manifests, STAC JSON); the whole content is held in memory.

    Raises:
        InputError: malformed S3 URL.
        StorageError: access denied, endpoint unreachable, or the local file cannot be read.
    """
    if not is_s3(uri):
        path = os.fspath(uri)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    uri = str(uri)
    bucket, key = parse_s3(uri)
    try:
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001
        err = _s3_error(uri, exc)
        if isinstance(err, InputError):
            return None
        raise err from None
    return body.decode("utf-8")


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
    m = _S3_URL.match(prefix_uri) if isinstance(prefix_uri, str) else None
    if m is None or not m.group("bucket"):
        raise InputError(f"{prefix_uri}: not an S3 URL (expected s3://BUCKET/PREFIX)")
    bucket, prefix = m.group("bucket"), m.group("key")
    paginator = s3_client().get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], obj.get("ETag", "").strip('"'), int(obj.get("Size", 0))
    except Exception as exc:  # noqa: BLE001
        raise _s3_error(prefix_uri, exc, missing="no such bucket") from None


# ------------------------------------------------------------------------ links a browser opens

#: Longest validity S3 allows for a SigV4 presigned URL (7 days), and the default of
#: :func:`browser_link` (``SR_REPORT_LINK_EXPIRES_S`` sets a shorter one).
PRESIGN_MAX_S = 7 * 24 * 3600
_OFF = {"0", "false", "no", "off"}


class BrowserLink(NamedTuple):
    """A URL for a browser, one sentence saying where and until when it opens, and the seconds a
    presigned URL stays valid (``None`` for any other link)."""

    url: str
    note: str
    expires_s: int | None = None


def presign_settings() -> tuple[bool, int]:
    """``(presign, expires_s)`` from the environment: ``SR_PRESIGN_REPORTS`` (``0``, ``false``,
    ``no`` or ``off`` turns presigned links off, for buckets whose policy forbids them) and
    ``SR_REPORT_LINK_EXPIRES_S`` (seconds, 1 .. :data:`PRESIGN_MAX_S`; default the maximum).

    Raises:
        InputError: ``SR_REPORT_LINK_EXPIRES_S`` is not a whole number of seconds in that range.
    """
    presign = os.environ.get("SR_PRESIGN_REPORTS", "1").strip().lower() not in _OFF
    raw = os.environ.get("SR_REPORT_LINK_EXPIRES_S", "").strip()
    if not raw:
        return presign, PRESIGN_MAX_S
    if not raw.isdigit() or not 1 <= int(raw) <= PRESIGN_MAX_S:
        raise InputError(f"SR_REPORT_LINK_EXPIRES_S={raw!r}: expected whole seconds from 1 to "
                         f"{PRESIGN_MAX_S} (7 days, the longest S3 allows)")
    return presign, int(raw)


def _bucket_region(bucket: str) -> str | None:
    """The bucket's region as S3 reports it (``x-amz-bucket-region``, also on a 301/403
    answer), or ``None`` when it cannot be asked."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        meta = s3_client().head_bucket(Bucket=bucket)["ResponseMetadata"]
    except ClientError as exc:
        meta = exc.response.get("ResponseMetadata", {})
    except BotoCoreError:
        return None
    return (meta.get("HTTPHeaders") or {}).get("x-amz-bucket-region")


def _presign_client(region: str | None) -> Any:
    """An S3 client that signs SigV4 (``X-Amz-Signature``; boto3's default presigned URL is the
    legacy SigV2 form) for ``region``, path-style on the regional endpoint (so a bucket outside
    the default region, or one with dots in its name, gets a URL that opens without a
    redirect); the endpoint is ``AWS_ENDPOINT_URL`` where set. Cached like :func:`s3_client`."""
    key = ("presign", os.getpid(), os.environ.get("AWS_ENDPOINT_URL"), region)
    client = _clients.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        redact_s3_logs(session.get_credentials())
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        client = session.client("s3", region_name=region, config=config)
        with _client_lock:
            client = _clients.setdefault(key, client)
    return client


def browser_link(uri: str, *, presign: bool | None = None,
                 expires_s: int | None = None) -> BrowserLink:
    """A link to a published file that a browser (the Prefect UI, a chat message) can open.

    * ``s3://bucket/key``: a presigned GET URL (SigV4, valid ``expires_s``; no network needed
      but one HEAD of the bucket for its region), or, with presigning off, the ``s3://`` URI
      itself, which no browser opens (the note says how to fetch it instead);
    * a local path: its ``file://`` URL; browsers open it only on the machine holding the file,
      and refuse it as a link from an http(s) page (the note says so);
    * an ``http(s)://`` URL: itself.

    Args:
        uri: the published file.
        presign: presign S3 links; ``None`` takes :func:`presign_settings`.
        expires_s: validity of a presigned URL in seconds (1 .. :data:`PRESIGN_MAX_S`);
            ``None`` takes :func:`presign_settings`.

    Returns:
        A :class:`BrowserLink`; when presigning fails (no credentials) its URL is the ``s3://``
        URI and its note says why.

    Raises:
        InputError: a malformed ``s3://`` URI, ``expires_s`` out of range, or an invalid
            ``SR_REPORT_LINK_EXPIRES_S``.
    """
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    if not is_s3(uri):
        if "://" in uri:
            return BrowserLink(uri, "")
        return BrowserLink(Path(uri).resolve().as_uri(),
                           "file:// link: it opens only in a browser on the machine that holds "
                           "the file, and browsers refuse it from a web page: copy it into the "
                           "address bar")
    bucket, key = parse_s3(uri)
    env_presign, env_expires = presign_settings()
    presign = env_presign if presign is None else presign
    expires_s = env_expires if expires_s is None else expires_s
    if not 1 <= expires_s <= PRESIGN_MAX_S:
        raise InputError(f"presigned link validity {expires_s} s: expected 1 .. {PRESIGN_MAX_S}")
    fetch_hint = f"fetch it with `aws s3 cp {uri} .`"
    if not presign:
        return BrowserLink(uri, f"s3:// link (presigned links are off, SR_PRESIGN_REPORTS=0): "
                                f"a browser cannot open it; {fetch_hint}")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        url = _presign_client(_bucket_region(bucket)).generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s)
    except (BotoCoreError, ClientError) as exc:
        return BrowserLink(uri, f"s3:// link (could not presign: {_first_line(exc)}); "
                                f"{fetch_hint}")
    until = datetime.now(timezone.utc) + timedelta(seconds=expires_s)
    # temporary credentials (an IAM role's) sign a URL that dies with them, whatever it says
    short = (", or sooner: it was signed with temporary credentials and stops working when they "
             "expire" if "X-Amz-Security-Token=" in url else "")
    return BrowserLink(url, f"presigned link, valid for {_duration(expires_s)}, until "
                            f"{until:%Y-%m-%d %H:%M} UTC{short} (then make a new one: "
                            f"`aws s3 presign {uri}`)", expires_s)


def _duration(seconds: int) -> str:
    """``7 days``, ``12 h``, ``90 min``, ``45 s``."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} day" if unit == "days" and n == 1 else f"{n} {unit}"
    return f"{seconds} s"
