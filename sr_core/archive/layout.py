"""Archive output layout: where one scene's outputs go under the output prefix
(:func:`output_paths`, :class:`OutputPaths`), the output's name as its format names it
(:func:`output_for`), the ``<model>_x<scale>`` folder name (:func:`model_label`) and the parts of
a manifest that depend on the model and options (:func:`weights_sha256`,
:func:`output_parameters`). See :mod:`sr_core.archive` for the layout itself.

May import :mod:`sr_core.errors`, :mod:`sr_core.storage`, :mod:`sr_core.formats`,
:mod:`sr_core.publication`, :mod:`sr_core.pipeline` (types only) and
:mod:`sr_core.archive.sources`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sr_core import storage
from sr_core.archive.sources import _head_bytes
from sr_core.errors import InputError, SRError
from sr_core.publication import manifest
from sr_core.storage.security import check_relative_id

if TYPE_CHECKING:
    from sr_core.pipeline import ModelInfo, UpscaleConfig


@dataclass(frozen=True)
class OutputPaths:
    """Where one scene's outputs go (see the module docstring)."""

    folder: str
    cog: str
    report_json: str
    report_md: str
    stac: str
    manifest: str


def model_label(model: ModelInfo) -> str:
    """``<model>_x<scale>`` for the output layout, e.g. ``edsr_x2``."""
    name, scale = model.descriptor.name, model.descriptor.scale
    name = re.sub(rf"-x{scale}$", "", name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    return f"{name}_x{scale}"


def output_for(paths: OutputPaths, uri: str) -> str:
    """Where a scene's upscaled image goes, named as its format names it (decided from the
    input's content, not its name): ``<stem>.tif`` for a GeoTIFF (the COG, ``paths.cog``) or a
    whole-slide TIFF (pyramidal TIFF); ``<stem>.nii.gz`` / ``<stem>.nii`` for NIfTI (the input's
    compression kept); ``<stem>.dcm`` for a single DICOM file; the folder ``<stem>`` (S3:
    ``<stem>/``) holding ``IM00001.dcm``... for a DICOM series folder.

    Raises:
        StorageError: S3 unreachable or access denied (the first bytes are read).
    """
    from sr_core.formats import format_for_head

    base = paths.cog[:-len(".tif")]
    if uri.endswith("/") or (not storage.is_s3(uri) and os.path.isdir(uri)):
        return base + "/" if storage.is_s3(uri) else base
    try:
        head = _head_bytes(uri, 1024)
    except (OSError, SRError):  # missing, empty (S3: no range to read): the pipeline says why
        head = b""
    fmt = format_for_head(head)
    return fmt.output_name(base, head) if fmt is not None else paths.cog


def output_paths(output_prefix: str, scene_id: str, model: ModelInfo) -> OutputPaths:
    """The output files of one scene (see the module docstring).

    Raises:
        InputError: a scene id that could leave the output prefix (``..`` or empty segments,
            absolute, control characters:
            :func:`sr_core.storage.security.check_relative_id`), or whose output keys exceed
            1,024 bytes (S3) or file names 255 bytes (local).
    """
    check_relative_id(scene_id, output_prefix)
    folder = f"{output_prefix.rstrip('/')}/{scene_id}/{model_label(model)}"
    stem = scene_id.rsplit("/", 1)[-1]
    base = f"{folder}/{stem}"
    longest = f"{base}.manifest.json"
    if storage.is_s3(longest):
        storage.parse_s3(longest)  # S3's 1,024-byte key limit
    elif any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in scene_id.split("/")):
        raise InputError(f"{output_prefix}: scene id {scene_id[:60]}... has a part over 255 bytes, "
                         "too long for a local file name")
    return OutputPaths(folder=folder, cog=f"{base}.tif", report_json=f"{base}.report.json",
                       report_md=f"{base}.report.md", stac=f"{base}.stac.json",
                       manifest=f"{base}.manifest.json")


def output_parameters(cfg: UpscaleConfig, model: ModelInfo) -> dict:
    """The parameters that change a scene's output (what a manifest must match)."""
    return manifest.output_parameters(model.descriptor.name, model.descriptor.scale,
                                      cfg.wald_window_px, self_ensemble=cfg.self_ensemble,
                                      consistency=cfg.consistency)


def weights_sha256(model: ModelInfo) -> str:
    """SHA-256 of the model's weights (from its card, checked at load); models without weights
    (bicubic) give ``"none:<name>"``."""
    return manifest.weights_sha256(model.card, model.descriptor.name)
