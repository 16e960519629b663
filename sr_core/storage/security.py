"""What the pipeline lets in: input locations, S3 keys, scene sizes, and GDAL's own network access.

Policies (each raises a one-line :class:`~sr_core.errors.InputError` naming the input):

* **Input locations** (:func:`check_source`): ``s3://bucket/key`` URLs and local paths only. GDAL
  virtual paths (``/vsicurl/``, ``/vsis3/``, ``/vsizip/``, any ``/vsi...``), other URL schemes
  (``http://``, ``https://``, ``ftp://``, ``file://``, ``gs://``, ...) and GDAL's
  ``DRIVER:...`` connection strings (``GTIFF_DIR:``, ``HDF5:``, ...) are refused before anything
  opens them, so no server-side request forgery goes through a scene, STAC or weights reference.
  Local paths may be restricted to folders with :data:`ALLOWED_ROOTS_ENV`
  (``SR_ALLOWED_LOCAL_ROOTS``: folders separated by ``os.pathsep``; a path is allowed when its
  real path, symbolic links resolved, lies under one of them). **Default: unset, every local
  path is allowed** (the CLI runs as its user, who can read those files anyway); set it on
  shared workers and deployments.
* **S3 keys** (:func:`check_key`): at most 1,024 bytes of UTF-8 (S3's own limit), no control
  characters (newlines, NUL, DEL), no leading ``/``, and no empty, ``.`` or ``..`` path segment
  (``a//b``, ``a/./b``, ``../x``). A key is never joined into a local path as it is: local file
  names are built from :func:`safe_file_name` (a sanitised, shortened copy of its last part).
* **Scene ids** (:func:`check_relative_id`): archive scene ids (relative paths or STAC item ids)
  become output paths under the output prefix, so they obey the same rules as keys and may not
  be absolute or contain a backslash.
* **Size caps** (:func:`check_size`), checked from the header before any pixel is read:
  :data:`MAX_PIXELS_ENV` (``SR_MAX_PIXELS``, default :data:`DEFAULT_MAX_PIXELS` = 2^31, e.g.
  46,340 x 46,340 px) pixels per plane, and :data:`MAX_BYTES_ENV` (``SR_MAX_DECODED_BYTES``,
  default :data:`DEFAULT_MAX_BYTES` = 64 GiB) for the decoded input (height x width x planes x
  bytes per sample). A 100,000 x 100,000 header over a few hundred bytes (which GDAL would
  "read" as zeros for hours) is refused at once.
* **GDAL never reaches the network on its own** (:func:`guard_gdal_network`, run when
  :mod:`sr_core` is imported, in every worker too): ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` is set
  to an extension no file has, so GDAL's curl-based file systems (``/vsicurl/``, ``/vsis3/``,
  ``/vsigs/``, ... and the ``http://`` names GDAL maps to them) refuse every file, also one that a
  VRT or sidecar file names. sr_core moves data with boto3, never through GDAL's network file
  systems; set ``SR_ALLOW_GDAL_NETWORK=1`` to leave GDAL's setting alone.
"""

from __future__ import annotations

import os
import re
import unicodedata

from sr_core.errors import InputError

#: Environment variable: local folders inputs may come from (``os.pathsep``-separated).
ALLOWED_ROOTS_ENV = "SR_ALLOWED_LOCAL_ROOTS"
#: Environment variable: the pixel cap per plane (height x width).
MAX_PIXELS_ENV = "SR_MAX_PIXELS"
#: Environment variable: the decoded-size cap of an input, bytes.
MAX_BYTES_ENV = "SR_MAX_DECODED_BYTES"
#: Default pixel cap per plane: 2^31 (46,340 px square; a Sentinel-2 tile is 10,980 px square).
DEFAULT_MAX_PIXELS = 2**31
#: Default cap of the decoded input (height x width x planes x bytes per sample): 64 GiB.
DEFAULT_MAX_BYTES = 64 * 2**30
#: S3's limit on a key's length, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
#: The value of ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` that no file name ends with.
GDAL_NO_NETWORK = ".sr-pipeline-gdal-network-disabled"

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_GDAL_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")  # GTIFF_DIR:1:x.tif, HDF5:"f":d, NETCDF:...
_VSI = re.compile(r"^/vsi[a-z0-9_]*(/|$)", re.IGNORECASE)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _printable(text: str, limit: int = 120) -> str:
    """``text`` for a one-line message: control characters escaped, long text shortened."""
    shown = text.encode("unicode_escape").decode("ascii") if _has_control(text) else text
    return shown if len(shown) <= limit else f"{shown[:limit // 2]}...{shown[-limit // 4:]}"


def check_key(key: str, where: str) -> str:
    """Refuse an S3 key the pipeline will not read or write (see the module docstring).

    Args:
        key: the object key (no bucket, no ``s3://``); a trailing ``/`` (a prefix) is allowed.
        where: the URL for messages.

    Returns:
        ``key`` unchanged.

    Raises:
        InputError: longer than 1,024 bytes, control characters, a leading ``/``, or an empty,
            ``.`` or ``..`` segment.
    """
    shown = _printable(where)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InputError(f"{shown}: S3 key is {len(key.encode('utf-8', 'surrogatepass')):,} "
                         f"bytes; S3 allows at most {MAX_KEY_BYTES}")
    if _has_control(key):
        raise InputError(f"{shown}: S3 key contains control characters (newline, tab, NUL...); "
                         "refused")
    if key.startswith("/"):
        raise InputError(f"{shown}: S3 key starts with '/'; refused")
    parts = key[:-1].split("/") if key.endswith("/") else key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{shown}: S3 key has an empty, '.' or '..' path segment; refused")
    return key


def check_relative_id(rel: str, where: str) -> str:
    """Refuse a scene id that could leave the output prefix once joined to it.

    Args:
        rel: a relative path (``2024/05/scene_a``) or STAC item id.
        where: the source or listing for messages.

    Returns:
        ``rel`` unchanged.

    Raises:
        InputError: empty, absolute, a backslash, control characters, more than 1,024 bytes, or
            an empty, ``.`` or ``..`` segment.
    """
    if not rel:
        raise InputError(f"{_printable(where)}: empty scene id")
    if "\\" in rel or os.path.isabs(rel):
        raise InputError(f"{_printable(where)}: scene id {_printable(rel)!r} is absolute or has "
                         "a backslash; refused")
    check_key(rel, f"{where} (scene id {_printable(rel)!r})")
    return rel


def safe_file_name(name: str, limit: int = 100) -> str:
    """A local file name made from an untrusted name (an S3 key's last part): only letters,
    digits, ``.``, ``_`` and ``-`` kept (others become ``_``), no leading dot, at most ``limit``
    (>= 64) characters (a long name keeps its start and its last 39 characters, so extensions
    such as ``.nii.gz`` survive), never empty, ``.`` or ``..``."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "object"
    if len(clean) > limit:
        clean = clean[: limit - 40] + "_" + clean[-39:]
    return clean


def allowed_roots() -> list[str]:
    """The local folders of :data:`ALLOWED_ROOTS_ENV` (real paths); empty: every path allowed."""
    raw = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return [os.path.realpath(p) for p in raw.split(os.pathsep) if p.strip()]


def check_source(uri: str | os.PathLike, what: str = "input") -> str:
    """Refuse an input location that is neither ``s3://`` nor an allowed local path.

    Args:
        uri: the SRC of a run, an archive scene, a STAC href or a weights reference.
        what: what it is, for messages (``"input"``, ``"STAC link"``, ...).

    Returns:
        ``uri`` as a string.

    Raises:
        InputError: a GDAL virtual path (``/vsi...``), a URL other than ``s3://``, a GDAL
            connection string, control characters, or a local path outside
            ``SR_ALLOWED_LOCAL_ROOTS`` (when set).
    """
    text = os.fspath(uri)
    if not isinstance(text, str):
        raise InputError(f"{uri!r}: {what} must be a path or s3:// URL")
    shown = _printable(text)
    m = _SCHEME.match(text)
    if m:
        if m.group("scheme").lower() == "s3":
            return text
        raise InputError(f"{shown}: {m.group('scheme')}:// {what} refused; only s3:// URLs and "
                         "local paths are read (the pipeline never fetches URLs)")
    if _VSI.match(text):
        raise InputError(f"{shown}: GDAL virtual file system paths (/vsi...) are refused as "
                         f"{what}; give a local path or an s3:// URL")
    if _has_control(text):
        raise InputError(f"{shown}: {what} path contains control characters; refused")
    if _GDAL_PREFIX.match(text) and not os.path.exists(text):
        raise InputError(f"{shown}: GDAL connection strings (DRIVER:...) are refused as {what}; "
                         "give a local path or an s3:// URL")
    roots = allowed_roots()
    if roots:
        real = os.path.realpath(text)
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            raise InputError(f"{shown}: {what} lies outside the allowed local folders "
                             f"({ALLOWED_ROOTS_ENV}={os.environ.get(ALLOWED_ROOTS_ENV)})")
    return text


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"{name}={raw!r}: must be a whole number") from None
    if value < 1:
        raise InputError(f"{name}={raw!r}: must be at least 1")
    return value


def size_caps() -> tuple[int, int]:
    """``(max pixels per plane, max decoded bytes)`` from the environment or the defaults.

    Raises:
        InputError: a cap variable is not a positive whole number.
    """
    return (_env_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS),
            _env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))


def check_size(name: str, height: int, width: int, planes: int, itemsize: int) -> None:
    """Refuse an input whose header promises more pixels or bytes than the caps allow (before any
    pixel is read).

    Args:
        name: the input, for messages.
        height, width: pixels per plane; planes: bands (or medical planes); itemsize: bytes per
            sample.

    Raises:
        InputError: over a cap (the message names the cap's variable), or a dimension < 1.
    """
    if min(height, width, planes) < 1:
        raise InputError(f"{name}: header says {width} x {height} px x {planes} plane(s); "
                         "nothing to read")
    max_px, max_bytes = size_caps()
    if height * width > max_px:
        raise InputError(f"{name}: header says {width:,} x {height:,} px = {height * width:,} "
                         f"pixels per plane, over the cap of {max_px:,} ({MAX_PIXELS_ENV}); "
                         "refused before reading")
    decoded = height * width * planes * itemsize
    if decoded > max_bytes:
        raise InputError(f"{name}: header says {decoded:,} bytes of pixels ({width:,} x "
                         f"{height:,} px x {planes} plane(s) x {itemsize} B), over the cap of "
                         f"{max_bytes:,} ({MAX_BYTES_ENV}); refused before reading")


def guard_gdal_network() -> None:
    """Stop GDAL from opening network files by itself (see the module docstring); a no-op when
    ``SR_ALLOW_GDAL_NETWORK`` is set."""
    if os.environ.get("SR_ALLOW_GDAL_NETWORK"):
        return
    os.environ["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = GDAL_NO_NETWORK


#: Environment variable: server-side encryption of every upload (``aws:kms``, ``aws:kms:dsse``
#: or ``AES256``); unset: the bucket's default encryption applies.
SSE_ENV = "SR_S3_SSE"
#: Environment variable: the KMS key (id, ARN or alias) for ``aws:kms`` uploads; unset with
#: ``aws:kms``: the account's AWS-managed ``aws/s3`` key.
SSE_KMS_KEY_ENV = "SR_S3_SSE_KMS_KEY_ID"
_SSE_MODES = ("aws:kms", "aws:kms:dsse", "AES256")


def sse_args() -> dict[str, str]:
    """``ExtraArgs`` for boto3 uploads from :data:`SSE_ENV` and :data:`SSE_KMS_KEY_ENV`:
    ``{"ServerSideEncryption": ..., "SSEKMSKeyId": ...}``, or ``{}`` when unset.

    Raises:
        InputError: an unknown mode, or a KMS key without a KMS mode.
    """
    mode = os.environ.get(SSE_ENV, "").strip()
    key = os.environ.get(SSE_KMS_KEY_ENV, "").strip()
    if not mode:
        if key:
            raise InputError(f"{SSE_KMS_KEY_ENV} is set but {SSE_ENV} is not; set "
                             f"{SSE_ENV}=aws:kms")
        return {}
    if mode not in _SSE_MODES:
        raise InputError(f"{SSE_ENV}={mode!r}: expected one of {', '.join(_SSE_MODES)}")
    if key and not mode.startswith("aws:kms"):
        raise InputError(f"{SSE_KMS_KEY_ENV} needs {SSE_ENV}=aws:kms (it is {mode})")
    return {"ServerSideEncryption": mode, **({"SSEKMSKeyId": key} if key else {})}


#: Loggers (and their children) whose records :func:`redact_s3_logs` cleans: the S3 stack.
REDACTED_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
#: What a redacted credential becomes in a log record.
REDACTED = "[redacted]"
_CREDENTIAL_PATTERNS = (
    # SigV4 Authorization header / presigned URL: the access key id before the scope
    re.compile(r"((?:X-Amz-)?Credential=)[^/\s,'\"&]+", re.IGNORECASE),
    # session token as a header (dict or canonical request) or query parameter
    re.compile(r"((?:x-amz-security-token|X-Amz-Security-Token)['\"]?\s*[:=]\s*b?['\"]?)"
               r"[^'\"\s&,]+", re.IGNORECASE),
    # signatures (a presigned URL's is a bearer token for that URL)
    re.compile(r"((?:X-Amz-)?Signature=)[0-9a-fA-F]+", re.IGNORECASE),
)
_known_secrets: set[str] = set()


def redact(text: str) -> str:
    """``text`` with AWS credentials replaced by :data:`REDACTED`: the values registered by
    :func:`redact_s3_logs` (access key id, secret key, session token) and, whatever their value,
    SigV4 ``Credential=`` scopes, ``X-Amz-Security-Token`` headers and query parameters, and
    signatures."""
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redacting_factory(previous):
    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if record.name.split(".", 1)[0] in REDACTED_LOGGERS:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record stays as it is
                return record
            clean = redact(message)
            if clean != message:  # else left alone (filters may read its msg and args)
                record.msg, record.args = clean, None
        return record

    factory.sr_redacting = True
    return factory


def redact_s3_logs(credentials=None) -> None:
    """Make sure no log record of the S3 stack (:data:`REDACTED_LOGGERS`, at any level,
    botocore's DEBUG request dumps included) carries a credential, whatever handlers the
    application installs.

    Installs (once per process; again if another library replaced it) a
    :func:`logging.setLogRecordFactory` wrapper that formats those records and passes the text
    through :func:`redact`. A factory rather than a :class:`logging.Filter`: a filter on the
    ``botocore`` logger would not see the records of its children (``botocore.endpoint``,
    ``botocore.auth``, ...), which propagate to handlers without passing their parents'
    filters. It costs nothing at the default levels: records below a logger's level are never
    made.

    Args:
        credentials: a botocore ``Credentials`` object (``None``: none registered); its current
            access key id, secret key and session token are redacted wherever they appear.
    """
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        _known_secrets.update(v for v in (frozen.access_key, frozen.secret_key, frozen.token)
                              if v and len(v) >= 8)
    import logging

    current = logging.getLogRecordFactory()
    if not getattr(current, "sr_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(current))
