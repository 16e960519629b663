"""The shipped models by name, readable without importing PyTorch.

The process that plans a run (the CLI, a Prefect flow) needs a model's descriptor (scale,
receptive field, size multiple) but never runs the network: the Dask workers do. Importing torch
there costs about 2 s of start-up and 1 GB of resident memory for nothing, so the shipped models'
cards carry their descriptor (``"descriptor"``, written by ``scripts/train_shipped.sh`` through
:func:`sr_core.training.train.train`) and :func:`describe_shipped` reads it from the card. A test
holds every shipped card's descriptor equal to :func:`sr_core.models.architectures.describe` of its
arguments. The ``bicubic`` baseline has no weights: :func:`describe_bicubic` and
:func:`bicubic_card` give its descriptor and card. Everything else (third-party checkpoints, user
weights) goes through :func:`sr_core.models.registry.load_model`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from sr_core.errors import InputError, ModelError
from sr_core.models.descriptor import ModelDescriptor

#: Registry name -> weights file stem in :data:`WEIGHTS_DIR`. Names are ``<architecture>-x<scale>``.
SHIPPED: dict[str, str] = {
    "edsr-x2": "edsr_x2",
    "edsr-x4": "edsr_x4",
    "espcn-x2": "espcn_x2",
}

#: Constructor arguments of the shipped models. The defaults (EDSR x2 and x4, 8 blocks of 32
#: features) are small enough to train and run on a CPU, start at bicubic quality thanks to the
#: bicubic residual, are intensity-equivariant (bias-free, offset-free: the same behaviour for a
#: DEM's metres and a photo's DN) and add only detail the LR image lacks (``detail_only``); ESPCN
#: x2 is the small fast one (no residual).
_EDSR_SMALL = {"in_channels": 1, "n_resblocks": 8, "n_feats": 32, "res_scale": 1.0,
               "rgb_range": 1.0, "bicubic_residual": True, "equivariant": True,
               "detail_only": True}
SHIPPED_ARGUMENTS: dict[str, dict[str, Any]] = {
    "edsr-x2": {"scale": 2, **_EDSR_SMALL},
    "edsr-x4": {"scale": 4, **_EDSR_SMALL},
    "espcn-x2": {"scale": 2, "in_channels": 1},
}

DEFAULT_MODEL = "edsr"
DEFAULT_SCALE = 2
#: Keys' kernel (a = -0.5) has support 2: an HR pixel reads LR pixels at most 2 away (LR px).
BICUBIC_RECEPTIVE_FIELD_PX = 2
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def split_shipped_name(name: str) -> tuple[str, int]:
    """``"edsr-x2"`` -> ``("edsr", 2)``."""
    architecture, _, scale = name.rpartition("-x")
    return architecture, int(scale)


def shipped_scales(architecture: str) -> list[int]:
    """The scales ``architecture`` has shipped weights for (empty when none)."""
    return sorted(s for a, s in map(split_shipped_name, SHIPPED) if a == architecture)


def shipped_name(ref: str, scale: int | None) -> str | None:
    """The shipped model ``ref`` means at ``scale``: ``"edsr"`` + 2 -> ``"edsr-x2"``;
    ``"edsr-x2"`` itself; ``None`` when ``ref`` names no shipped model.

    Raises:
        ModelError: ``ref`` has shipped weights but none for ``scale``, or a shipped name whose
            scale disagrees with ``scale``.
    """
    if ref in SHIPPED:
        _, have = split_shipped_name(ref)
        if scale is not None and scale != have:
            raise ModelError(f"{ref}: upscales x{have}, but scale {scale} was asked for")
        return ref
    scales = shipped_scales(ref)
    if not scales:
        return None
    want = scale or DEFAULT_SCALE
    if want not in scales:
        shipped = ", ".join(f"x{s}" for s in scales)
        raise ModelError(
            f"{ref}: no shipped weights for x{want} (shipped: {shipped}); use 'bicubic' or a "
            f"local .safetensors trained for x{want}"
        )
    return f"{ref}-x{want}"


def shipped_path(name: str) -> Path:
    """The weights file of shipped model ``name`` (which may be missing)."""
    return WEIGHTS_DIR / f"{SHIPPED[name]}.safetensors"


def check_scale(scale) -> None:
    """Check an asked-for upscaling factor (``None``: the model's own).

    Raises:
        InputError: ``scale`` is not an integer >= 2.
    """
    if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool) or scale < 2):
        raise InputError(f"scale must be an integer >= 2, got {scale!r}")


def describe_bicubic(name: str, *, scale: int = 2, in_channels: int = 1) -> ModelDescriptor:
    """Descriptor of the bicubic baseline (:class:`sr_core.models.bicubic.Bicubic`: Keys' cubic
    convolution, R. Keys, IEEE Trans. ASSP 29(6), 1981) built with these arguments (``scale``
    an integer >= 2, ``in_channels`` bands run at once).

    Returns:
        A descriptor with ``receptive_field_px == 2`` and ``size_multiple == 1``.
    """
    return ModelDescriptor(
        name=name, architecture="bicubic", scale=scale, in_channels=in_channels,
        out_channels=in_channels, receptive_field_px=BICUBIC_RECEPTIVE_FIELD_PX,
    )


def bicubic_card(scale: int) -> dict:
    """The card of the bicubic baseline at ``scale`` (no weights: Keys, IEEE Trans. ASSP 1981)."""
    arguments = {"scale": scale, "in_channels": 1}
    return {
        "name": f"bicubic-x{scale}", "architecture": "bicubic", "arguments": arguments,
        "scale": scale, "in_channels": 1, "bands": "band by band",
        "normalisation": "any; interpolation is linear in the pixel values",
        "note": "Keys' cubic kernel, a = -0.5 (MATLAB imresize / Pillow), no weights",
    }


def describe_shipped(ref: str, scale: int | None) -> tuple[ModelDescriptor, dict] | None:
    """Descriptor and card of a shipped model (or of ``bicubic``), from its card alone (no torch,
    no weights read).

    Args:
        ref: a model reference as :func:`sr_core.models.registry.load_model` takes it.
        scale: the scale asked for, or ``None``.

    Returns:
        ``(descriptor, card)``, or ``None`` when ``ref`` is not a shipped model, its weights are
        not installed or its card carries no descriptor (the caller then loads the model).

    Raises:
        ModelError: a shipped model without weights for ``scale``; a malformed card.
        InputError: ``bicubic`` with a ``scale`` that is not an integer >= 2.
    """
    from sr_core.models.weights import read_card

    if ref == "bicubic":
        check_scale(scale)
        card = bicubic_card(scale or DEFAULT_SCALE)
        return describe_bicubic(card["name"], **card["arguments"]), card
    name = shipped_name(ref, scale)
    if name is None or not shipped_path(name).is_file():
        return None
    card = read_card(shipped_path(name))
    stored = card.get("descriptor")
    if not isinstance(stored, dict):
        return None
    known = {f.name for f in fields(ModelDescriptor)}
    if set(stored) - known:
        raise ModelError(f"{shipped_path(name)}: card descriptor has unknown fields "
                         f"{sorted(set(stored) - known)}")
    if stored.get("supported_scales") is not None:
        stored = {**stored, "supported_scales": tuple(stored["supported_scales"])}
    return ModelDescriptor(**stored), card
