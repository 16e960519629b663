"""A training run's configuration: :class:`TrainConfig`, what the CLI's ``train`` command and
the ``train_model`` flow build and :func:`sr_core.training.train.train_model` takes.

Owns the options and their meaning; checking them against each other is
:func:`sr_core.training.train.check`'s. May import :mod:`sr_core.training.train_data` (to expand
folders of scenes) and pydantic; nothing that imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from sr_core.training.train_data import expand_scenes

LOSSES = ("l1", "mse", "perceptual")
_PATH_FIELDS = ("out", "scenes", "val_scenes", "vgg_weights", "init_weights", "checkpoint")


def path_text(value: Any) -> Any:
    """``os.PathLike`` (alone or in a list / tuple) as ``str``; anything else unchanged."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
    return value


class TrainConfig(BaseModel):
    """A training run.

    Attributes:
        architecture: registry architecture (``"edsr"``, ``"espcn"``).
        arguments: constructor arguments (``scale`` included).
        name: the model's name, e.g. ``"edsr-x2"``; out: path of the ``.safetensors`` to write.
        scenes: training scenes (local GeoTIFF paths, or folders of them); val_scenes: held-out
            scenes (likewise).
        epochs, steps_per_epoch, batch_size: optimisation length.
        patch_px: LR patch edge in pixels (HR patches are ``patch_px * scale``).
        pool_size: HR patches sampled once from the scenes.
        learning_rate: Adam's initial rate; decays by a cosine schedule to 1 % of it.
        val_window_px: edge (HR px) of the centred window of each held-out scene used for
            validation.
        seed: seeds patch sampling, augmentation, degradations and initial weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: continue from the checkpoint if it exists.
        loss: pixel loss ``"l1"`` (EDSR) or ``"mse"``, or ``"perceptual"``: L1 plus
            ``perceptual_weight`` times the VGG-19 feature MSE (:mod:`sr_core.training.losses`).
        vgg_weights: path of torchvision VGG-19 weights (needed by ``"perceptual"`` and used
            as the GAN phase's content loss when given); never downloaded.
        vgg_layer: VGG feature layer (``relu5_4`` = SRGAN's VGG54).
        perceptual_weight: weight of the VGG term.
        gan_epochs: SRGAN adversarial epochs after the ``epochs`` of pixel/perceptual
            pre-training (0: none). The generator then minimises content +
            ``adversarial_weight`` * BCE(D(SR), real), and the SRGAN discriminator
            BCE(D(HR), real) + BCE(D(SR), fake) (Ledig et al., CVPR 2017).
        adversarial_weight: weight of the generator's adversarial term (1e-3 in SRGAN).
        degradation: how HR patches become LR inputs: ``"random"`` (one drawn per pair,
            :class:`sr_core.imaging.degradations.RandomDegradations`) or a name of
            :data:`sr_core.imaging.degradations.NAMED`.
        init_weights: ``.safetensors`` whose tensors of matching name and shape initialise the
            network (ignored when resuming); ``None``: random initialisation.
        val_degradations: degradations validated after every epoch (the final validation uses
            all of :data:`sr_core.imaging.degradations.EVALUATION`).
        checkpoint: checkpoint path (default ``out`` with suffix ``.ckpt``).

    A pydantic model (frozen; unknown fields refused), so the Prefect flow takes it whole and
    the UI renders it as a form; paths may be given as ``str`` or ``os.PathLike`` (kept as text).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str
    arguments: dict
    name: str
    out: str
    scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 16
    patch_px: int = 48
    pool_size: int = 2048
    learning_rate: float = 1e-3
    val_window_px: int = 1024
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    loss: str = "l1"
    vgg_weights: str | None = None
    vgg_layer: str = "relu5_4"
    perceptual_weight: float = 1.0
    gan_epochs: int = 0
    adversarial_weight: float = 1e-3
    degradation: str = "random"
    init_weights: str | None = None
    val_degradations: tuple[str, ...] = ("bicubic", "area")
    checkpoint: str | None = None

    @field_validator(*_PATH_FIELDS, mode="before")
    @classmethod
    def _paths_as_text(cls, value: Any) -> Any:
        return path_text(value)

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else Path(self.out).with_suffix(".ckpt")


def replace_scenes(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with folders among its scenes expanded (:func:`expand_scenes`)."""
    return cfg.model_copy(update={"scenes": expand_scenes(cfg.scenes, "training"),
                                  "val_scenes": expand_scenes(cfg.val_scenes, "validation")})


def config_dict(cfg: TrainConfig) -> dict:
    """``cfg``'s fields as a plain dict."""
    return cfg.model_dump()
