"""LR consistency: correct a super-resolved image so that degrading it reproduces its input.

A model's output ``y`` of an LR image ``x`` need not satisfy ``D(y) = x`` for the degradation
``D`` that made ``x`` (a sensor's point-spread function and detector integration): the model may
shift a band's mean or invent contrast the input does not hold. Scientific users need the
radiometry of the input kept, so ``--consistency NAME`` projects ``y`` onto ``{y : D(y) = x}``
(approximately: a fixed number of steps), where ``D`` is the degradation ``NAME`` of
:data:`sr_core.imaging.degradations.NAMED`.

Method: iterative back-projection (M. Irani & S. Peleg, "Improving resolution by image
registration", CVGIP: Graphical Models and Image Processing 53(3), 1991),
``y <- y + U(x - D(y))`` with ``U`` bicubic upsampling (Keys, ``a = -0.5``,
:func:`sr_core.imaging.resample.upsample_bicubic`; Irani & Peleg's back-projection kernel),
accelerated by the Chebyshev semi-iterative method (G. H. Golub & R. S. Varga, "Chebyshev
semi-iterative methods, successive overrelaxation iterative methods, and second order Richardson
iterative methods", Numerische Mathematik 3, 1961; Y. Saad, "Iterative Methods for Sparse Linear
Systems", 2nd ed., SIAM 2003, algorithm 12.1). The same goal as the low-frequency hard
constraint of SEN2SR (Aybar et al., Remote Sensing of Environment 2026), reached iteratively
and locally instead of in the Fourier domain of a whole image, so it runs tile by tile.

Why Chebyshev: ``D U`` is a convolution on the LR grid (both operators are shift-invariant by one
LR pixel) with a real, symmetric frequency response ``lambda`` in ``[lambda_min, 1]``
(:func:`spectrum_bounds`: 0.22 for bicubic at x2, 0.47 for area, 0.21 for gaussian-0.3, 0.014
for gaussian-0.6). Plain back-projection shrinks each frequency of the residual by
``|1 - lambda|`` per step (0.77 at worst for bicubic); the Chebyshev steps, a fixed polynomial in
``D U`` as well, shrink every frequency by at least ``T_K(sigma)`` after ``K`` steps
(:func:`reduction_bound`, ``sigma = (l_max + l_min) / (l_max - l_min)``): 10^3 for bicubic and
gaussian-0.3, 10^5 for area, but only about 3 for gaussian-0.6, whose blur removes so much of the
high frequencies that enforcing it is a strong deconvolution (not guaranteed; it costs Wald PSNR).
Measured on the Landsat sample (edsr-x2, a 200 px corner crop with nodata; ``tests`` hold it):
the RMS of ``D(y) - x`` over valid pixels went from 0.53 DN to 0.002 DN after 6 steps and below
0.001 after 8 (bicubic), from 0.18 to below 0.001 (area); plain back-projection needed 12 steps
for 0.007. Where ``D`` is plain area integration, one step with a nearest-neighbour ``U`` would
be exactly consistent (the block means of the correction are the residual itself); bicubic ``U``
is used for every degradation because it spreads the correction smoothly (nearest-neighbour
corrections are visible ``scale x scale`` blocks) and scored 0.0-0.1 dB higher in the Wald
check.

Tolerance stated (:data:`TOLERANCE_RMS_DN`): on valid LR pixels away from nodata whose ``D``
footprint holds no output value clipped to the dtype's range, the RMS of ``D(output) - input``
is at most 0.5 DN of an integer scene **after** the output is rounded to the scene's dtype, for
bicubic, area and gaussian-0.3 (rounding alone contributes about ``0.29 / scale`` DN; the float
result before rounding is consistent to better than 0.01 DN). Clipping cannot be undone: where
the input saturates, or where a bright pixel on a dark background can only be reproduced with
negative values (bicubic's negative lobes), the output is clipped and consistency is lost
around it; :func:`lr_sse` reports both. Measured on the whole Landsat sample (edsr-x2, 256 px
tiles): with ``--consistency bicubic``, RMS 0.12 DN and max 0.48 DN over those pixels (65 % of
the valid ones: saturated clouds, bright pixels on dark water), 3.9 DN over all; with
``--consistency area``, RMS 0.13 DN and max 0.25 DN over 94 % of them.

Nodata: the residual is zero at LR pixels whose ``D`` footprint touches an invalid pixel
(:func:`residual_mask`), so nodata never feeds the correction; invalid output pixels stay nodata
(the caller masks them as before).

Tiles: each step reads ``D``'s reach and ``U``'s reach (2 LR px) further, so ``K`` steps need
:func:`consistency_halo_px` LR pixels of context beyond the model's; with that halo the tiled
output equals the whole-image output by construction. The bound is conservative: on the Landsat
crop of the tests, 8 LR px of halo already agreed within 1e-3 DN, none differed by 5.8 DN.

What it does to quality (Wald check of the whole Landsat sample, edsr-x2, gain over bicubic in
dB, before -> after): ``--consistency bicubic``: bicubic-degraded window 0.86 -> 0.93,
area-degraded 0.47 -> 0.21; ``--consistency area``: bicubic 0.88 -> 0.80, area 0.49 -> 0.50. The
correction helps a little when it matches how the LR was made and costs when it does not: choose
the degradation that matches the sensor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sr_core.errors import InputError
from sr_core.imaging.degradations import NAMED, REPORT, Degradation, kernel_radius_px
from sr_core.quality.metrics import erode_valid, psnr_from_sse

if TYPE_CHECKING:
    import torch

__all__ = ["ITERATIONS", "METHOD", "TOLERANCE_RMS_DN", "LRReference", "back_project",
           "check_degradation",
           "consistency_halo_px", "degradation_reach_px", "lr_sse", "reduction_bound",
           "residual_mask", "spectrum_bounds", "summarise", "summary_line"]

#: Chebyshev back-projection steps (each one ``U`` and one ``D``).
ITERATIONS = 8
#: LR pixels bicubic upsampling reads on each side (Keys' kernel: 2).
UPSAMPLE_REACH_LR_PX = 2
#: The eigenvalue interval used is ``[LOW_MARGIN * l_min, HIGH_MARGIN * l_max]`` of the measured
#: response, so the clipped borders of a window (truncated kernels) stay inside it.
LOW_MARGIN, HIGH_MARGIN = 0.9, 1.01
#: The stated tolerance: RMS of ``D(output) - input`` over valid LR pixels, in DN of an integer
#: scene after rounding (bicubic, area, gaussian-0.3); see the module docstring.
TOLERANCE_RMS_DN = 0.5
METHOD = ("iterative back-projection (Irani & Peleg 1991) with bicubic back-projection, "
          "Chebyshev-accelerated (Golub & Varga 1961)")


def check_degradation(name: str | None) -> Degradation:
    """The degradation ``--consistency NAME`` names.

    Raises:
        InputError: an unknown name; one line naming the option and the known names.
    """
    if name not in NAMED:
        raise InputError(f"--consistency {name}: unknown degradation; known: {', '.join(NAMED)}")
    return NAMED[name]


def degradation_reach_px(deg: Degradation, scale: int) -> int:
    """LR pixels on each side that one LR pixel of ``D(y)`` depends on (Chebyshev distance
    between LR pixels whose HR blocks feed it): 0 for area, 2 for antialiased bicubic (its kernel
    spans ``2 * scale`` HR px from the centre), plus ``ceil(r / scale)`` for a blur of radius
    ``r`` HR px (:func:`sr_core.imaging.degradations.kernel_radius_px`)."""
    reach = 2 if deg.kernel == "bicubic" else 0
    if deg.blurs:
        reach += -(-kernel_radius_px(deg, scale) // scale)
    return reach


def consistency_halo_px(degradation: str, scale: int, iterations: int = ITERATIONS) -> int:
    """Extra halo (LR px) that :func:`back_project` needs beyond the model's, so the tiled
    output equals the whole-image output: each step reads ``D``'s reach and ``U``'s.

    Args:
        degradation: a name of :data:`sr_core.imaging.degradations.NAMED`.
        scale: integer factor >= 1.
        iterations: the steps (default :data:`ITERATIONS`).

    Returns:
        ``iterations * (degradation_reach_px + 2)``: 32 for bicubic at x2, 16 for area.

    Raises:
        InputError: an unknown degradation.
    """
    deg = check_degradation(degradation)
    return iterations * (degradation_reach_px(deg, scale) + UPSAMPLE_REACH_LR_PX)


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (IEEE Trans. ASSP 1981) at offsets ``t``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _du_row(deg: Degradation, scale: int, n: int) -> np.ndarray:
    """One axis of ``D U`` on a periodic LR line of ``n`` px: its response to an impulse at 0.

    ``U``: HR pixel ``q`` takes LR coordinate ``(q + 0.5) / s - 0.5`` with Keys' weights;
    ``D``: a Gaussian of ``sigma_lr_px * s`` HR px sampled over ``kernel_radius_px`` and
    normalised (when it blurs), then Keys' kernel stretched by ``s`` and normalised (bicubic,
    :mod:`sr_core.imaging.resample`) or the block mean (area). The named degradations are
    isotropic and unshifted, so ``D U`` in 2-D is this row's operator along each axis."""
    s, big = scale, n * scale
    lr = np.zeros(n)
    lr[0] = 1.0
    q = np.arange(big)
    coord = (q + 0.5) / s - 0.5
    hr = np.zeros(big)
    for j in range(int(np.floor(coord.min())) - 2, int(np.ceil(coord.max())) + 3):
        hr += _keys(coord - j) * lr[j % n]
    if deg.sigma_lr_px > 0:
        r = kernel_radius_px(deg, s)
        t = np.arange(-r, r + 1)
        g = np.exp(-0.5 * (t / (deg.sigma_lr_px * s)) ** 2)
        hr = sum(w * np.roll(hr, -int(o)) for w, o in zip(g / g.sum(), t, strict=True))
    if deg.kernel == "area":
        return hr.reshape(n, s).mean(axis=1)
    offsets = np.arange(-3 * s, 3 * s + 1)  # HR px from LR pixel i's first HR pixel
    w = _keys((offsets - (s - 1) / 2) / s)  # its centre is (s - 1) / 2 further
    w = w / w.sum()
    return np.array([sum(wk * hr[(i * s + int(o)) % big] for wk, o in zip(w, offsets,
                                                                         strict=True))
                     for i in range(n)])


@functools.lru_cache(maxsize=64)
def spectrum_bounds(degradation: str, scale: int) -> tuple[float, float]:
    """Smallest and largest frequency response of ``D U`` on the LR grid, e.g. ``(0.226, 1.0)``
    for bicubic at x2: the product of one axis's response (:func:`_du_row`, NumPy only, so a
    report process needs no torch) along rows and columns. ``tests/test_consistency.py`` pins
    it against the 2-D impulse response of :func:`sr_core.imaging.degradations.degrade` after
    :func:`sr_core.imaging.resample.upsample_bicubic`.

    Raises:
        InputError: an unknown degradation.
    """
    deg = check_degradation(degradation)
    n = 64
    r = np.fft.fft(_du_row(deg, scale, n)).real
    lo, hi = float(r.min()), float(r.max())
    return (lo * lo if lo >= 0 else lo * hi), max(hi * hi, lo * lo)


def _interval(degradation: str, scale: int) -> tuple[float, float]:
    lo, hi = spectrum_bounds(degradation, scale)
    if lo <= 0:  # not expected for the named degradations; back-projection would not converge
        raise InputError(f"--consistency {degradation}: D U has a response of {lo:.3g} at x"
                         f"{scale}; back-projection cannot converge")
    return LOW_MARGIN * lo, HIGH_MARGIN * hi


def reduction_bound(degradation: str, scale: int, iterations: int = ITERATIONS) -> float:
    """Factor by which :func:`back_project` shrinks every frequency of the LR residual at least
    (in a window's interior): ``T_K(sigma)``, the Chebyshev polynomial of degree ``K`` at
    ``sigma = (l_max + l_min) / (l_max - l_min)`` over the interval of :func:`spectrum_bounds`
    with its margins. At x2: 1.1e3 for bicubic, 1.2e5 for area, 750 for gaussian-0.3, 3 for
    gaussian-0.6."""
    lo, hi = _interval(degradation, scale)
    return math.cosh(iterations * math.acosh((hi + lo) / (hi - lo)))


def residual_mask(valid: np.ndarray, deg: Degradation, scale: int) -> np.ndarray:
    """LR pixels where the residual is used: valid, and ``D``'s footprint all valid.

    Args:
        valid: ``(bands, h, w)`` bool validity of the LR input.
        deg: the degradation; scale: integer factor.

    Returns:
        ``(bands, h, w)`` bool, a subset of ``valid``.
    """
    return erode_valid(np.asarray(valid, dtype=bool), degradation_reach_px(deg, scale))


def back_project(y: np.ndarray, x: np.ndarray, valid: np.ndarray, degradation: str, scale: int,
                 *, device: str | torch.device = "cpu") -> np.ndarray:
    """Correct ``y`` so that ``D(y)`` reproduces ``x`` (see the module docstring).

    Chebyshev iteration on ``(D U) z = x - D(y0)`` with ``y = y0 + U z``, residuals taken
    directly as ``m * (x - D(y))`` (``m``: :func:`residual_mask`), :data:`ITERATIONS` steps (the
    count :func:`consistency_halo_px` and :func:`reduction_bound` assume by default, so tiled runs
    equal whole-image ones).

    Args:
        y: ``(bands, H, W)`` float32 model output, normalised (nominally [0, 1]); ``H = h * scale``,
            ``W = w * scale``.
        x: ``(bands, h, w)`` float32 normalised LR input (any value where invalid).
        valid: ``(bands, h, w)`` bool validity of ``x``.
        degradation: a name of :data:`sr_core.imaging.degradations.NAMED`.
        scale: integer factor >= 2.
        device: where the arithmetic runs (the model's device on a GPU worker).

    Returns:
        ``(bands, H, W)`` float32, normalised; not clipped (may leave [0, 1] slightly).

    Raises:
        InputError: an unknown degradation, shapes that do not match the scale, or a window too
            small for the degradation's blur kernel.
    """
    import torch

    from sr_core.imaging.degradations import degrade
    from sr_core.imaging.resample import upsample_bicubic

    deg = check_degradation(degradation)
    if y.ndim != 3 or x.shape != valid.shape or y.shape != (x.shape[0], x.shape[1] * scale,
                                                            x.shape[2] * scale):
        raise InputError(f"back-projection: output {y.shape} is not input {x.shape} x{scale}")
    iterations = ITERATIONS
    if not valid.any():
        return np.array(y, dtype=np.float32)
    lo, hi = _interval(degradation, scale)
    theta, delta = (hi + lo) / 2, (hi - lo) / 2
    sigma = theta / delta
    yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.float32), device=device)[None]
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)[None]
    mt = torch.as_tensor(np.array(residual_mask(valid, deg, scale)), device=device)[None]
    zero = torch.zeros((), dtype=yt.dtype, device=device)

    def residual(v: torch.Tensor) -> torch.Tensor:
        return torch.where(mt, xt - degrade(v, scale, deg), zero)

    with torch.no_grad():
        step = residual(yt) / theta
        rho = 1.0 / sigma
        for k in range(iterations):
            yt = yt + upsample_bicubic(step, scale)
            if k + 1 == iterations:
                break
            rho_next = 1.0 / (2.0 * sigma - rho)
            step = (rho_next * rho) * step + (2.0 * rho_next / delta) * residual(yt)
            rho = rho_next
    return yt[0].cpu().numpy()


@dataclass(frozen=True)
class LRReference:
    """What :func:`lr_sse` compares a read window's output with.

    Attributes:
        x_ref: ``(bands, h, w)`` input of ``window`` (the core), scene units.
        normalization: the scene's :class:`sr_core.imaging.normalize.Normalization`.
        window: the core inside the read window (a :class:`sr_core.geometry.tiling.PixelWindow`,
            LR px).
        eval_valid: ``(bands, h, w)`` bool, the core's pixels compared.
        scale: integer factor.
        nodata: the scene's nodata value or ``None``.
    """

    x_ref: np.ndarray
    normalization: Any
    window: Any
    eval_valid: np.ndarray
    scale: int
    nodata: float | None = None


def lr_sse(y: np.ndarray, reference: LRReference, degradations: tuple[str, ...] = REPORT
           ) -> dict[str, tuple[float, float, int]]:
    """LR-consistency errors of an output **as written** (rounded and clipped to the scene's
    dtype), under each degradation: over all compared pixels, and over those whose footprint
    holds no clipped output pixel (an integer output clipped at its dtype's limits by more than
    rounding, or equal to the nodata value, which the writer moves one step off), where the
    stated tolerance applies.

    Args:
        y: ``(bands, H, W)`` float32 normalised output of a read window.
        reference: the window's input, normalisation, core, compared pixels, scale and nodata.
        degradations: names of :data:`sr_core.imaging.degradations.NAMED`.

    Returns:
        ``{name: (SSE, SSE where unclipped, unclipped pixel count)}``, scene units squared.
    """
    import torch

    x_ref, normalization, window = reference.x_ref, reference.normalization, reference.window
    eval_valid, scale, nodata = reference.eval_valid, reference.scale, reference.nodata

    from sr_core.imaging.degradations import degrade

    units = normalization.from_model(y)
    written = normalization.to_model(units)
    clipped = np.zeros(units.shape, dtype=bool)
    if np.issubdtype(units.dtype, np.integer):
        clipped = np.abs(_to_units(y, normalization) - units) > 0.5 + 1e-6
    if nodata is not None:
        clipped |= units == nodata
    b, hh, ww = clipped.shape
    clipped_lr = clipped.reshape(b, hh // scale, scale, ww // scale, scale).any(axis=(2, 4))
    yt = torch.from_numpy(written)[None]
    rows, cols = window.slices()
    ref = x_ref.astype(np.float64)
    out = {}
    for name in degradations:
        back = degrade(yt, scale, NAMED[name])[0].numpy()[:, rows, cols]
        sq = (_to_units(back, normalization) - ref) ** 2
        free = erode_valid(np.asarray(~clipped_lr), degradation_reach_px(NAMED[name], scale))
        free = free[:, rows, cols] & eval_valid
        out[name] = (float(sq[eval_valid].sum()), float(sq[free].sum()), int(free.sum()))
    return out


def _to_units(x: np.ndarray, normalization) -> np.ndarray:
    """Normalised ``(bands, h, w)`` -> scene units, float64, unrounded."""
    off = np.asarray(normalization.offset, dtype=np.float64)
    span = np.asarray(normalization.span, dtype=np.float64)
    off = np.broadcast_to(off, (x.shape[0],))[:, None, None]
    span = np.broadcast_to(span, (x.shape[0],))[:, None, None]
    return x.astype(np.float64) * span + off


def summarise(degradation: str, scale: int, tiles, wald: dict | None, data_range: float) -> dict:
    """The report's ``consistency`` section.

    Args:
        degradation: the ``--consistency`` name; scale: the run's factor.
        tiles: the run's :class:`sr_core.compute.infer.TileResult` list (``consistency_sse`` and
            ``valid_px``).
        wald: the run's Wald result (:func:`sr_core.compute.wald_task.wald_window_task`) or
            ``None``.
        data_range: PSNR data range, scene units.

    Returns:
        ``{"degradation", "description", "method", "iterations", "halo_px", "reduction_bound",
        "tolerance_rms_dn", "lr_psnr_db": {name: {"before", "after", "after_unclipped",
        "unclipped_fraction"}}, "wald_gain_db": {name: {"before", "after"}}, "what"}`` (PSNR
        ``inf`` where the rounded output reproduces the input exactly; ``after_unclipped`` over
        the pixels whose footprint holds no clipped output pixel, :func:`lr_sse`).
    """
    done = [t for t in tiles if t.consistency_sse]
    n = sum(t.valid_px for t in done)
    lr = {}
    for name in REPORT:
        def total(key: str, name: str = name) -> float:
            return sum(t.consistency_sse[name][key] for t in done)

        free = int(total("unclipped_px"))
        lr[name] = {"before": psnr_from_sse(total("before"), n, data_range),
                    "after": psnr_from_sse(total("after"), n, data_range),
                    "after_unclipped": psnr_from_sse(total("after_unclipped"), free, data_range),
                    "unclipped_fraction": free / n if n else None}
    gains = {}
    for name, r in ((wald or {}).get("by_degradation") or {}).items():
        if "gain_consistent_db" in r:
            gains[name] = {"before": r["gain_db"], "after": r["gain_consistent_db"]}
    return {
        "degradation": degradation, "description": NAMED[degradation].describe(),
        "method": METHOD, "iterations": ITERATIONS,
        "halo_px": consistency_halo_px(degradation, scale),
        "reduction_bound": reduction_bound(degradation, scale),
        "tolerance_rms_dn": TOLERANCE_RMS_DN,
        "lr_psnr_db": lr, "wald_gain_db": gains,
        "what": "output corrected so that degrading it reproduces the input; LR PSNR: the output "
                "as written, degraded by each report degradation, vs the input (before / after "
                "the correction; after_unclipped: only where no output pixel of the footprint was "
                "clipped to the dtype's range, which the correction cannot undo); Wald gain over "
                "bicubic before / after",
    }


def summary_line(section: dict) -> str:
    """One line for the CLI's summary from the report's ``consistency`` section
    (:func:`summarise`; PSNR may be the string ``"inf"`` in a JSON report)."""
    def db(v) -> str:
        return f"{v:.2f}" if isinstance(v, int | float) else str(v)

    lr = ", ".join(f"{d} {db(v['before'])} -> {db(v['after'])} dB "
                   f"({db(v.get('after_unclipped'))} unclipped)"
                   for d, v in section["lr_psnr_db"].items())
    wald = ", ".join(f"{d} {db(v['before'])} -> {db(v['after'])} dB"
                     for d, v in section["wald_gain_db"].items()) or "n/a"
    return (f"consistency ({section['degradation']}, {section['iterations']} back-projection "
            f"steps), before -> after: LR PSNR {lr}; Wald gain over bicubic {wald}")
