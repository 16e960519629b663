"""Tiling geometry: pure window arithmetic, no I/O (the ``rasterio.windows`` pattern).

A scene of ``height_px x width_px`` LR pixels is cut into a grid of tiles. Each tile has

* a **core**: the ``tile_size_px x tile_size_px`` block (smaller at the right and bottom edges)
  that the tile writes. Cores partition the scene exactly once, and each core maps to exactly one
  chunk of the output Zarr array (chunk size ``tile_size_px * scale``).
* a **read** window: the core grown by ``halo_px`` on every side and clipped to the scene. The
  halo gives the model the context it needs (at least its receptive-field radius), so the core of
  the tiled output equals the same pixels of whole-image inference. At the scene border the window
  is clipped rather than padded, so the model sees exactly the border it sees on the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sr_core.errors import InputError


@dataclass(frozen=True)
class PixelWindow:
    """A rectangle of whole pixels: rows ``[row_off, row_off + height)``, cols likewise."""

    row_off: int
    col_off: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing the last two axes of an array."""
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )

    def scaled(self, scale: int) -> PixelWindow:
        """The same area on a grid ``scale`` times finer (LR window -> HR window)."""
        return PixelWindow(
            self.row_off * scale, self.col_off * scale, self.height * scale, self.width * scale
        )

    def relative_to(self, outer: PixelWindow) -> PixelWindow:
        """This window in the coordinates of ``outer`` (which must contain it)."""
        return PixelWindow(
            self.row_off - outer.row_off, self.col_off - outer.col_off, self.height, self.width
        )

    @property
    def size_px(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class Tile:
    """One unit of work: a core to write and the read window (core plus halo) around it."""

    row: int
    col: int
    core: PixelWindow
    read: PixelWindow

    @property
    def core_in_read(self) -> PixelWindow:
        """Where the core sits inside the read window (LR pixels)."""
        return self.core.relative_to(self.read)


@dataclass(frozen=True)
class TileGrid:
    """The tiling of one scene.

    Attributes:
        height_px, width_px: scene size in LR pixels.
        tile_size_px: core edge length in LR pixels (edge tiles may be smaller).
        halo_px: context read around each core, in LR pixels (>= the model's receptive-field
            radius).
        min_read_px: a read window shorter than this along an axis (an edge tile) is grown
            inward, away from the scene's border, to this length (or the scene's), so a model
            with a minimum input size is never padded inside the scene (padding there would be
            false context within the model's reach).
        multiple: grown windows start on a multiple of this (the model's size multiple).
    """

    height_px: int
    width_px: int
    tile_size_px: int
    halo_px: int
    min_read_px: int = 0
    multiple: int = 1

    @property
    def rows(self) -> int:
        return -(-self.height_px // self.tile_size_px)

    @property
    def cols(self) -> int:
        return -(-self.width_px // self.tile_size_px)

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> Tile:
        """Tile ``(row, col)`` of the grid."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"tile ({row}, {col}) outside a {self.rows}x{self.cols} grid")
        t, h = self.tile_size_px, self.halo_px
        r0, c0 = row * t, col * t
        r1, c1 = min(r0 + t, self.height_px), min(c0 + t, self.width_px)
        core = PixelWindow(r0, c0, r1 - r0, c1 - c0)
        rr0, rr1 = self._grow(max(r0 - h, 0), min(r1 + h, self.height_px), self.height_px)
        cc0, cc1 = self._grow(max(c0 - h, 0), min(c1 + h, self.width_px), self.width_px)
        read = PixelWindow(rr0, cc0, rr1 - rr0, cc1 - cc0)
        return Tile(row, col, core, read)

    def _grow(self, lo: int, hi: int, size: int) -> tuple[int, int]:
        """``[lo, hi)`` grown to ``min_read_px`` (start aligned down to ``multiple``)."""
        if hi - lo >= self.min_read_px:
            return lo, hi
        m = max(1, self.multiple)
        lo = max(0, (hi - self.min_read_px) // m * m)
        return lo, min(size, max(hi, lo + self.min_read_px))

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(row, col)

    @property
    def read_px(self) -> int:
        """Total LR pixels read, halos included (the compute the tiling costs)."""
        return sum(t.read.size_px for t in self)


def plan_tiles(height_px: int, width_px: int, *, tile_size_px: int, halo_px: int,
               min_read_px: int = 0, multiple: int = 1) -> TileGrid:
    """Cut a ``height_px x width_px`` scene into tiles.

    Args:
        height_px, width_px: scene size in LR pixels, >= 1.
        tile_size_px: core edge in LR pixels, >= 1.
        halo_px: context around each core in LR pixels, >= 0.
        min_read_px, multiple: see :class:`TileGrid`.

    Raises:
        InputError: a size is not a positive integer, or the halo is negative.
    """
    for label, value in (("scene height", height_px), ("scene width", width_px),
                         ("--tile-size", tile_size_px)):
        if int(value) != value or value < 1:
            raise InputError(f"{label} must be a positive whole number of pixels, got {value!r}")
    if halo_px < 0:
        raise InputError(f"halo must be >= 0 pixels, got {halo_px}")
    return TileGrid(int(height_px), int(width_px), int(tile_size_px), int(halo_px),
                    int(min_read_px), max(1, int(multiple)))
