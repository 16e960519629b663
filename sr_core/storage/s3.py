"""S3 as a :class:`~sr_core.storage.base.Store`, through boto3.

Objects are ``s3://bucket/key`` URLs (:func:`parse_s3`). Uploads use boto3's managed transfer
(multipart above a threshold) with ``ChecksumAlgorithm="SHA256"`` and the server-side encryption
of :func:`sr_core.storage.security.sse_args`; an object becomes visible only when its upload
completes. A version is the object's ETag as S3 quotes it; conditional writes are ``PutObject``
with ``IfNoneMatch="*"`` or ``IfMatch=<ETag>`` (a failed condition, HTTP 412 or 409, is
:class:`~sr_core.storage.base.ConditionFailed`). Every boto3 / botocore / s3transfer failure
becomes one line naming the URI (:func:`s3_error`).

The endpoint comes from the standard ``AWS_ENDPOINT_URL`` environment variable, which boto3
reads itself; credentials and region come from boto3's usual chain.

May import :mod:`sr_core.errors`, :mod:`sr_core.storage.base`, :mod:`sr_core.storage.security`
and (lazily) :mod:`sr_core.storage.retries` for the client's retry settings.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

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
)
from sr_core.storage.security import check_key, redact_s3_logs, safe_file_name, sse_args

#: Checksum S3 computes and stores with each uploaded object (and each part).
UPLOAD_CHECKSUM = "SHA256"

_S3_URL = re.compile(r"^s3://(?P<bucket>[^/]*)/?(?P<key>.*)$", re.IGNORECASE | re.DOTALL)
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}
_CONDITION = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}

_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


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

    Retries (:mod:`sr_core.storage.retries`): botocore's ``standard`` mode (it retries
    throttling such as 503 SlowDown, 5xx answers, connection resets and timeouts, with
    exponential backoff and jitter) up to 6 attempts per request (``AWS_MAX_ATTEMPTS``
    overrides, ``AWS_RETRY_MODE=adaptive`` adds client-side rate limiting), connect timeout
    10 s, read timeout 60 s; every retry is logged at WARNING, one line without credentials.
    Log records of boto3, botocore, s3transfer and urllib3 are redacted
    (:func:`sr_core.storage.security.redact_s3_logs`), so even botocore's DEBUG request dumps
    carry no access key id, session token or signature. The endpoint is boto3's own
    ``AWS_ENDPOINT_URL`` handling; the cache is keyed on that variable, the retry settings and
    the process id, so a forked or spawned worker builds its own client.

    Returns:
        A ``botocore.client.S3`` client.
    """
    from sr_core.storage import retries

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


def client_error(exc: BaseException) -> Any | None:
    """The botocore ClientError that ``exc`` is or was raised from, if any."""
    from botocore.exceptions import ClientError

    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, ClientError):
            return cur
        last = getattr(cur, "last_exception", None)  # boto3 RetriesExceededError
        cur = cur.__cause__ or cur.__context__ or last
        seen += 1
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def s3_error(uri: str, exc: BaseException, *, missing: str = "no such object") -> Exception:
    """Turn a boto3 / botocore / s3transfer exception into a one-line SR error naming ``uri``:
    :class:`~sr_core.storage.base.NotFound` (``missing``, or "no such bucket") or
    :class:`~sr_core.errors.StorageError`."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    ce = client_error(exc)
    if ce is not None:
        err = ce.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(ce.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or (not code and status == "404"):
            if code == "NoSuchBucket":
                return NotFound(f"{uri}: no such bucket")
            return NotFound(f"{uri}: {missing}")
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
        return StorageError(f"{uri}: cannot reach S3 ({first_line(exc)})")
    return StorageError(f"{uri}: S3 transfer failed ({first_line(exc)})")


def _transfer_config(transfer: Transfer = DEFAULT_TRANSFER) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=transfer.multipart_threshold,
                          multipart_chunksize=transfer.multipart_chunksize)


def scratch_file(scratch_dir: str | os.PathLike, key: str) -> str:
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


class S3Store(Store):
    """S3 objects through the process's boto3 client (see the module docstring)."""

    def read(self, uri: str, *, max_bytes: int | None = None) -> Blob:
        bucket, key = parse_s3(uri)
        ranged = {} if max_bytes is None else {"Range": f"bytes=0-{max_bytes - 1}"}
        try:
            obj = s3_client().get_object(Bucket=bucket, Key=key, **ranged)
            return Blob(obj["Body"].read(), str(obj["ETag"]))
        except Exception as exc:  # noqa: BLE001 - every boto3 failure becomes one line
            raise s3_error(uri, exc) from None

    def stat(self, uri: str) -> ObjectInfo | None:
        bucket, key = parse_s3(uri)
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            err = s3_error(uri, exc)
            if isinstance(err, NotFound):
                return None
            raise err from None
        return ObjectInfo(uri, int(head["ContentLength"]), str(head["ETag"]))

    def exists(self, uri: str) -> bool:
        return self.stat(uri) is not None

    def put(self, uri: str, data: bytes, *, if_none_match: bool = False,
            if_match: str | None = None, content_type: str | None = None) -> str:
        bucket, key = parse_s3(uri)
        cond = {"IfNoneMatch": "*"} if if_none_match else {}
        if if_match is not None:
            cond["IfMatch"] = if_match
        try:
            put = s3_client().put_object(
                Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm=UPLOAD_CHECKSUM,
                **({"ContentType": content_type} if content_type else {}), **sse_args(), **cond)
        except Exception as exc:  # noqa: BLE001
            ce = client_error(exc)
            code = str(ce.response.get("Error", {}).get("Code", "")) if ce is not None else ""
            if cond and code in _CONDITION or (if_match is not None and code == "NoSuchKey"):
                raise ConditionFailed(f"{uri}: changed since it was read") from None
            raise s3_error(uri, exc, missing="no such bucket") from None
        return str(put["ETag"])

    def publish(self, local_file: str, uri: str, transfer: Transfer = DEFAULT_TRANSFER) -> None:
        local_file = os.fspath(local_file)
        if os.path.isdir(local_file):
            base = str(uri).rstrip("/")
            for name in sorted(os.listdir(local_file)):
                self.publish(os.path.join(local_file, name), f"{base}/{name}", transfer)
            discard(local_file)
            return
        bucket, key = parse_s3(uri)
        extra = {"ChecksumAlgorithm": UPLOAD_CHECKSUM, **sse_args()}
        try:
            s3_client().upload_file(local_file, bucket, key, ExtraArgs=extra,
                                    Config=_transfer_config(transfer))
        except FileNotFoundError:
            raise StorageError(f"{uri}: local file {local_file} to upload does not exist"
                               ) from None
        except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
            raise s3_error(uri, exc, missing="no such bucket") from None
        discard(local_file)

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        m = _S3_URL.match(prefix_uri) if isinstance(prefix_uri, str) else None
        if m is None or not m.group("bucket"):
            raise InputError(f"{prefix_uri}: not an S3 URL (expected s3://BUCKET/PREFIX)")
        bucket, prefix = m.group("bucket"), m.group("key")
        paginator = s3_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj.get("Size", 0)),
                                     str(obj.get("ETag", "")))
        except Exception as exc:  # noqa: BLE001
            raise s3_error(prefix_uri, exc, missing="no such bucket") from None

    def delete(self, uri: str) -> None:
        bucket, key = parse_s3(uri)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise s3_error(uri, exc) from None

    def copy(self, src_uri: str, dst_uri: str) -> None:
        src_bucket, src_key = parse_s3(src_uri)
        bucket, key = parse_s3(dst_uri)
        try:
            s3_client().copy({"Bucket": src_bucket, "Key": src_key}, bucket, key,
                             ExtraArgs={"ChecksumAlgorithm": UPLOAD_CHECKSUM, **sse_args()},
                             Config=_transfer_config())
        except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
            raise s3_error(f"{src_uri} -> {dst_uri}", exc) from None

    def remove_tree(self, uri: str) -> int:
        prefix = uri.rstrip("/") + "/"
        parse_s3(prefix)
        n = 0
        for info in list(self.list(prefix)):
            self.delete(info.uri)
            n += 1
        return n

    def fetch(self, uri: str, scratch_dir: str | os.PathLike) -> str:
        bucket, key = parse_s3(uri)
        if key.endswith("/"):
            return self._fetch_prefix(uri, bucket, key, scratch_dir)
        local = scratch_file(scratch_dir, key)
        try:
            s3_client().download_file(bucket, key, local, Config=_transfer_config())
        except OSError as exc:
            discard(local)
            if isinstance(exc, (ConnectionError, TimeoutError)):
                raise s3_error(uri, exc) from None
            # local disk (botocore's own errors are not OSErrors)
            raise StorageError(f"{uri}: cannot write {local} ({exc.strerror or exc})") from None
        except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
            discard(local)
            raise s3_error(uri, exc) from None
        return local

    def _fetch_prefix(self, uri: str, bucket: str, prefix: str,
                      scratch_dir: str | os.PathLike) -> str:
        """Download the objects directly under ``prefix`` into a new folder (see
        :func:`sr_core.storage.fetch`)."""
        folder = scratch_file(scratch_dir, prefix)
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
                                     Config=_transfer_config())
        except InputError:
            discard(folder)
            raise
        except Exception as exc:  # noqa: BLE001 - every boto3/s3transfer failure becomes one line
            discard(folder)
            raise s3_error(uri, exc, missing="no such bucket") from None
        return folder

    def temp_path(self, dst_uri: str, scratch_dir: str | os.PathLike) -> str:
        _, key = parse_s3(str(dst_uri))
        return scratch_file(scratch_dir, key)

    def check_destination(self, dst_uri: str, *, folder: bool | None = False) -> None:
        uri = str(dst_uri)
        bucket, key = parse_s3(uri)
        if key.endswith("/") and folder is False:
            raise InputError(f"{uri}: names a prefix, not an object key")
        try:
            s3_client().head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001
            raise s3_error(uri, exc, missing="no such bucket") from None

    def fingerprint(self, uri: str) -> dict:
        bucket, key = parse_s3(uri)
        if key.endswith("/"):
            h, size, n = hashlib.sha256(), 0, 0
            for info in self.list(uri):
                rel = info.uri[len(uri):]
                if "/" not in rel and rel:
                    etag = info.version.strip('"')
                    h.update(f"{rel}\0{etag}\0{info.size}\n".encode())
                    size, n = size + info.size, n + 1
            if not n:
                raise InputError(f"{uri}: no objects under this prefix")
            return {"sha256": h.hexdigest(), "size": size, "files": n}
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise s3_error(uri, exc) from None
        return {"etag": head["ETag"].strip('"'), "size": int(head["ContentLength"])}
