"""sr_core: the super-resolution library behind sr-pipeline.

The library never imports Prefect; ``flows/`` wraps its stages as Prefect tasks.
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
