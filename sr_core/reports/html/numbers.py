"""The numbers of the HTML scene report: the quality figures as table rows and the model card's
summary, each figure with what it means and which direction is better.

May import: :mod:`sr_core.reports.document` and :mod:`sr_core.reports.html.uncertainty`.
"""

from __future__ import annotations

from sr_core.reports.document import SceneReport
from sr_core.reports.html.uncertainty import uncertainty_numbers


def _by_degradation(entry: dict) -> dict:
    """A card's validation entry as ``{degradation: {"model", "bicubic", "gain_db"}}`` (cards
    written before degradations were named hold one bicubic result)."""
    if isinstance(entry.get("model"), dict):
        return {"bicubic": entry}
    return {d: v for d, v in entry.items() if isinstance(v, dict) and "model" in v}


def card_summary(card: dict) -> dict:
    """What the page shows of a model card: summary, bands, training protocol and scene count,
    the validation rows per held-out scene and degradation, and the weights' SHA-256."""
    training = card.get("training") or {}
    val = (card.get("metrics") or {}).get("validation") or {}
    return {
        "summary": card.get("summary") or card.get("note"),
        "bands": card.get("bands"),
        "training_scenes": len(training.get("scenes") or []),
        "protocol": training.get("protocol"),
        "validation": [{"scene": k, "degradation": d, "model_psnr": v["model"].get("psnr_db"),
                        "bicubic_psnr": v["bicubic"].get("psnr_db"),
                        "gain": v.get("gain_db"), "model_ssim": v["model"].get("ssim")}
                       for k, by_deg in val.items() if isinstance(by_deg, dict)
                       for d, v in _by_degradation(by_deg).items()],
        "sha256": card.get("sha256"),
    }


def quality_numbers(rep: SceneReport) -> list[dict]:
    """The report's figures as rows ``{name, model, bicubic, unit, meaning, better}``."""
    q = rep.quality
    rows = []
    wald = rep.wald
    if wald is not None:
        rows += [
            {"name": "Wald PSNR", "model": wald["model"]["psnr_db"],
             "bicubic": wald["bicubic"]["psnr_db"], "unit": "dB",
             "meaning": "the scene degraded by the scale and super-resolved back, compared with "
                        "the scene itself (Wald protocol, centred window)",
             "better": "higher"},
            {"name": "Wald SSIM", "model": wald["model"]["ssim"],
             "bicubic": wald["bicubic"]["ssim"],
             "unit": "", "meaning": "structural similarity on the same comparison (1 = identical)",
             "better": "higher"},
            {"name": "PSNR gain over bicubic", "model": wald.get("gain_db"), "bicubic": None,
             "unit": "dB", "meaning": "model PSNR minus bicubic PSNR; > 0 means the model beats "
                                      "interpolation", "better": "higher"},
        ]
        for d, r in (wald.get("by_degradation") or {}).items():
            if d == wald.get("degradation", "bicubic"):
                continue
            rows += [
                {"name": f"Wald PSNR, {d} degradation", "model": r["model"]["psnr_db"],
                 "bicubic": r["bicubic"]["psnr_db"], "unit": "dB",
                 "meaning": f"the same check with the LR made by {d} (an ideal detector's "
                            "integration for area): closer to how real sensors blur",
                 "better": "higher"},
                {"name": f"PSNR gain over bicubic, {d} degradation", "model": r["gain_db"],
                 "bicubic": None, "unit": "dB", "meaning": "model minus bicubic under that "
                                                           "degradation", "better": "higher"},
            ]
    lr = q.get("lr_consistency") or {}
    rows.append({"name": "LR consistency PSNR", "model": lr.get("psnr_db"), "bicubic": None,
                 "unit": "dB", "meaning": "the output downsampled back by the scale vs the input: "
                                          "does the output keep what was measured",
                 "better": "higher"})
    seam = rep.seam
    if seam is not None:
        rows.append({"name": "Seam ratio", "model": seam.get("ratio"), "bicubic": None, "unit": "",
                     "meaning": "neighbour differences across tile edges / inside tiles "
                                "(n/a with a single tile)",
                     "better": "closer to 1.0 (above 1 = visible seams)"})
    rows.append({"name": "Nodata fraction", "model": rep.nodata_fraction, "bicubic": None,
                 "unit": "", "meaning": "share of input pixel values that are nodata, masked or "
                                        "not finite (they stay nodata in the output)",
                 "better": "informative (lower = more of the scene compared)"})
    return rows + consistency_numbers(rep) + uncertainty_numbers(rep)


def consistency_numbers(rep: SceneReport) -> list[dict]:
    """``--consistency``'s figures as :func:`quality_numbers` rows (none when it was off): per
    report degradation, the LR-consistency PSNR and the Wald gain after the correction, the
    figure without it in the meaning."""
    c = rep.quality.get("consistency")
    if not isinstance(c, dict):
        return []

    def db(v) -> str:
        return f"{v:.2f} dB" if isinstance(v, int | float) else str(v)

    rows = []
    for d, lr in c["lr_psnr_db"].items():
        rows.append({"name": f"LR consistency PSNR, {d}, after --consistency {c['degradation']}",
                     "model": lr["after"], "bicubic": None, "unit": "dB",
                     "meaning": f"the output as written, degraded by {d}, vs the input; without "
                                f"the correction {db(lr['before'])}; "
                                f"{db(lr.get('after_unclipped'))} where no output pixel was "
                                "clipped to the dtype's range", "better": "higher"})
        g = c["wald_gain_db"].get(d)
        if g:
            rows.append({"name": f"PSNR gain over bicubic, {d} degradation, after --consistency",
                         "model": g["after"], "bicubic": None, "unit": "dB",
                         "meaning": f"Wald gain with the back-projected output; without "
                                    f"{db(g['before'])}", "better": "higher"})
    return rows
