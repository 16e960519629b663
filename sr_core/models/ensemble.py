"""Geometric self-ensemble: the eight dihedral transforms of an image and the running mean and
standard deviation of a model's outputs over them.

The self-ensemble runs a model on the eight flips and 90-degree rotations of its input (the
dihedral group D4 of the square), maps each output back and averages them (Timofte, Rothe & Van
Gool, "Seven ways to improve example-based single image super resolution", CVPR 2016; Lim, Son,
Kim, Nah & Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPR
Workshops 2017, the "+" models). The per-pixel standard deviation of the eight outputs is kept as
an uncertainty layer: it is zero where the model is equivariant (bicubic interpolation is, by
construction) and grows where the model's answer depends on the orientation of what it sees.

Pure array geometry, no model code: :class:`sr_core.models.base.SRModel` uses it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dihedral(NamedTuple):
    """One element of D4: flip the columns (left-right) when ``flip``, then rotate by ``k``
    quarter turns counter-clockwise (:func:`numpy.rot90` on the last two axes)."""

    k: int
    flip: bool


#: The eight transforms; the identity first.
DIHEDRAL: tuple[Dihedral, ...] = tuple(Dihedral(k, flip) for flip in (False, True)
                                       for k in range(4))


def apply(x: np.ndarray, t: Dihedral) -> np.ndarray:
    """Transform an image.

    Args:
        x: ``(..., h, w)`` array of any dtype.
        t: the transform.

    Returns:
        A view of ``x`` (no copy), ``(..., h, w)`` for an even ``k``, ``(..., w, h)`` for an odd
        one.
    """
    if t.flip:
        x = x[..., ::-1]
    return np.rot90(x, t.k, axes=(-2, -1))


def invert(y: np.ndarray, t: Dihedral) -> np.ndarray:
    """Undo :func:`apply` (``invert(apply(x, t), t)`` equals ``x``): rotate back, then flip.

    Args:
        y: ``(..., h', w')`` array, e.g. a model's output for ``apply(x, t)``.

    Returns:
        A view of ``y`` in ``x``'s orientation.
    """
    y = np.rot90(y, -t.k, axes=(-2, -1))
    return y[..., ::-1] if t.flip else y


class MeanStd:
    """Running mean and population standard deviation (ddof = 0) of equally shaped float32
    arrays, in float32 with the first array as the shift (sums of ``y - first`` and of its
    square: no cancellation, since the outputs of one model differ little).

    Memory: three arrays of the output's shape (the first, the two sums) plus one temporary.
    """

    def __init__(self) -> None:
        self.n = 0
        self.first: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None

    def add(self, y: np.ndarray) -> None:
        """Add one ``(bands, H, W)`` array (cast to float32)."""
        if self.first is None:
            self.first = np.array(y, dtype=np.float32)
            self.total = np.zeros_like(self.first)
            self.squares = np.zeros_like(self.first)
        else:
            d = np.subtract(y, self.first, dtype=np.float32)
            self.total += d
            d *= d
            self.squares += d
        self.n += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, both float32 of the arrays' shape.

        Raises:
            ValueError: nothing was added.
        """
        if self.first is None or self.total is None or self.squares is None:
            raise ValueError("no array was added")
        shift = self.total / np.float32(self.n)
        var = self.squares / np.float32(self.n)
        var -= shift * shift
        np.maximum(var, 0.0, out=var)
        return self.first + shift, np.sqrt(var, out=var)
