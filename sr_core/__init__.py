"""sr_core: the super-resolution library behind sr-pipeline.

The public API is :func:`upscale` (one scene) and :func:`upscale_archive` (every scene of an
archive not yet done), from :mod:`sr_core.api`; they are loaded on first use, so importing a
low-level module (``sr_core.geometry.tiling``) does not import the pipeline, Dask or torch.
The packages form a stack (ARCHITECTURE.md). The library never imports Prefect; ``flows/``
wraps its stages as Prefect tasks.
"""

import os as _os

__version__ = "0.1.0"

# GDAL's block cache defaults to 5 % of RAM. The pipeline streams every raster once (staging, the
# COG write, report scans), so a cache only grows the process with the scene: on a 24 GiB machine a
# 16384 px mosaic's process grew by about the size of its input (and by 256 MiB with a 256 MiB
# cache). 64 MiB holds two rows of 512 px blocks across a 32768 px uint16 raster. A user's own
# setting wins.
_os.environ.setdefault("GDAL_CACHEMAX", "64")

# GDAL never opens network files by itself (a VRT or sidecar naming /vsicurl/ or http://): sr_core
# moves data with boto3 only. See sr_core.storage.security.
from sr_core.storage.security import guard_gdal_network as _guard_gdal_network  # noqa: E402

_guard_gdal_network()

__all__ = ["UpscaleResult", "__version__", "upscale", "upscale_archive"]


def __getattr__(name: str):
    """``sr_core.upscale``, ``sr_core.upscale_archive``, ``sr_core.UpscaleResult``: imported from
    :mod:`sr_core.api` on first use (PEP 562)."""
    if name in ("upscale", "upscale_archive", "UpscaleResult"):
        from sr_core import api
        return getattr(api, name)
    raise AttributeError(f"module 'sr_core' has no attribute {name!r}")
