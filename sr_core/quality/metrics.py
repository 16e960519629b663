"""Quality metrics: PSNR and SSIM (scikit-image), data ranges, nodata erosion and the seam metric.

Conventions (stated in every report):

* PSNR, ``10 log10(data_range^2 / MSE)`` in dB, computed by
  :func:`skimage.metrics.peak_signal_noise_ratio` over valid pixels of all bands.
* SSIM (Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
  structural similarity", IEEE TIP 2004), computed by :func:`skimage.metrics.structural_similarity`
  per band (7x7 uniform window, the scikit-image default), its map averaged over valid pixels and
  then over bands.
* ``data_range``: 255 for 8-bit scenes (their declared bit depth); for every other dtype the
  scene's valid value range (:func:`data_range_for`), so figures are comparable across sensors.
* Wald protocol (Wald, Ranchin & Mangolini, "Fusion of satellite images of different spatial
  resolutions: assessing the quality of resulting images", PE&RS 1997): degrade the scene by the
  scale, super-resolve the degraded image, compare with the scene itself
  (:func:`sr_core.quality.wald.wald_check`).

The lowest module of :mod:`sr_core.quality`: may import :mod:`sr_core.imaging` only
(:mod:`sr_core.quality.consistency` and :mod:`sr_core.quality.wald` build on it).
"""

from __future__ import annotations

import math

import numpy as np


def data_range_for(dtype: str | np.dtype, band_min: list[float] | tuple[float, ...],
                   band_max: list[float] | tuple[float, ...]) -> float:
    """PSNR/SSIM data range for a scene, in scene units (:func:`data_range_rule` says which).

    8-bit data is scored over its declared bit depth (255), the image-quality convention; every
    other dtype over the scene's **valid value range** (``max(band_max) - min(band_min)`` over
    valid pixels), so a uint16 scene whose values reach 1,848 is not scored over 65,535 (which
    would make PSNR tens of dB too high and SSIM about 1 for any output).

    Args:
        dtype: the scene's dtype.
        band_min, band_max: per-band valid minimum and maximum, scene units.

    Returns:
        255.0 for uint8 / int8; the valid range for other dtypes (the dtype's range for an
        integer scene without a positive finite valid range, else 1.0).
    """
    dt = np.dtype(dtype)
    if dt.itemsize == 1 and np.issubdtype(dt, np.integer):
        return 255.0
    lo = np.nanmin(np.asarray(band_min, dtype=float)) if len(band_min) else np.nan
    hi = np.nanmax(np.asarray(band_max, dtype=float)) if len(band_max) else np.nan
    span = hi - lo
    if np.isfinite(span) and span > 0:
        return float(span)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return float(info.max) - float(info.min)
    return 1.0


def data_range_rule(dtype: str | np.dtype) -> str:
    """The words reports use for :func:`data_range_for`'s choice for ``dtype``."""
    dt = np.dtype(dtype)
    if dt.itemsize == 1 and np.issubdtype(dt, np.integer):
        return "8-bit depth (255)"
    return "the scene's valid value range (max - min over valid pixels, all bands)"


def psnr(reference: np.ndarray, test: np.ndarray, valid: np.ndarray, data_range: float) -> float:
    """PSNR in dB over valid pixels.

    Args:
        reference, test: ``(bands, H, W)`` arrays in scene units (any real dtype).
        valid: ``(bands, H, W)`` bool; pixels compared.
        data_range: peak-to-peak range of the data, in scene units, > 0.

    Returns:
        PSNR in dB (``inf`` when identical, ``nan`` with no valid pixel).
    """
    if not valid.any():
        return float("nan")
    ref = reference[valid].astype(np.float64)
    tst = test[valid].astype(np.float64)
    if np.array_equal(ref, tst):
        return float("inf")
    from skimage.metrics import peak_signal_noise_ratio  # imports scipy.stats: 1.2 s, so lazily

    return float(peak_signal_noise_ratio(ref, tst, data_range=data_range))


def psnr_from_sse(sse: float, count: int, data_range: float) -> float:
    """PSNR in dB from a sum of squared errors accumulated over ``count`` values (tile by tile)."""
    if count == 0:
        return float("nan")
    mse = sse / count
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(reference: np.ndarray, test: np.ndarray, valid: np.ndarray, data_range: float) -> float:
    """Mean SSIM over valid pixels, averaged over bands.

    Args:
        reference, test: ``(bands, H, W)`` arrays in scene units, H and W >= 7.
        valid: ``(bands, H, W)`` bool.
        data_range: peak-to-peak range of the data, in scene units, > 0.

    Returns:
        SSIM in [-1, 1] (1 = identical); ``nan`` with no valid pixel.
    """
    from skimage.metrics import structural_similarity  # lazily, as in psnr()

    values = []
    for b in range(reference.shape[0]):
        if not valid[b].any():
            continue
        _, smap = structural_similarity(reference[b].astype(np.float64),
                                        test[b].astype(np.float64),
                                        data_range=data_range, full=True)
        values.append(float(smap[valid[b]].mean()))
    return float(np.mean(values)) if values else float("nan")


def erode_valid(valid: np.ndarray, reach_px: int) -> np.ndarray:
    """Keep only pixels whose whole neighbourhood of ``reach_px`` (Chebyshev distance) is valid,
    so metrics skip pixels whose computation saw nodata.

    Args:
        valid: ``(bands, H, W)`` bool.
        reach_px: neighbourhood radius in pixels, >= 0.

    Returns:
        ``(bands, H, W)`` bool, a subset of ``valid``.
    """
    from scipy.ndimage import minimum_filter

    if reach_px <= 0 or valid.all():
        return valid
    size = (1, 2 * reach_px + 1, 2 * reach_px + 1)
    return minimum_filter(valid, size=size, mode="nearest")


#: reference pairs on each side of a tile boundary for the seam metric (in steps of the scale)
SEAM_REACH = 4


def _seam_axis(pair_sum: np.ndarray, pair_n: np.ndarray, tile_px: int, scale: int,
               reach: int) -> tuple[float, int, float, int, int]:
    """Boundary and reference sums along one axis: (boundary sum, n, reference sum, n, k)."""
    length = pair_sum.shape[0]
    b_sum = r_sum = 0.0
    b_n = r_n = boundaries = 0
    for x in range(tile_px, length, tile_px):
        boundaries += 1
        b_sum += float(pair_sum[x])
        b_n += int(pair_n[x])
        for j in range(1, reach + 1):
            for ref in (x - j * scale, x + j * scale):
                if 1 <= ref < length and ref % tile_px:
                    r_sum += float(pair_sum[ref])
                    r_n += int(pair_n[ref])
    return b_sum, b_n, r_sum, r_n, boundaries


def seam_metric(col_pair_sum: np.ndarray, col_pair_n: np.ndarray, row_pair_sum: np.ndarray,
                row_pair_n: np.ndarray, *, tile_px: int, scale: int) -> dict:
    """Seam metric: gradient magnitude across tile boundaries relative to inside tiles.

    For every tile boundary of the output (every ``tile_px`` HR pixels along columns and rows),
    the mean absolute difference between the two pixels that straddle it is divided by the mean
    absolute difference of the neighbour pairs ``j * scale`` pixels away on both sides
    (``j = 1 .. reach``, ``reach`` = :data:`SEAM_REACH`, boundaries excluded), pooled over
    boundaries, both axes, bands and valid pairs. Absolute rather than squared differences: squared
    ones let a few strong edges that happen to run along a boundary decide the figure (on the
    Landsat sample, moving a fake 128 px grid over a seam-free output spread the squared-difference
    ratio from 0.89 to 1.10, the absolute one from 0.95 to 1.05). Reference pairs are a multiple of
    the scale away so they have the same sub-pixel phase as the boundary pair (an x2 model treats
    even and odd output columns differently).
    A seamless mosaic gives about 1.0; a visible seam (tiles inferred without a halo) gives
    clearly more. This is a blocking-artefact measure in the spirit of the blockiness metrics
    of JPEG quality assessment (e.g. Wang, Sheikh & Bovik, "No-reference perceptual quality
    assessment of JPEG compressed images", ICIP 2002: differences across block boundaries versus
    inside blocks), applied to the tile grid.

    Args:
        col_pair_sum, col_pair_n: ``(width,)`` horizontal-neighbour profiles of the output, from
            :func:`sr_core.quality.scan.scan_raster` (sums of absolute differences, scene units;
            pair counts).
        row_pair_sum, row_pair_n: ``(height,)`` vertical-neighbour profiles.
        tile_px: tile core edge on the output grid (HR px): tile size x scale.
        scale: upscaling factor.

    Returns:
        ``{"ratio", "columns", "rows", "boundaries": {"columns", "rows"}, "boundary_pairs",
        "reference_pairs", "profile": {"offset_px", "relative"}, "what"}``; the profile is the
        mean absolute difference at each offset from the boundaries (HR px, multiples of the
        scale from -reach * scale to reach * scale, so every point has the boundary's sub-pixel
        phase) divided by the reference mean (1.0 at offset 0 = no seam); ratios are ``None``
        where there is no boundary (one tile along that axis) or no valid pair, and ``inf`` when
        only the boundary pairs differ.
    """
    reach = SEAM_REACH
    cb, cbn, cr, crn, nc = _seam_axis(col_pair_sum, col_pair_n, tile_px, scale, reach)
    rb, rbn, rr, rrn, nr = _seam_axis(row_pair_sum, row_pair_n, tile_px, scale, reach)

    def ratio(b, bn, r, rn):
        if bn == 0 or rn == 0:
            return None
        ref = r / rn
        if ref == 0:
            return 0.0 if b == 0 else float("inf")
        return (b / bn) / ref

    # profile: mean |difference| at each distance from the boundaries, relative to the reference
    ref_mean = (cr + rr) / (crn + rrn) if crn + rrn else 0.0
    offsets = list(range(-reach * scale, reach * scale + 1, scale))
    relative = []
    for o in offsets:
        tot, n = 0.0, 0
        for pair_sum, pair_n in ((col_pair_sum, col_pair_n), (row_pair_sum, row_pair_n)):
            length = pair_sum.shape[0]
            for x in range(tile_px, length, tile_px):
                if 1 <= x + o < length and (o == 0 or (x + o) % tile_px):
                    tot += float(pair_sum[x + o])
                    n += int(pair_n[x + o])
        relative.append(tot / n / ref_mean if n and ref_mean > 0 else None)
    return {
        "ratio": ratio(cb + rb, cbn + rbn, cr + rr, crn + rrn),
        "columns": ratio(cb, cbn, cr, crn), "rows": ratio(rb, rbn, rr, rrn),
        "boundaries": {"columns": nc, "rows": nr},
        "boundary_pairs": cbn + rbn, "reference_pairs": crn + rrn,
        "profile": {"offset_px": offsets, "relative": relative},
        "what": f"mean |difference| of neighbours across tile boundaries / the same at "
                f"{reach} x {scale} px either side (same sub-pixel phase); about 1.0 = no seams, "
                "higher = visible tile edges",
    }
