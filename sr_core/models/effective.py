"""Effective receptive field: the halo beyond which context changes the output by less than a
tolerance, measured once per set of weights and cached.

The analytic receptive field of a deep network (36 LR px for EDSR-baseline x4) bounds the pixels
an output *can* depend on; the influence at its edge is ~1e-12 of the output, far below what an
integer output can show. Window-attention transformers (SwinIR, HAT, DAT, CRAFT) have no useful
analytic bound at all: shifted windows chain the whole image together, yet the influence decays
within a few windows. So the halo is measured the way tiling uses it:

* a probe image (:func:`probe_image`: uniform noise, every frequency, on a ramp that makes
  larger crops differ in mean and spread, as a real scene does), ``core + 2 * H`` px square,
  ``H`` the largest halo tried;
* for halos ``h`` in ascending order (:func:`candidate_halos`, multiples of the model's
  ``size_multiple``, so every crop starts on the same window grid as the whole image), the model
  runs on the crop ``core + 2 h`` around the central ``core`` and that core's output is kept;
* the deviation of halo ``h`` is the largest absolute difference, over the core's output values,
  between its output and the output with the largest halo computed so far (the reference). It is
  trusted once the reference's halo is at least twice ``h`` (influence decays at least that fast
  in every network measured: the remaining error of the reference is then far below ``h``'s) or
  at least the analytic receptive field (the reference is then exact).

This is tiled inference against whole-image inference on the probe image itself: a tile with halo
``h`` sees exactly the crop (the pipeline pads nothing inside the scene). The probe runs in
float32 on the model's own device (float64 only changes the last bits; a float32 convolution
differs by ~1e-7 between input sizes, which :data:`FLOOR` stays well above). It stops as soon as
the deviation reaches :data:`FLOOR` (then every tolerance the pipeline uses is answered), when
the next forward pass would exceed the compute budget (:data:`BUDGET_S` seconds: measured at
~3-10 s for a CRAFT x4 checkpoint on the project's 2-core CPU), or at :data:`MAX_HALO_PX` /
the analytic radius.

Results are cached as JSON in ``$SR_MODEL_CACHE/receptive-field/<weights SHA-256>.json``
(default ``<temp dir>/sr-pipeline-models``, beside the S3 model cache), so the second load of the
same weights does not probe.

The tolerance a scene needs (:func:`tolerance_for`): half a DN of an integer output (0.5 / span
in the model's [0, 1] units, so rounding keeps tiled within 1 DN of whole-image), or 1e-5 of the
range for a float output; each divided by :data:`SAFETY` because the probe image is one sample
of content.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: version of the measurement; a cached result of another version is measured again
PROBE_VERSION = 2
#: compute budget of one probe, seconds of wall time (a forward pass that would end past it is
#: not started)
BUDGET_S = 20.0
#: the deviation (model units, [0, 1] range) at which the probe stops: below the strictest
#: tolerance :func:`tolerance_for` asks (a full-range 16-bit scene: 0.5 / 65535 / SAFETY)
FLOOR = 1.5e-6
#: the largest halo the probe tries, LR px (larger ones cost more than they save)
MAX_HALO_PX = 64
#: tolerance divisor: the probe image is one sample; real scenes get a 4x margin
SAFETY = 4.0
#: relative tolerance for float outputs (of the output's value range)
FLOAT_RTOL = 1e-5
#: output pixels of the probe's core edge (at least; rounded up to the size multiple)
CORE_PX = 16


def candidate_halos(size_multiple: int, limit_px: int) -> list[int]:
    """Halos the probe tries, ascending: every px to 8, then steps of 2 to 16, 4 to 32, 8 to
    ``limit_px``; each rounded up to a multiple of ``size_multiple``; deduplicated.

    Args:
        size_multiple: the model's input size multiple, >= 1.
        limit_px: the largest halo, >= 1.

    Returns:
        Ascending list of positive ints, the last ``>= limit_px`` rounded to the multiple.
    """
    raw = [*range(1, 9), *range(10, 17, 2), *range(20, 33, 4), *range(40, max(limit_px, 40) + 8, 8)]
    m = max(1, size_multiple)
    out = sorted({-(-h // m) * m for h in raw if h <= limit_px} | {-(-limit_px // m) * m})
    return out


@dataclass
class EffectiveReach:
    """A measured deviation curve: how far a tile's output is from whole-image output, by halo.

    Attributes:
        curve: ``[[halo_px, deviation], ...]`` ascending halo; deviation in model units (the
            [0, 1] range), ``None`` where not yet trusted (the reference's halo was below twice
            it and below the analytic radius).
        reference_px: halo of the reference output (the largest computed).
        analytic_px: the analytic receptive-field radius, or ``None`` (none known).
        core_px, probe_px: the probe's core edge and image edge, LR px.
        seconds: wall time the probe took; stopped: why it ended (``"floor"``, ``"budget"``,
            ``"limit"``).
        version: :data:`PROBE_VERSION`; sha256: the weights' SHA-256; cached: read from the
            cache rather than measured now (not stored).
    """

    curve: list[list]
    reference_px: int
    analytic_px: int | None
    core_px: int
    probe_px: int
    seconds: float
    stopped: str
    version: int = PROBE_VERSION
    sha256: str = ""
    cached: bool = field(default=False, compare=False)

    def halo_for(self, tolerance: float) -> int | None:
        """The smallest measured halo whose trusted deviation is at most ``tolerance`` (model
        units), or ``None`` when no trusted halo reaches it."""
        for h, dev in self.curve:
            if dev is not None and dev <= tolerance:
                return int(h)
        return None

    def deviation_at(self, halo_px: int) -> float | None:
        """The trusted deviation of the largest measured halo <= ``halo_px``; ``None``: none."""
        found = None
        for h, dev in self.curve:
            if h <= halo_px and dev is not None:
                found = float(dev)
        return found

    def to_dict(self) -> dict:
        """Plain-JSON form (without ``cached``)."""
        d = asdict(self)
        d.pop("cached")
        return d


def tolerance_for(dtype: str, span: float) -> float:
    """Largest deviation, in model units, that keeps a scene's tiled output within its promise.

    Args:
        dtype: the output's numpy dtype name.
        span: the normalisation span (scene units per model unit; the largest over bands), > 0.

    Returns:
        ``0.5 / span / SAFETY`` for integer dtypes (half a DN), ``FLOAT_RTOL / SAFETY`` for
        floats; never below :data:`FLOOR`.
    """
    if np.issubdtype(np.dtype(dtype), np.integer):
        return max(0.5 / max(float(span), 1e-30) / SAFETY, FLOOR)
    return max(FLOAT_RTOL / SAFETY, FLOOR)


def cache_root() -> Path:
    """``$SR_MODEL_CACHE/receptive-field`` (default ``<temp dir>/sr-pipeline-models/...``)."""
    root = os.environ.get("SR_MODEL_CACHE") or Path(tempfile.gettempdir()) / "sr-pipeline-models"
    return Path(root) / "receptive-field"


def cached_reach(sha256: str) -> EffectiveReach | None:
    """The cached measurement for these weights, or ``None`` (none, unreadable, or another
    :data:`PROBE_VERSION`). Does not import torch."""
    path = cache_root() / f"{sha256}.json"
    try:
        doc = json.loads(path.read_text())
        reach = EffectiveReach(**doc)
    except (OSError, ValueError, TypeError):
        return None
    if reach.version != PROBE_VERSION or reach.sha256 != sha256:
        return None
    reach.cached = True
    return reach


def _write_json(name: str, doc: dict) -> None:
    """Write ``doc`` as ``cache_root() / name`` (:func:`sr_core.publication.journal.write_json`:
    atomic); a failure to write is not an error (the next load measures again)."""
    from sr_core.publication.journal import write_json

    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        write_json(str(cache_root() / name), doc)
    except OSError:
        pass


def save_reach(reach: EffectiveReach) -> None:
    """Write ``reach`` to the cache (atomically; a failure to write is not an error)."""
    _write_json(f"{reach.sha256}.json", reach.to_dict())


def save_description(sha256: str, key: dict, descriptor: dict, card: dict) -> None:
    """Cache what loading a card-less checkpoint found (its descriptor and synthesised card),
    so the main process can describe it next time without importing torch or spandrel.

    Args:
        sha256: the weights file's SHA-256; key: what else the description depends on (the
            reference and the scale asked for); descriptor: ``ModelDescriptor.to_dict()``;
        card: the card ``load_model`` synthesised.
    """
    _write_json(f"{sha256}.model.json", {"version": PROBE_VERSION, "key": key,
                                         "descriptor": descriptor, "card": card})


def cached_description(sha256: str, key: dict) -> tuple[dict, dict] | None:
    """``(descriptor dict, card)`` cached by :func:`save_description` for these weights and
    ``key``, or ``None``."""
    try:
        doc = json.loads((cache_root() / f"{sha256}.model.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != PROBE_VERSION or doc.get("key") != key:
        return None
    descriptor, card = doc.get("descriptor"), doc.get("card")
    if not isinstance(descriptor, dict) or not isinstance(card, dict):
        return None
    return descriptor, card


def probe_image(bands: int, size: int, seed: int = 0) -> np.ndarray:
    """The probe image: ``0.5 * noise + 0.5 * ramp``, float32 in [0, 1), shape ``(bands, size,
    size)``. The noise (uniform, independent per pixel) carries every frequency, so every
    local influence shows; the ramp (the Chebyshev distance from the centre over the half
    size) makes each larger crop's mean and spread differ, so a model that normalises or
    attends by image-wide statistics (IMDN's contrast-aware channel attention, Restormer-style
    channel attention) shows its dependence on far pixels, as it does on a real scene whose
    content changes from tile to tile."""
    noise = np.random.default_rng(seed).random((bands, size, size), dtype=np.float32)
    c = (size - 1) / 2
    ax = np.abs(np.arange(size, dtype=np.float32) - c)
    ramp = np.maximum(ax[:, None], ax[None, :]) / max(c, 1.0)
    return (0.5 * noise + 0.5 * np.minimum(ramp, 0.999)).astype(np.float32)


def _trust(h: int, reference: int, analytic: int | None) -> bool:
    return reference >= 2 * h or (analytic is not None and reference >= analytic)


def measure(model, *, budget_s: float = BUDGET_S, seed: int = 0, limit_px: int | None = None,
            sha256: str = "") -> EffectiveReach:
    """Measure a loaded model's deviation curve (see the module docstring).

    Args:
        model: an :class:`sr_core.models.base.SRModel` (its ``upscale`` is what tiles run).
        budget_s: wall-time budget in seconds; a forward pass whose predicted end (from the
            last one's time per pixel) is past it is not started.
        seed: seed of the probe image (numpy's PCG64; the global RNGs are not touched).
        limit_px: largest halo to try; default the analytic radius when the descriptor has one
            (``tileable``), capped at :data:`MAX_HALO_PX`.
        sha256: the weights' SHA-256, stored with the result.

    Returns:
        An :class:`EffectiveReach`; ``curve`` holds the trusted deviations found so far.

    Raises:
        ModelError, InputError: the model cannot run on the probe image.
    """
    t0 = time.perf_counter()
    d = model.descriptor
    analytic = d.receptive_field_px if d.tileable else None
    m = max(1, d.size_multiple)
    limit = limit_px or min(MAX_HALO_PX, analytic or MAX_HALO_PX)
    halos = candidate_halos(m, max(1, limit))
    core = -(-max(CORE_PX, d.min_size_px - 2 * halos[0], 1) // m) * m
    big = halos[-1]
    size = core + 2 * big
    bands = d.in_channels
    image = probe_image(bands, size, seed)
    s = d.scale
    outs: dict[int, np.ndarray] = {}
    curve: dict[int, float | None] = {}
    stopped, per_px = "limit", None
    for h in halos:
        side = core + 2 * h
        if per_px is not None and time.perf_counter() - t0 + per_px * side * side > budget_s:
            stopped = "budget"
            break
        t1 = time.perf_counter()
        lo = big - h
        y = model.upscale(image[:, lo:lo + side, lo:lo + side])
        per_px = (time.perf_counter() - t1) / (side * side)
        outs[h] = y[:, h * s:(h + core) * s, h * s:(h + core) * s].astype(np.float64)
        for prev in outs:
            if prev < h:
                curve[prev] = (float(np.abs(outs[prev] - outs[h]).max())
                               if _trust(prev, h, analytic) else None)
        trusted = [v for v in curve.values() if v is not None]
        if trusted and min(trusted) <= FLOOR:
            stopped = "floor"
            break
    reference = max(outs)
    if analytic is not None and reference >= analytic:
        curve[reference] = 0.0  # the analytic radius: exact by construction
    return EffectiveReach(
        curve=[[h, curve[h]] for h in sorted(curve)], reference_px=reference,
        analytic_px=analytic, core_px=core, probe_px=core + 2 * reference,
        seconds=round(time.perf_counter() - t0, 3), stopped=stopped, sha256=sha256)


def reach_for(model, sha256: str, *, budget_s: float = BUDGET_S) -> EffectiveReach:
    """The cached measurement for ``sha256``, else :func:`measure` and cache it.

    Args:
        model: the loaded :class:`sr_core.models.base.SRModel`.
        sha256: its weights' SHA-256 (64 hex digits).
        budget_s: probe budget in seconds.

    Returns:
        An :class:`EffectiveReach` (``cached`` True when read from the cache).
    """
    found = cached_reach(sha256)
    if found is not None:
        return found
    reach = measure(model, budget_s=budget_s, sha256=sha256)
    save_reach(reach)
    return reach
