"""The public Python API: one scene or a whole archive in one call, for notebooks and scripts.

``sr_core.upscale`` and ``sr_core.upscale_archive`` (exported from the package) build the config
objects and call the same drivers as ``sr-pipeline upscale`` and the Prefect flows
(:func:`sr_core.pipeline.run_upscale`, :func:`sr_core.archive.run_archive`), so a result from
Python equals one from the command line: tiled output equal to whole-image output within 1 DN,
georeferencing kept, a quality report beside the output and a manifest written last.

In a script (not a notebook), call them under ``if __name__ == "__main__":``: without
``dask_address`` they start a local Dask cluster whose worker processes are spawned and
re-import the main module, as :mod:`multiprocessing` requires.

May import: every package of :mod:`sr_core` (this is the top of the library, beside the CLI).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sr_core import storage
from sr_core.archive import ArchiveJob, ClusterSpec, prepare, run_archive
from sr_core.errors import InputError
from sr_core.pipeline import UpscaleConfig, run_upscale

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(UpscaleConfig)}
_ARCHIVE_FIELDS = {"stac_asset", "max_scenes_in_flight", "run_id"}
_CLUSTER_FIELDS = {f.name for f in dataclasses.fields(ClusterSpec)}


@dataclass(frozen=True)
class UpscaleResult:
    """What one :func:`upscale` call published.

    Attributes:
        output: the output's location (``dst``): a COG for GeoTIFF input, else the input's own
            format.
        format: ``"cog"``, ``"dicom"``, ``"nifti"`` or ``"wsi"``.
        report: the quality report (the JSON document: input and output grids, Wald-protocol
            PSNR / SSIM in dB of model and bicubic, seams, timings); when the output was already
            up to date, the one published with it.
        files: every file published, name -> location (``report_json``, ``report_md``,
            ``report_html``, ``manifest`` for a new result; the manifest's outputs when up to
            date).
        up_to_date: ``dst`` already held this result (its manifest matched); nothing was done.
    """

    output: str
    format: str | None
    report: dict
    files: dict[str, str]
    up_to_date: bool


def _options(options: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"{what}: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(allowed))}")


def upscale(src: str, dst: str, *, model: str | None = None, scale: int | None = None,
            **options: Any) -> UpscaleResult:
    """Super-resolve one scene, as ``sr-pipeline upscale SRC DST`` does.

    Args:
        src: input GeoTIFF / COG, DICOM file or series folder, NIfTI, SVS / OME-TIFF: a local
            path or ``s3://bucket/key``.
        dst: output: a local path or ``s3://bucket/key`` (a COG for GeoTIFF input).
        model: a registry name (``sr-pipeline models``: ``edsr``, ``edsr-x4``, ``bicubic``, ...)
            or a weights path; ``None``: the shipped EDSR x2.
        scale: upscaling factor; ``None`` takes the model's own.
        **options: any other field of :class:`sr_core.pipeline.UpscaleConfig` (``tile_size_px``,
            ``device``, ``workers``, ``dask_address``, ``self_ensemble``, ``consistency``, ...).

    Returns:
        :class:`UpscaleResult`.

    Raises:
        InputError: a bad input file or option (one line naming the file or option).
        ModelError: the model cannot be loaded.
        StorageError: an input cannot be read or the output written (``NoSpaceError`` for a
            full scratch disk).
        BusyError: another run holds or published ``dst``.
        Nothing is left at ``dst`` that a manifest lists when any of these is raised.

    Example: the bundled Landsat 7 scene (USGS, public domain) with bicubic, x2:

    >>> import tempfile, sr_core
    >>> out = tempfile.mkdtemp() + "/landsat7_RGB_x2.tif"
    >>> result = sr_core.upscale("samples/landsat7_RGB.byte.tif", out, model="bicubic")
    >>> result.format, result.output == out
    ('cog', True)
    >>> grid_in, grid_out = result.report["input"], result.report["output"]
    >>> (grid_out["width"], grid_out["height"]) == (2 * grid_in["width"], 2 * grid_in["height"])
    True
    """
    _options(options, _CONFIG_FIELDS - {"src", "dst", "model", "scale"}, "upscale")
    options.setdefault("progress", False)
    cfg = UpscaleConfig(src=str(src), dst=str(dst), model=model, scale=scale, **options)
    run = run_upscale(cfg)
    if run.up_to_date is not None:  # DST's manifest lists this very result: read it back
        files = {name: out["uri"] for name, out in run.up_to_date.get("outputs", {}).items()}
        text = storage.read_text(files["report_json"]) if "report_json" in files else None
        report = json.loads(text) if text else {}
        return UpscaleResult(output=str(dst), format=report.get("output", {}).get("format"),
                             report=report, files=files, up_to_date=True)
    published = dict(run.published)
    report = published.pop("report", None) or {}
    fmt = published.pop("format", None)
    files = {k: v for k, v in published.items() if isinstance(v, str)}
    return UpscaleResult(output=str(dst), format=fmt, report=report, files=files,
                         up_to_date=False)


def upscale_archive(source: str, output_prefix: str, *, model: str | None = None,
                    scale: int | None = None, **options: Any) -> dict:
    """Super-resolve every scene of an archive that is not up to date, as the
    ``upscale_archive`` flow does (without Prefect): scenes whose manifest matches are skipped,
    one scene's failure never stops the others, and a summary is published at the end.

    Args:
        source: ``s3://bucket/prefix/**/*.tif``, a local folder (every ``**/*.tif``) or glob,
            or a STAC ItemCollection / Catalog JSON (local or ``s3://``).
        output_prefix: a local folder or ``s3://`` prefix; outputs go to
            ``PREFIX/<scene id>/<model>_x<scale>/`` (:func:`sr_core.archive.output_paths`).
        model: as for :func:`upscale`.
        scale: as for :func:`upscale`.
        **options: ``stac_asset``, ``max_scenes_in_flight`` (default 2), ``run_id``; the shared
            cluster's ``dask_address``, ``workers``, ``gpu``, ``dask_cuda``; and fields of
            :class:`sr_core.pipeline.UpscaleConfig` for every scene (``tile_size_px``,
            ``device``, ``wald_window_px``, ...).

    Returns:
        The run's summary (``archive-summary.json``'s content: ``done``, ``skipped``,
        ``failed``, ``message``, ``results``: one row per scene) with ``written``: name ->
        location of the summary files.

    Raises:
        InputError, ModelError: a bad source, option or model (one line). A scene's failure is
        its ``failed`` row, not an exception.
        StorageError: the summary cannot be written.
    """
    _options(options, _CONFIG_FIELDS - {"src", "dst", "model", "scale", "dask_address",
                                        "workers"} | _ARCHIVE_FIELDS | _CLUSTER_FIELDS,
             "upscale_archive")
    job_opts = {k: options.pop(k) for k in list(options) if k in _ARCHIVE_FIELDS}
    cluster = ClusterSpec(**{k: options.pop(k) for k in list(options) if k in _CLUSTER_FIELDS})
    options.setdefault("progress", False)
    if cluster.gpu:
        options.setdefault("resources", {"GPU": 1})
    cfg, resolved = prepare(UpscaleConfig(src="<archive>", dst="<outputs>", model=model,
                                          scale=scale, **options))
    job = ArchiveJob(str(source), str(output_prefix), cfg, resolved, cluster=cluster,
                     **job_opts)
    return run_archive(job)
