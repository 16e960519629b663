"""The ``report`` stage: the run's quality figures (:func:`quality`: Wald-protocol check, LR
consistency) and its JSON, markdown and HTML reports, staged to be published beside the output.

May import: :mod:`sr_core.quality`, :mod:`sr_core.reports` and the pipeline's run and output
modules.
"""

from __future__ import annotations

import logging
import time

from sr_core.pipeline.output import measure_output
from sr_core.pipeline.run import Run, data_range, stage_text, timed
from sr_core.quality.metrics import psnr_from_sse

log = logging.getLogger(__name__)


def quality(run: Run) -> dict:
    """Quality figures of the run: Wald-protocol check and LR consistency (with
    ``--consistency`` also its ``"consistency"`` section,
    :func:`sr_core.quality.consistency.summarise`)."""
    drange = data_range(run)
    sse = sum(t.lr_sse for t in run.tiles)
    n = sum(t.valid_px for t in run.tiles)
    out = {
        "data_range": drange,
        "wald": run.wald,
        "lr_consistency": {
            "psnr_db": psnr_from_sse(sse, n, drange),
            "what": "SR output downsampled back by the scale (bicubic, antialiased) vs the input, "
                    "over valid pixels; higher is more consistent",
        },
    }
    if run.cfg.consistency is not None:
        from sr_core.quality.consistency import summarise

        out["consistency"] = summarise(run.cfg.consistency, run.scale, run.tiles, run.wald,
                                       drange)
    return out


def report(run: Run) -> Run:
    """Write the JSON, markdown and HTML reports to temporary files; :func:`publish` puts them
    beside the output.

    Timings ``report_measure`` (streaming statistics and seam metric) and ``report_html``
    (figures and page) are recorded in the JSON report. Should the HTML page fail (a bug in the
    figures), a warning is logged, ``report_html_error`` says why in the JSON report and the JSON
    and markdown are published all the same.
    """
    from sr_core.reports.html import build_medical_html, build_scene_html
    from sr_core.reports.report import build_scene_report, to_markdown, write_json

    with timed(run, "report"):
        t0 = time.perf_counter()
        q = quality(run)
        # the streamed statistics and seam metric read COGs with rasterio; a medical output's
        # HTML page reads the run's Zarr stores instead (build_medical_html)
        measures = dict(run.measures or {})
        if run.local_cog and not measures:
            measures = measure_output(run)
            run.timings["report_measure"] = time.perf_counter() - t0
        if measures:
            q["seam"] = measures.pop("seam")
        rep = build_scene_report(run, q, measures)
        t0 = time.perf_counter()
        json_uri, md_uri = run.cfg.report_paths()
        html_uri: str | None = run.cfg.html_report_path()
        html = None
        try:
            if run.local_cog:
                layer = next((tmp for name, tmp, _ in run.staged_outputs
                              if name == "uncertainty"), None)
                html = build_scene_html(rep, run.ingested("report").path, run.local_cog,
                                        uncertainty_path=layer)
            else:
                tiling = run.tiled("report")
                html = build_medical_html(rep, tiling.staged.store_path, tiling.output_store)
        except Exception as exc:  # noqa: BLE001 - the pictures must not cost the JSON report
            log.warning("%s: no HTML report (%s: %s)", run.cfg.dst, type(exc).__name__, exc)
            rep.extras["report_html_error"] = f"{type(exc).__name__}: {exc}"
            html = html_uri = None
        rep.timings_s["report_html"] = round(time.perf_counter() - t0, 3)
        pages = [(json_uri, write_json(rep)),
                 (md_uri, to_markdown(rep, html_uri.rsplit("/", 1)[-1] if html_uri else None))]
        if html_uri and html is not None:  # both or neither (a failed page clears both)
            pages.insert(0, (html_uri, html))
        for uri, text in pages:
            name = ("report_html" if uri == html_uri else "report_json" if uri == json_uri
                    else "report_md")
            stage_text(run, name, uri, text)
        run.published["report_json"] = json_uri
        run.published["report_md"] = md_uri
        run.published["report_html"] = html_uri  # None when the page could not be made
        run.published["report"] = rep.to_dict()
    return run
