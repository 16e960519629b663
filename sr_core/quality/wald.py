"""The Wald-protocol check of a model on one window of a scene (Wald, Ranchin & Mangolini,
"Fusion of satellite images of different spatial resolutions: assessing the quality of resulting
images", PE&RS 1997): degrade the window by the scale, super-resolve it back, compare with the
window, beside bicubic interpolation; optionally also the output back-projected onto the
degraded window (:mod:`sr_core.quality.consistency`).

Above :mod:`sr_core.quality.metrics` and :mod:`sr_core.quality.consistency` (it uses both); may
import :mod:`sr_core.imaging` and those two modules. Used by training's validation, the upscale
report's check (:mod:`sr_core.compute.wald_task`) and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sr_core.imaging.degradations import Degradation, degrade, kernel_radius_px, parse
from sr_core.imaging.normalize import Normalization
from sr_core.quality.consistency import back_project, consistency_halo_px, degradation_reach_px
from sr_core.quality.metrics import erode_valid, psnr, ssim


@dataclass(frozen=True)
class WaldSetup:
    """How :func:`wald_check` degrades the window and whether it back-projects.

    Attributes:
        degradation: how the window is degraded (default ``"bicubic"``, the SR literature's
            convention; ``"area"``, ``"gaussian-0.3"``, ``"gaussian-0.6"`` model real sensors).
        consistency: ``--consistency``'s degradation, or ``None`` (see :func:`wald_check`).
    """

    degradation: str = "bicubic"
    consistency: str | None = None


DEFAULT_SETUP = WaldSetup()


def wald_check(model, hr: np.ndarray, valid: np.ndarray, normalization: Normalization,
               data_range: float, setup: WaldSetup = DEFAULT_SETUP) -> dict:
    """Wald-protocol quality of a model and of bicubic on one window of a scene.

    The window is degraded by the model's scale with ``setup.degradation`` (a name of
    :data:`sr_core.imaging.degradations.NAMED`), super-resolved back by the model and by bicubic
    interpolation, quantised to the scene's dtype and compared with the window.

    Args:
        model: an :class:`sr_core.models.base.SRModel`.
        hr: ``(bands, H, W)`` window in scene units and dtype; H and W are cropped down to a
            multiple of the scale, and must then be >= 7 * scale.
        valid: ``(bands, H, W)`` bool validity of ``hr``.
        normalization: the scene's normalisation.
        data_range: see :func:`sr_core.quality.metrics.data_range_for`.
        setup: the degradation and the back-projection (:class:`WaldSetup`; default bicubic,
            none). ``setup.degradation``: how the window is degraded. ``setup.consistency``:
            ``--consistency``'s degradation, or ``None``: the model's output is also
            back-projected onto the degraded window under it
            (:func:`sr_core.quality.consistency.back_project`; LR pixels whose footprint under
            ``degradation`` touches invalid HR pixels are left out of the residual) and scored as
            ``"consistent"``; the compared pixels then also keep
            :func:`~sr_core.quality.consistency.consistency_halo_px` x scale HR px from nodata,
            for every figure, so with and without are compared on the same pixels.

    Pixels are compared only where everything they were computed from is valid: the mask is
    eroded by ``(receptive_field_px + 2) * scale + 2 * scale`` HR px (degradation kernel, model,
    and bicubic reach) plus the blur kernel's radius.

    Returns:
        ``{"degradation", "model": {"psnr_db", "ssim"}, "bicubic": {"psnr_db", "ssim"},
        "gain_db", "window_px": [H, W], "compared_px"}``; with ``setup.consistency`` also
        ``"consistent": {"psnr_db", "ssim"}`` and ``"gain_consistent_db"`` (over bicubic).

    Raises:
        InputError: an unknown degradation name.
    """
    import torch

    from sr_core.imaging.resample import upsample_bicubic

    degradation, consistency = setup.degradation, setup.consistency
    deg = parse(degradation)
    s = model.descriptor.scale
    h, w = (hr.shape[1] // s) * s, (hr.shape[2] // s) * s
    hr, valid = hr[:, :h, :w], valid[:, :h, :w]
    x = normalization.to_model(hr)
    x[~valid] = 0.0
    lr = degrade(torch.from_numpy(x)[None], s, deg)[0].numpy()
    y = model.upscale(lr)
    sr = normalization.from_model(y)
    bic = normalization.from_model(upsample_bicubic(torch.from_numpy(lr)[None], s)[0].numpy())
    reach = (max(model.descriptor.receptive_field_px, 2) + 2) * s
    reach += kernel_radius_px(deg, s) if deg.blurs else 0
    consistent = None
    if consistency is not None:
        consistent, extra = _wald_consistent(y, lr, valid, deg, consistency, s)
        consistent = normalization.from_model(consistent)
        reach += extra
    valid = erode_valid(valid, reach)
    out: dict[str, Any] = {
        "degradation": degradation,
        "model": {"psnr_db": psnr(hr, sr, valid, data_range),
                  "ssim": ssim(hr, sr, valid, data_range)},
        "bicubic": {"psnr_db": psnr(hr, bic, valid, data_range),
                    "ssim": ssim(hr, bic, valid, data_range)},
        "window_px": [int(h), int(w)],
        "compared_px": int(valid.sum()),
    }
    out["gain_db"] = out["model"]["psnr_db"] - out["bicubic"]["psnr_db"]
    if consistent is not None:
        out["consistent"] = {"psnr_db": psnr(hr, consistent, valid, data_range),
                             "ssim": ssim(hr, consistent, valid, data_range)}
        out["gain_consistent_db"] = out["consistent"]["psnr_db"] - out["bicubic"]["psnr_db"]
    return out


def _wald_consistent(y: np.ndarray, lr: np.ndarray, valid: np.ndarray, deg: Degradation,
                     consistency: str, s: int) -> tuple[np.ndarray, int]:
    """:func:`wald_check`'s back-projected output (normalised, ``y``'s shape), and the HR px
    the compared pixels must keep from nodata for it. The LR window is valid where the
    ``deg`` footprint of each pixel (:func:`sr_core.quality.consistency.degradation_reach_px`)
    saw only valid HR pixels; ``s``: the scale."""
    b, h, w = lr.shape
    hr_ok = erode_valid(valid, degradation_reach_px(deg, s) * s)
    lr_valid = np.asarray(hr_ok.reshape(b, h, s, w, s).all(axis=(2, 4)))
    projected = back_project(y, lr, lr_valid, consistency, s)
    return projected, consistency_halo_px(consistency, s) * s
