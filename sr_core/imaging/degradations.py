"""Degradation models: how a high-resolution (HR) image becomes its low-resolution (LR) version.

The Wald protocol (Wald, Ranchin & Mangolini, "Fusion of satellite images of different spatial
resolutions: assessing the quality of resulting images", PE&RS 63(6), 1997) makes LR/HR pairs
from a scene by degrading it by the scale. Which degradation is used decides what a model learns
and what a quality figure means: a model trained only on antialiased bicubic learns to undo
exactly that kernel and over-sharpens data from real sensors, whose point-spread function is an
optical blur integrated over the detector, and a Wald check made with the same bicubic kernel
overstates its gain. This module therefore offers

* :class:`Degradation`: one degradation, ``HR -> blur -> integrate/resample by the scale -> noise``:
  a downsampling ``kernel`` (``"bicubic"``: Keys' cubic, a = -0.5, stretched by the scale, i.e.
  MATLAB ``imresize`` / Pillow; ``"area"``: the mean of each ``scale x scale`` block, an ideal
  detector's integration), an optional Gaussian optical blur before it (width in **LR pixels**,
  optionally anisotropic), an optional sub-pixel shift of the sampling grid (LR pixels) and optional
  additive Gaussian noise in the data's units, its sigma a fraction of the HR image's own standard
  deviation (``noise_sigma = 0.02``: a signal-to-noise ratio of 50, 34 dB);
* :data:`NAMED`: the fixed degradations that evaluation and reports use (``bicubic``, ``area``,
  ``gaussian-0.3``, ``gaussian-0.6``: Gaussian blur of sigma 0.3 / 0.6 LR px, then area
  integration; with the box their modulation transfer at Nyquist is about 0.41 and 0.11, the range
  of real multispectral sensors);
* :class:`RandomDegradations` / :func:`draw`: a random degradation per training pair, in the
  spirit of the "second-order" and shuffled degradation pipelines of BSRGAN (Zhang, Liang,
  Van Gool & Timofte, "Designing a Practical Degradation Model for Deep Blind Image
  Super-Resolution", ICCV 2021) and Real-ESRGAN (Wang, Xie, Dong & Shan, "Real-ESRGAN: Training
  Real-World Blind Super-Resolution with Pure Synthetic Data", ICCV Workshops 2021), kept modest
  (no JPEG, no ringing, one pass) because the models here are PSNR-oriented, not generative;
* :func:`degrade`: apply a list of degradations (one per image) to a batch, on any device.

Geometry: LR pixel ``i`` covers HR pixels ``[s*i, s*i + s)``; its centre is at HR coordinate
``s*i + (s - 1)/2`` (pixel-centre aligned, as :mod:`sr_core.imaging.resample`). The blur kernel is
sampled at integer HR offsets and normalised to sum 1; borders are reflected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sr_core.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["Degradation", "NAMED", "EVALUATION", "RandomDegradations", "blur_kernel", "degrade",
           "draw", "parse", "RANDOM"]

KERNELS = ("bicubic", "area")
#: name accepted where a degradation is chosen, meaning "a random one per training pair".
RANDOM = "random"


@dataclass(frozen=True)
class Degradation:
    """One HR -> LR degradation (see the module docstring for the geometry).

    Attributes:
        kernel: ``"bicubic"`` (antialiased Keys cubic, a = -0.5; Keys, IEEE Trans. ASSP 1981) or
            ``"area"`` (mean of each ``scale x scale`` block).
        sigma_lr_px: standard deviation of the Gaussian optical blur along its major axis, in LR
            pixels (``sigma_lr_px * scale`` HR pixels), >= 0; 0 = no blur.
        anisotropy: minor / major sigma ratio in (0, 1]; 1 = isotropic.
        angle_deg: direction of the major axis, degrees anticlockwise from the column axis.
        shift_lr_px: ``(rows, cols)`` sub-pixel shift of the sampling grid, LR pixels, each in
            [-0.5, 0.5].
        noise_sigma: standard deviation of additive Gaussian noise on the LR image as a fraction
            of the HR image's standard deviation (over its bands and pixels), >= 0: noise in the
            data's units that keeps a signal-to-noise ratio of ``1 / noise_sigma`` whatever the
            data's range (a DEM's metres or a photo's DN).
    """

    kernel: str = "bicubic"
    sigma_lr_px: float = 0.0
    anisotropy: float = 1.0
    angle_deg: float = 0.0
    shift_lr_px: tuple[float, float] = (0.0, 0.0)
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise InputError(f"degradation kernel {self.kernel!r}: expected one of "
                             f"{', '.join(KERNELS)}")
        if not (self.sigma_lr_px >= 0 and self.noise_sigma >= 0 and 0 < self.anisotropy <= 1):
            raise InputError("degradation: sigma and noise must be >= 0 and anisotropy in (0, 1]")
        if any(not -0.5 <= d <= 0.5 for d in self.shift_lr_px):
            raise InputError(f"degradation shift {self.shift_lr_px}: each must be in [-0.5, 0.5]")

    @property
    def blurs(self) -> bool:
        """True when a blur kernel (Gaussian or shift) is applied before downsampling."""
        return self.sigma_lr_px > 0 or any(self.shift_lr_px)

    def describe(self) -> str:
        """One line for reports and model cards."""
        parts = []
        if self.sigma_lr_px > 0:
            g = f"Gaussian blur sigma {self.sigma_lr_px:g} LR px"
            if self.anisotropy < 1:
                g += f" (minor/major {self.anisotropy:.2f}, angle {self.angle_deg:.0f} deg)"
            parts.append(g)
        if any(self.shift_lr_px):
            parts.append(f"shift ({self.shift_lr_px[0]:+.2f}, {self.shift_lr_px[1]:+.2f}) LR px")
        parts.append("antialiased bicubic (Keys a=-0.5)" if self.kernel == "bicubic"
                     else "area integration (block mean)")
        if self.noise_sigma > 0:
            parts.append(f"Gaussian noise sigma {self.noise_sigma:g} x the image's std")
        return ", then ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shift_lr_px"] = list(self.shift_lr_px)
        return d


#: The fixed degradations of evaluation and reports, by name.
NAMED: dict[str, Degradation] = {
    "bicubic": Degradation("bicubic"),
    "area": Degradation("area"),
    "gaussian-0.3": Degradation("area", sigma_lr_px=0.3),
    "gaussian-0.6": Degradation("area", sigma_lr_px=0.6),
}
#: The degradations ``sr-pipeline evaluate`` and the model cards report, in order.
EVALUATION: tuple[str, ...] = tuple(NAMED)
#: The degradations a scene report's Wald check uses: the SR literature's bicubic (the headline
#: figure, comparable with published tables) and area integration (an ideal detector), so the
#: reader sees a range rather than the most flattering number.
REPORT: tuple[str, ...] = ("bicubic", "area")


def parse(name: str) -> Degradation:
    """The named degradation.

    Raises:
        InputError: an unknown name (the message lists the known ones).
    """
    try:
        return NAMED[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown degradation {name!r}; known: {', '.join(NAMED)}"
                         f" (training also takes {RANDOM!r})") from None


@dataclass(frozen=True)
class RandomDegradations:
    """The distribution one degradation per training pair is drawn from.

    Kept on the sharp side on purpose: a blind model cannot tell a smooth scene (a DEM) that was
    barely blurred from one that was blurred a lot, so it answers with the sharpening its
    training distribution makes likely. Measured on the held-out 10 m DEM (bicubic already within
    0.5 m there): with Gaussians up to 0.75 LR px in half the pairs the x2 model fell 8.7-11.2 dB
    below bicubic on the bicubic-degraded DEM after 400-800 steps; with Gaussians up to 0.5 LR px in
    30 % of pairs it started above bicubic and drifted below it as training went on (-0.8 dB
    after 1,600 steps, -1.8 dB after 1,400 more). Hence Gaussians up to 0.4 LR px in 20 % of
    pairs: the model sharpens a Gaussian-blurred scene less than that blur would allow, but not
    a sharp one more than it supports.

    Attributes:
        p_kernel: probabilities of ``bicubic`` / ``area`` / ``gaussian`` (a Gaussian blur then
            area integration); they sum to 1.
        sigma_lr_px: uniform range of the Gaussian's major-axis sigma, LR px.
        p_anisotropic, anisotropy: probability of an anisotropic Gaussian and the uniform range of
            its minor/major ratio (angle uniform in [0, 180) degrees).
        p_shift, shift_lr_px: probability of a sub-pixel shift and its largest magnitude per axis
            (uniform in [-max, max]), LR px.
        p_noise, noise_sigma: probability of noise and the uniform range of its sigma (fraction of
            the HR image's standard deviation).
    """

    p_kernel: tuple[float, float, float] = (0.4, 0.4, 0.2)
    sigma_lr_px: tuple[float, float] = (0.1, 0.4)
    p_anisotropic: float = 0.4
    anisotropy: tuple[float, float] = (0.7, 1.0)
    p_shift: float = 0.1
    shift_lr_px: float = 0.05
    p_noise: float = 0.3
    noise_sigma: tuple[float, float] = (0.0, 0.03)

    def describe(self) -> str:
        pb, pa, pg = self.p_kernel
        return (f"random per pair (BSRGAN / Real-ESRGAN style, modest): antialiased bicubic "
                f"{pb:.0%}, area {pa:.0%}, Gaussian blur sigma U{list(self.sigma_lr_px)} LR px "
                f"then area {pg:.0%} (anisotropic with p {self.p_anisotropic:g}, minor/major "
                f"U{list(self.anisotropy)}); sub-pixel shift U(+-{self.shift_lr_px:g}) LR px with "
                f"p {self.p_shift:g}; Gaussian noise sigma U{list(self.noise_sigma)} x the image's "
                f"std with p {self.p_noise:g}")


def draw(count: int, rng: np.random.Generator,
         dist: RandomDegradations = RandomDegradations()) -> list[Degradation]:
    """Draw ``count`` degradations from ``dist``; the same ``rng`` state gives the same list.

    Args:
        count: how many (one per training pair), >= 0.
        rng: NumPy generator (seed it for reproducible training).
        dist: the distribution.

    Returns:
        ``count`` :class:`Degradation` objects.
    """
    out = []
    for _ in range(count):
        kind = int(rng.choice(3, p=np.asarray(dist.p_kernel, dtype=float)))
        sigma, anis, angle = 0.0, 1.0, 0.0
        if kind == 2:
            sigma = float(rng.uniform(*dist.sigma_lr_px))
            if rng.random() < dist.p_anisotropic:
                anis = float(rng.uniform(*dist.anisotropy))
                angle = float(rng.uniform(0.0, 180.0))
        shift = (0.0, 0.0)
        if rng.random() < dist.p_shift:
            shift = (float(rng.uniform(-dist.shift_lr_px, dist.shift_lr_px)),
                     float(rng.uniform(-dist.shift_lr_px, dist.shift_lr_px)))
        noise = float(rng.uniform(*dist.noise_sigma)) if rng.random() < dist.p_noise else 0.0
        out.append(Degradation("bicubic" if kind == 0 else "area", sigma_lr_px=sigma,
                               anisotropy=anis, angle_deg=angle, shift_lr_px=shift,
                               noise_sigma=noise))
    return out


def kernel_radius_px(deg: Degradation, scale: int) -> int:
    """Half-width (HR px) of :func:`blur_kernel`: ``ceil(3 sigma + |shift|) + 1``."""
    sigma = deg.sigma_lr_px * scale
    shift = max(abs(d) for d in deg.shift_lr_px) * scale
    return int(math.ceil(3.0 * sigma + shift)) + 1


def blur_kernel(deg: Degradation, scale: int, radius_px: int | None = None) -> np.ndarray:
    """The HR-grid blur kernel of ``deg`` (the part before downsampling).

    A Gaussian with covariance ``R diag(sM^2, sm^2) R^T`` (``sM = sigma_lr_px * scale`` HR px,
    ``sm = anisotropy * sM``, ``R`` the rotation by ``angle_deg``) centred at the shift
    (``shift_lr_px * scale`` HR px), sampled at integer HR offsets; without blur, a shift alone is
    the bilinear (tent) kernel at that offset; neither: the identity (a single 1).

    Args:
        deg: the degradation.
        scale: integer factor >= 1.
        radius_px: half-width in HR px (default :func:`kernel_radius_px`).

    Returns:
        ``(2r + 1, 2r + 1)`` float64 array summing to 1.
    """
    r = kernel_radius_px(deg, scale) if radius_px is None else radius_px
    t = np.arange(-r, r + 1, dtype=np.float64)
    dy, dx = deg.shift_lr_px[0] * scale, deg.shift_lr_px[1] * scale
    y, x = np.meshgrid(t - dy, t - dx, indexing="ij")
    if deg.sigma_lr_px > 0:
        s_major = deg.sigma_lr_px * scale
        s_minor = s_major * deg.anisotropy
        a = math.radians(deg.angle_deg)
        # coordinates along the major (u) and minor (v) axes; rows grow downwards
        u = x * math.cos(a) - y * math.sin(a)
        v = x * math.sin(a) + y * math.cos(a)
        k = np.exp(-0.5 * ((u / s_major) ** 2 + (v / s_minor) ** 2))
    else:
        k = np.clip(1 - np.abs(y), 0, None) * np.clip(1 - np.abs(x), 0, None)
    return k / k.sum()


def _downsample(x: torch.Tensor, kernel: str, scale: int) -> torch.Tensor:
    from sr_core.imaging.resample import downsample_bicubic

    if kernel == "area":
        n, c, h, w = x.shape
        return x.reshape(n, c, h // scale, scale, w // scale, scale).mean(dim=(3, 5))
    return downsample_bicubic(x, scale)


def degrade(hr: torch.Tensor, scale: int, degradations: Degradation | list[Degradation], *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade a batch of HR images to LR, image ``i`` by ``degradations[i]``.

    Args:
        hr: ``(N, C, H, W)`` float tensor (any device), typically normalised to [0, 1]; ``H`` and
            ``W`` multiples of ``scale`` and larger than twice the blur kernel's radius.
        scale: integer factor >= 2.
        degradations: one per image, or one for all.
        generator: CPU generator for the noise (deterministic training); ``None``: torch's
            global one. Noise sigma is ``noise_sigma`` times the HR image's standard deviation.

    Returns:
        ``(N, C, H // scale, W // scale)`` tensor of ``hr``'s dtype and device. Images with a blur
        are convolved (reflect padding) before downsampling; images without one are downsampled
        directly, so ``area`` alone equals the block mean exactly.

    Raises:
        InputError: ``len(degradations) != N``, ``H``/``W`` not a multiple of ``scale``, or an
            image too small for its blur kernel.
    """
    import torch
    import torch.nn.functional as F

    n, c, h, w = hr.shape
    degs = [degradations] * n if isinstance(degradations, Degradation) else list(degradations)
    if len(degs) != n:
        raise InputError(f"{len(degs)} degradations for a batch of {n} images")
    if h % scale or w % scale:
        raise InputError(f"image of {h}x{w} px is not a multiple of scale {scale}")
    x = hr
    blurred = [i for i, d in enumerate(degs) if d.blurs]
    if blurred:
        r = max(kernel_radius_px(degs[i], scale) for i in blurred)
        if r >= min(h, w):
            raise InputError(f"image of {h}x{w} px is too small for a blur kernel of radius {r} px")
        k = np.stack([blur_kernel(degs[i], scale, r) for i in blurred])
        kt = torch.as_tensor(k, dtype=hr.dtype, device=hr.device)
        kt = kt[:, None].repeat_interleave(c, dim=0)  # (len * C, 1, kh, kw)
        sub = hr[blurred].reshape(1, len(blurred) * c, h, w)
        sub = F.pad(sub, (r, r, r, r), mode="reflect")
        sub = F.conv2d(sub, kt, groups=len(blurred) * c).reshape(len(blurred), c, h, w)
        x = hr.clone()
        x[blurred] = sub
    lr = torch.empty((n, c, h // scale, w // scale), dtype=hr.dtype, device=hr.device)
    for kernel in KERNELS:
        idx = [i for i, d in enumerate(degs) if d.kernel == kernel]
        if idx:
            lr[idx] = _downsample(x[idx], kernel, scale)
    sigmas = torch.tensor([d.noise_sigma for d in degs], dtype=hr.dtype)
    if bool((sigmas > 0).any()):
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype)
        spread = hr.reshape(n, -1).std(dim=1).cpu()
        lr = lr + ((sigmas * spread).view(-1, 1, 1, 1) * noise).to(lr.device)
    return lr


@dataclass(frozen=True)
class TrainingDegradation:
    """What a training run degrades with: a named fixed degradation or :data:`RANDOM`."""

    name: str = RANDOM
    distribution: RandomDegradations = field(default_factory=RandomDegradations)

    def __post_init__(self) -> None:
        if self.name != RANDOM:
            parse(self.name)

    def batch(self, count: int, rng: np.random.Generator) -> list[Degradation]:
        """The degradations of one batch of ``count`` pairs."""
        if self.name == RANDOM:
            return draw(count, rng, self.distribution)
        return [NAMED[self.name]] * count

    def describe(self) -> str:
        if self.name == RANDOM:
            return self.distribution.describe()
        return f"{self.name}: {NAMED[self.name].describe()}"
