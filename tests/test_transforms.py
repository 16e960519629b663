"""sr_core.geometry.transforms: properties of the upscaled transform (pure arithmetic, no I/O).

"An upscaled transform keeps bounds and CRS": the HR grid ``scale`` times finer covers exactly
the LR grid's area, its origin is the LR origin, and HR pixel ``(col * s, row * s)`` lands where LR
pixel ``(col, row)`` does, for any (rotated or sheared) transform and integer scale.
"""

from __future__ import annotations

import math

from affine import Affine
from hypothesis import given
from hypothesis import strategies as st

from sr_core.geometry.transforms import grid_bounds, upscaled_transform

pixel = st.floats(min_value=1e-3, max_value=1e4)
term = st.floats(min_value=-1e4, max_value=1e4)
origin = st.floats(min_value=-1e7, max_value=1e7)
shear = st.one_of(st.just(0.0), st.floats(min_value=-1e2, max_value=1e2))
scales = st.integers(min_value=1, max_value=16)
sizes = st.integers(min_value=1, max_value=20_000)


@st.composite
def transforms(draw) -> Affine:
    """An invertible LR transform: north-up, or rotated / sheared."""
    a = draw(pixel) * draw(st.sampled_from([1, -1]))
    e = -draw(pixel)
    b, d = draw(shear), draw(shear)
    if abs(a * e - b * d) < 1e-6:
        b, d = 0.0, 0.0
    return Affine(a, b, draw(origin), d, e, draw(origin))


def close(p: tuple[float, float], q: tuple[float, float], t: Affine) -> bool:
    tol = 1e-9 * (abs(t.c) + abs(t.f) + 1.0) + 1e-9 * 20_000 * (abs(t.a) + abs(t.b) + abs(t.d)
                                                                + abs(t.e))
    return math.isclose(p[0], q[0], abs_tol=tol) and math.isclose(p[1], q[1], abs_tol=tol)


@given(transforms(), scales, sizes, sizes)
def test_upscaled_transform_keeps_corners(t: Affine, scale: int, w: int, h: int) -> None:
    hr = upscaled_transform(t, scale)
    for col, row in ((0, 0), (w, 0), (0, h), (w, h)):
        assert close(hr @ (col * scale, row * scale), t @ (col, row), t)
    assert (hr.c, hr.f) == (t.c, t.f)  # same origin, exactly


@given(transforms(), scales, sizes, sizes)
def test_upscaled_transform_keeps_bounds(t: Affine, scale: int, w: int, h: int) -> None:
    lr_box = grid_bounds(t, w, h)
    hr_box = grid_bounds(upscaled_transform(t, scale), w * scale, h * scale)
    for lo, hi in zip(lr_box, hr_box, strict=True):
        assert close((lo, 0.0), (hi, 0.0), t)


@given(transforms(), scales)
def test_upscaled_transform_divides_pixel_size(t: Affine, scale: int) -> None:
    hr = upscaled_transform(tuple(t)[:6], scale)  # a plain 6-tuple is accepted too
    assert hr == upscaled_transform(t, scale)
    for got, lr in ((hr.a, t.a), (hr.b, t.b), (hr.d, t.d), (hr.e, t.e)):
        assert math.isclose(got * scale, lr, rel_tol=1e-12, abs_tol=1e-300)
    assert math.isclose(abs(hr.determinant) * scale ** 2, abs(t.determinant), rel_tol=1e-9)


@given(scales)
def test_upscaled_transform_by_one_is_identity(scale: int) -> None:
    t = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
    assert upscaled_transform(t, 1) == t
    assert upscaled_transform(upscaled_transform(t, scale), 1) == upscaled_transform(t, scale)


def test_grid_bounds_rotated() -> None:
    t = Affine.translation(100.0, 200.0) @ Affine.rotation(90.0) @ Affine.scale(10.0, -10.0)
    box = grid_bounds(t, 3, 2)
    corners = [t @ (c, r) for c in (0, 3) for r in (0, 2)]
    want = [min(x for x, _ in corners), min(y for _, y in corners),
            max(x for x, _ in corners), max(y for _, y in corners)]
    assert all(math.isclose(g, w, abs_tol=1e-9) for g, w in zip(box, want, strict=True))
