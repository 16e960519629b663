"""The publication claim: one run at a time writes a destination's files, across hosts too.

The work-key lock (:mod:`sr_core.publication.journal`) is a local ``flock``: it keeps two runs of
one job on one host apart, not runs on two hosts (or with two scratch folders, or with different
models)
that publish to one destination. Their manifest writes are conditional, so only one manifest
wins; but without more, the loser could already have overwritten the winner's files at the fixed
names. So before it writes anything at DST a run takes DST's **claim**, a small object beside
the manifest, ``DST_STEM.claim.json``, created only if absent
(:meth:`sr_core.storage.Store.put` with ``if_none_match``):

* S3: ``PutObject`` with ``IfNoneMatch="*"`` (and the SSE settings of every write);
* local: :func:`os.link` of a complete temporary file (fails if the name exists).

It holds the owner's id, host and PID and an expiry (now + :data:`LEASE_ENV` seconds, default
:data:`DEFAULT_LEASE_S`). A run that finds a live claim raises :class:`~sr_core.errors.BusyError`
("another run ... is publishing DST"), having written nothing there. A claim is *stale*, and
taken over, when it has expired, or when its host is this host and its PID is not running (a run
killed with ``kill -9`` on this host: a rerun need not wait for the lease). The takeover is a
put with ``if_match=<the stale claim's version>`` (S3: ``PutObject`` with ``IfMatch=<ETag>``;
local: a rename over the stale claim under a lock on it), so of two runs taking over one stale
claim exactly one succeeds.

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
from sr_core.errors import BusyError, InputError
from sr_core.publication.manifest import strip_ext

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
            storage.store_for(self.uri).delete(self.uri)
        except Exception:  # noqa: BLE001 - a claim left behind only expires
            pass


def _read(uri: str) -> tuple[dict | None, str | None]:
    """The claim at ``uri`` (``None`` when absent) and its version (S3 ETag)."""
    try:
        blob = storage.store_for(uri).read(uri)
    except storage.NotFound:
        return None, None
    try:
        doc = json.loads(blob.text())
    except json.JSONDecodeError:
        doc = {}
    return (doc if isinstance(doc, dict) else {}), blob.version


def _put(uri: str, text: str, *, if_none_match: bool = False, if_match: str | None = None
         ) -> bool:
    """Conditional write of a claim (:meth:`sr_core.storage.Store.put`); ``False`` when the
    condition failed.

    Raises:
        StorageError: the claim cannot be written.
    """
    try:
        storage.store_for(uri).put(uri, text.encode(), if_none_match=if_none_match,
                                   if_match=if_match, content_type="application/json")
    except storage.ConditionFailed:
        return False
    return True


def acquire(dst: str, scratch: str) -> Claim:
    """Take DST's publication claim (see the module docstring).

    Args:
        dst: the output's URI (local path or ``s3://``).
        scratch: the run's scratch folder (not used: the store writes its own temporary beside
            a local claim; it stays for callers).

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
        if _put(uri, text, if_none_match=True):
            return Claim(uri, owner, dst)
        doc, etag = _read(uri)
        if doc is None:
            continue  # released meanwhile: try again
        if not _stale(doc, now):
            left = max(0, int(float(doc.get("expires", now)) - now))
            raise BusyError(f"{dst}: another run (pid {doc.get('pid')} on {doc.get('host')}) is "
                            f"publishing this destination (its claim lasts {left} s more); "
                            "this run's result was not published")
        if _put(uri, text, if_match=etag):
            return Claim(uri, owner, dst)
    raise BusyError(f"{dst}: the publication claim kept changing hands; this run's result was "
                    "not published")
