"""Which halo a scene's tiles get, and why (torch-free; the main process decides it).

Rules, in order (:func:`choose_halo`), for a model with descriptor ``d`` and measured deviation
curve ``reach`` (:mod:`sr_core.models.effective`) on a scene whose output must stay within
``tolerance`` (:func:`sr_core.models.effective.tolerance_for`: half a DN for integers, 1e-5 of
the range for floats, with a 4x margin):

1. **effective**: the smallest measured halo whose deviation is within the tolerance, when it is
   below the analytic radius (or there is no analytic radius: window-attention transformers),
   unless the descriptor says ``global_context`` (image-wide statistics: the probe image's
   statistics are not a scene's, so no measured halo is trusted).
2. **analytic**: the analytic receptive-field radius, for a model that has one (every native
   convolutional architecture): exact by construction.
3. **whole scene**: a model with neither (global statistics, as IMDN's contrast-aware channel
   attention, or a checkpoint whose probe did not converge within its budget) runs as one tile
   while the scene has at most :data:`WHOLE_SCENE_MAX_LR_PX` LR pixels (the core area of one
   default 1024 px tile: the memory of one default tile).
4. **largest affordable halo**: beyond that budget such a model runs tiled with the largest halo
   the probe measured (at most half the tile), and the report records the probe's measured
   maximum deviation at that halo, in the scene's units. Never a whole-scene tile whose memory
   grows with the scene.

Every halo is rounded up to the model's ``size_multiple`` so read windows start on the whole
image's window / pixel-unshuffle grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: LR pixels up to which a model without a verified halo runs the scene as one tile: the core of
#: one default 1024 x 1024 px tile, so memory stays that of a default tile
WHOLE_SCENE_MAX_LR_PX = 1024 * 1024


@dataclass(frozen=True)
class HaloChoice:
    """The halo of a run and its justification (recorded in the report's ``tiling``).

    Attributes:
        halo_px: the model's halo in LR px (a multiple of the size multiple); 0 with
            ``whole_scene``.
        rule: ``"effective"``, ``"analytic"``, ``"whole scene"`` or ``"largest affordable"``.
        reason: one sentence for the report.
        whole_scene: the scene runs as one tile.
        tolerance: the deviation allowed, in model units ([0, 1] range).
        deviation: the probe's measured deviation at ``halo_px`` in model units (``None``:
            exact by construction or not measured).
        deviation_scene_units: ``deviation`` times the normalisation span (DN for integer
            scenes), or ``None``.
        analytic_px: the analytic receptive-field radius, or ``None``.
    """

    halo_px: int
    rule: str
    reason: str
    whole_scene: bool = False
    tolerance: float | None = None
    deviation: float | None = None
    deviation_scene_units: float | None = None
    analytic_px: int | None = None

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)


def _up(px: int, multiple: int) -> int:
    return -(-int(px) // multiple) * multiple


def choose_halo(descriptor, reach, *, tolerance: float, span: float, scene_px: int,
                tile_size_px: int) -> HaloChoice:
    """Apply the module's rules.

    Args:
        descriptor: the model's :class:`~sr_core.models.descriptor.ModelDescriptor`.
        reach: its :class:`~sr_core.models.effective.EffectiveReach`, or ``None`` (not
            measured: bicubic and other weight-less models).
        tolerance: allowed deviation in model units (> 0).
        span: normalisation span, scene units per model unit (largest over bands).
        scene_px: the scene's LR pixels (height x width).
        tile_size_px: the tile core edge in LR px.

    Returns:
        A :class:`HaloChoice`.
    """
    m = max(1, descriptor.size_multiple)
    analytic = descriptor.receptive_field_px if descriptor.tileable else None
    found = (reach.halo_for(tolerance)
             if reach is not None and not descriptor.global_context else None)
    if found is not None and (analytic is None or _up(found, m) < _up(analytic, m)):
        dev = reach.deviation_at(found)
        return HaloChoice(
            _up(found, m), "effective",
            f"measured: beyond {found} LR px context changes the output by at most "
            f"{dev:.2g} (model units) on the probe image, within the tolerance {tolerance:.2g}",
            deviation=dev, deviation_scene_units=dev * span, tolerance=tolerance,
            analytic_px=analytic)
    if analytic is not None:
        return HaloChoice(_up(analytic, m), "analytic",
                          f"the analytic receptive field ({analytic} LR px): exact",
                          tolerance=tolerance, analytic_px=analytic)
    if scene_px <= WHOLE_SCENE_MAX_LR_PX:
        return HaloChoice(0, "whole scene",
                          f"no halo within the tolerance was measured (global context or probe "
                          f"budget); the scene ({scene_px} LR px) fits the whole-scene budget of "
                          f"{WHOLE_SCENE_MAX_LR_PX} LR px, so it runs as one tile", True,
                          tolerance=tolerance, analytic_px=analytic)
    largest = min(reach.reference_px if reach is not None else 0, tile_size_px // 2)
    halo = max(m, largest // m * m)
    dev = reach.deviation_at(halo) if reach is not None else None
    return HaloChoice(
        halo, "largest affordable",
        f"no halo within the tolerance was measured and the scene ({scene_px} LR px) exceeds the "
        f"whole-scene budget of {WHOLE_SCENE_MAX_LR_PX} LR px: tiled with the largest affordable "
        f"halo; measured deviation {dev if dev is None else f'{dev:.3g}'} (model units)",
        deviation=dev, deviation_scene_units=None if dev is None else dev * span,
        tolerance=tolerance, analytic_px=analytic)
