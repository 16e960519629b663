"""The HTML page of an archive run: a sortable table of scenes linking to each scene's report,
totals, and plots of throughput and quality across scenes; and ``sr-pipeline report-archive``,
which writes that page from per-scene JSON reports on disk.

May import: :mod:`sr_core.errors`, :mod:`sr_core.reports.document`, figures and render of this
package; numpy.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sr_core.errors import InputError
from sr_core.reports.document import SceneReport, as_report
from sr_core.reports.html.figures import ARCHIVE_PLOT_PX, FigureHTML, embed, new_figure
from sr_core.reports.html.render import render


@dataclass
class ArchiveRow:
    """One scene of the archive page's table.

    Attributes:
        index: the scene's number (run order); scene: its name (input name, else ``src``);
        link: URL of its HTML report or ``None``; status: ``"ok"`` or why not (``"failed"``);
        error: a failed scene's one-line error.
        seconds: wall time of the scene's run (s); mp_s: output megapixels per second.
        gain, psnr, ssim: Wald PSNR gain over bicubic (dB), model PSNR (dB) and SSIM.
        seam: seam ratio; nodata: nodata fraction; model: the model's name.
        out_mp: output megapixels, ``None`` when the report has no output size.
    """

    index: int
    scene: str
    link: str | None
    status: str
    error: str | None
    seconds: float | None
    mp_s: float | None
    gain: float | None
    psnr: float | None
    ssim: float | None
    seam: float | None
    nodata: float | None
    model: str | None
    out_mp: float | None

    @classmethod
    def from_report(cls, index: int, rep: SceneReport | dict, link: str | None) -> ArchiveRow:
        """The row of a scene's report; a failed scene's stand-in report
        (``{"status": "failed", "input": {"name": SRC}, "error": "one line"}``) gives a row with
        no figures; a report without ``status`` counts as ``"ok"``."""
        rep = as_report(rep)
        wald, seam, out = rep.wald or {}, rep.seam or {}, rep.output
        return cls(
            index=index, scene=rep.input.name or rep.extras.get("src") or "?", link=link,
            status=rep.extras.get("status", "ok"), error=rep.extras.get("error"),
            seconds=rep.timings_s.get("total"), mp_s=rep.throughput.output_mp_per_s,
            gain=wald.get("gain_db"), psnr=(wald.get("model") or {}).get("psnr_db"),
            ssim=(wald.get("model") or {}).get("ssim"), seam=seam.get("ratio"),
            nodata=rep.nodata_fraction, model=rep.model.descriptor.get("name"),
            out_mp=out["width"] * out["height"] / 1e6 if "width" in out else None)


def _sort_key(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, int | float) else str(v)


def _archive_plot(rows: list[ArchiveRow]) -> FigureHTML | None:
    """Throughput, Wald gain and seam ratio per scene that succeeded, by scene number."""
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        return None
    fig = new_figure(ARCHIVE_PLOT_PX)
    axes = fig.subplots(3, 1, sharex=True)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.95, bottom=0.08, hspace=0.25)
    x = np.array([r.index for r in ok])

    def vals(key):
        return np.array([np.nan if not isinstance(getattr(r, key), int | float)
                         else getattr(r, key) for r in ok], dtype=float)

    axes[0].bar(x, vals("mp_s"), color="#0a84ff")
    axes[0].set_ylabel("output MP/s")
    axes[0].set_title("throughput per scene (higher is faster)", fontsize=10)
    gain = vals("gain")
    axes[1].bar(x, gain, color=np.where(gain >= 0, "#34c759", "#ff3b30"))
    axes[1].axhline(0, color="0.4", lw=1)
    axes[1].set_ylabel("Wald gain (dB)")
    axes[1].set_title("quality gain over bicubic (higher is better, < 0 = worse than bicubic)",
                      fontsize=10)
    seam = vals("seam")
    axes[2].plot(x, seam, "o", color="#ff9500")
    axes[2].axhline(1.0, color="0.4", lw=1)
    finite = seam[np.isfinite(seam)]
    axes[2].set_ylim(min(0.8, finite.min() - 0.05) if finite.size else 0.8,
                     max(1.2, finite.max() + 0.05) if finite.size else 1.2)
    axes[2].set_ylabel("seam ratio")
    axes[2].set_title("seam ratio (about 1.0 = no seams)", fontsize=10)
    axes[2].set_xlabel("scene # (table order)")
    from matplotlib.ticker import MaxNLocator

    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    return embed(fig, "archive-plots", "Throughput and quality across scenes",
                 "One bar or point per scene that succeeded, at its number in the table "
                 "(scene #; failed scenes leave a gap).",
                 "Look for outliers: slow scenes, scenes worse than bicubic, seam ratios above "
                 "1.0.")


def build_archive_html(reports: Sequence[SceneReport | dict], links: Sequence[str | None], *,
                       title: str = "sr-pipeline archive run", created: str | None = None) -> str:
    """One HTML page for an archive run: a sortable table of scenes linking to each scene's
    report, totals, and plots of throughput and quality across scenes.

    Args:
        reports: per-scene reports (:func:`sr_core.reports.report.build_scene_report`, or JSON
            report dicts), in run order. A scene that failed is given as ``{"status": "failed",
            "input": {"name": SRC}, "error": "one line"}``; a report without ``status`` counts as
            ``"ok"`` (:meth:`ArchiveRow.from_report`).
        links: per scene, the URL (relative or absolute) of its HTML report, or ``None``.
        title: page title.
        created: timestamp to print (default now, UTC).

    Returns:
        The HTML text (self-contained; the table sorts with a few lines of inline JavaScript).

    Raises:
        ValueError: ``reports`` and ``links`` differ in length.
    """
    if len(reports) != len(links):
        raise ValueError(f"{len(reports)} reports but {len(links)} links")
    rows = [ArchiveRow.from_report(i, r, link)
            for i, (r, link) in enumerate(zip(reports, links, strict=True))]
    plot = _archive_plot(rows)
    return render("archive_report.html.j2", title=title, rows=rows, summary=_summary(rows),
                  figures=[plot] if plot else [],
                  created=created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                  sort_key=_sort_key)


def _summary(rows: list[ArchiveRow]) -> dict:
    """The page's totals: scenes ok / failed, seconds, output megapixels and MP/s, median Wald
    gain, scenes worse than bicubic, largest seam ratio."""
    ok = [r for r in rows if r.status == "ok"]
    total_s = sum(r.seconds or 0 for r in ok)
    total_mp = sum(r.out_mp or 0 for r in ok)
    gains = [r.gain for r in ok if isinstance(r.gain, int | float) and math.isfinite(r.gain)]
    seams = [r.seam for r in ok if isinstance(r.seam, int | float) and math.isfinite(r.seam)]
    return {
        "scenes": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
        "seconds": total_s, "output_mp": total_mp,
        "mp_s": total_mp / total_s if total_s > 0 else None,
        "median_gain": float(np.median(gains)) if gains else None,
        "worse_than_bicubic": sum(g < 0 for g in gains),
        "max_seam": max(seams) if seams else None,
    }


def write_archive_report(report_paths: list[str], out_path: str, *,
                         title: str = "sr-pipeline archive run") -> str:
    """Read per-scene JSON reports from local files and write the archive page to ``out_path``
    (``sr-pipeline report-archive``). Each scene links to the HTML report beside its JSON
    (``X.report.html`` for ``X.report.json``) when that file exists, by a path relative to
    ``out_path``'s folder. The page is written under a temporary name and renamed into place.

    Returns:
        ``out_path``.

    Raises:
        InputError: a report is missing or not a JSON report, or the output folder is missing.
    """
    reports, links = [], []
    for p in report_paths:
        try:
            with open(p, encoding="utf-8") as f:
                rep = json.load(f)
        except FileNotFoundError:
            raise InputError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{p}: not a JSON report ({type(exc).__name__}: {exc})") from None
        if not isinstance(rep, dict) or not isinstance(rep.get("input"), dict):
            raise InputError(f"{p}: not an sr-pipeline scene report (no 'input' section)")
        reports.append(SceneReport.from_dict(rep))
        html = p[:-5] + ".html" if p.endswith(".json") else p + ".html"
        out_dir = os.path.dirname(os.path.abspath(out_path))
        links.append(os.path.relpath(os.path.abspath(html), out_dir).replace(os.sep, "/")
                     if os.path.isfile(html) else None)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise InputError(f"{out_path}: folder {folder} does not exist")
    page = build_archive_html(reports, links, title=title)
    tmp = os.path.join(folder, f".{os.path.basename(out_path)}.partial-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out_path)
    return out_path
