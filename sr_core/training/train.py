"""Training a model on the user's own scenes by the Wald protocol.

Pairs are made from the scenes themselves (Wald, Ranchin & Mangolini, PE&RS 1997): an HR patch is
taken from a scene, degraded by the scale to make the LR input, and the model learns LR -> HR.

* The degradation (:mod:`sr_core.imaging.degradations`) is by default drawn at random for
  every pair (``"random"``: antialiased bicubic, area integration, Gaussian optics + area with mild
  anisotropy, sub-pixel shifts, mild noise; after BSRGAN, ICCV 2021 and Real-ESRGAN, ICCVW 2021),
  so the model does not learn to undo one kernel that real sensors do not have; a named fixed one
  (``"bicubic"``, ``"area"``, ``"gaussian-0.3"``, ``"gaussian-0.6"``) can be chosen instead.
* Scenes are staged into Zarr (:func:`sr_core.compute.staging.stage_scene`) and normalised per
  scene as in inference (:func:`sr_core.imaging.normalize.normalization_for`), so training sees
  what inference sees. A folder given as a scene means every GeoTIFF in it.
* A fixed pool of HR patches (one band each) is sampled once from the staged scenes, chosen at
  random positions; patches with any nodata pixel, or with no texture (std below
  :data:`MIN_PATCH_STD` of the normalised range, e.g. open sea in a DEM), are skipped. For an
  intensity-equivariant network each patch is then standardised (:func:`standardise`), so
  smooth and textured patches weigh alike. Memory is bounded by the pool size, not
  by the scenes. Each step draws a batch from the pool with a random flip / 90-degree rotation.
* L1 loss (as EDSR) or MSE; optionally a VGG-19 perceptual term (user-supplied weights) and an
  SRGAN adversarial phase after pixel pre-training (:mod:`sr_core.training.losses`); Adam
  (Kingma & Ba, ICLR 2015) with a cosine learning-rate schedule (Loshchilov & Hutter, ICLR
  2017); optional initialisation from earlier weights (tensors of the same name and shape, as
  EDSR initialises its x4 model from the x2 one); a checkpoint after every epoch and ``resume`` (a
  resumed run equals an uninterrupted one bit for bit on the same device); validation PSNR/SSIM of
  the model and of bicubic on the held-out scenes after every epoch, and at the end under every
  degradation of :data:`sr_core.imaging.degradations.EVALUATION`.
* The result is written in our format (safetensors + model card,
  :mod:`sr_core.training.train_card`) by :func:`sr_core.models.weights.save_model`.

The options are a :class:`sr_core.training.config.TrainConfig`. :func:`train_model` runs the
stages in order: check the options, build the network, stage the data (:func:`_stage_data`),
start or resume the optimisation (:func:`_start_loop`), the epochs (:func:`_epoch`, each
validated and checkpointed by :func:`_train_epochs`), then the final validation and the card
(:func:`_write_model`). May import :mod:`sr_core.models`, :mod:`sr_core.imaging`,
:mod:`sr_core.quality` and the rest of :mod:`sr_core.training`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_core.errors import InputError
from sr_core.geometry.tiling import PixelWindow
from sr_core.imaging.degradations import EVALUATION, TrainingDegradation, degrade
from sr_core.models.architectures import build_module, describe
from sr_core.models.base import SRModel
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.registry import resolve_device
from sr_core.models.srresnet import SRGANDiscriminator
from sr_core.models.weights import save_model
from sr_core.quality.wald import WaldSetup, wald_check
from sr_core.training.config import LOSSES, TrainConfig, replace_scenes
from sr_core.training.losses import PerceptualLoss, adversarial_loss
from sr_core.training.train_data import (
    _augment,
    _stage_all,
    _Staged,
    sample_patches,
    standardise,
)


def validate(model: SRModel, scenes: list[_Staged], window_px: int,
             degradations: tuple[str, ...] = ("bicubic",)) -> dict:
    """Wald-protocol PSNR/SSIM of the model and of bicubic on each held-out scene (centred
    window of at most ``window_px``) under each degradation, in the scene's units with its data
    range (:func:`sr_core.quality.metrics.data_range_for`).

    Returns:
        ``{scene name: {degradation: wald_check result}}``.
    """
    import zarr

    out: dict = {}
    s = model.descriptor.scale
    for sc in scenes:
        _, h, w = sc.shape
        wh, ww = min(window_px, h) // s * s, min(window_px, w) // s * s
        win = PixelWindow((h - wh) // 2, (w - ww) // 2, wh, ww)
        rows, cols = win.slices()
        hr = np.asarray(zarr.open_array(sc.store, path="image", mode="r")[:, rows, cols])
        valid = np.asarray(zarr.open_array(sc.store, path="valid", mode="r")[:, rows, cols])
        out[sc.name] = {d: wald_check(model, hr, valid, sc.normalization, sc.data_range,
                                      WaldSetup(d))
                        for d in degradations}
    return out


def _check(cfg: TrainConfig) -> TrainingDegradation:
    """Every option checked before any work; returns the training degradation."""
    if cfg.epochs < 1 or cfg.steps_per_epoch < 1 or cfg.batch_size < 1 or cfg.patch_px < 4:
        raise InputError("epochs, steps per epoch, batch size must be >= 1 and patch >= 4 px")
    if not cfg.scenes:
        raise InputError("no training scenes given")
    if not cfg.val_scenes:
        raise InputError("no validation scenes given: keep at least one scene out")
    overlap = {Path(p).resolve() for p in cfg.scenes} & {Path(p).resolve() for p in cfg.val_scenes}
    if overlap:
        raise InputError(f"{sorted(map(str, overlap))[0]}: in both training and validation scenes")
    if cfg.loss not in LOSSES:
        raise InputError(f"loss {cfg.loss!r}: expected one of {', '.join(LOSSES)}")
    if cfg.loss == "perceptual" and not cfg.vgg_weights:
        raise InputError("the perceptual loss needs VGG-19 weights: pass their file "
                         "(torchvision's vgg19 state dict); none are downloaded")
    if cfg.gan_epochs < 0:
        raise InputError(f"gan epochs {cfg.gan_epochs}: must be >= 0")
    if cfg.init_weights and not Path(cfg.init_weights).is_file():
        raise InputError(f"{cfg.init_weights}: no such weights file to initialise from")
    from sr_core.imaging.degradations import parse

    for d in cfg.val_degradations:
        parse(d)
    return TrainingDegradation(cfg.degradation)


def initialise(module: torch.nn.Module, path: str) -> dict:
    """Copy the tensors of ``path`` (safetensors) whose name and shape match into ``module``.

    Returns:
        ``{"from": file name, "tensors": copied, "of": module tensors}``.

    Raises:
        ModelError: the file is not a readable safetensors file.
    """
    from sr_core.models.weights import load_weights

    state, _ = load_weights(path, require_card=False)
    own = module.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(take, strict=False)
    return {"from": Path(path).name, "tensors": len(take), "of": len(own)}


@dataclass
class _Run:
    """The pieces of one training run that the epoch loop and the card share."""

    cfg: TrainConfig
    device: torch.device
    module: torch.nn.Module
    descriptor: ModelDescriptor
    degradation: TrainingDegradation
    perceptual: torch.nn.Module | None = None
    disc: torch.nn.Module | None = None
    disc_opt: torch.optim.Optimizer | None = None
    init: dict | None = None
    #: intensity-equivariant network: train on standardised patches (:func:`standardise`)
    standardise: bool = False


def _build(cfg: TrainConfig, training_degradation: TrainingDegradation) -> _Run:
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    module = build_module(cfg.architecture, **cfg.arguments).to(device)
    descriptor = describe(cfg.architecture, cfg.name, **cfg.arguments)
    run = _Run(cfg, device, module, descriptor, training_degradation,
               standardise=bool(getattr(module, "equivariant", False)))
    if cfg.init_weights:
        run.init = initialise(module, cfg.init_weights)
    if cfg.vgg_weights:
        run.perceptual = PerceptualLoss(cfg.vgg_weights, layer=cfg.vgg_layer).to(device)
    hr_px = cfg.patch_px * descriptor.scale
    if cfg.gan_epochs:
        if hr_px % 16:
            raise InputError(f"GAN training needs HR patches of a multiple of 16 px; "
                             f"patch {cfg.patch_px} x scale {descriptor.scale} = {hr_px}")
        run.disc = SRGANDiscriminator(in_channels=descriptor.in_channels, input_px=hr_px).to(device)
        run.disc_opt = torch.optim.Adam(run.disc.parameters(), lr=cfg.learning_rate,
                                        betas=(0.9, 0.999))
    return run


def _content_loss(run: _Run, sr: torch.Tensor, hr: torch.Tensor, adversarial: bool) -> torch.Tensor:
    cfg = run.cfg
    if cfg.loss == "mse":
        loss = torch.nn.functional.mse_loss(sr, hr)
    else:
        loss = torch.nn.functional.l1_loss(sr, hr)
    if run.perceptual is not None and (cfg.loss == "perceptual" or adversarial):
        loss = loss + cfg.perceptual_weight * run.perceptual(sr, hr)
    return loss


def _epoch(run: _Run, loop: _Loop, epoch: int, pool: torch.Tensor) -> dict:
    """One epoch of steps; every epoch draws from its own seeded streams, so a resumed run
    equals an uninterrupted one.

    Args:
        pool: ``(N, 1, P, P)`` float32 HR patches in [0, 1] (normalised per scene), P =
            ``patch_px * scale``.

    Returns:
        The epoch's history entry: ``{"epoch", "phase", "train_loss"}`` (and
        ``"discriminator_loss"`` in the adversarial phase).
    """
    cfg, module, disc, s = run.cfg, run.module, run.disc, run.descriptor.scale
    opt, sched, bar = loop.opt, loop.sched, loop.bar
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed + epoch)
    noise_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    adversarial = epoch >= cfg.epochs
    amp = run.device.type == "cuda"
    module.train()
    if disc is not None:
        disc.train()
    losses, d_losses = [], []
    for _ in range(cfg.steps_per_epoch):
        idx = torch.from_numpy(rng.choice(len(pool), cfg.batch_size, replace=False))
        hr = _augment(pool[idx], rng).contiguous().to(run.device)
        if run.standardise:
            hr = standardise(hr)
        lr = degrade(hr, s, run.degradation.batch(cfg.batch_size, rng), generator=noise_gen)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=amp):
            sr = module(lr)
        sr = sr.float()
        loss = _content_loss(run, sr, hr, adversarial)
        if adversarial:
            # adversarial epochs exist only with gan_epochs, for which _build made both
            assert disc is not None and run.disc_opt is not None
            loss = loss + cfg.adversarial_weight * adversarial_loss(disc(sr), True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if adversarial:
            assert disc is not None and run.disc_opt is not None
            d_loss = adversarial_loss(disc(hr), True) + adversarial_loss(disc(sr.detach()), False)
            run.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            run.disc_opt.step()
            d_losses.append(float(d_loss.detach()))
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix_str(f"epoch {epoch + 1} loss {np.mean(losses[-20:]):.4f}")
    entry = {"epoch": epoch + 1, "phase": "adversarial" if adversarial else "pixel",
             "train_loss": float(np.mean(losses))}
    if d_losses:
        entry["discriminator_loss"] = float(np.mean(d_losses))
    return entry


def _save_checkpoint(run: _Run, loop: _Loop, epoch: int) -> None:
    """Write the checkpoint (network, optimisers, schedule, ``epoch`` epochs done, history,
    seconds so far) via a temporary name."""
    state = {"model": run.module.state_dict(), "optimizer": loop.opt.state_dict(),
             "scheduler": loop.sched.state_dict(), "epoch": epoch,
             "history_json": loop.history, "seconds": loop.seconds()}
    if run.disc is not None and run.disc_opt is not None:  # built together (gan_epochs)
        state["discriminator"] = run.disc.state_dict()
        state["discriminator_optimizer"] = run.disc_opt.state_dict()
    path = run.cfg.checkpoint_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(run: _Run, loop: _Loop) -> None:
    """Continue ``loop`` from the checkpoint: weights, optimisers, schedule, history, seconds."""
    state = torch.load(run.cfg.checkpoint_path, map_location=run.device, weights_only=True)
    run.module.load_state_dict(state["model"])
    loop.opt.load_state_dict(state["optimizer"])
    loop.sched.load_state_dict(state["scheduler"])
    if run.disc is not None and run.disc_opt is not None and "discriminator" in state:
        run.disc.load_state_dict(state["discriminator"])
        run.disc_opt.load_state_dict(state["discriminator_optimizer"])
    loop.first_epoch = int(state["epoch"])
    loop.history = list(state.get("history_json", []))
    loop.seconds_before = float(state.get("seconds", 0))


def _history_validation(val: dict) -> dict:
    return {scene: {d: {"model_psnr_db": r["model"]["psnr_db"], "model_ssim": r["model"]["ssim"],
                        "bicubic_psnr_db": r["bicubic"]["psnr_db"]} for d, r in by_deg.items()}
            for scene, by_deg in val.items()}


@dataclass
class _Loop:
    """The optimisation state carried from epoch to epoch (and through a checkpoint)."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    t_start: float
    first_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    seconds_before: float = 0.0
    bar: Any = None

    def seconds(self) -> float:
        """Training wall seconds, earlier sessions of a resumed run included."""
        return self.seconds_before + time.perf_counter() - self.t_start


def _stage_data(run: _Run, scratch: str) -> tuple[list[_Staged], torch.Tensor]:
    """Stage the training and validation scenes under ``scratch`` and sample the patch pool.

    Returns:
        ``(staged validation scenes, pool)``; pool: ``(pool_size, 1, P, P)`` float32 HR
        patches in [0, 1], P = ``patch_px * scale``.
    """
    cfg = run.cfg
    train_scenes = _stage_all(cfg.scenes, scratch, "train")
    val_scenes = _stage_all(cfg.val_scenes, scratch, "val")
    pool = torch.from_numpy(sample_patches(train_scenes, count=cfg.pool_size,
                                           hr_px=cfg.patch_px * run.descriptor.scale,
                                           rng=np.random.default_rng(cfg.seed)))
    return val_scenes, pool


def _start_loop(run: _Run, t_start: float, progress: bool) -> _Loop:
    """Adam with a cosine schedule over every step, continued from the checkpoint when
    ``resume`` and one exists, and the progress bar."""
    from tqdm import tqdm

    cfg = run.cfg
    opt = torch.optim.Adam(run.module.parameters(), lr=cfg.learning_rate)
    epochs = cfg.epochs + cfg.gan_epochs
    total = epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total,
                                                       eta_min=cfg.learning_rate * 0.01)
    loop = _Loop(opt, sched, epochs, t_start)
    if cfg.resume and cfg.checkpoint_path.exists():
        _load_checkpoint(run, loop)
    loop.bar = tqdm(total=total, initial=loop.first_epoch * cfg.steps_per_epoch, unit="step",
                    desc=f"train {cfg.name}", disable=not progress, dynamic_ncols=True)
    return loop


def _validation(run: _Run, val_scenes: list[_Staged], degradations: tuple[str, ...]) -> dict:
    """:func:`validate` of the network in its current state (eval mode, no gradients)."""
    run.module.eval()
    model = SRModel(module=run.module, descriptor=run.descriptor, device=run.device)
    with torch.no_grad():
        return validate(model, val_scenes, run.cfg.val_window_px, degradations)


def _train_epochs(run: _Run, loop: _Loop, pool: torch.Tensor, val_scenes: list[_Staged],
                  on_epoch_end: Callable[[dict], None] | None) -> None:
    """The remaining epochs, each followed by its validation, its checkpoint and
    ``on_epoch_end``."""
    for epoch in range(loop.first_epoch, loop.epochs):
        entry = _epoch(run, loop, epoch, pool)
        val = _validation(run, val_scenes, run.cfg.val_degradations)
        entry["validation"] = _history_validation(val)
        loop.history.append(entry)
        _save_checkpoint(run, loop, epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(entry)
    loop.bar.close()


def _write_model(run: _Run, loop: _Loop, val_scenes: list[_Staged]) -> dict:
    """Validate under every evaluation degradation, write the weights and their card, remove
    the checkpoint; returns the card with ``weights`` (the file written)."""
    from sr_core.training.train_card import model_card

    final = _validation(run, val_scenes, EVALUATION)
    card = model_card(run.cfg, run, loop.history, final, val_scenes, seconds=loop.seconds())
    path = save_model(run.module.cpu(), card, run.cfg.out)
    run.cfg.checkpoint_path.unlink(missing_ok=True)
    card["weights"] = str(path)
    return card


def train_model(cfg: TrainConfig, *, progress: bool = True, scratch_dir: str | None = None,
                on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train a model and write it in our format (safetensors + model card).

    Args:
        cfg: the :class:`~sr_core.training.config.TrainConfig`.
        progress: show a progress bar.
        scratch_dir: where scenes are staged (a temporary directory, removed afterwards).
        on_epoch_end: called with each epoch's history entry (loss, validation PSNR/SSIM) after
            its checkpoint is written; an exception it raises stops training, leaving the
            checkpoint for ``resume``.

    Returns:
        The model card written beside the weights (:func:`sr_core.training.train_card.model_card`).

    Raises:
        InputError: a scene is missing, unusable, all nodata or yields too few patches; a folder
            holds no GeoTIFF; an unknown degradation or loss; ModelError: unknown architecture.
            Nothing is written at ``out`` then.
    """
    cfg = replace_scenes(cfg)
    run = _build(cfg, _check(cfg))
    scratch = tempfile.mkdtemp(prefix="sr-train-", dir=scratch_dir)
    t_start = time.perf_counter()
    try:
        val_scenes, pool = _stage_data(run, scratch)
        loop = _start_loop(run, t_start, progress)
        _train_epochs(run, loop, pool, val_scenes, on_epoch_end)
        return _write_model(run, loop, val_scenes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
