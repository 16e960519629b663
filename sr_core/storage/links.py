"""Links a browser opens to a published file: presigned S3 GET URLs, ``file://`` URLs.

:func:`browser_link` is what reports and the Prefect UI show; :func:`presign_settings` reads
``SR_PRESIGN_REPORTS`` and ``SR_REPORT_LINK_EXPIRES_S``. May import :mod:`sr_core.errors`,
:mod:`sr_core.storage.base`, :mod:`sr_core.storage.s3` and :mod:`sr_core.storage.security`.
"""

from __future__ import annotations

import os
from datetime import UTC
from typing import Any, NamedTuple

from sr_core.errors import InputError
from sr_core.storage import s3 as _s3
from sr_core.storage.base import is_s3
from sr_core.storage.s3 import first_line, parse_s3
from sr_core.storage.security import redact_s3_logs

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
        meta = _s3.s3_client().head_bucket(Bucket=bucket)["ResponseMetadata"]
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
    client = _s3._clients.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        redact_s3_logs(session.get_credentials())
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        client = session.client("s3", region_name=region, config=config)
        with _s3._client_lock:
            client = _s3._clients.setdefault(key, client)
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
    from datetime import datetime, timedelta
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
        return BrowserLink(uri, f"s3:// link (could not presign: {first_line(exc)}); "
                                f"{fetch_hint}")
    until = datetime.now(UTC) + timedelta(seconds=expires_s)
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
