"""Properties of the tile grid: cores partition the scene exactly once, read windows hold the
core plus a halo of at least the requested size (clipped only at the scene border), and each core
maps to exactly one output chunk."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sr_core.errors import InputError
from sr_core.geometry.tiling import plan_tiles

sizes = st.integers(min_value=1, max_value=700)


@settings(max_examples=200, deadline=None)
@given(h=sizes, w=sizes, t=st.integers(8, 300), halo=st.integers(0, 40))
def test_cores_partition_scene_exactly_once(h, w, t, halo):
    grid = plan_tiles(h, w, tile_size_px=t, halo_px=halo)
    cover = np.zeros((h, w), dtype=np.int32)
    for tile in grid:
        r, c = tile.core.slices()
        cover[r, c] += 1
    assert (cover == 1).all()
    assert len(list(grid)) == len(grid) == grid.rows * grid.cols


@settings(max_examples=200, deadline=None)
@given(h=sizes, w=sizes, t=st.integers(8, 300), halo=st.integers(0, 40))
def test_read_window_holds_core_plus_halo(h, w, t, halo):
    grid = plan_tiles(h, w, tile_size_px=t, halo_px=halo)
    for tile in grid:
        core, read = tile.core, tile.read
        # inside the scene
        assert read.row_off >= 0 and read.col_off >= 0
        assert read.row_off + read.height <= h and read.col_off + read.width <= w
        # halo on every side, except where the scene ends
        assert core.row_off - read.row_off == min(halo, core.row_off)
        assert core.col_off - read.col_off == min(halo, core.col_off)
        assert (read.row_off + read.height) - (core.row_off + core.height) == \
            min(halo, h - core.row_off - core.height)
        assert (read.col_off + read.width) - (core.col_off + core.width) == \
            min(halo, w - core.col_off - core.width)
        inner = tile.core_in_read
        assert inner.height == core.height and inner.width == core.width


@settings(max_examples=100, deadline=None)
@given(h=sizes, w=sizes, t=st.integers(8, 200), scale=st.integers(2, 4))
def test_each_core_is_exactly_one_output_chunk(h, w, t, scale):
    grid = plan_tiles(h, w, tile_size_px=t, halo_px=3)
    chunk = t * scale
    for tile in grid:
        out = tile.core.scaled(scale)
        assert out.row_off % chunk == 0 and out.col_off % chunk == 0
        assert out.row_off // chunk == tile.row and out.col_off // chunk == tile.col
        # ends at the chunk boundary, or at the output's edge
        assert out.height == chunk or out.row_off + out.height == h * scale
        assert out.width == chunk or out.col_off + out.width == w * scale


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_nonsense_tile_size_is_refused(bad):
    with pytest.raises(InputError, match="tile-size"):
        plan_tiles(100, 100, tile_size_px=bad, halo_px=2)


def test_batch_sizes_shrink_to_single_tiles_at_the_end():
    from sr_core.compute.cluster import MAX_TILES_PER_TASK, batch_sizes

    assert batch_sizes(0, 2) == []
    assert batch_sizes(1, 2) == [1]
    assert batch_sizes(4, 1) == [1, 1, 1, 1]  # few tiles: one task each
    sizes = batch_sizes(256, 2)
    assert sum(sizes) == 256
    assert sizes[0] == MAX_TILES_PER_TASK == 16  # capped
    assert sizes == sorted(sizes, reverse=True)  # guided: never grows
    assert sizes[-8:] == [1] * 8  # a thread waits at most about one tile for the other
    assert len(sizes) == 34  # not 256 tasks (~9 ms of scheduling each)
    assert batch_sizes(10, 0) == batch_sizes(10, 1)  # a cluster reporting no threads counts as one
    assert batch_sizes(10, 2, per_task=4) == [4, 4, 2]  # fixed size when asked
