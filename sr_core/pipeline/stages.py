"""The first stages of a scene, up to its planned tiles: :func:`preflight` (cheap checks),
:func:`start` (options and model), :func:`ingest` (fetch and validate the source),
:func:`claim` (work key, lock, DST's manifest) and :func:`tile` (stage into Zarr, normalise,
plan the tile grid, create the output Zarr).

May import: :mod:`sr_core.storage`, :mod:`sr_core.formats`, :mod:`sr_core.geometry`,
:mod:`sr_core.imaging`, :mod:`sr_core.models`, :mod:`sr_core.compute` (halo, staging),
:mod:`sr_core.publication` (journal, manifest) and the pipeline's config, model and run modules.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from sr_core import storage
from sr_core.compute.halo import HaloChoice, choose_halo
from sr_core.compute.staging import StagedScene, create_output, stage_scene
from sr_core.errors import InputError
from sr_core.formats import SceneInfo, check_output, format_named, open_input, output_is_folder
from sr_core.geometry.tiling import plan_tiles
from sr_core.imaging.normalize import Normalization, normalization_for
from sr_core.pipeline.config import UpscaleConfig, check_options, check_source_option
from sr_core.pipeline.model import resolve_model
from sr_core.pipeline.run import Claim, Run, Tiling, make_scratch, timed
from sr_core.publication import journal, manifest


def preflight(cfg: UpscaleConfig) -> SceneInfo | None:
    """Cheap checks before anything is started: options, the destination, and a local source.

    Returns:
        The validated local source (hand it to :func:`ingest` so it is not validated twice);
        ``None`` for an ``s3://`` source, which :func:`ingest` validates after fetching it.

    Raises:
        InputError: bad options, destination or local source file, or a destination that cannot
            hold the source's format.
    """
    check_options(cfg)
    check_source_option(cfg)
    storage.check_destination(cfg.dst, folder=None)
    if storage.is_s3(cfg.src):
        return None
    scene = open_input(cfg.src, name=cfg.src)
    _check_output(scene, cfg.dst)
    return scene


def _check_output(scene: SceneInfo, dst: str) -> None:
    check_output(scene, dst)
    storage.check_destination(dst, folder=output_is_folder(scene, dst))


def start(cfg: UpscaleConfig, scratch: str | None = None) -> Run:
    """Check options, source location and model; make the run's scratch directory unless given.

    Raises:
        InputError, ModelError: bad options, a refused source location, or a bad model.
    """
    t0 = time.perf_counter()
    check_options(cfg)
    check_source_option(cfg)
    model = resolve_model(cfg.model, cfg.scale)
    m = model.descriptor.size_multiple
    if cfg.tile_size_px % m:
        raise InputError(f"--tile-size {cfg.tile_size_px}: model {model.descriptor.name} needs "
                         f"tiles of a multiple of {m} px")
    cfg = replace(cfg, model=model.ref, scale=model.descriptor.scale)
    run = Run(cfg=cfg, scratch=scratch or make_scratch(cfg), model=model, started=t0)
    run.timings["start"] = time.perf_counter() - t0
    return run


def ingest(run: Run, scene: SceneInfo | None = None) -> Run:
    """Check the destination, fetch the source (S3 -> scratch) and validate it.

    Args:
        run: a run after :func:`start`.
        scene: the local source as :func:`preflight` validated it; ``None`` validates here
            (decoding a DICOM series or checking a TIFF's extent once is enough).

    Raises:
        InputError: bad source file or destination; StorageError: S3 unreachable.
    """
    with timed(run, "ingest"):
        storage.check_destination(run.cfg.dst, folder=None)
        if scene is None:
            local = storage.fetch(run.cfg.src, run.scratch)
            scene = open_input(local, name=run.cfg.src)
            _check_output(scene, run.cfg.dst)
        run.scene = scene
        claim(run)
    return run


def expected_manifest(run: Run) -> dict:
    """The fields (:data:`sr_core.publication.manifest.MATCH_FIELDS`) a publication of this run
    has."""
    return _expected(run, run.fingerprint)


def _expected(run: Run, fingerprint: dict | None) -> dict:
    """:func:`expected_manifest` for the input ``fingerprint``."""
    d = run.model.descriptor
    return {"manifest_version": manifest.MANIFEST_VERSION, "input": fingerprint,
            "weights_sha256": manifest.weights_sha256(run.model.card, d.name),
            "parameters": manifest.output_parameters(d.name, run.scale,
                                                     run.cfg.wald_window_px,
                                                     self_ensemble=run.cfg.self_ensemble,
                                                     consistency=run.cfg.consistency)}


def claim(run: Run) -> Run:
    """Fingerprint the input, take the lock of the run's work key and read DST's manifest:
    ``run.claim`` (:class:`~sr_core.pipeline.run.Claim`) and ``run.work``.

    The work key (:func:`sr_core.publication.journal.work_key`) covers the input fingerprint, the
    model hash and every parameter that changes a tile (model, scale, tile size, halo, output
    format, software version); the per-scene normalisation follows from the input and is
    recorded with the staged scene. When DST already has a manifest for the same input, model
    and parameters whose outputs are all present, ``run.up_to_date`` is set to it and nothing
    needs doing.

    Raises:
        BusyError: another live run holds the same work key.
        InputError, StorageError: the input cannot be fingerprinted or DST's manifest read.
    """
    cfg, scene = run.cfg, run.ingested("claim")
    fingerprint = cfg.input_fingerprint or manifest.fingerprint(
        cfg.src if storage.is_s3(cfg.src) else scene.path)
    expected = _expected(run, fingerprint)
    # the halo follows from the model's measured reach and the scene's normalisation (both
    # fixed by the model hash and the input): the rule's version and the measurement stand for it
    reach = run.model.reach
    work_key = journal.work_key({
        "input": fingerprint, **expected, "tile_size_px": cfg.tile_size_px,
        "halo_rule": {"analytic_px": run.model.descriptor.receptive_field_px,
                      "reach": reach.curve if reach is not None else None},
        "self_ensemble": cfg.self_ensemble, "consistency": cfg.consistency,
        "format": scene.format, "dst": cfg.dst,
        "precision": cfg.precision,
        "sr_core": __import__("sr_core").__version__})
    run.work = journal.acquire(journal.work_root(cfg.scratch_dir), work_key, cfg.dst)
    journal.crash_point("claimed")
    previous = manifest.read(manifest.manifest_uri(cfg.dst))
    up_to_date = None
    if previous is not None:
        found = previous.doc
        if manifest.mismatch(found, expected) is None \
                and manifest.missing_output(found) is None:
            up_to_date = found
    run.claim = Claim(fingerprint=fingerprint, work_key=work_key, previous=previous,
                      up_to_date=up_to_date)
    return run


def tile(run: Run) -> Run:
    """Stage the scene into Zarr tiles, fix the per-scene normalisation, plan the tile grid and
    create the output Zarr: ``run.tiling`` (:class:`~sr_core.pipeline.run.Tiling`).

    Raises:
        InputError: the scene has no valid pixel (all nodata, masked or NaN).
    """
    scene = run.ingested("tile")
    work = run.work or run.scratch
    with timed(run, "tile"):
        staged = _stage(run, work)
        normalization = _normalization(scene, staged)
        halo = scene_halo(run, normalization)
        if halo.whole_scene:  # within the whole-scene memory budget (sr_core.compute.halo)
            run.cfg = replace(run.cfg, tile_size_px=max(scene.height, scene.width))
        cfg, d = run.cfg, run.model.descriptor
        grid = plan_tiles(scene.height, scene.width, tile_size_px=cfg.tile_size_px,
                          halo_px=halo.halo_px + run.consistency_halo_px,
                          min_read_px=d.min_size_px, multiple=d.size_multiple)
        output_store = os.path.join(work, "output.zarr")
        run.tiling = Tiling(staged=staged, normalization=normalization, halo=halo, grid=grid,
                            output_store=output_store)
        if not (run.work and journal.load_state(work, "output")):
            create_output(output_store, scene, scale=run.scale, tile_size_px=cfg.tile_size_px,
                          self_ensemble=cfg.self_ensemble)
            if run.work:
                journal.sync_tree(output_store)
                journal.save_state(work, "output", {"normalisation": normalization.to_dict(),
                                                    "grid": [grid.rows, grid.cols]})
    return run


def _stage(run: Run, work: str) -> StagedScene:
    """The scene staged into ``WORK/input.zarr``, or as a previous run of the same work key
    staged it completely (``run.resume["staging_reused"]``).

    Raises:
        InputError: the scene has no valid pixel (all nodata, masked or NaN).
    """
    scene, cfg = run.ingested("tile"), run.cfg
    store = os.path.join(work, "input.zarr")
    done = journal.load_state(work, "staged") if run.work else None
    if done is not None:  # a rerun: the scene was staged completely before
        staged = StagedScene(store, cfg.tile_size_px, tuple(done["band_min"]),
                             tuple(done["band_max"]), tuple(done["valid_px"]))
    else:
        staged = stage_scene(scene, store, tile_size_px=cfg.tile_size_px)
        if run.work:
            journal.sync_tree(store)  # durable before the record says it is complete
            journal.save_state(work, "staged", {
                "band_min": staged.band_min, "band_max": staged.band_max,
                "valid_px": staged.valid_px})
    run.resume["staging_reused"] = done is not None
    journal.crash_point("staged")
    if not any(staged.valid_px):
        # policy (sr_core.formats.geotiff): nothing to super-resolve; refused before any model work
        raise InputError(f"{scene.name}: no valid pixels (every pixel is nodata, masked or "
                         "NaN); nothing to upscale")
    return staged


def _normalization(scene: SceneInfo, staged: StagedScene) -> Normalization:
    """The per-scene normalisation from the staged scene's band ranges."""
    lo, hi = list(staged.band_min), list(staged.band_max)
    if format_named(scene.format).planes_share_unit:
        # the planes of a medical image share one unit: one normalisation for the volume
        # (per-plane min/max would make neighbouring slices disagree)
        lo = [float(np.nanmin(lo))] * len(lo) if not np.isnan(lo).all() else lo
        hi = [float(np.nanmax(hi))] * len(hi) if not np.isnan(hi).all() else hi
    return normalization_for(scene.dtype, lo, hi)


def scene_halo(run: Run, normalization: Normalization) -> HaloChoice:
    """The halo of this scene's tiles (:func:`sr_core.compute.halo.choose_halo`): the tolerance
    follows from the scene's dtype and ``normalization``'s span
    (:func:`sr_core.models.effective.tolerance_for`).
    """
    from sr_core.models.effective import tolerance_for

    scene = run.ingested("scene_halo")
    span = max(normalization.span)
    return choose_halo(run.model.descriptor, run.model.reach,
                       tolerance=tolerance_for(scene.dtype, span), span=span,
                       scene_px=scene.height * scene.width,
                       tile_size_px=run.cfg.tile_size_px)
