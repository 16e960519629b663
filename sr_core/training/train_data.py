"""Training data: scenes staged into Zarr, a fixed pool of HR patches, augmentation, and the
standardisation of patches for intensity-equivariant networks (used by
:mod:`sr_core.training.train`).

Scenes are staged as inference stages them (:func:`sr_core.compute.staging.stage_scene`) and
normalised per scene (:func:`sr_core.imaging.normalize.normalization_for`), so training sees what
inference sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sr_core.compute.staging import stage_scene
from sr_core.errors import InputError
from sr_core.formats.geotiff import open_scene
from sr_core.imaging.normalize import Normalization, normalization_for
from sr_core.quality.metrics import data_range_for

STAGE_TILE_PX = 512
#: patches whose normalised standard deviation is below this are skipped as textureless (open
#: sea in a DEM; flat water in 8-bit imagery, whose quantisation alone would be the texture)
MIN_PATCH_STD = 2e-3
SCENE_SUFFIXES = (".tif", ".tiff")


@dataclass
class _Staged:
    name: str
    store: str
    normalization: Normalization
    data_range: float
    dtype: str
    shape: tuple = field(default=())


def expand_scenes(paths: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    """Scene paths with each folder replaced by its GeoTIFFs (``*.tif``, ``*.tiff``, sorted).

    Raises:
        InputError: a path does not exist, or a folder holds no GeoTIFF.
    """
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir()
                           if f.suffix.lower() in SCENE_SUFFIXES and f.is_file())
            if not found:
                raise InputError(f"{p}: no GeoTIFF ({', '.join(SCENE_SUFFIXES)}) in this "
                                 f"{what} folder")
            out.extend(found)
        elif not path.exists():
            raise InputError(f"{p}: no such {what} scene")
        else:
            out.append(str(path))
    return tuple(out)


def _stage_all(paths: tuple[str, ...], scratch: str, prefix: str) -> list[_Staged]:
    out = []
    for i, path in enumerate(paths):
        scene = open_scene(path)
        staged = stage_scene(scene, os.path.join(scratch, f"{prefix}{i}.zarr"),
                             tile_size_px=STAGE_TILE_PX)
        if not sum(staged.valid_px):
            raise InputError(f"{path}: no valid pixel (every pixel is nodata)")
        norm = normalization_for(scene.dtype, list(staged.band_min), list(staged.band_max))
        out.append(_Staged(Path(path).name, staged.store_path, norm,
                           data_range_for(scene.dtype, staged.band_min, staged.band_max),
                           str(scene.dtype), (scene.count, scene.height, scene.width)))
    return out


def sample_patches(scenes: list[_Staged], *, count: int, hr_px: int,
                   rng: np.random.Generator, max_tries: int = 50) -> np.ndarray:
    """Sample ``count`` single-band HR patches from staged scenes.

    Scenes are chosen in proportion to their pixel count (bands included). Patches with a nodata
    pixel or with no texture are skipped.

    Returns:
        ``(count, 1, hr_px, hr_px)`` float32 normalised patches.

    Raises:
        InputError: fewer than ``count`` usable patches after ``count * max_tries`` draws (scenes
            too small for the patch, or all nodata).
    """
    import zarr

    usable = [s for s in scenes if s.shape[1] >= hr_px and s.shape[2] >= hr_px]
    if not usable:
        raise InputError(f"{', '.join(s.name for s in scenes)}: no training scene is at least "
                         f"{hr_px} x {hr_px} px (the HR patch: --patch x the scale)")
    weights = np.array([np.prod(s.shape) for s in usable], dtype=float)
    weights /= weights.sum()
    arrays = [(zarr.open_array(s.store, path="image", mode="r"),
               zarr.open_array(s.store, path="valid", mode="r")) for s in usable]
    patches = np.empty((count, 1, hr_px, hr_px), dtype=np.float32)
    got = tries = 0
    while got < count:
        tries += 1
        if tries > count * max_tries:
            raise InputError(f"only {got} of {count} training patches had no nodata and some "
                             "texture; add scenes or lower pool_size")
        k = rng.choice(len(usable), p=weights)
        s = usable[k]
        b = int(rng.integers(s.shape[0]))
        r = int(rng.integers(s.shape[1] - hr_px + 1))
        c = int(rng.integers(s.shape[2] - hr_px + 1))
        image, valid_array = arrays[k]
        valid = np.asarray(valid_array[b, r:r + hr_px, c:c + hr_px])
        if not valid.all():
            continue
        x = s.normalization.to_model(np.asarray(image[b:b + 1, r:r + hr_px, c:c + hr_px]),
                                     bands=[b])
        if float(x.std()) < MIN_PATCH_STD:
            continue
        patches[got] = x
        got += 1
    return patches


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    k = int(rng.integers(4))
    batch = torch.rot90(batch, k, dims=(-2, -1))
    if rng.integers(2):
        batch = torch.flip(batch, dims=(-1,))
    return batch


#: contrast of a standardised training patch (its standard deviation), around 0.5
STANDARD_SPREAD = 0.1


def standardise(hr: torch.Tensor) -> torch.Tensor:
    """Each patch of ``(N, C, H, W)`` mapped affinely to mean 0.5 and standard deviation
    :data:`STANDARD_SPREAD` (over its bands and pixels).

    For a network equivariant to intensity scale and offset (``f(a x + b) = a f(x) + b``, e.g.
    :class:`sr_core.models.edsr.EDSR` with ``equivariant=True``), and with degradations that are
    linear (noise relative to the patch's own spread), this changes nothing the network computes
    but weighs every patch equally in the loss: without it a smooth DEM patch, whose relief is a
    thousandth of the scene's range, contributes a thousandth of a textured photo's loss and the
    network never learns to leave such relief alone.
    """
    flat = hr.reshape(hr.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (hr - mean) / std * STANDARD_SPREAD + 0.5
