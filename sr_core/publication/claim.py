"""The publication claim: one run at a time writes a destination's files, across hosts too.

The work-key lock (:mod:`sr_core.publication.journal`) is a local ``flock``: it keeps two runs of one job on
one host apart, not runs on two hosts (or with two scratch folders, or with different models)
that publish to one destination. Their manifest writes are conditional, so only one manifest
wins; but without more, the loser could already have overwritten the winner's files at the fixed
names. So before it writes anything at DST a run takes DST's **claim**, a small object beside
the manifest, ``DST_STEM.claim.json``, created only if absent:

* S3: ``PutObject`` with ``IfNoneMatch="*"`` (and the SSE settings of every write);
* local: :func:`os.link` of a complete temporary file (fails if the name exists).

It holds the owner's id, host and PID and an expiry (now + :data:`LEASE_ENV` seconds, default
:data:`DEFAULT_LEASE_S`). A run that finds a live claim raises :class:`~sr_core.errors.BusyError`
("another run ... is publishing DST"), having written nothing there. A claim is *stale*, and
taken over, when it has expired, or when its host is this host and its PID is not running (a run
killed with ``kill -9`` on this host: a rerun need not wait for the lease). On S3 the takeover
is a ``PutObject`` with ``IfMatch=<the stale claim's ETag>``, so of two runs taking over one
stale claim exactly one succeeds; locally the stale claim is renamed away first (only one
rename succeeds), then linked anew.

The owner checks that the claim is still its own before each file it writes
(:meth:`Claim.check`) and removes it when done (:meth:`Claim.release`, S3 ``DeleteObject`` on
``*.claim.json``). A run that outlives its lease (an upload slower than the lease) may lose
the claim to another run; it then stops before its next write with ``BusyError``. Set the lease
above the longest publication (uploads of the largest output).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from sr_core import storage
from sr_core.errors import BusyError, InputError, StorageError
from sr_core.publication.manifest import strip_ext
from sr_core.storage.security import sse_args

#: Environment variable: seconds a publication claim lasts (a crashed run's claim on another
#: host is taken over after that).
LEASE_ENV = "SR_PUBLISH_LEASE_S"
#: Default lease: 30 minutes.
DEFAULT_LEASE_S = 1800


def claim_uri(dst: str) -> str:
    """Where DST's claim goes: ``DST_STEM.claim.json``."""
    return strip_ext(dst) + ".claim.json"


def lease_s() -> float:
    """The lease in seconds (:data:`LEASE_ENV`, else :data:`DEFAULT_LEASE_S`).

    Raises:
        InputError: the variable is not a positive number.
    """
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return float(DEFAULT_LEASE_S)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"{LEASE_ENV}={raw!r}: must be a positive number of seconds")
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale(doc: dict, now: float) -> bool:
    """Whether a claim may be taken over: expired, unreadable, or its owner on this host died."""
    try:
        if float(doc["expires"]) < now:
            return True
        return doc["host"] == socket.gethostname() and not _alive(int(doc["pid"]))
    except (KeyError, TypeError, ValueError):
        return True  # not a claim we can read (a torn write cannot happen: it is one object)


@dataclass
class Claim:
    """A claim this process holds (see the module docstring).

    Attributes:
        uri: the claim's URI; owner: this claim's random id; dst: the destination it guards.
    """

    uri: str
    owner: str
    dst: str

    def check(self) -> None:
        """Raise :class:`BusyError` unless the claim is still this run's (read once)."""
        doc = _read(self.uri)[0]
        if (doc or {}).get("owner") != self.owner:
            raise BusyError(f"{self.dst}: this run's publication claim expired and another run "
                            "took it over; stopped before writing more")

    def release(self) -> None:
        """Remove the claim if it is still this run's; errors are ignored (it expires)."""
        try:
            doc = _read(self.uri)[0]
            if (doc or {}).get("owner") != self.owner:
                return
            if storage.is_s3(self.uri):
                bucket, key = storage.parse_s3(self.uri)
                storage.s3_client().delete_object(Bucket=bucket, Key=key)
            else:
                os.remove(self.uri)
        except Exception:  # noqa: BLE001 - a claim left behind only expires
            pass


def _read(uri: str) -> tuple[dict | None, str | None]:
    """The claim at ``uri`` (``None`` when absent) and its ETag (S3)."""
    if storage.is_s3(uri):
        bucket, key = storage.parse_s3(uri)
        try:
            obj = storage.s3_client().get_object(Bucket=bucket, Key=key)
            text, etag = obj["Body"].read().decode("utf-8", "replace"), obj["ETag"]
        except Exception as exc:  # noqa: BLE001
            err = storage._s3_error(uri, exc)
            if isinstance(err, InputError):
                return None, None
            raise err from None
    else:
        text, etag = storage.read_text(uri), None
        if text is None:
            return None, None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = {}
    return (doc if isinstance(doc, dict) else {}), etag


def _put(uri: str, text: str, cond: dict) -> bool:
    """Conditional write of an S3 claim; ``False`` when the condition failed."""
    bucket, key = storage.parse_s3(uri)
    try:
        storage.s3_client().put_object(Bucket=bucket, Key=key, Body=text.encode(),
                                       ContentType="application/json", **sse_args(), **cond)
    except Exception as exc:  # noqa: BLE001
        ce = storage._client_error(exc)
        code = str(ce.response.get("Error", {}).get("Code", "")) if ce is not None else ""
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return False
        raise storage._s3_error(uri, exc, missing="no such bucket") from None
    return True


def _link(uri: str, text: str, scratch: str) -> bool:
    """Create a local claim (complete content, then a link that fails if the name exists)."""
    tmp = storage.temp_path_for(uri, scratch)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.link(tmp, uri)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write the publication claim "
                           f"({exc.strerror or exc})") from None
    finally:
        storage.discard(tmp)


def acquire(dst: str, scratch: str) -> Claim:
    """Take DST's publication claim (see the module docstring).

    Args:
        dst: the output's URI (local path or ``s3://``).
        scratch: the run's scratch folder (local temporaries).

    Returns:
        The claim, to :meth:`Claim.check` before each write and :meth:`Claim.release` after.

    Raises:
        BusyError: another live run holds it (the message names its host and PID).
        StorageError: the claim cannot be written or read.
    """
    uri = claim_uri(dst)
    owner = uuid.uuid4().hex
    for _ in range(5):
        now = time.time()
        text = json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "created": now, "expires": now + lease_s(), "dst": dst})
        if storage.is_s3(uri):
            if _put(uri, text, {"IfNoneMatch": "*"}):
                return Claim(uri, owner, dst)
        elif _link(uri, text, scratch):
            return Claim(uri, owner, dst)
        doc, etag = _read(uri)
        if doc is None:
            continue  # released meanwhile: try again
        if not _stale(doc, now):
            left = max(0, int(float(doc.get("expires", now)) - now))
            raise BusyError(f"{dst}: another run (pid {doc.get('pid')} on {doc.get('host')}) is "
                            f"publishing this destination (its claim lasts {left} s more); "
                            "this run's result was not published")
        if storage.is_s3(uri):
            if _put(uri, text, {"IfMatch": etag}):
                return Claim(uri, owner, dst)
        else:
            away = f"{uri}.stale-{owner}"
            try:
                os.rename(uri, away)  # only one taker renames it
            except FileNotFoundError:
                continue
            storage.discard(away)
    raise BusyError(f"{dst}: the publication claim kept changing hands; this run's result was "
                    "not published")
