"""Archive summary: one run's summary (:func:`summarize` of an :class:`ArchiveRun`), its table
rows (:func:`summary_table`), its HTML page (:func:`archive_pages`) and their publication next to
the outputs (:func:`publish_summary`); also the quality figures a summary row and a STAC item
carry (:func:`report_quality`).

May import :mod:`sr_core.storage`, :mod:`sr_core.reports`, :mod:`sr_core.pipeline` (types only)
and :mod:`sr_core.archive.layout`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sr_core import storage
from sr_core.archive.layout import output_parameters, weights_sha256

if TYPE_CHECKING:
    from sr_core.archive import SceneResult
    from sr_core.pipeline import ModelInfo, UpscaleConfig

log = logging.getLogger("sr_core.archive")

def report_quality(rep: dict) -> dict:
    """The quality figures of a scene's report, as a summary row holds them: Wald PSNR (dB) and
    SSIM of the model, bicubic's Wald PSNR (dB), the gain over bicubic (dB; bicubic and area
    degradations) and the LR-consistency PSNR (dB); figures the report lacks are left out."""
    q = rep.get("quality") or {}
    wald = q.get("wald") or {}
    out = {"wald_psnr_db": (wald.get("model") or {}).get("psnr_db"),
           "wald_ssim": (wald.get("model") or {}).get("ssim"),
           "bicubic_psnr_db": (wald.get("bicubic") or {}).get("psnr_db"),
           "gain_db": wald.get("gain_db"),
           "gain_area_db": ((wald.get("by_degradation") or {}).get("area") or {}).get("gain_db"),
           "lr_consistency_psnr_db": (q.get("lr_consistency") or {}).get("psnr_db")}
    return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class ArchiveRun:
    """One archive run, as its summary names it.

    Attributes:
        source: the archive as listed (:func:`sr_core.archive.sources.list_scenes`'s source).
        output_prefix: where its outputs go (local folder or ``s3://``).
        run_id: the flow run's id, or ``None``.
        seconds: the run's wall time (s), or ``None``.
    """

    source: str
    output_prefix: str
    run_id: str | None = None
    seconds: float | None = None


def summarize(results: list[SceneResult], run: ArchiveRun, *, model: ModelInfo,
              cfg: UpscaleConfig) -> dict:
    """The archive run's summary: counts, a one-line message and every scene's row."""
    source, output_prefix, run_id, seconds = run.source, run.output_prefix, run.run_id, run.seconds
    counts = {k: sum(r.status == k for r in results) for k in ("done", "skipped", "failed")}
    if counts["done"] == 0 and counts["failed"] == 0:
        message = f"nothing to do: all {counts['skipped']} scenes are up to date"
    else:
        message = (f"{counts['done']} processed, {counts['skipped']} up to date (skipped), "
                   f"{counts['failed']} failed")
        if counts["failed"]:
            message += ": " + ", ".join(r.scene_id for r in results if r.status == "failed")
    return {
        "source": source, "output_prefix": output_prefix, "run_id": run_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model.descriptor.name, "weights_sha256": weights_sha256(model),
        "parameters": output_parameters(cfg, model), "seconds": seconds,
        "scenes": len(results), **counts, "message": message,
        "results": [r.to_dict() for r in results],
    }


def summary_table(summary: dict) -> list[dict]:
    """The summary as table rows (the Prefect table artifact): scene, status, seconds, output
    MP/s, Wald PSNR/SSIM, gain over bicubic (bicubic and area degradations), LR consistency,
    reason (skipped and failed scenes; empty for processed ones)."""
    rows = []
    for r in summary["results"]:
        q = r.get("quality") or {}
        mps = r.get("output_mp_per_s")
        rows.append({"scene": r["scene_id"], "status": r["status"], "time (s)": r["seconds"],
                     "output MP/s": round(mps, 3) if mps else None,
                     "Wald PSNR (dB)": q.get("wald_psnr_db"), "Wald SSIM": q.get("wald_ssim"),
                     "gain vs bicubic (dB)": q.get("gain_db"),
                     "gain, area degradation (dB)": q.get("gain_area_db"),
                     "LR consistency (dB)": q.get("lr_consistency_psnr_db"),
                     "reason": r.get("reason")})
    return rows


def archive_pages(summary: dict, reports: dict[str, dict]) -> dict[str, str]:
    """The archive-level HTML page (:func:`sr_core.reports.html.build_archive_html`) of
    this run: the scenes processed in it (linking to each scene's HTML report beside its JSON
    report) and the ones that failed; up-to-date scenes were not reprocessed and are not on the
    page.

    Args:
        summary: :func:`summarize`'s result.
        reports: scene id -> report dict of the scenes processed in this run.

    Returns:
        ``{"archive-report.html": HTML}`` (relative name -> text), or ``{}`` when the run
        processed and failed nothing.
    """
    from sr_core.reports.html import build_archive_html

    prefix = summary["output_prefix"].rstrip("/") + "/"
    entries, links = [], []
    for r in summary["results"]:
        if r["status"] == "done" and r["scene_id"] in reports:
            rep = reports[r["scene_id"]]
            entries.append(rep)
            html = r["report"][:-len(".json")] + ".html" if r["report"].endswith(".json") else None
            link = None
            if html and "report_html_error" not in rep and html.startswith(prefix):
                link = html[len(prefix):]
            links.append(link)
        elif r["status"] == "failed":
            entries.append({"status": "failed", "input": {"name": r["uri"]}, "error": r["reason"]})
            links.append(None)
    if not entries:
        return {}
    return {"archive-report.html": build_archive_html(
        entries, links, title=f"sr-pipeline archive run: {summary['source']}",
        created=summary["created"])}


def publish_summary(summary: dict, reports: dict[str, dict], output_prefix: str,
                    scratch_dir: str | None = None) -> dict[str, str]:
    """Write the JSON summary next to the outputs (``archive-summary.json``, the latest run, and
    ``_runs/<UTC time>-<run id>.summary.json``) and the archive HTML page of
    :func:`archive_pages` (``archive-report.html``). A page that cannot be made costs only
    itself: ``archive_html_error`` in the summary says why.

    Returns:
        name -> location of every file written.

    Raises:
        StorageError: the output location cannot be written.
    """
    prefix = output_prefix.rstrip("/")
    stamp = summary["created"].replace(":", "").replace("-", "")
    rid = (summary.get("run_id") or "local")[:8]
    try:
        pages = archive_pages(summary, reports)
    except Exception as exc:  # noqa: BLE001 - the JSON summary must not be lost with the page
        log.warning("archive HTML report failed: %s: %s", type(exc).__name__, exc)
        summary = {**summary, "archive_html_error": f"{type(exc).__name__}: {exc}"}
        pages = {}
    files = {"archive-summary.json": json.dumps(summary, indent=2) + "\n"}
    files[f"_runs/{stamp}-{rid}.summary.json"] = files["archive-summary.json"]
    files.update(pages)
    written = {}
    with tempfile.TemporaryDirectory(prefix="sr-archive-", dir=scratch_dir) as tmp:
        for name, text in files.items():
            uri = f"{prefix}/{name}"
            if not storage.is_s3(uri):
                os.makedirs(os.path.dirname(uri), exist_ok=True)
            storage.write_text(uri, text, tmp)
            written[name] = uri
    return written
