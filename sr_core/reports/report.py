"""The quality report of one upscaled scene: a JSON document for machines, markdown for people.

Contents: input and output metadata, model descriptor and card, normalisation, tiling, timings per
stage, throughput, nodata fraction and quality (Wald-protocol PSNR/SSIM of the model and of
bicubic; LR consistency). Conventions of every figure are stated in the document itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import time

import sr_core
from sr_core.formats import format_named
from sr_core.imaging.degradations import NAMED, REPORT
from sr_core.quality.metrics import data_range_rule
from sr_core.reports.document import (
    ModelSection,
    SceneInput,
    SceneReport,
    Throughput,
    Tiling,
    Tool,
    as_report,
)


def scene_warnings(scene) -> list[str]:
    """What the user should know about an input the pipeline accepted (policies in
    :mod:`sr_core.formats.geotiff`): a GeoTIFF without a CRS gives an output without one
    (the format's :meth:`~sr_core.formats.base.Format.warnings`)."""
    return format_named(scene.format).warnings(scene)


def _tiling(run, in_px: int) -> Tiling:
    grid, halo, reach = run.grid, run.halo, run.model.reach
    return Tiling(
        tile_size_px=grid.tile_size_px, halo_px=grid.halo_px,
        halo_rule=(halo.rule if halo is not None else "analytic"),
        halo_reason=halo.reason if halo is not None else None,
        halo_choice=halo.to_dict() if halo is not None else None,
        effective_receptive_field=({**reach.to_dict(), "cached": reach.cached}
                                   if reach is not None else None),
        grid=[grid.rows, grid.cols], tiles=len(grid),
        tiles_skipped_all_nodata=len(run.tiles) - len([t for t in run.tiles if not t.skipped]),
        read_px=grid.read_px, halo_overhead=grid.read_px / in_px if in_px else None)


def _conventions(scene) -> dict:
    return {
        "psnr": "10 log10(data_range^2 / MSE) over valid pixels, scikit-image",
        "ssim": "Wang et al. 2004, scikit-image structural_similarity per band (7x7 window),"
                " map averaged over valid pixels and bands",
        "data_range": data_range_rule(scene.dtype if not format_named(scene.format)
                                      .planes_share_unit or scene.dtype == "uint8"
                                      else "float64"),
        "wald": "Wald et al. 1997: degrade the scene by the scale, super-resolve it, "
                "compare with the scene; centred window; degraded by "
                + "; and by ".join(f"{d} ({NAMED[d].describe()})" for d in REPORT)
                + " (the headline figure is the first; real sensors blur more like "
                  "the second)",
        "seam": "mean |difference| of neighbouring output pixels across tile edges / the "
                "same at a multiple of the scale away inside tiles, every pixel of the "
                "output streamed; about 1.0 = no seams",
    }


def build_scene_report(run, quality: dict, measures: dict | None = None) -> SceneReport:
    """Assemble the report of a finished run (after stitch; before or after publish).

    Args:
        run: a :class:`sr_core.pipeline.Run` after :func:`sr_core.pipeline.stitch`.
        quality: :func:`sr_core.pipeline.quality` of the run (with ``"seam"`` when measured).
        measures: optional extra top-level sections, e.g. ``{"band_stats", "histograms"}`` from
            :func:`sr_core.pipeline.measure_output`.

    Returns:
        The typed report, its values JSON-ready (non-finite floats written as strings, as
        :meth:`~sr_core.reports.document.SceneReport.to_dict` writes them).
    """
    scene, cfg = run.scene, run.cfg
    s = cfg.scale
    wall = time.perf_counter() - run.started
    in_px, out_px = scene.size_px, scene.size_px * s * s
    infer_s = run.timings.get("infer", float("nan"))
    measures = dict(measures or {})
    rep = SceneReport(
        tool=Tool("sr-pipeline", sr_core.__version__),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        input=SceneInput.from_dict(scene.to_dict()),
        output={"uri": cfg.dst, **{k: v for k, v in (run.written or {}).items() if k != "path"},
                "width": scene.width * s, "height": scene.height * s, "bands": scene.count,
                "dtype": scene.dtype, "crs": scene.crs_label or scene.crs,
                "nodata": scene.nodata},
        model=ModelSection(run.model.ref, run.model.descriptor.to_dict(),
                           {k: v for k, v in run.model.card.items() if k not in ("arguments",)},
                           run.model.card.get("arguments")),
        scale=s, normalisation=run.normalization.to_dict(), tiling=_tiling(run, in_px),
        dask=run.dask,
        # tiles run in this run, reused from a killed run's journal, all-nodata (no model work)
        resume=dict(run.resume),
        timings_s={**{k: round(v, 3) for k, v in run.timings.items()}, "total": round(wall, 3)},
        throughput=Throughput(
            input_mp_per_s=in_px / wall / 1e6, output_mp_per_s=out_px / wall / 1e6,
            infer_output_mp_per_s=out_px / infer_s / 1e6 if infer_s and infer_s > 0 else None),
        nodata_fraction=run.staged.nodata_fraction(scene),
        warnings=scene_warnings(scene),
        quality={**quality, "conventions": _conventions(scene)},
        # --self-ensemble: sr_core.quality.uncertainty.stage's summary of the uncertainty layer
        self_ensemble=getattr(run, "uncertainty", None) or {"enabled": False},
        band_stats=measures.pop("band_stats", None), histograms=measures.pop("histograms", None),
        extras=measures)
    return SceneReport.from_dict(rep.to_dict())


def write_json(rep: SceneReport | dict) -> str:
    """The report as indented JSON text (:meth:`~sr_core.reports.document.SceneReport.to_dict`;
    a dict is written as it is)."""
    doc = rep.to_dict() if isinstance(rep, SceneReport) else rep
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _fmt(v, nd=2) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return "n/a" if v is None else str(v)


def quality_rows(rep: SceneReport | dict) -> list[dict]:
    """The quality figures as table rows ``{metric, model, bicubic, note}`` (also the Prefect
    table artifact)."""
    rep = as_report(rep)
    q = rep.quality
    rows = []
    wald = rep.wald
    if wald is not None:
        rows.append({"metric": "Wald PSNR (dB)", "model": wald["model"]["psnr_db"],
                     "bicubic": wald["bicubic"]["psnr_db"],
                     "note": f"higher is better; gain {_fmt(wald['gain_db'])} dB"})
        rows.append({"metric": "Wald SSIM", "model": wald["model"]["ssim"],
                     "bicubic": wald["bicubic"]["ssim"], "note": "higher is better, 1 = identical"})
        for d, r in (wald.get("by_degradation") or {}).items():
            if d == wald.get("degradation", "bicubic"):
                continue
            rows.append({"metric": f"Wald PSNR, {d} degradation (dB)",
                         "model": r["model"]["psnr_db"], "bicubic": r["bicubic"]["psnr_db"],
                         "note": f"LR made by {d}; gain {_fmt(r['gain_db'])} dB"})
            rows.append({"metric": f"Wald SSIM, {d} degradation", "model": r["model"]["ssim"],
                         "bicubic": r["bicubic"]["ssim"], "note": "higher is better"})
    rows.append({"metric": "LR consistency PSNR (dB)", "model": q["lr_consistency"]["psnr_db"],
                 "bicubic": None, "note": "SR downsampled back vs input; higher is better"})
    seam = rep.seam
    if seam is not None:
        rows.append({"metric": "Seam ratio", "model": seam.get("ratio"), "bicubic": None,
                     "note": "across tile edges / inside tiles; about 1.0 = no seams, higher = "
                             "visible seams (n/a: one tile)"})
    return rows


def self_ensemble_lines(rep: SceneReport | dict) -> list[str]:
    """The markdown line of the self-ensemble (none when it was off): the layer's file and, per
    band, the mean / p95 / max standard deviation in scene units."""
    se = as_report(rep).self_ensemble or {}
    if not se.get("enabled"):
        return []
    where = f"uncertainty layer `{se['uncertainty_uri']}`" if se.get("uncertainty_uri") \
        else "no layer file for this format"
    bands = "; ".join(f"band {b['band']} {_fmt(b['mean'], 4)} / {_fmt(b['p95'], 4)} / "
                      f"{_fmt(b['max'], 4)}" for b in se.get("bands", []))
    return [f"- Self-ensemble: mean of {se['transforms']} flips/rotations; {where}; std mean / "
            f"p95 / max ({se.get('units', 'scene units')}): {bands}"]


def consistency_lines(rep: SceneReport | dict) -> list[str]:
    """The markdown section of ``--consistency`` (none when it was off): degradation, method,
    halo, and a table of LR-consistency PSNR and Wald gain before / after, per report
    degradation (:func:`sr_core.quality.consistency.summarise`)."""
    c = as_report(rep).quality.get("consistency")
    if not isinstance(c, dict):
        return []
    lines = ["", "## LR consistency (--consistency)", "",
             f"Output corrected so that degrading it by **{c['degradation']}** "
             f"({c['description']}) reproduces the input: {c['method']}, {c['iterations']} "
             f"steps, {c['halo_px']} px of extra halo; every frequency of the residual shrinks "
             f"at least {_fmt(c['reduction_bound'], 0)}x.", "",
             "| report degradation | LR PSNR before (dB) | after (dB) | after, unclipped pixels "
             "(dB; share) | Wald gain before (dB) | after (dB) |", "|---|---|---|---|---|---|"]
    for d, lr in c["lr_psnr_db"].items():
        g = c["wald_gain_db"].get(d, {})
        share = lr.get("unclipped_fraction")
        lines.append(f"| {d} | {_fmt(lr['before'])} | {_fmt(lr['after'])} | "
                     f"{_fmt(lr.get('after_unclipped'))}; "
                     f"{f'{share:.1%}' if isinstance(share, float) else 'n/a'} | "
                     f"{_fmt(g.get('before'))} | {_fmt(g.get('after'))} |")
    lines += ["", f"LR PSNR: the output as written, degraded by the report degradation, vs the "
              f"input; unclipped pixels: those whose footprint holds no output value clipped to "
              f"the dtype's range (the correction cannot undo clipping), where the RMS error "
              f"stays within {_fmt(c['tolerance_rms_dn'], 1)} DN under the --consistency "
              f"degradation."]
    return lines


def to_markdown(rep: SceneReport | dict, html_uri: str | None = None,
                html_note: str | None = None) -> str:
    """The report for people: a short markdown page.

    Args:
        rep: the report (a JSON report dict is read with
            :meth:`~sr_core.reports.document.SceneReport.from_dict`).
        html_uri: link to the HTML report (relative beside the markdown file, or a ``file://`` /
            ``s3://`` / ``https://`` URL elsewhere, a presigned one's query string included);
            ``None`` for no link.
        html_note: said after the link (where and until when it opens), or ``None``.
    """
    rep = as_report(rep)
    i, o, t, m = rep.input, rep.output, rep.tiling, rep.model
    d = m.descriptor
    lines = [
        f"# sr-pipeline report: {i.name}",
        "",
        *([f"HTML report with pictures: [{html_uri.split('?', 1)[0].rsplit('/', 1)[-1]}]"
           f"({html_uri})" + (f" ({html_note})" if html_note else ""), ""]
          if html_uri else []),
        f"- Output: `{o['uri']}` ({o['width']} x {o['height']} px, {o['bands']} bands, "
        f"{o['dtype']})",
        format_named(i.format).describe_input(i.to_dict()),
        f"- Model: `{d['name']}` ({d['architecture']}, x{rep.scale}, receptive field "
        f"{d['receptive_field_px']} px) - {m.card.get('summary') or m.card.get('note', '')}",
        f"- Normalisation: {rep.normalisation['method']}",
        f"- Tiles: {t.tiles} ({t.grid[0]} x {t.grid[1]}) of {t.tile_size_px} px, "
        f"halo {t.halo_px} px ({t.halo_rule}: {t.halo_reason or 'analytic'}); "
        f"{t.tiles_skipped_all_nodata} all-nodata tiles skipped",
        f"- Nodata fraction: {_fmt(rep.nodata_fraction, 4)}",
        *[f"- **Warning**: {w}" for w in rep.warnings],
        f"- Throughput: {_fmt(rep.throughput.output_mp_per_s)} output MP/s "
        f"({_fmt(rep.throughput.input_mp_per_s)} input MP/s) over "
        f"{_fmt(rep.timings_s['total'])} s",
        *self_ensemble_lines(rep),
        "",
        "## Quality",
        "",
        "| metric | model | bicubic | note |",
        "|---|---|---|---|",
    ]
    for r in quality_rows(rep):
        lines.append(f"| {r['metric']} | {_fmt(r['model'], 4)} | {_fmt(r['bicubic'], 4)} | "
                     f"{r['note']} |")
    lines += ["", f"Data range: {_fmt(rep.quality['data_range'])}. "
              + rep.quality["conventions"]["wald"] + "."]
    lines += consistency_lines(rep)
    lines += ["", "## Timings (s)", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rep.timings_s.items()]
    return "\n".join(lines) + "\n"
