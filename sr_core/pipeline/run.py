"""The state of one scene's run as the stages hand it on (:class:`Run`: paths and metadata,
never pixels), with what every stage shares: its timer (:func:`timed`), its scratch directory
(:func:`make_scratch`), small staged outputs (:func:`stage_text`) and the data range its quality
figures are judged against (:func:`data_range`).

May import: :mod:`sr_core.storage`, :mod:`sr_core.publication.manifest`, :mod:`sr_core.compute`
(halo, staging, tile results), :mod:`sr_core.quality` (metrics, consistency), the scene and
tiling types, and the pipeline's :mod:`~sr_core.pipeline.config` and
:mod:`~sr_core.pipeline.model`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sr_core import storage
from sr_core.compute.halo import HaloChoice
from sr_core.compute.infer import TileResult
from sr_core.compute.staging import StagedScene
from sr_core.errors import SRError
from sr_core.formats import SceneInfo, format_named
from sr_core.geometry.tiling import TileGrid
from sr_core.imaging.normalize import Normalization
from sr_core.pipeline.config import UpscaleConfig
from sr_core.pipeline.model import ModelInfo
from sr_core.publication.manifest import Existing
from sr_core.quality.metrics import data_range_for

T = TypeVar("T")


def required(value: T | None, stage: str, before: str) -> T:
    """``value``, which stage ``before`` sets and ``stage`` reads.

    Raises:
        SRError: ``value`` is ``None``: ``stage`` ran before ``before`` (a bug in the caller's
            order of stages, not a user's mistake).
    """
    if value is None:
        raise SRError(f"internal: {stage} before {before}")
    return value


@dataclass(frozen=True)
class Claim:
    """What the claim step of ``ingest`` found (:func:`sr_core.pipeline.stages.claim`).

    Attributes:
        fingerprint: the input's fingerprint (:func:`sr_core.publication.manifest.fingerprint`).
        work_key: the run's work key (:func:`sr_core.publication.journal.work_key`).
        previous: DST's manifest as read when the run started (``None``: none); publishing
            requires it unchanged.
        up_to_date: that manifest's document when it lists this very result (same input, model
            and parameters, every output present): nothing needs doing; else ``None``.
    """

    fingerprint: dict
    work_key: str
    previous: Existing | None
    up_to_date: dict | None


@dataclass(frozen=True)
class Tiling:
    """What the ``tile`` stage fixed for a scene (:func:`sr_core.pipeline.stages.tile`), read by
    every later stage.

    Attributes:
        staged: the scene staged into the input Zarr, with per-band min, max and valid pixels.
        normalization: the per-scene normalisation to ``[0, 1]`` (one for a medical volume).
        halo: the halo chosen for the scene's tiles (:func:`sr_core.compute.halo.choose_halo`).
        grid: the tile grid (core, halo and read windows in LR px).
        output_store: path of the output Zarr the tiles are written to.
    """

    staged: StagedScene
    normalization: Normalization
    halo: HaloChoice
    grid: TileGrid
    output_store: str


@dataclass(frozen=True)
class Inference:
    """What the ``infer`` stage produced for a scene (:func:`sr_core.pipeline.inference.infer`).

    Attributes:
        tiles: every tile's result (run now or reused from an interrupted run), in completion
            order.
        wald: the Wald-protocol check of the scene's centred window
            (:func:`sr_core.compute.wald_task.wald_window_task`); ``None`` when the window is too
            small.
        dask: the report's ``dask`` section (workers, threads, tasks, devices, precision,
            compute seconds).
    """

    tiles: tuple[TileResult, ...]
    wald: dict | None
    dask: dict


@dataclass
class Run:
    """State handed from stage to stage (small: paths and metadata, never pixels). What the
    ``tile`` stage fixed is one frozen :class:`Tiling` (:attr:`tiling`; read through
    :attr:`staged`, :attr:`normalization`, :attr:`halo`, :attr:`grid`, :attr:`output_store`);
    what ``infer`` produced one frozen :class:`Inference` (:attr:`inference`; read through
    :attr:`tiles`, :attr:`wald`, :attr:`dask`); what the claim found one frozen :class:`Claim`
    (:attr:`claim`; read through :attr:`fingerprint`, :attr:`work_key`, :attr:`previous`,
    :attr:`up_to_date`).

    A stage that needs what an earlier one set reads it through :meth:`ingested`,
    :meth:`claimed`, :meth:`tiled`, :meth:`inferred` and :attr:`scale` (typed, never ``None``;
    :class:`~sr_core.errors.SRError` ``"internal: <stage> before <stage>"`` otherwise)."""

    cfg: UpscaleConfig
    scratch: str
    model: ModelInfo
    scene: SceneInfo | None = None
    tiling: Tiling | None = None
    inference: Inference | None = None
    written: dict | None = None
    temp_output: str | None = None
    local_cog: str | None = None
    published: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    claim: Claim | None = None
    work: str | None = None  # the held work directory (lock); None once released
    resume: dict = field(default_factory=dict)
    measures: dict | None = None
    staged_outputs: list[tuple[str, str, str]] = field(default_factory=list)
    # the report's self_ensemble section (sr_core.quality.uncertainty)
    uncertainty: dict | None = None
    manifest: dict | None = None
    started: float = field(default_factory=time.perf_counter)

    def ingested(self, stage: str) -> SceneInfo:
        """:attr:`scene`, for ``stage`` (after ``ingest``).

        Raises:
            SRError: ``ingest`` has not run.
        """
        return required(self.scene, stage, "ingest")

    def claimed(self, stage: str) -> Claim:
        """:attr:`claim`, for ``stage`` (after the claim step of ``ingest``).

        Raises:
            SRError: the claim has not been made.
        """
        return required(self.claim, stage, "claim")

    def tiled(self, stage: str) -> Tiling:
        """:attr:`tiling`, for ``stage`` (after ``tile``).

        Raises:
            SRError: ``tile`` has not run.
        """
        return required(self.tiling, stage, "tile")

    def inferred(self, stage: str) -> Inference:
        """:attr:`inference`, for ``stage`` (after ``infer``).

        Raises:
            SRError: ``infer`` has not run.
        """
        return required(self.inference, stage, "infer")

    @property
    def scale(self) -> int:
        """The upscaling factor: ``cfg.scale``, which :func:`~sr_core.pipeline.stages.start`
        fixes to the model's.

        Raises:
            SRError: the run was not made by ``start`` (no scale yet).
        """
        return required(self.cfg.scale, "scale", "start")

    @property
    def fingerprint(self) -> dict | None:
        """:attr:`Claim.fingerprint`; ``None`` before the claim."""
        return self.claim.fingerprint if self.claim else None

    @property
    def work_key(self) -> str | None:
        """:attr:`Claim.work_key`; ``None`` before the claim."""
        return self.claim.work_key if self.claim else None

    @property
    def previous(self) -> Existing | None:
        """:attr:`Claim.previous`; ``None`` before the claim."""
        return self.claim.previous if self.claim else None

    @property
    def up_to_date(self) -> dict | None:
        """:attr:`Claim.up_to_date`; ``None`` before the claim."""
        return self.claim.up_to_date if self.claim else None

    @property
    def staged(self) -> StagedScene | None:
        """:attr:`Tiling.staged`; ``None`` before the ``tile`` stage."""
        return self.tiling.staged if self.tiling else None

    @property
    def normalization(self) -> Normalization | None:
        """:attr:`Tiling.normalization`; ``None`` before the ``tile`` stage."""
        return self.tiling.normalization if self.tiling else None

    @property
    def halo(self) -> HaloChoice | None:
        """:attr:`Tiling.halo`; ``None`` before the ``tile`` stage."""
        return self.tiling.halo if self.tiling else None

    @property
    def grid(self) -> TileGrid | None:
        """:attr:`Tiling.grid`; ``None`` before the ``tile`` stage."""
        return self.tiling.grid if self.tiling else None

    @property
    def output_store(self) -> str | None:
        """:attr:`Tiling.output_store`; ``None`` before the ``tile`` stage."""
        return self.tiling.output_store if self.tiling else None

    @property
    def tiles(self) -> tuple[TileResult, ...]:
        """:attr:`Inference.tiles`; empty before the ``infer`` stage."""
        return self.inference.tiles if self.inference else ()

    @property
    def wald(self) -> dict | None:
        """:attr:`Inference.wald`; ``None`` before the ``infer`` stage."""
        return self.inference.wald if self.inference else None

    @property
    def dask(self) -> dict:
        """:attr:`Inference.dask`; empty before the ``infer`` stage."""
        return self.inference.dask if self.inference else {}

    @property
    def halo_px(self) -> int:
        """The model's halo for this scene (:attr:`halo`, chosen by the ``tile`` stage; before
        that the analytic radius), a multiple of the model's size multiple, so every read window
        starts on the same ``size_multiple`` grid as the whole image (models that pixel-unshuffle
        or partition windows see the same blocks); plus :attr:`consistency_halo_px` with
        ``--consistency``."""
        d = self.model.descriptor
        if self.halo is not None:
            return self.halo.halo_px + self.consistency_halo_px
        return -(-d.receptive_field_px // d.size_multiple) * d.size_multiple \
            + self.consistency_halo_px

    @property
    def consistency_halo_px(self) -> int:
        """LR px of halo that ``--consistency``'s back-projection adds beyond the model's
        (:func:`sr_core.quality.consistency.consistency_halo_px`), rounded up to the model's size
        multiple so the total stays one; 0 without ``--consistency``."""
        if self.cfg.consistency is None:
            return 0
        from sr_core.quality.consistency import consistency_halo_px

        m = self.model.descriptor.size_multiple
        extra = consistency_halo_px(self.cfg.consistency, self.model.descriptor.scale)
        return -(-extra // m) * m


def make_scratch(cfg: UpscaleConfig) -> str:
    """A new scratch directory for one run (Zarr stores, temporary files)."""
    parent = cfg.scratch_dir or os.environ.get("SR_SCRATCH") or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="sr-pipeline-", dir=parent)


@contextmanager
def timed(run: Run, stage: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``run.timings[stage]`` (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        run.timings[stage] = run.timings.get(stage, 0.0) + time.perf_counter() - t0


def stage_text(run: Run, name: str, uri: str, text: str) -> None:
    """Write a small output file to its temporary path; :func:`publish` moves it into place."""
    tmp = storage.temp_path_for(uri, run.scratch)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    run.staged_outputs.append((name, tmp, uri))


def data_range(run: Run) -> float:
    """PSNR/SSIM data range: :func:`~sr_core.quality.metrics.data_range_for` for GeoTIFFs and 8-bit
    images; for other medical images the volume's valid value range (a 12-bit MR in uint16 or a
    CT in int16 would otherwise be judged against 65535)."""
    scene, staged = run.ingested("data_range"), run.tiled("data_range").staged
    if not format_named(scene.format).planes_share_unit or scene.dtype == "uint8":
        return data_range_for(scene.dtype, staged.band_min, staged.band_max)
    return data_range_for("float64", staged.band_min, staged.band_max)
