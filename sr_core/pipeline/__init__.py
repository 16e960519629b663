"""The upscaling pipeline as stages: ingest -> tile -> infer -> stitch -> publish -> report.

The CLI, the Prefect flows (``flows/upscale_scene.py``, ``flows/upscale_archive.py``) and a
notebook run a scene through one driver, :func:`run_upscale`; the scene flow passes it a wrapper
that makes each stage a Prefect task. Every stage takes and returns the run's small state (paths
and metadata, never pixels), so Prefect tracks scenes and stages while Dask runs the tiles.

Nothing is written at the destination until :func:`publish`: the output (a COG, or for medical
inputs a DICOM series, NIfTI file or pyramidal TIFF: :mod:`sr_core.formats`) and the reports are
built under a scratch directory (or a hidden temp name beside a local destination), validated
(:func:`validate_output`), and moved or uploaded into place only when complete; the manifest
(:mod:`sr_core.publication.manifest`) is written last, conditionally, and is what consumers trust.

Resume and concurrency (:mod:`sr_core.publication.journal`): the Zarr stores and a per-tile
completion journal live in a work directory named by the work key (input checksum, model hash,
parameters), under a lock; a rerun after a crash reuses the staged scene and every completed tile.

Modules, in the order a scene meets them: :mod:`~sr_core.pipeline.config` (the job and its option
checks), :mod:`~sr_core.pipeline.model` (resolving the model), :mod:`~sr_core.pipeline.run` (the
state handed between stages), :mod:`~sr_core.pipeline.stages` (preflight, start, ingest, claim,
tile), :mod:`~sr_core.pipeline.inference` (infer), :mod:`~sr_core.pipeline.output` (stitch,
validation), :mod:`~sr_core.pipeline.reporting` (quality, report),
:mod:`~sr_core.pipeline.publishing` (publish) and :mod:`~sr_core.pipeline.driver` (the driver,
cleanup). The Dask cluster is :mod:`sr_core.compute.cluster`'s.

May import everything below it in the stack (errors .. training); never :mod:`sr_core.archive`,
the CLI, the flows or Prefect.
"""

from sr_core.pipeline.config import (
                                     DEVICES,
                                     MAX_TILE_PX,
                                     MIN_TILE_PX,
                                     PRECISIONS,
                                     UpscaleConfig,
                                     check_options,
                                     check_source_option,
)
from sr_core.pipeline.driver import StageWrapper, call_stage, cleanup, run_upscale
from sr_core.pipeline.inference import WALD_MAX_PLANES, infer
from sr_core.pipeline.model import ModelInfo, resolve_model
from sr_core.pipeline.output import measure_output, stitch, validate_output
from sr_core.pipeline.publishing import publish
from sr_core.pipeline.reporting import quality, report
from sr_core.pipeline.run import Run, make_scratch, timed
from sr_core.pipeline.stages import (
                                     claim,
                                     expected_manifest,
                                     ingest,
                                     preflight,
                                     scene_halo,
                                     start,
                                     tile,
)

__all__ = [
    "DEVICES", "MAX_TILE_PX", "MIN_TILE_PX", "PRECISIONS", "WALD_MAX_PLANES", "ModelInfo", "Run",
    "StageWrapper", "UpscaleConfig", "call_stage", "check_options", "check_source_option",
    "claim", "cleanup", "expected_manifest", "infer", "ingest", "make_scratch", "measure_output",
    "preflight", "publish", "quality", "report", "resolve_model", "run_upscale", "scene_halo",
    "start", "stitch", "tile", "timed", "validate_output",
]
