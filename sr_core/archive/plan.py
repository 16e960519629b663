"""Archive plan: whether each listed scene needs processing (:func:`plan_scene`,
:func:`plan_archive`), decided by its publication manifest (:func:`expected_manifest`). Reads
manifests; writes nothing.

May import :mod:`sr_core.errors`, :mod:`sr_core.storage`, :mod:`sr_core.publication`,
:mod:`sr_core.pipeline` (types only), :mod:`sr_core.archive.sources` and
:mod:`sr_core.archive.layout`.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sr_core import storage
from sr_core.archive.layout import (
    OutputPaths,
    output_parameters,
    output_paths,
    weights_sha256,
)
from sr_core.archive.sources import SceneRef
from sr_core.errors import InputError, SRError
from sr_core.publication import manifest
from sr_core.storage.security import check_source

if TYPE_CHECKING:
    from sr_core.pipeline import ModelInfo, UpscaleConfig

MANIFEST_VERSION = manifest.MANIFEST_VERSION


@dataclass
class ScenePlan:
    """A scene with its outputs and whether it needs processing.

    Attributes:
        paths: its outputs; ``None`` when ``status`` is ``"failed"``.
        status: ``"todo"``, ``"skipped"`` (its manifest matches and its output exists) or
            ``"failed"`` (its location or id is refused: nothing is read or written for it).
        reason: why (``"no manifest"``, ``"input changed"``, ``"up to date"``, the refusal's
            one-line message, ...).
        outputs: a skipped scene's outputs, as its manifest records them.
    """

    scene: SceneRef
    paths: OutputPaths | None
    status: str
    reason: str
    outputs: dict = field(default_factory=dict)

    def planned_paths(self, step: str) -> OutputPaths:
        """:attr:`paths`, for ``step``, which only a scene that was not refused reaches.

        Raises:
            SRError: the scene was refused at planning (no paths).
        """
        if self.paths is None:
            raise SRError(f"internal: {step} of a scene refused at planning "
                          f"({self.scene.scene_id})")
        return self.paths


def expected_manifest(scene: SceneRef, cfg: UpscaleConfig, model: ModelInfo) -> dict:
    """The part of a manifest that must match for a scene to be skipped."""
    return {"manifest_version": MANIFEST_VERSION, "input": scene.fingerprint,
            "weights_sha256": weights_sha256(model), "parameters": output_parameters(cfg, model)}


def plan_scene(scene: SceneRef, output_prefix: str, cfg: UpscaleConfig,
               model: ModelInfo) -> ScenePlan:
    """Whether one scene needs processing: skipped when its manifest matches and every output it
    lists is present (:func:`sr_core.publication.manifest.missing_output`).

    A scene whose location (:func:`sr_core.storage.security.check_source`) or id (a key with
    ``../``, a newline, ...) is refused gets status ``"failed"`` with the reason, and nothing is
    read or written for it; the other scenes go on.

    Raises:
        StorageError: the output location cannot be read.
    """
    try:
        check_source(scene.uri, "archive scene")
        if storage.is_s3(scene.uri):
            storage.parse_s3(scene.uri)
        paths = output_paths(output_prefix, scene.scene_id, model)
    except InputError as exc:
        return ScenePlan(scene, None, "failed", str(exc))
    found = manifest.read(paths.manifest)
    if found is None:
        return ScenePlan(scene, paths, "todo", "no manifest")
    if not found.doc:
        return ScenePlan(scene, paths, "todo", "manifest unreadable")
    why = manifest.mismatch(found.doc, expected_manifest(scene, cfg, model))
    if why:
        return ScenePlan(scene, paths, "todo", why)
    missing = manifest.missing_output(found.doc)
    listed = found.doc.get("outputs") or {}
    output = (listed.get("output") or {}).get("uri") or paths.cog
    if missing:
        return ScenePlan(scene, paths, "todo",
                         ("output COG missing" if output == paths.cog else "output missing")
                         if missing.startswith("output:") else f"output missing ({missing})")
    return ScenePlan(scene, paths, "skipped", "up to date",
                     {"output": output, "cog": output if output == paths.cog else None,
                      "stac": (listed.get("stac") or {}).get("uri")})


def plan_archive(scenes: Iterable[SceneRef], output_prefix: str, cfg: UpscaleConfig,
                 model: ModelInfo, threads: int = 16) -> list[ScenePlan]:
    """:func:`plan_scene` for every scene, ``threads`` manifests read at a time."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda s: plan_scene(s, output_prefix, cfg, model), scenes))
