"""Archive scale: list an archive's scenes, lay out their outputs, skip what is already done, and
summarise a run. No Prefect here: ``flows/upscale_archive.py`` wraps these functions in tasks.

Sources (:func:`list_scenes`):

* an S3 prefix with a glob, ``s3://bucket/archive/**/*.tif`` (listed with boto3's paginator, so
  any number of keys; each scene's fingerprint is its ETag from the listing);
* a local folder (``/data/archive``, every ``**/*.tif``) or a local glob
  (``/data/archive/2024/*.tif``); fingerprint: SHA-256 of the file (streamed);
* a STAC ItemCollection or Catalog / Collection JSON, local or on S3 (read with pystac); the asset
  to upscale is chosen by key; fingerprint: the asset's ETag (S3) or SHA-256 (local).

Output layout (:func:`output_paths`), under an output prefix (local folder or ``s3://``)::

    OUTPUT_PREFIX/<scene id>/<model>_x<scale>/<stem>.tif           COG (WSI: pyramidal TIFF)
                                              <stem>.nii.gz / .nii NIfTI output
                                              <stem>.dcm           single DICOM file output
                                              <stem>/IM00001.dcm   DICOM series output (folder)
                                              <stem>.report.json   quality report (+ .md, .html)
                                              <stem>.stac.json     STAC item (georeferenced only)
                                              <stem>.manifest.json publication manifest
    OUTPUT_PREFIX/archive-summary.json                             last run's summary
    OUTPUT_PREFIX/archive-report.html                              last run's HTML page
    OUTPUT_PREFIX/_runs/<UTC time>-<run id>.summary.json           every run's summary

The scene id is the scene's path relative to the listing root without its extension
(``2024/05/scene_a``), or the STAC item id; ``<stem>`` is its last part; ``<model>`` is the model's
name without its ``-xN`` suffix (``edsr``, ``espcn``, ``bicubic``, or a custom card's name).

The output's name follows its format, read from the input's first bytes (:func:`output_for`).
Medical archives: a folder where two or more listed files are DICOM is one scene, the series
folder (:func:`group_series`). Medical outputs get no STAC item: their manifest holds the lineage
and their report the physical geometry.

Idempotency: each scene's manifest is the pipeline's publication manifest
(:mod:`sr_core.publication.manifest`), written last and conditionally by
:func:`sr_core.pipeline.publish`
after the COG, reports and STAC item are in place. It records the input fingerprint (ETag or
SHA-256 and size), the model weights' SHA-256, the parameters that change the output (model,
scale, Wald window) and every output's size and SHA-256. A scene is skipped when its manifest
matches and every output it lists is present with its size; otherwise it is processed again (a
run that died half-way left no manifest, the previous one, or one still listing the previous
outputs under their side names, and its tiles are resumed from the work directory:
:mod:`sr_core.publication.journal`). Tile size, device and the Dask cluster do not change the
output (tiled output equals whole-image output), so they do not invalidate a manifest.

Modules (each imports only :mod:`sr_core` packages below the archive, and the archive modules
listed before it): :mod:`~sr_core.archive.sources` (listing, DICOM series),
:mod:`~sr_core.archive.layout` (output paths and names), :mod:`~sr_core.archive.summary` (the
run's summary and page), :mod:`~sr_core.archive.stac` (STAC items),
:mod:`~sr_core.archive.plan` (what to skip); this package runs one scene
(:func:`process_scene`, through :func:`sr_core.pipeline.run_upscale`, the one driver); the
archive's shared Dask cluster is :func:`sr_core.compute.cluster.shared_cluster`.
"""

from __future__ import annotations

from sr_core.archive.driver import (
    ArchiveHooks,
    ArchiveJob,
    ClusterSpec,
    prepare,
    run_archive,
    scenes_in_threads,
)
from sr_core.archive.layout import (
    OutputPaths,
    model_label,
    output_for,
    output_parameters,
    output_paths,
    weights_sha256,
)
from sr_core.archive.plan import (
    MANIFEST_VERSION,
    ScenePlan,
    expected_manifest,
    plan_archive,
    plan_scene,
)
from sr_core.archive.scenes import (
    SceneResult,
    failed_result,
    process_scene,
    run_scene,
    skipped_result,
)
from sr_core.archive.sources import (
    DEFAULT_GLOB,
    NOT_DICOM_EXTS,
    SceneRef,
    fingerprint,
    glob_regex,
    group_series,
    list_scenes,
    split_glob,
)
from sr_core.archive.stac import PROCESSING_EXT, PROJECTION_EXT, stac_item
from sr_core.archive.summary import (
    ArchiveRun,
    archive_pages,
    publish_summary,
    summarize,
    summary_table,
)

__all__ = [
    "DEFAULT_GLOB", "MANIFEST_VERSION", "NOT_DICOM_EXTS", "PROCESSING_EXT", "PROJECTION_EXT",
    "ArchiveHooks", "ArchiveJob", "ArchiveRun", "ClusterSpec", "OutputPaths", "ScenePlan",
    "SceneRef", "SceneResult", "archive_pages", "expected_manifest", "failed_result",
    "fingerprint", "glob_regex", "group_series", "list_scenes", "model_label", "output_for",
    "output_parameters", "output_paths", "plan_archive", "plan_scene", "prepare",
    "process_scene", "publish_summary", "run_archive", "run_scene", "scenes_in_threads",
    "skipped_result", "split_glob", "stac_item", "summarize", "summary_table", "weights_sha256",
]
