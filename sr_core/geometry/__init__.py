"""sr_core.geometry: pure geometry, no I/O. Tile grids and pixel windows
(:mod:`~sr_core.geometry.tiling`: cores, halos, read windows) and affine-transform arithmetic
(:mod:`~sr_core.geometry.transforms`: the upscaled grid's transform, a grid's bounds). The bottom of
the stack above :mod:`sr_core.errors`: it may import only :mod:`sr_core.errors`, :mod:`affine`
and the standard library, and reads or writes nothing."""
