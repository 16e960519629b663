"""The model card a training run writes beside its weights (JSON, read by loaders and reports).

Everything in it comes from the run itself: architecture and parameter count, the training and
validation scenes with their source and licence (read from the ``PROVENANCE.md`` beside them, as
the shared data folders keep it), the degradation model, steps, wall time and hardware, and the
final validation table: for each held-out scene and each degradation of
:data:`sr_core.imaging.degradations.EVALUATION`, PSNR / SSIM of the model and of bicubic and the
gain, scored by the Wald protocol (Wald, Ranchin & Mangolini, PE&RS 1997) with
:func:`sr_core.quality.wald.wald_check`.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sr_core.imaging.degradations import NAMED
from sr_core.quality.metrics import data_range_rule

if TYPE_CHECKING:
    from sr_core.training.config import TrainConfig

PROVENANCE = "PROVENANCE.md"


def _table_rows(text: str) -> list[dict[str, str]]:
    """Rows of every markdown table in ``text`` as ``{header: cell}``."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif not all(set(c) <= set("-: ") for c in cells):
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


def provenance(path: str) -> dict:
    """Source and licence of a scene file from the ``PROVENANCE.md`` in its folder or the folder
    above (a table whose first column names the file).

    Returns:
        ``{"file", "source", "licence"}``; ``licence`` is ``"not recorded"`` when no table row
        names the file.
    """
    p = Path(path)
    for folder in (p.parent, p.parent.parent):
        doc = folder / PROVENANCE
        if not doc.is_file():
            continue
        for row in _table_rows(doc.read_text(encoding="utf-8", errors="replace")):
            first = next(iter(row.values()), "").strip("` ")
            if first.rsplit("/", 1)[-1] != p.name:
                continue
            licence = next((v for k, v in row.items() if re.match(r"licen[cs]e", k)), "")
            source = row.get("source repo") or row.get("source") or ""
            path_cell = row.get("source path", "").strip("` ")
            return {"file": p.name, "source": f"{source} {path_cell}".strip(),
                    "licence": licence or "not recorded"}
    return {"file": p.name, "source": "", "licence": "not recorded"}


def summary(final: dict) -> dict:
    """Mean, minimum and count of gains per degradation over the validation scenes.

    Args:
        final: ``{scene: {degradation: wald_check result}}``.

    Returns:
        ``{degradation: {"mean_gain_db", "min_gain_db", "scenes_beating_bicubic", "scenes"}}``.
    """
    out = {}
    names = list(next(iter(final.values()), {}))
    for d in names:
        gains = [final[s][d]["gain_db"] for s in final]
        out[d] = {"mean_gain_db": float(np.mean(gains)), "min_gain_db": float(np.min(gains)),
                  "scenes_beating_bicubic": int(sum(g > 0 for g in gains)),
                  "scenes": len(gains)}
    return out


def model_card(cfg: TrainConfig, run, history: list, final: dict, val_scenes: list,
               *, seconds: float) -> dict:
    """The card of a finished run (see the module docstring).

    Args:
        cfg: the run's configuration (scenes expanded).
        run: the run's network, descriptor, device and degradation
            (``sr_core.training.train._Run``).
        history: per-epoch entries.
        final: ``{scene: {degradation: wald_check result}}`` under every evaluation degradation.
        val_scenes: the staged validation scenes (names and dtypes).
        seconds: training wall time, resumed sessions included.
    """
    import torch

    descriptor, s = run.descriptor, run.descriptor.scale
    params = sum(p.numel() for p in run.module.parameters())
    cuda = run.device.type == "cuda"
    losses = {"l1": "L1", "mse": "MSE",
              "perceptual": f"L1 + {cfg.perceptual_weight} x VGG-19 {cfg.vgg_layer} feature MSE"}
    dtypes = {sc.name: sc.dtype for sc in val_scenes}
    return {
        "name": cfg.name,
        "architecture": cfg.architecture,
        "arguments": dict(cfg.arguments),
        "parameters": int(params),
        "scale": s,
        "in_channels": descriptor.in_channels,
        # read by the planning process without torch (sr_core.models.catalog)
        "descriptor": descriptor.to_dict(),
        "bands": "band by band" if descriptor.in_channels == 1 else
                 f"groups of {descriptor.in_channels} bands",
        "normalisation": "per scene: uint8 x/255; other dtypes (x - band min) / (band max - "
                         "band min) over the scene's valid pixels",
        "summary": f"{cfg.architecture} x{s} ({params:,} parameters) trained by the Wald "
                   f"protocol on {len(cfg.scenes)} real scenes, degradation "
                   f"{run.degradation.name}",
        "training": {
            "scenes": [Path(p).name for p in cfg.scenes],
            "validation_scenes": [Path(p).name for p in cfg.val_scenes],
            "data": [provenance(p) for p in (*cfg.scenes, *cfg.val_scenes)],
            "protocol": "Wald: HR patch -> degrade by the scale -> LR; learn LR -> HR",
            "degradation": run.degradation.describe(),
            "degradation_name": run.degradation.name,
            "initialised_from": run.init,
            "patches": ("standardised (mean 0.5, std 0.1 each) for the intensity-equivariant "
                        "network: every patch weighs alike in the loss" if run.standardise
                        else "normalised per scene, as at inference"),
            "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
            "steps": (cfg.epochs + cfg.gan_epochs) * cfg.steps_per_epoch,
            "batch_size": cfg.batch_size, "patch_px_lr": cfg.patch_px,
            "pool_size": cfg.pool_size,
            "loss": losses[cfg.loss] + (f"; then {cfg.gan_epochs} SRGAN adversarial epochs "
                                        f"(weight {cfg.adversarial_weight})"
                                        if cfg.gan_epochs else ""),
            "vgg_weights": Path(cfg.vgg_weights).name if cfg.vgg_weights else None,
            "optimiser": f"Adam lr {cfg.learning_rate}, cosine to 1%",
            "seed": cfg.seed, "device": str(run.device),
            "hardware": f"{platform.machine()} {os.cpu_count()} cores, "
                        f"{torch.get_num_threads()} torch threads"
                        + (f", {torch.cuda.get_device_name(run.device)}" if cuda else ""),
            "torch": torch.__version__,
            "seconds": round(seconds, 1),
            "history": history,
        },
        "metrics": {
            "validation": {scene: {d: {"model": r["model"], "bicubic": r["bicubic"],
                                       "gain_db": r["gain_db"], "window_px": r["window_px"]}
                                   for d, r in by_deg.items()}
                           for scene, by_deg in final.items()},
            "summary": summary(final),
            "degradations": {d: NAMED[d].describe() for d in next(iter(final.values()), {})},
            "data_range": {scene: data_range_rule(dt) for scene, dt in dtypes.items()},
            "conventions": "Wald protocol on a centred window of each held-out scene, degraded "
                           "by each named degradation; PSNR and SSIM (scikit-image) in the "
                           "scene's units over valid pixels; data range 255 for 8-bit scenes, "
                           "else the scene's valid value range",
        },
    }


def validation_markdown(card: dict) -> str:
    """The card's validation table as markdown: one row per scene and degradation."""
    lines = ["| scene | degradation | model PSNR (dB) / SSIM | bicubic PSNR (dB) / SSIM "
             "| gain (dB) |",
             "|---|---|---|---|---|"]
    for scene, by_deg in card["metrics"]["validation"].items():
        for d, r in by_deg.items():
            lines.append(f"| {scene} | {d} | {r['model']['psnr_db']:.2f} / "
                         f"{r['model']['ssim']:.4f} | {r['bicubic']['psnr_db']:.2f} / "
                         f"{r['bicubic']['ssim']:.4f} | {r['gain_db']:+.2f} |")
    for d, m in card["metrics"].get("summary", {}).items():
        lines.append(f"| **mean** | {d} | | | {m['mean_gain_db']:+.2f} (min "
                     f"{m['min_gain_db']:+.2f}, {m['scenes_beating_bicubic']}/{m['scenes']} "
                     "beat bicubic) |")
    return "\n".join(lines) + "\n"


def data_markdown(cards: list[dict]) -> str:
    """Attribution of the scenes shipped models were trained and validated on, from their cards:
    one row per file with its source, licence and the models that used it (training or
    validation)."""
    rows: dict[str, dict] = {}
    for card in cards:
        t = card["training"]
        held_out = set(t["validation_scenes"])
        for d in t.get("data", []):
            row = rows.setdefault(d["file"], {**d, "uses": []})
            use = "validation" if d["file"] in held_out else "training"
            row["uses"].append(f"{card['name']} ({use})")
    lines = ["# Data the shipped models were trained and validated on", "",
             "Generated from the model cards (`sr_core/models/weights/*.json`, key "
             "`training.data`) by `sr_core.training.train_card.data_markdown`; source and licence "
             "as the `PROVENANCE.md` beside each file gives them (`../shared/data/`).", "",
             "| file | source | licence | used by |", "|---|---|---|---|"]
    for f in sorted(rows):
        r = rows[f]
        lines.append(f"| `{f}` | {r['source']} | {r['licence']} | {', '.join(r['uses'])} |")
    return "\n".join(lines) + "\n"
