"""Publication manifests: the last file a run writes, and the only thing consumers should trust.

One manifest per output, beside it: ``DST_STEM.manifest.json`` (``out/scene_x2.tif`` ->
``out/scene_x2.manifest.json``; a DICOM series folder ``out/series/`` ->
``out/series.manifest.json``).
The archive flow uses the same file as its idempotency manifest (:mod:`sr_core.archive`).

Contents (JSON)::

    manifest_version   MANIFEST_VERSION
    input              the input's fingerprint: {"sha256", "size"} (local file), {"etag", "size"}
                       (S3 object), {"sha256", "size", "files"} (a folder or S3 prefix)
    weights_sha256     SHA-256 of the model weights ("none:<name>" for bicubic)
    parameters         {"model", "scale", "wald_window_px"}: what changes the output (the tile size
                       does not: tiled output equals whole-image output)
    work_key           the run's work key (:mod:`sr_core.publication.journal`; includes tile
                       size and halo)
    source, created, tool
    outputs            name -> {"uri", "bytes", "sha256"} for every file published (the output,
                       its reports, the STAC item of an archive scene); a folder output (DICOM
                       series) -> {"uri", "files": {name: {"bytes", "sha256"}}}

**Consumer rule**: trust only outputs listed in a manifest whose ``outputs`` is not empty, and (to
be strict) whose size and SHA-256 match. Files beside them that no manifest lists (left by a run
that crashed before its manifest) are not results.

The manifest is written last, with a **conditional write**: on S3 ``PutObject`` with
``IfNoneMatch="*"`` (no manifest before) or ``IfMatch=<ETag read when the run started>`` (replacing
one), so of two runs racing to one destination exactly one commits; locally :func:`os.link`
(fails if the name exists) or a check, under a lock on the file, that the manifest is unchanged
before :func:`os.replace`. Both are :meth:`sr_core.storage.Store.put` with ``if_none_match`` /
``if_match`` (the manifest's version).
Before any of its files is written, a run takes the destination's publication claim
(:mod:`sr_core.publication.claim`), so a run that loses never overwrites the winner's files either.

**Replacing a publication** made with another input, model or parameters keeps the destination
"complete previous or complete new" at every step (:func:`preserve`, :func:`drop_previous`):

1. the previous manifest's files are kept under side names, ``DST_STEM.previous/<name>/<file>``
   (locally hard links, on S3 server-side copies with the same SSE settings);
2. the manifest is rewritten, conditionally, to list those copies (same sizes and SHA-256, and
   ``"replacing": true``): the previous publication stays complete and trusted;
3. the new files are moved or uploaded to the fixed names (nothing lists them yet);
4. the new manifest is committed (conditionally), listing the fixed names;
5. the copies are deleted (a failure here only leaves untrusted files behind; the next
   publication at DST removes them).

A crash before step 2 leaves the previous manifest and its files untouched (stray copies are
not listed); between 2 and 4 the previous publication is trusted through its copies; after 4
the new one is. A rerun finds the manifest listing copies (:func:`mismatch` says an interrupted
replacement is not up to date), keeps those copies as they are and goes on from step 3. A
previous manifest whose files are not all present (sizes) is not a complete state to keep: it
is *retracted* instead (rewritten with no outputs, conditionally).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass

import sr_core
from sr_core import storage
from sr_core.errors import BusyError, InputError, StorageError

log = logging.getLogger(__name__)

#: Version of the manifest layout; a change invalidates every manifest.
MANIFEST_VERSION = 2
#: The fields that must match for an existing publication to be up to date.
MATCH_FIELDS = ("manifest_version", "input", "weights_sha256", "parameters")
#: Suffix of the side folder / prefix that keeps a replaced publication's files (step 1 above).
PREVIOUS_SUFFIX = ".previous"


@dataclass(frozen=True)
class Existing:
    """A manifest found at the destination when the run started.

    Attributes:
        doc: the parsed manifest (``{}`` when unreadable); text: its bytes as text; etag: its
            version (:class:`sr_core.storage.Blob`: the S3 ETag, or a local file's
            inode/mtime/size token), for a later conditional write.
    """

    doc: dict
    text: str
    etag: str | None


def strip_ext(uri: str) -> str:
    """``uri`` without its extension (``.nii.gz`` counts as one) or trailing slash."""
    head, sep, tail = uri.rstrip("/").rpartition("/")
    if tail.lower().endswith(".nii.gz"):
        tail = tail[:-3]
    stem = tail.rsplit(".", 1)[0] if "." in tail else tail
    return f"{head}{sep}{stem}"


def manifest_uri(dst: str) -> str:
    """Where the manifest of output ``dst`` goes: ``DST_STEM.manifest.json``."""
    return strip_ext(dst) + ".manifest.json"


def previous_uri(dst: str) -> str:
    """Where a replaced publication's files are kept meanwhile: ``DST_STEM.previous``."""
    return strip_ext(dst) + PREVIOUS_SUFFIX


def weights_sha256(card: dict, name: str) -> str:
    """SHA-256 of the model's weights (from its card, checked at load); models without weights
    (bicubic) give ``"none:<name>"``."""
    return card.get("sha256") or f"none:{name}"


def output_parameters(model_name: str, scale: int, wald_window_px: int, *,
                      self_ensemble: bool = False, consistency: str | None = None) -> dict:
    """The parameters that change a published output (what a manifest must match);
    ``self_ensemble`` and ``consistency`` (``--consistency``'s degradation) are listed only when
    on, so earlier manifests still match."""
    return {"model": model_name, "scale": scale, "wald_window_px": wald_window_px,
            **({"self_ensemble": True} if self_ensemble else {}),
            **({"consistency": consistency} if consistency is not None else {})}


def fingerprint(uri: str) -> dict:
    """The fingerprint of an input.

    Returns:
        Local file ``{"sha256", "size"}`` (streamed); S3 object ``{"etag", "size"}``
        (``HeadObject``); a local folder or an S3 prefix ending in ``/`` (a DICOM series)
        ``{"sha256", "size", "files"}``, the SHA-256 over its files' names and SHA-256 / ETag.

    Raises:
        InputError: no such file, folder or object.
        StorageError: S3 unreachable or access denied.
    """
    return storage.store_for(uri).fingerprint(uri)


def describe(local: str, uri: str) -> dict:
    """The manifest entry of one staged output: ``{"uri", "bytes", "sha256"}``, or for a folder
    ``{"uri", "files": {name: {"bytes", "sha256"}}}`` (read before it is published)."""
    if os.path.isdir(local):
        return {"uri": uri, "files": {
            n: {"bytes": os.path.getsize(os.path.join(local, n)),
                "sha256": storage.sha256_file(os.path.join(local, n))}
            for n in sorted(os.listdir(local))}}
    return {"uri": uri, "bytes": os.path.getsize(local), "sha256": storage.sha256_file(local)}


def build(match: dict, outputs: dict, *, work_key: str, source: str, extra: dict | None = None
          ) -> dict:
    """The manifest document: ``match`` (:data:`MATCH_FIELDS`), the outputs, provenance."""
    return {**match, "work_key": work_key, "source": source, **(extra or {}),
            "outputs": outputs,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "tool": {"name": "sr-pipeline", "version": sr_core.__version__}}


def read(uri: str) -> Existing | None:
    """The manifest at ``uri`` with its version (S3 ETag), or ``None`` when there is none.

    Raises:
        StorageError: the location cannot be read.
    """
    try:
        blob = storage.store_for(uri).read(uri)
    except storage.NotFound:
        return None
    text = blob.text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = {}
    return Existing(doc if isinstance(doc, dict) else {}, text, blob.version)


def mismatch(found: dict, expected: dict) -> str | None:
    """Why a manifest does not describe the expected output (``None``: it does)."""
    if found.get("manifest_version") != expected["manifest_version"]:
        return "manifest version changed"
    if found.get("input") != expected["input"]:
        return "input changed"
    if found.get("weights_sha256") != expected["weights_sha256"]:
        return "model weights changed"
    if found.get("parameters") != expected["parameters"]:
        return "parameters changed"
    if not found.get("outputs"):
        return "no outputs listed"
    if found.get("replacing"):
        return "a replacement was interrupted (outputs listed under their side names)"
    return None


def missing_output(doc: dict) -> str | None:
    """The first output a manifest lists that is missing or has another size (``None``: all
    present). Sizes are checked with ``stat`` / ``HeadObject``; contents are not re-hashed."""
    for name, entry in doc.get("outputs", {}).items():
        files = entry.get("files")
        items = ([(f"{entry['uri'].rstrip('/')}/{n}", f["bytes"]) for n, f in files.items()]
                 if files is not None else [(entry["uri"], entry.get("bytes"))])
        for uri, size in items:
            if _size(uri) != size:
                return f"{name}: {uri}"
    return None


def _size(uri: str) -> int | None:
    info = storage.store_for(uri).stat(uri)
    return None if info is None else info.size


def commit(uri: str, doc: dict, previous: Existing | None, scratch: str) -> Existing:
    """Write a manifest conditionally: only if the destination's manifest is still ``previous``
    (none, or the one read when the run started), through
    :meth:`sr_core.storage.Store.put`. On S3 with the server-side encryption of
    :func:`sr_core.storage.security.sse_args`, like every upload. ``scratch`` is not used (the
    store writes its own temporary beside a local manifest); it stays for callers.

    Returns:
        What is now at ``uri`` (for a later conditional write by the same run).

    Raises:
        BusyError: another run changed the manifest meanwhile (it published first).
        StorageError: the write failed.
    """
    text = json.dumps(doc, indent=2) + "\n"
    lost = BusyError(f"{uri}: another run published this destination first; this run's "
                     "manifest was not written")
    try:
        version = storage.store_for(uri).put(
            uri, text.encode(), if_none_match=previous is None,
            if_match=None if previous is None else previous.etag, content_type="application/json")
    except storage.ConditionFailed:
        raise lost from None
    return Existing(doc, text, version)


def _files(entry: dict) -> list[tuple[str, str]]:
    """``(file name, URI)`` of every file of one manifest entry (a folder lists several)."""
    if entry.get("files") is not None:
        base = entry["uri"].rstrip("/")
        return [(n, f"{base}/{n}") for n in entry["files"]]
    return [("", entry["uri"])]


def _side_entry(name: str, entry: dict, side: str) -> dict:
    """The entry of output ``name`` once its files are copied under ``side`` (sizes and SHA-256
    are the same bytes', so they carry over)."""
    base = entry["uri"].rstrip("/").rsplit("/", 1)[-1]
    uri = f"{side}/{name}/{base}" + ("/" if entry.get("files") is not None else "")
    return {**entry, "uri": uri}


def preserve(muri: str, dst: str, existing: Existing, scratch: str) -> Existing:
    """Steps 1 and 2 of a replacement (module docstring): keep the publication ``existing``
    describes complete and trusted under side names while DST's files are replaced.

    Args:
        muri: the manifest's URI; dst: the output's URI (names the side folder,
            :func:`previous_uri`).
        existing: the manifest read when the run started.
        scratch: the run's scratch directory (local temporaries).

    Returns:
        What is now at ``muri``: the manifest listing the copies (or, when ``existing`` already
        did, ``existing`` itself), a retracted manifest (no outputs) when ``existing`` listed a
        missing file, or ``existing`` when it listed none.

    Raises:
        BusyError: another run changed the manifest meanwhile.
        StorageError, InputError: a copy or the manifest write failed (DST is unchanged but
            for stray, unlisted copies).
    """
    side = previous_uri(dst)
    outputs = existing.doc.get("outputs") or {}
    if outputs and all(e.get("uri", "").startswith(side + "/") for e in outputs.values()):
        return existing  # an interrupted replacement already keeps them (a rerun)
    storage.remove_tree(side)  # copies no manifest lists (a crash after an earlier commit)
    if not outputs:
        return existing
    if missing_output(existing.doc) is not None:  # not a complete state: nothing to keep
        return commit(muri, {**existing.doc, "outputs": {}, "retracted": "incomplete, replaced"},
                      existing, scratch)
    kept = {}
    for name, entry in outputs.items():
        kept[name] = _side_entry(name, entry, side)
        for (_, src), (_, dst_file) in zip(_files(entry), _files(kept[name]), strict=True):
            storage.copy(src, dst_file)
    return commit(muri, {**existing.doc, "outputs": kept, "replacing": True}, existing, scratch)


def unlisted_outputs(previous: dict, outputs: dict, dst: str) -> list[dict]:
    """The entries of a previous publication at ``dst`` that the new one does not list again
    (e.g. the self-ensemble's uncertainty layer after a run without it): files that would stay
    beside DST, listed by no manifest. Side copies (:func:`previous_uri`) are not among them."""
    keep = {e.get("uri") for e in outputs.values()}
    side = previous_uri(dst) + "/"
    return [e for e in (previous.get("outputs") or {}).values()
            if e.get("uri") and e["uri"] not in keep and not e["uri"].startswith(side)]


def drop_unlisted(entries: list[dict]) -> None:
    """Delete the files of :func:`unlisted_outputs` once the new manifest is committed; a
    failure is logged (one WARNING line) and ignored: the files are no longer listed."""
    for entry in entries:
        uri = entry["uri"]
        try:
            if entry.get("files") is not None:
                storage.remove_tree(uri)
            else:
                storage.store_for(uri).delete(uri)
        except Exception as exc:  # noqa: BLE001 - S3 or OS errors alike: logged, not fatal
            log.warning("%s: a replaced publication's file stays there, listed by no manifest "
                        "(%s)", uri, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def drop_previous(dst: str) -> None:
    """Step 5 of a replacement: delete the side copies once the new manifest is committed. A
    failure is logged (one WARNING line) and ignored: the copies are no longer listed."""
    try:
        storage.remove_tree(previous_uri(dst))
    except (StorageError, InputError) as exc:
        log.warning("%s; the replaced publication's copies stay there (not listed by any "
                    "manifest; the next publication removes them)", exc)
