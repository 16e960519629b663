"""sr_core.imaging: array operations on pixels, no I/O and no models.

Bicubic resampling with the kernel the super-resolution papers mean (:mod:`.resample`), BT.601
YCbCr (:mod:`.color`), per-scene normalisation between a scene's units and a model's [0, 1]
range (:mod:`.normalize`) and the degradation models that turn an HR image into its LR version
(:mod:`.degradations`). May import: numpy, scipy, torch (lazily) and ``sr_core.errors``,
``sr_core.geometry``.
"""
