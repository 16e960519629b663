"""Benchmark evaluation: PSNR / SSIM of models and of bicubic, with the field's conventions stated.

Two kinds of input:

* **A folder of images** (PNG, TIFF, JPEG, BMP; 8-bit), laid out like the SR benchmark sets
  (Set5, Set14, BSD100, Urban100, DIV2K valid): ``NAME_HR.png`` files, optionally with
  ``NAME_LR.png`` in the same or another folder (``*_LRBI_x4`` style suffixes too: any
  ``NAME_LR*.ext`` or ``NAME.ext`` in the LR folder). Without HR/LR suffixes every image in the
  folder is an HR image. When no LR image is given, the HR image is cropped to a multiple of the
  scale and degraded by :func:`sr_core.imaging.resample.downsample_bicubic` (MATLAB ``imresize``
  bicubic, antialiased) and rounded to 8 bits, as the benchmark LR sets were made.
* **Georeferenced scenes** (GeoTIFF / COG): the Wald protocol (Wald, Ranchin & Mangolini, PE&RS
  1997) on a centred window of each scene, in the scene's units
  (:func:`sr_core.training.train.validate`, the same code as training's validation and the
  upscale report's check).

Conventions for images (each selectable, and written into every result):

* ``channel="y"`` (default, as in the SR literature): PSNR and SSIM on the luma of ITU-R BT.601
  YCbCr, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in [0, 1] (so Y in
  [16, 235]), not rounded (BasicSR's ``calculate_psnr(test_y_channel=True)``); a one-band image is
  its own Y (scaled to [0, 255]). ``channel="rgb"``: all channels.
* ``crop_border_px`` pixels (default: the scale) are removed from each side before measuring.
* The SR image is clipped to [0, 1] and rounded to 8 bits before measuring (what a saved PNG
  holds).
* PSNR: ``10 log10(255^2 / MSE)`` (:func:`skimage.metrics.peak_signal_noise_ratio`,
  ``data_range=255``) per image, then averaged over the images.
* SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004): Gaussian window ``sigma = 1.5``,
  population covariance, ``K1 = 0.01, K2 = 0.03``, ``data_range=255``
  (:func:`skimage.metrics.structural_similarity` with ``gaussian_weights=True,
  use_sample_covariance=False``), averaged over channels for RGB.

Models run through :class:`sr_core.models.base.SRModel` (band policy and padding included), on
images mapped to [0, 1] by ``/ 255``. The image-folder side (pairs, LR making, the metrics with
these conventions) is :mod:`sr_core.training.image_sets`.

Owns the evaluation's options (:class:`EvalConfig`), its rows and tables (:class:`EvalResult`,
markdown, CSV) and the files it writes. Lives beside training because scenes are staged and
validated by the same code (:mod:`sr_core.training.train_data`,
:func:`sr_core.training.train.validate`); may import models, imaging, quality and the rest of
:mod:`sr_core.training`.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from sr_core.errors import InputError
from sr_core.imaging.degradations import EVALUATION, parse
from sr_core.models.base import configure_for_device
from sr_core.models.registry import load_model
from sr_core.training.config import path_text
from sr_core.training.image_sets import find_pairs, image_metrics, make_lr, quantise, read_image


class EvalConfig(BaseModel):
    """An evaluation.

    Attributes:
        models: model references (see :func:`sr_core.models.registry.load_model`); bicubic is
            always evaluated as the baseline.
        scale: integer upscaling factor >= 2.
        hr_dir: folder of HR images (or None).
        lr_dir: folder of provided LR images (or None: the HR folder's ``*_LR*`` images, else
            bicubic degradation).
        scenes: georeferenced scenes evaluated by the Wald protocol.
        channel: ``"y"`` (BT.601 luma) or ``"rgb"``.
        crop_border_px: border removed before measuring; None = ``scale``.
        window_px: edge of the centred Wald window of each scene.
        device: where the models run.
        degradations: how each scene is degraded for the Wald check (names of
            :data:`sr_core.imaging.degradations.NAMED`); every scene is scored under each.
        self_ensemble: also score each model (bicubic excepted) with the geometric
            self-ensemble (:meth:`sr_core.models.base.SRModel.upscale_many_with_std`), as model
            ``NAME+`` (the EDSR+ naming of Lim et al., 2017), and compare the two
            (:attr:`EvalResult.self_ensemble`).

    A pydantic model (frozen; unknown fields refused), so the Prefect flow takes it whole and
    the UI renders it as a form; paths may be given as ``str`` or ``os.PathLike`` (kept as text).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[str, ...]
    scale: int
    hr_dir: str | None = None
    lr_dir: str | None = None
    scenes: tuple[str, ...] = ()
    channel: str = "y"
    crop_border_px: int | None = None
    window_px: int = 512
    device: str = "cpu"
    degradations: tuple[str, ...] = EVALUATION
    self_ensemble: bool = False

    @field_validator("models", "hr_dir", "lr_dir", "scenes", mode="before")
    @classmethod
    def _paths_as_text(cls, value: Any) -> Any:
        return path_text(value)

    @property
    def border_px(self) -> int:
        return self.scale if self.crop_border_px is None else self.crop_border_px


@dataclass
class EvalResult:
    """Rows per image and model, means per dataset and model, and the conventions used.

    ``model_seconds``: per model, wall seconds inside its ``upscale`` calls (the same images for
    every model). ``self_ensemble``: with :attr:`EvalConfig.self_ensemble`, per dataset and
    model ``{"dataset", "model", "images", "psnr_gain_db"`` (mean of ensemble minus plain PSNR
    over the images), ``"min_gain_db", "ssim_gain", "time_ratio"`` (ensemble over plain model
    seconds over the whole evaluation, every dataset together)``}``.
    """

    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    conventions: dict = field(default_factory=dict)
    seconds: float = 0.0
    model_seconds: dict = field(default_factory=dict)
    self_ensemble: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _evaluate_images(cfg: EvalConfig, models: dict, result: EvalResult) -> None:
    s, hr_dir = cfg.scale, cfg.hr_dir
    assert hr_dir is not None  # evaluate() calls this only with an HR folder
    for name, hr_path, lr_path in find_pairs(hr_dir, cfg.lr_dir):
        hr = read_image(hr_path)
        if lr_path is None:
            hr, lr = make_lr(hr, s)
        else:
            lr = read_image(lr_path)
            if lr.shape[0] != hr.shape[0]:
                raise InputError(f"{lr_path}: {lr.shape[0]} band(s), its HR image "
                                 f"{hr.shape[0]}")
            h, w = lr.shape[1] * s, lr.shape[2] * s
            if hr.shape[1] < h or hr.shape[2] < w:
                raise InputError(f"{lr_path}: {lr.shape[2]}x{lr.shape[1]} px x{s} is larger "
                                 f"than its HR image {hr.shape[2]}x{hr.shape[1]}")
            hr = hr[:, :h, :w]
        for ref, model in models.items():
            sr = quantise(model.upscale(lr))
            m = image_metrics(hr, sr, channel=cfg.channel, border_px=cfg.border_px)
            result.rows.append({"dataset": Path(hr_dir).name, "image": name, "model": ref,
                                "psnr_db": m["psnr_db"], "ssim": m["ssim"]})


def _evaluate_scenes(cfg: EvalConfig, models: dict, result: EvalResult) -> None:
    """Wald rows per scene, degradation and model; bicubic's rows once per scene and
    degradation (each model's check recomputes bicubic on the same LR: the same figures)."""
    import shutil
    import tempfile

    from sr_core.training.train import validate
    from sr_core.training.train_data import _stage_all, expand_scenes

    scratch = tempfile.mkdtemp(prefix="sr-evaluate-")
    try:
        staged = _stage_all(expand_scenes(cfg.scenes, "evaluation"), scratch, "eval")
        seen_bicubic = set()
        for ref, model in models.items():
            if ref == "bicubic" and len(models) > 1:
                continue
            for scene, by_deg in validate(model, staged, cfg.window_px, cfg.degradations).items():
                for d, v in by_deg.items():
                    dataset = f"scenes (Wald, {d})"
                    rows = [(ref, v["model"])]
                    if (scene, d) not in seen_bicubic:
                        seen_bicubic.add((scene, d))
                        rows.append(("bicubic", v["bicubic"]))
                    for name, m in rows:
                        result.rows.append({
                            "dataset": dataset, "image": scene, "model": name, "degradation": d,
                            "psnr_db": m["psnr_db"], "ssim": m["ssim"],
                            "gain_db": m["psnr_db"] - v["bicubic"]["psnr_db"]})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Evaluate the models and bicubic on the images and scenes of ``cfg``.

    Returns:
        An :class:`EvalResult`: one row per (dataset, image or scene, model), the mean PSNR /
        SSIM per (dataset, model), and the conventions.

    Raises:
        InputError: nothing to evaluate, a bad folder or image, or bad options.
        ModelError: a model cannot be loaded or does not upscale by ``cfg.scale``.
    """
    t0 = time.perf_counter()
    if not cfg.hr_dir and not cfg.scenes:
        raise InputError("nothing to evaluate: give an HR image folder and/or scenes")
    if cfg.channel not in ("y", "rgb"):
        raise InputError(f"channel {cfg.channel!r}: expected 'y' or 'rgb'")
    if cfg.border_px < 0:
        raise InputError(f"crop border {cfg.border_px}: must be >= 0 pixels")
    for d in cfg.degradations:
        parse(d)
    refs = ["bicubic", *(m for m in cfg.models if m != "bicubic")]
    # channels-last as the workers run them (faster on a CPU too); fp32: the reference figures
    models = {ref: _Timed(configure_for_device(load_model(ref, scale=cfg.scale, device=cfg.device),
                                               "fp32"), warm=cfg.self_ensemble)
              for ref in refs}
    if cfg.self_ensemble:  # the same network, run on the 8 flips / rotations (NAME+)
        for ref in refs[1:]:
            models[ref + "+"] = _Timed(replace(models[ref].model, self_ensemble=True), warm=True)
    channels = ("BT.601 Y (16 + 65.481 R + 128.553 G + 24.966 B)" if cfg.channel == "y"
                else "RGB")
    result = EvalResult(conventions={
        "images": f"PSNR/SSIM on {channels}"
                  f", {cfg.border_px} px border cropped, data range 255, SR clipped and rounded "
                  "to 8 bits; SSIM: Gaussian sigma 1.5 (Wang et al. 2004, scikit-image); "
                  "LR when not provided: bicubic (MATLAB imresize, antialiased), rounded to 8 bits",
        "scenes": "Wald protocol on a centred window degraded by each of "
                  f"{', '.join(cfg.degradations)} (sr_core.imaging.degradations), scene units, "
                  "data range 255 for 8-bit scenes else the scene's valid value range, SSIM 7x7 "
                  "uniform window (scikit-image)",
        "scale": cfg.scale,
    })
    if cfg.hr_dir:
        _evaluate_images(cfg, models, result)
    if cfg.scenes:
        _evaluate_scenes(cfg, models, result)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in result.rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    result.summary = [{"dataset": d, "model": m, "images": len(rs),
                       "psnr_db": float(np.mean([r["psnr_db"] for r in rs])),
                       "ssim": float(np.mean([r["ssim"] for r in rs])),
                       **({"mean_gain_db": float(np.mean([r["gain_db"] for r in rs])),
                           "min_gain_db": float(np.min([r["gain_db"] for r in rs])),
                           "beats_bicubic": int(sum(r["gain_db"] > 0 for r in rs))}
                          if "gain_db" in rs[0] else {})}
                      for (d, m), rs in groups.items()]
    result.model_seconds = {ref: round(m.seconds, 3) for ref, m in models.items()}
    if cfg.self_ensemble:
        result.self_ensemble = compare_ensemble(result)
    result.seconds = time.perf_counter() - t0
    return result


class _Timed:
    """A model whose ``upscale`` / ``upscale_many`` calls are timed: wall seconds summed in
    ``seconds``; every other attribute is the model's.

    With ``warm``, the first call on each input shape is run once more, untimed, before the
    timed call: the first pass of a shape builds oneDNN / cuDNN kernels (it made the plain model,
    which runs first, look slower than its 8-pass self-ensemble on small windows)."""

    def __init__(self, model, warm: bool = False) -> None:
        self.model, self.seconds, self.warm = model, 0.0, warm
        self.shapes: set[tuple[int, ...]] = set()

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def upscale(self, x: np.ndarray) -> np.ndarray:
        return self.upscale_many([x])[0]

    def upscale_many(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        key = (len(xs), *xs[0].shape) if xs else ()
        if self.warm and key not in self.shapes:
            self.shapes.add(key)
            self.model.upscale_many(xs)
        t0 = time.perf_counter()
        try:
            return self.model.upscale_many(xs)
        finally:
            self.seconds += time.perf_counter() - t0


def compare_ensemble(result: EvalResult) -> list[dict]:
    """Each model with the self-ensemble (``NAME+``) against itself without, per dataset: the
    PSNR and SSIM gains on the same images and the ratio of model seconds (the cost: about 8x).

    Returns:
        See :attr:`EvalResult.self_ensemble`.
    """
    plain = {(r["dataset"], r["image"], r["model"]): r for r in result.rows}
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in result.rows:
        base = r["model"][:-1]
        if r["model"].endswith("+") and (r["dataset"], r["image"], base) in plain:
            groups.setdefault((r["dataset"], base), []).append(
                (plain[(r["dataset"], r["image"], base)], r))
    secs = result.model_seconds
    out = []
    for (dataset, base), pairs in groups.items():
        gains = [e["psnr_db"] - p["psnr_db"] for p, e in pairs]
        out.append({"dataset": dataset, "model": base, "images": len(pairs),
                    "psnr_gain_db": float(np.mean(gains)), "min_gain_db": float(np.min(gains)),
                    "ssim_gain": float(np.mean([e["ssim"] - p["ssim"] for p, e in pairs])),
                    "time_ratio": secs[base + "+"] / secs[base] if secs.get(base) else None})
    return out


def to_markdown(result: EvalResult) -> str:
    """The summary table (mean PSNR / SSIM per dataset and model; for scenes also the gain over
    bicubic), the per-scene Wald table (scene x degradation x model) and the conventions."""
    lines = ["| dataset | model | images | PSNR (dB) | SSIM | gain over bicubic (dB): mean / "
             "min / images beating it |", "|---|---|---|---|---|---|"]
    for r in result.summary:
        gain = (f"{r['mean_gain_db']:+.2f} / {r['min_gain_db']:+.2f} / {r['beats_bicubic']} of "
                f"{r['images']}" if "mean_gain_db" in r and r["model"] != "bicubic" else "")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['images']} | {r['psnr_db']:.2f} | "
                     f"{r['ssim']:.4f} | {gain} |")
    scene_rows = [r for r in result.rows if "degradation" in r and r["model"] != "bicubic"]
    if scene_rows:
        bic = {(r["image"], r["degradation"]): r for r in result.rows
               if "degradation" in r and r["model"] == "bicubic"}
        lines += ["", "| scene | degradation | model | model PSNR / SSIM | bicubic PSNR / SSIM | "
                  "gain (dB) |", "|---|---|---|---|---|---|"]
        for r in scene_rows:
            b = bic[(r["image"], r["degradation"])]
            lines.append(f"| {r['image']} | {r['degradation']} | {r['model']} | "
                         f"{r['psnr_db']:.2f} / {r['ssim']:.4f} | {b['psnr_db']:.2f} / "
                         f"{b['ssim']:.4f} | {r['gain_db']:+.2f} |")
    lines += ensemble_markdown(result)
    lines += ["", f"x{result.conventions['scale']}. Images: {result.conventions['images']}.",
              f"Scenes: {result.conventions['scenes']}."]
    return "\n".join(lines) + "\n"


def ensemble_markdown(result: EvalResult) -> list[str]:
    """The self-ensemble comparison as markdown lines (none without one)."""
    if not result.self_ensemble:
        return []
    lines = ["", "Self-ensemble (NAME+: mean over the 8 flips / rotations) against the same "
             "model without it, on the same images:", "",
             "| dataset | model | images | PSNR gain (dB): mean / min | SSIM gain | "
             "model time ratio |", "|---|---|---|---|---|---|"]
    for r in result.self_ensemble:
        ratio = f"{r['time_ratio']:.2f}x" if r["time_ratio"] is not None else "n/a"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['images']} | "
                     f"{r['psnr_gain_db']:+.3f} / {r['min_gain_db']:+.3f} | "
                     f"{r['ssim_gain']:+.4f} | {ratio} |")
    return lines


def to_csv(result: EvalResult) -> str:
    """One CSV row per (dataset, image, model); scenes add degradation and gain over bicubic."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["dataset", "image", "model", "degradation",
                                             "psnr_db", "ssim", "gain_db"],
                            lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        row = {**r, "psnr_db": f"{r['psnr_db']:.4f}", "ssim": f"{r['ssim']:.6f}"}
        if "gain_db" in r:
            row["gain_db"] = f"{r['gain_db']:.4f}"
        writer.writerow(row)
    return buf.getvalue()


def write_outputs(result: EvalResult, out_dir: str | Path) -> dict[str, str]:
    """Write ``evaluation.md`` and ``evaluation.csv`` into ``out_dir`` (created), each via a
    temporary name, so nothing half-written is left.

    Returns:
        ``{"markdown": path, "csv": path}``.
    """
    import os

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name, text in (("markdown", "evaluation.md", to_markdown(result)),
                            ("csv", "evaluation.csv", to_csv(result))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        paths[key] = str(out / name)
    return paths
