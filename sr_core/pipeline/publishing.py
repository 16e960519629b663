"""The ``publish`` stage: every staged output moved or uploaded into place under DST's publication
claim, then the manifest, last and conditionally (:mod:`sr_core.publication`).

May import: :mod:`sr_core.storage`, :mod:`sr_core.publication` (claim, journal, manifest) and the
pipeline's run and stages modules.
"""

from __future__ import annotations

import os

from sr_core import storage
from sr_core.errors import BusyError
from sr_core.formats import format_named
from sr_core.pipeline.run import Run, required, stage_text, timed
from sr_core.pipeline.stages import expected_manifest
from sr_core.publication import journal, manifest
from sr_core.publication.claim import acquire as claim_destination


def _sweep_partials(uri: str, keep: str) -> None:
    """Remove hidden temporaries of ``uri`` left beside a local destination by a run that was
    killed (``.NAME.partial-*``); this run holds the work lock."""
    import glob

    if storage.is_s3(uri):
        return
    path = os.path.abspath(uri.rstrip("/"))
    for old in glob.glob(os.path.join(os.path.dirname(path),
                                      f".{glob.escape(os.path.basename(path))}.partial-*")):
        if os.path.abspath(old) != os.path.abspath(keep):
            storage.discard(old)


def publish(run: Run, extra: dict[str, tuple[str, str]] | None = None,
            manifest_extra: dict | None = None) -> Run:
    """Publish every staged output, then the manifest, last and conditionally.

    Steps: every output's size and SHA-256 are read from the staged files; DST's publication claim
    is taken (:mod:`sr_core.publication.claim`: one writer at DST, across hosts too) and DST's
    manifest must still be the one read when the run started; a previous publication at DST (another
    input, model or parameters) is kept under side names and its manifest rewritten to list them
    (:func:`sr_core.publication.manifest.preserve`; one with missing files is retracted instead);
    the output, the reports and ``extra`` files are moved into place (local: fsync +
    :func:`os.replace`) or uploaded (S3, SHA-256 checksums); the manifest is written with a
    conditional write (:func:`sr_core.publication.manifest.commit`); the side copies are deleted,
    and so are the previous publication's files this one does not list again (its uncertainty layer
    after a run without ``--self-ensemble``). A crash between any two steps leaves DST's manifest
    describing either the complete previous publication or the complete new one (or none, when there
    was none before).

    Args:
        run: a run after :func:`report`.
        extra: more files to publish before the manifest, name -> (URI, text) (the archive's
            STAC item).
        manifest_extra: more fields for the manifest (the archive's scene id).

    Raises:
        BusyError: another run holds DST's claim, or published DST meanwhile (its result
            stands); nothing of this run was written at DST.
        InputError, StorageError: the destination cannot be written.
    """
    temp_output = required(run.temp_output, "publish", "stitch")
    written = required(run.written, "publish", "stitch")
    cfg = run.cfg
    with timed(run, "publish"):
        for name, (uri, text) in (extra or {}).items():
            stage_text(run, name, uri, text)
        items = [("output", temp_output, cfg.dst)] + run.staged_outputs
        outputs = {name: manifest.describe(tmp, uri) for name, tmp, uri in items}
        muri = manifest.manifest_uri(cfg.dst)
        held = claim_destination(cfg.dst, run.scratch)  # one writer at DST, across hosts too
        previous = run.previous
        try:
            found = manifest.read(muri)
            if (found and found.text) != (previous and previous.text):
                raise BusyError(f"{cfg.dst}: another run published this destination meanwhile; "
                                "this run's result was not published")
            # files of the previous publication this one does not replace (an uncertainty layer)
            stale = manifest.unlisted_outputs(previous.doc, outputs, cfg.dst) \
                if previous is not None else []
            if previous is not None:  # keep the previous publication trusted meanwhile
                previous = manifest.preserve(muri, cfg.dst, previous, run.scratch)
                journal.crash_point("preserved")
            for name, tmp, uri in items:
                held.check()
                _sweep_partials(uri, keep=tmp)
                storage.publish(tmp, uri)
                journal.crash_point(f"published:{name}")
            run.temp_output = None
            run.staged_outputs = []
            doc = manifest.build(expected_manifest(run), outputs, work_key=run.work_key or "",
                                 source=cfg.src, extra=manifest_extra)
            held.check()
            manifest.commit(muri, doc, previous, run.scratch)
            run.manifest = doc
            journal.crash_point("manifest")
            if previous is not None:
                manifest.drop_previous(cfg.dst)
            manifest.drop_unlisted(stale)
        finally:
            held.release()
        run.published.update({"output": cfg.dst, "format": written["format"],
                              "manifest": muri})
        if format_named(run.ingested("publish").format).writes_raster:
            run.published["cog"] = cfg.dst
    return run
