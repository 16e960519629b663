"""sr_core.quality: measuring super-resolution honestly.

PSNR, SSIM, data ranges and the seam metric (:mod:`.metrics`), one streaming pass of statistics
over a raster (:mod:`.scan`), LR consistency by iterative back-projection (:mod:`.consistency`),
the Wald-protocol check built on both (:mod:`.wald`) and the
self-ensemble's uncertainty layer (:mod:`.uncertainty`). May import: geometry, imaging, storage,
publication, formats and models; never compute, reports or anything above.
"""
