"""Affine-transform arithmetic: pure functions, no I/O (the ``rasterio.transform`` pattern).

An affine transform ``(a, b, c, d, e, f)`` maps a pixel's (col, row) to CRS coordinates:
``x = a * col + b * row + c``, ``y = d * col + e * row + f``. Upscaling by an integer ``scale``
keeps the origin, the CRS and the bounds, and divides the pixel size by ``scale``.

May import :mod:`affine` only.
"""

from __future__ import annotations

from collections.abc import Sequence

from affine import Affine


def upscaled_transform(transform: Sequence[float] | Affine, scale: int) -> Affine:
    """The affine transform of the grid ``scale`` times finer than ``transform``'s.

    ``transform @ Affine.scale(1 / scale)``: same origin, pixel size divided by ``scale``, rotation
    and shear terms kept, so the upscaled image covers exactly the same area.

    Args:
        transform: ``(a, b, c, d, e, f)`` of the LR grid (pixel (col, row) -> CRS coordinates);
            an :class:`affine.Affine` or any sequence whose first six items are those.
        scale: integer upscaling factor >= 1.

    Returns:
        The HR grid's :class:`affine.Affine`.
    """
    return Affine(*tuple(transform)[:6]) @ Affine.scale(1.0 / scale)


def grid_bounds(transform: Sequence[float] | Affine, width_px: int, height_px: int
                ) -> list[float]:
    """The bounding box, in CRS units, of a ``width_px x height_px`` grid's four corners.

    Args:
        transform: ``(a, b, c, d, e, f)`` of the grid (pixel (col, row) -> CRS coordinates).
        width_px, height_px: the grid's size in pixels.

    Returns:
        ``[min_x, min_y, max_x, max_y]`` (a rotated or sheared grid's axis-aligned box).
    """
    a, b, c, d, e, f = tuple(transform)[:6]
    xs = [c, c + a * width_px, c + b * height_px, c + a * width_px + b * height_px]
    ys = [f, f + d * width_px, f + e * height_px, f + d * width_px + e * height_px]
    return [min(xs), min(ys), max(xs), max(ys)]
