"""Training a model on the user's own scenes by the Wald protocol.

Pairs are made from the scenes themselves (Wald, Ranchin & Mangolini, PE&RS 1997): an HR patch is
taken from a scene, degraded by the scale (bicubic, Keys a = -0.5, antialiased: the same
degradation the report's Wald check uses) to make the LR input, and the model learns LR -> HR.

* The degradation is selectable (:func:`degrade`: bicubic or area, optional Gaussian blur and
  noise); validation always uses the bicubic Wald check, the report's convention.
* Scenes are staged into Zarr (:func:`sr_core.staging.stage_scene`) and normalised per scene as in
  inference (:func:`sr_core.normalize.normalization_for`), so training sees what inference sees.
* A fixed pool of HR patches (one band each) is sampled once from the staged scenes, chosen at
  random positions; patches with any nodata pixel, or with no texture (std below 1e-4 of the
  normalised range, e.g. open sea in a DEM), are skipped. Memory is bounded by the pool size, not
  by the scenes. Each step draws a batch from the pool with a random flip / 90-degree rotation.
* L1 loss (as EDSR) or MSE; optionally a VGG-19 perceptual term (user-supplied weights) and an
  SRGAN adversarial phase after pixel pre-training (:mod:`sr_core.losses`); Adam (Kingma & Ba, ICLR 2015) with a cosine learning-rate schedule
  (Loshchilov & Hutter, ICLR 2017), a checkpoint after every epoch and ``resume``; validation
  PSNR/SSIM of the model and of bicubic on the held-out scenes after every epoch; deterministic for
  a given seed on a given device.
* The result is written in our format (safetensors + model card) by
  :func:`sr_core.models.weights.save_model`.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sr_core.errors import InputError
from sr_core.losses import PerceptualLoss, adversarial_loss
from sr_core.metrics import DEGRADATION, data_range_for, wald_check
from sr_core.models.base import SRModel
from sr_core.models.registry import build_module, describe, resolve_device
from sr_core.models.srresnet import SRGANDiscriminator
from sr_core.models.weights import save_model
from sr_core.normalize import normalization_for
from sr_core.resample import downsample_bicubic
from sr_core.scene import open_scene
from sr_core.staging import stage_scene
from sr_core.tiling import PixelWindow

STAGE_TILE_PX = 512
LOSSES = ("l1", "mse", "perceptual")
DEGRADATIONS = ("bicubic", "area")


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes:
        architecture: registry architecture (``"edsr"``, ``"espcn"``).
        arguments: constructor arguments (``scale`` included).
        name: the model's name, e.g. ``"edsr-x2"``; out: path of the ``.safetensors`` to write.
        scenes: training scenes (local GeoTIFF paths); val_scenes: held-out scenes.
        epochs, steps_per_epoch, batch_size: optimisation length.
        patch_px: LR patch edge in pixels (HR patches are ``patch_px * scale``).
        pool_size: HR patches sampled once from the scenes.
        learning_rate: Adam's initial rate; decays by a cosine schedule to 1 % of it.
        val_window_px: edge of the centred window of each held-out scene used for validation.
        seed: seeds patch sampling, augmentation and initial weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: continue from ``<out>.ckpt`` if it exists.
        loss: pixel loss ``"l1"`` (EDSR) or ``"mse"``, or ``"perceptual"``: L1 plus
            ``perceptual_weight`` times the VGG-19 feature MSE (:mod:`sr_core.losses`).
        vgg_weights: path of torchvision VGG-19 weights (needed by ``"perceptual"`` and used
            as the GAN phase's content loss when given); never downloaded.
        vgg_layer: VGG feature layer (``relu5_4`` = SRGAN's VGG54).
        perceptual_weight: weight of the VGG term.
        gan_epochs: SRGAN adversarial epochs after the ``epochs`` of pixel/perceptual
            pre-training (0: none). The generator then minimises content +
            ``adversarial_weight`` * BCE(D(SR), real), and the SRGAN discriminator
            BCE(D(HR), real) + BCE(D(SR), fake) (Ledig et al., CVPR 2017).
        adversarial_weight: weight of the generator's adversarial term (1e-3 in SRGAN).
        degradation: how HR patches become LR inputs: ``"bicubic"`` (antialiased, MATLAB
            ``imresize``; the Wald check's degradation) or ``"area"`` (mean of each
            ``scale x scale`` block, a sensor-like integration); see :func:`degrade`.
        blur_sigma_px: Gaussian blur (HR px) applied before downsampling; 0 = none.
        noise_sigma: Gaussian noise (normalised units) added to the LR input; 0 = none.
    """

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
    degradation: str = "bicubic"
    blur_sigma_px: float = 0.0
    noise_sigma: float = 0.0


@dataclass
class _Staged:
    name: str
    scene: object
    store: str
    normalization: object
    data_range: float
    band_min: tuple
    band_max: tuple
    shape: tuple = field(default=())


def _stage_all(paths: tuple[str, ...], scratch: str, prefix: str) -> list[_Staged]:
    out = []
    for i, path in enumerate(paths):
        scene = open_scene(path)
        staged = stage_scene(scene, os.path.join(scratch, f"{prefix}{i}.zarr"),
                             tile_size_px=STAGE_TILE_PX)
        norm = normalization_for(scene.dtype, list(staged.band_min), list(staged.band_max))
        out.append(_Staged(Path(path).name, scene, staged.store_path, norm,
                           data_range_for(scene.dtype, staged.band_min, staged.band_max),
                           staged.band_min, staged.band_max,
                           (scene.count, scene.height, scene.width)))
    return out


def sample_patches(scenes: list[_Staged], *, count: int, hr_px: int,
                   rng: np.random.Generator, max_tries: int = 50) -> np.ndarray:
    """Sample ``count`` single-band HR patches from staged scenes.

    Scenes are chosen in proportion to their pixel count (bands included). Patches with a nodata
    pixel or with no texture are skipped.

    Returns:
        ``(count, 1, hr_px, hr_px)`` float32 normalised patches.

    Raises:
        InputError: fewer than ``count`` usable patches after ``count * max_tries`` draws (scenes
            too small for the patch, or all nodata).
    """
    import zarr

    usable = [s for s in scenes if s.shape[1] >= hr_px and s.shape[2] >= hr_px]
    if not usable:
        raise InputError(f"no training scene is at least {hr_px} x {hr_px} px")
    weights = np.array([np.prod(s.shape) for s in usable], dtype=float)
    weights /= weights.sum()
    arrays = [(zarr.open_group(s.store, mode="r")) for s in usable]
    patches = np.empty((count, 1, hr_px, hr_px), dtype=np.float32)
    got = tries = 0
    while got < count:
        tries += 1
        if tries > count * max_tries:
            raise InputError(f"only {got} of {count} training patches had no nodata and some "
                             "texture; add scenes or lower pool_size")
        k = rng.choice(len(usable), p=weights)
        s = usable[k]
        b = int(rng.integers(s.shape[0]))
        r = int(rng.integers(s.shape[1] - hr_px + 1))
        c = int(rng.integers(s.shape[2] - hr_px + 1))
        valid = arrays[k]["valid"][b, r:r + hr_px, c:c + hr_px]
        if not valid.all():
            continue
        x = s.normalization.to_model(arrays[k]["image"][b:b + 1, r:r + hr_px, c:c + hr_px],
                                     bands=[b])
        if float(x.std()) < 1e-4:
            continue
        patches[got] = x
        got += 1
    return patches


def degrade(hr: torch.Tensor, scale: int, *, method: str = "bicubic", blur_sigma_px: float = 0.0,
            noise_sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Make LR training inputs from HR patches (the Wald protocol's degradation, with options).

    Args:
        hr: ``(N, C, H, W)`` float tensor, ``H`` and ``W`` multiples of ``scale``.
        scale: integer factor >= 2.
        method: ``"bicubic"`` (:func:`sr_core.resample.downsample_bicubic`) or ``"area"``
            (block mean).
        blur_sigma_px: standard deviation (HR px) of a Gaussian blur applied first (kernel
            ``2 ceil(3 sigma) + 1``, reflect padding); 0 = none.
        noise_sigma: standard deviation of additive Gaussian noise on the LR result; 0 = none.
        generator: CPU generator for the noise (deterministic training).

    Returns:
        ``(N, C, H // scale, W // scale)`` tensor on ``hr``'s device.

    Raises:
        InputError: unknown method or negative sigma.
    """
    if method not in DEGRADATIONS:
        raise InputError(f"degradation {method!r}: expected one of {', '.join(DEGRADATIONS)}")
    if blur_sigma_px < 0 or noise_sigma < 0:
        raise InputError("blur and noise sigmas must be >= 0")
    x = hr
    if blur_sigma_px > 0:
        r = max(1, int(np.ceil(3 * blur_sigma_px)))
        t = torch.arange(-r, r + 1, dtype=hr.dtype, device=hr.device)
        k = torch.exp(-0.5 * (t / blur_sigma_px) ** 2)
        k = k / k.sum()
        c = x.shape[1]
        x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
        x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if method == "area":
        lr = torch.nn.functional.avg_pool2d(x, scale)
    else:
        lr = downsample_bicubic(x, scale)
    if noise_sigma > 0:
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype)
        lr = lr + noise_sigma * noise.to(lr.device)
    return lr


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    k = int(rng.integers(4))
    batch = torch.rot90(batch, k, dims=(-2, -1))
    if rng.integers(2):
        batch = torch.flip(batch, dims=(-1,))
    return batch


def validate(model: SRModel, scenes: list[_Staged], window_px: int) -> dict:
    """Wald-protocol PSNR/SSIM of the model and of bicubic on each held-out scene (centred
    window of at most ``window_px``), in the scene's units with its dtype's data range."""
    import zarr

    out = {}
    s = model.descriptor.scale
    for sc in scenes:
        _, h, w = sc.shape
        wh, ww = min(window_px, h) // s * s, min(window_px, w) // s * s
        win = PixelWindow((h - wh) // 2, (w - ww) // 2, wh, ww)
        g = zarr.open_group(sc.store, mode="r")
        rows, cols = win.slices()
        res = wald_check(model, g["image"][:, rows, cols], g["valid"][:, rows, cols],
                         sc.normalization, sc.data_range)
        out[sc.name] = res
    return out


def train_model(cfg: TrainConfig, *, progress: bool = True, scratch_dir: str | None = None,
                on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train a model and write it in our format (safetensors + model card).

    Args:
        cfg: the :class:`TrainConfig`.
        progress: show a progress bar.
        scratch_dir: where scenes are staged (a temporary directory, removed afterwards).
        on_epoch_end: called with each epoch's history entry (loss, validation PSNR/SSIM) after
            its checkpoint is written; an exception it raises stops training, leaving the
            checkpoint for ``resume``.

    Returns:
        The model card written beside the weights.

    Raises:
        InputError: a scene is unusable or yields too few patches; ModelError: unknown architecture.
    """
    from tqdm import tqdm

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
    degrade(torch.zeros(1, 1, 4, 4), 2, method=cfg.degradation, blur_sigma_px=cfg.blur_sigma_px,
            noise_sigma=cfg.noise_sigma)  # options checked before any work
    if cfg.gan_epochs < 0:
        raise InputError(f"gan epochs {cfg.gan_epochs}: must be >= 0")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    module = build_module(cfg.architecture, **cfg.arguments).to(device)
    descriptor = describe(cfg.architecture, cfg.name, **cfg.arguments)
    s = descriptor.scale
    hr_px = cfg.patch_px * s
    perceptual = (PerceptualLoss(cfg.vgg_weights, layer=cfg.vgg_layer).to(device)
                  if cfg.vgg_weights else None)
    disc = disc_opt = None
    if cfg.gan_epochs:
        if hr_px % 16:
            raise InputError(f"GAN training needs HR patches of a multiple of 16 px; "
                             f"patch {cfg.patch_px} x scale {s} = {hr_px}")
        disc = SRGANDiscriminator(in_channels=descriptor.in_channels, input_px=hr_px).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999))
    scratch = tempfile.mkdtemp(prefix="sr-train-", dir=scratch_dir)
    t_start = time.perf_counter()
    try:
        train_scenes = _stage_all(cfg.scenes, scratch, "train")
        val_scenes = _stage_all(cfg.val_scenes, scratch, "val")
        pool = torch.from_numpy(sample_patches(train_scenes, count=cfg.pool_size,
                                               hr_px=hr_px, rng=rng))
        opt = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
        epochs = cfg.epochs + cfg.gan_epochs
        total = epochs * cfg.steps_per_epoch
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total,
                                                           eta_min=cfg.learning_rate * 0.01)
        ckpt = Path(cfg.out).with_suffix(".ckpt")
        history: list[dict] = []
        first_epoch = 0
        if cfg.resume and ckpt.exists():
            state = torch.load(ckpt, map_location=device, weights_only=True)
            module.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if disc is not None and "discriminator" in state:
                disc.load_state_dict(state["discriminator"])
                disc_opt.load_state_dict(state["discriminator_optimizer"])
            first_epoch = int(state["epoch"])
            history = list(state.get("history_json", []))
        amp = device.type == "cuda"
        bar = tqdm(total=total, initial=first_epoch * cfg.steps_per_epoch, unit="step",
                   desc=f"train {cfg.name}", disable=not progress, dynamic_ncols=True)

        def content(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            if cfg.loss == "mse":
                loss = torch.nn.functional.mse_loss(sr, hr)
            else:
                loss = torch.nn.functional.l1_loss(sr, hr)
            if perceptual is not None and (cfg.loss == "perceptual" or adversarial):
                loss = loss + cfg.perceptual_weight * perceptual(sr, hr)
            return loss

        for epoch in range(first_epoch, epochs):
            # every epoch draws from its own seeded streams, so a resumed run equals an
            # uninterrupted one
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(cfg.seed + epoch)
            noise_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            adversarial = epoch >= cfg.epochs
            module.train()
            if disc is not None:
                disc.train()
            losses, d_losses = [], []
            for _ in range(cfg.steps_per_epoch):
                idx = torch.from_numpy(rng.choice(len(pool), cfg.batch_size, replace=False))
                hr = _augment(pool[idx], rng).contiguous().to(device)
                lr = degrade(hr, s, method=cfg.degradation, blur_sigma_px=cfg.blur_sigma_px,
                             noise_sigma=cfg.noise_sigma, generator=noise_gen)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    sr = module(lr)
                sr = sr.float()
                loss = content(sr, hr)
                if adversarial:
                    loss = loss + cfg.adversarial_weight * adversarial_loss(disc(sr), True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if adversarial:
                    d_loss = (adversarial_loss(disc(hr), True)
                              + adversarial_loss(disc(sr.detach()), False))
                    disc_opt.zero_grad(set_to_none=True)
                    d_loss.backward()
                    disc_opt.step()
                    d_losses.append(float(d_loss.detach()))
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix_str(f"epoch {epoch + 1} loss {np.mean(losses[-20:]):.4f}")
            module.eval()
            model = SRModel(module=module, descriptor=descriptor, device=device)
            with torch.no_grad():
                val = validate(model, val_scenes, cfg.val_window_px)
            entry = {"epoch": epoch + 1, "phase": "adversarial" if adversarial else "pixel",
                     "train_loss": float(np.mean(losses)),
                     "validation": {k: {"model_psnr_db": v["model"]["psnr_db"],
                                        "model_ssim": v["model"]["ssim"],
                                        "bicubic_psnr_db": v["bicubic"]["psnr_db"]}
                                    for k, v in val.items()}}
            if d_losses:
                entry["discriminator_loss"] = float(np.mean(d_losses))
            history.append(entry)
            state = {"model": module.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch + 1,
                     "history_json": history}
            if disc is not None:
                state["discriminator"] = disc.state_dict()
                state["discriminator_optimizer"] = disc_opt.state_dict()
            torch.save(state, ckpt)
            if on_epoch_end is not None:
                on_epoch_end(entry)
        bar.close()
        module.eval()
        model = SRModel(module=module, descriptor=descriptor, device=device)
        with torch.no_grad():
            final = validate(model, val_scenes, cfg.val_window_px)
        card = {
            "name": cfg.name,
            "architecture": cfg.architecture,
            "arguments": dict(cfg.arguments),
            "scale": s,
            "in_channels": descriptor.in_channels,
            # read by the planning process without torch (sr_core.models.catalog)
            "descriptor": descriptor.to_dict(),
            "bands": "band by band" if descriptor.in_channels == 1 else
                     f"groups of {descriptor.in_channels} bands",
            "normalisation": "per scene: uint8 x/255; other dtypes (x - band min) / (band max - "
                             "band min) over the scene's valid pixels",
            "summary": f"{cfg.architecture} x{s} trained by the Wald protocol on "
                       f"{len(cfg.scenes)} real scenes",
            "training": {
                "scenes": [Path(p).name for p in cfg.scenes],
                "validation_scenes": [Path(p).name for p in cfg.val_scenes],
                "protocol": "Wald: HR patch -> degrade by the scale -> LR; learn LR -> HR",
                "degradation": (DEGRADATION if cfg.degradation == "bicubic" else
                                "area (block mean)")
                               + (f", Gaussian blur sigma {cfg.blur_sigma_px} HR px first"
                                  if cfg.blur_sigma_px else "")
                               + (f", Gaussian noise sigma {cfg.noise_sigma}"
                                  if cfg.noise_sigma else ""),
                "validation_degradation": DEGRADATION,
                "epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch,
                "batch_size": cfg.batch_size, "patch_px_lr": cfg.patch_px,
                "pool_size": cfg.pool_size,
                "loss": {"l1": "L1", "mse": "MSE",
                         "perceptual": f"L1 + {cfg.perceptual_weight} x VGG-19 {cfg.vgg_layer} "
                                       "feature MSE"}[cfg.loss]
                        + (f"; then {cfg.gan_epochs} SRGAN adversarial epochs (weight "
                           f"{cfg.adversarial_weight})" if cfg.gan_epochs else ""),
                "vgg_weights": Path(cfg.vgg_weights).name if cfg.vgg_weights else None,
                "optimiser": f"Adam lr {cfg.learning_rate}, cosine to 1%",
                "seed": cfg.seed, "device": str(device),
                "hardware": f"{platform.machine()} {os.cpu_count()} cores"
                            + (f", {torch.cuda.get_device_name(device)}" if amp else ""),
                "torch": torch.__version__,
                "seconds": round(time.perf_counter() - t_start, 1),
                "history": history,
            },
            "metrics": {"validation": {
                k: {"model": v["model"], "bicubic": v["bicubic"], "gain_db": v["gain_db"],
                    "window_px": v["window_px"]} for k, v in final.items()},
                "conventions": "Wald protocol on a centred window of each held-out scene; PSNR "
                               "and SSIM (scikit-image) in the scene's units, data range = dtype "
                               "range (integers) or valid range (floats)"},
        }
        path = save_model(module.cpu(), card, cfg.out)
        ckpt.unlink(missing_ok=True)
        card["weights"] = str(path)
        return card
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
