"""The one list of architectures and shipped models, and loading a model by name or path.

Everything a model can be is written here, explicitly (no registration by import side effect):

* :data:`ARCHITECTURES` (defined in :mod:`sr_core.models.architectures`, below this module and
  :mod:`sr_core.models.detect`): architecture key -> network class and descriptor function;
* :data:`SHIPPED` (defined in the torch-free :mod:`sr_core.models.catalog`): registry name
  (``"<architecture>-x<scale>"``) -> weights file stem in ``sr_core/models/weights/``
  (``NAME.safetensors`` + ``NAME.json`` card);
* :data:`SHIPPED_ARGUMENTS`: the constructor arguments the shipped weights are trained with (the
  card is what loading uses; these let ``list_models`` describe a model before its file exists).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from sr_core.errors import InputError, ModelError
from sr_core.models import catalog
from sr_core.models.architectures import (
    ARCHITECTURES,
    Architecture,
    build_module,
    describe,
)
from sr_core.models.base import SRModel
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.detect import detect_architecture
from sr_core.models.weights import (
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    load_weights,
    read_card,
)

# re-exported: the names are defined in the torch-free catalog
SHIPPED = catalog.SHIPPED
SHIPPED_ARGUMENTS = catalog.SHIPPED_ARGUMENTS
DEFAULT_MODEL = catalog.DEFAULT_MODEL
DEFAULT_SCALE = catalog.DEFAULT_SCALE
# re-exported: the architectures' list lives below the registry and the checkpoint detection
# (:mod:`sr_core.models.architectures`), so neither imports the other
__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "DEFAULT_SCALE",
    "SHIPPED",
    "SHIPPED_ARGUMENTS",
    "Y_CHANNEL_REFERENCES",
    "Architecture",
    "build_module",
    "describe",
    "list_models",
    "load_model",
    "model_reach",
    "resolve_device",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        InputError: an unknown device, or CUDA asked for on a machine without it.
    """
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"device {text!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(f"device {text!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise InputError(f"device {text!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(
            f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s) present"
        )
    return dev


def _finish(module: nn.Module, descriptor: ModelDescriptor, card: dict, device: torch.device
            ) -> SRModel:
    module = module.eval().requires_grad_(False).to(device)
    return SRModel(module=module, descriptor=descriptor, card=card, device=device)


def _bicubic(scale: int, device: torch.device) -> SRModel:
    card = catalog.bicubic_card(scale)
    return _finish(build_module("bicubic", **card["arguments"]),
                   describe("bicubic", card["name"], **card["arguments"]), card, device)


def _load_native(path: Path, architecture: str, arguments: dict, state: dict) -> nn.Module:
    """Build ``architecture(**arguments)`` and load ``state`` into it (strict)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the random init is overwritten; keep the caller's RNG untouched
        module = build_module(architecture, **arguments)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing = sorted(set(module.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(module.state_dict()))
        detail = (f"missing {missing[:4]}, unexpected {unexpected[:4]}" if missing or unexpected
                  else str(e).splitlines()[-1].strip())
        raise ModelError(
            f"{path}: weights do not fit {architecture}({arguments}): {detail}"
        ) from None
    return module


def _check_scale(path: Path, have: int, scale: int | None) -> None:
    if scale is not None and scale != have:
        raise ModelError(
            f"{path}: this model upscales x{have}, but scale {scale} was asked for; "
            f"drop the scale option or pick a model trained for x{scale}"
        )


#: Architectures whose published 1-channel weights are Y-channel (BT.601 luma) models.
Y_CHANNEL_REFERENCES = ("srcnn", "fsrcnn", "vdsr")


def _luma(descriptor: ModelDescriptor) -> ModelDescriptor:
    """A Y-channel model: the chroma's bicubic upsampling reaches 2 LR px."""
    from sr_core.models.bicubic import BICUBIC_RECEPTIVE_FIELD_PX

    return replace(descriptor, colour="y", receptive_field_px=max(
        descriptor.receptive_field_px, BICUBIC_RECEPTIVE_FIELD_PX))


def _recognised(path: Path, state: dict, name: str | None, scale: int | None,
                device: torch.device) -> SRModel:
    """A checkpoint without a card: a native layout recognised from keys and shapes, else
    spandrel."""
    name = name or path.stem
    found = detect_architecture(state, scale=scale, where=str(path))
    if found is None:
        from sr_core.models.thirdparty import load_spandrel

        module, descriptor, card = load_spandrel(state, name=name, where=str(path))
        _check_scale(path, descriptor.scale, scale)
        return _finish(module, descriptor, card, device)
    architecture, arguments = found
    _check_scale(path, arguments["scale"], scale)
    module = _load_native(path, architecture, arguments, state)
    descriptor = describe(architecture, name, **arguments)
    if architecture in Y_CHANNEL_REFERENCES and descriptor.in_channels == 1:
        descriptor = _luma(descriptor)
    card = {
        "name": name, "architecture": architecture, "arguments": arguments,
        "scale": descriptor.scale, "in_channels": descriptor.in_channels,
        "bands": "band by band" if descriptor.in_channels == 1 else
                 f"groups of {descriptor.in_channels} bands",
        "normalisation": "[0, 1] (8-bit data / 255), the reference implementations' convention",
        "colour": descriptor.colour,
        "source": "recognised from the checkpoint's keys and tensor shapes (no model card)",
    }
    return _finish(module, descriptor, card, device)


def _from_file(path: Path, name: str | None, scale: int | None, device: torch.device) -> SRModel:
    state, card = load_weights(path, require_card=False)
    if card is None:
        from sr_core.storage import sha256_file

        model = _recognised(path, state, name, scale, device)
        model.card["sha256"] = sha256_file(str(path))  # what caches and manifests key on
        return model
    architecture, arguments = card["architecture"], card["arguments"]
    if architecture == "bicubic" or architecture not in ARCHITECTURES:
        raise ModelError(
            f"{path}: card names architecture {architecture!r}; expected one of "
            f"{', '.join(a for a in ARCHITECTURES if a != 'bicubic')}"
        )
    _check_scale(path, card["scale"], scale)
    module = _load_native(path, architecture, arguments, state)
    descriptor = describe(architecture, name or card["name"], **arguments)
    if card.get("colour") == "y":
        if descriptor.in_channels != 1:
            raise ModelError(f"{path}: card says colour 'y' but the model has "
                             f"{descriptor.in_channels} channels")
        descriptor = _luma(descriptor)
    if descriptor.scale != card["scale"]:
        raise ModelError(f"{path}: card scale {card['scale']} != arguments' {descriptor.scale}")
    return _finish(module, descriptor, card, device)


def _fetch_s3_model(uri: str) -> Path:
    """Download an ``s3://`` weights file (and its ``.json`` card when there is one) into a
    local cache keyed by the URL and the object's ETag, so each process downloads a given
    version once (``$SR_MODEL_CACHE``, default ``<temp dir>/sr-pipeline-models``).

    Raises:
        InputError: malformed URL or no such object; StorageError: S3 unreachable.
    """
    import hashlib
    import tempfile

    from sr_core import storage

    bucket, key = storage.parse_s3(uri)
    etag = storage.object_etag(uri)
    root = Path(os.environ.get("SR_MODEL_CACHE")
                or Path(tempfile.gettempdir()) / "sr-pipeline-models")
    folder = root / hashlib.sha256(f"{uri}\n{etag}".encode()).hexdigest()[:16]
    path = folder / Path(key).name
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    card_uri = f"s3://{bucket}/{str(Path(key).with_suffix('.json'))}"
    wanted = [(uri, path)]
    if storage.exists(card_uri):
        wanted.insert(0, (card_uri, path.with_suffix(".json")))
    for src, dst in wanted:  # the card first: the weights file appearing marks completion
        os.replace(storage.fetch(src, folder), dst)
    return path


def _looks_like_path(ref: str) -> bool:
    return (os.sep in ref or "/" in ref
            or ref.lower().endswith((SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)))


def load_model(ref: str, *, scale: int | None = None, device: str | torch.device = "cpu"
               ) -> SRModel:
    """Load a model, ready to run (eval mode, no gradients, on ``device``).

    ``ref`` is one of:

    * ``"bicubic"``: the baseline; any ``scale`` (default 2);
    * an architecture (``"edsr"``, ``"espcn"``): its shipped model for ``scale`` (default 2),
      e.g. ``"edsr"`` + 2 -> ``"edsr-x2"``;
    * a shipped name (``"edsr-x2"``); ``scale``, if given, must agree;
    * a path to a ``.safetensors`` (or ``.pth``/``.pt``/``.ckpt``) file with its ``.json`` card
      beside it; ``scale``, if given, must agree with the card;
    * an ``s3://bucket/key`` URL of such a file (its card ``key`` with ``.json`` beside it, when
      there is one), downloaded once per version into a local cache;
    * a path to such a file without a card: a native architecture recognised from its keys and
      tensor shapes (:mod:`sr_core.models.detect`; SRCNN, VDSR and FSRCNN need ``scale``), or
      else any architecture spandrel recognises (:mod:`sr_core.models.thirdparty`).

    Loading is deterministic and does not touch the global RNG.

    Args:
        ref: see above.
        scale: integer upscaling factor, or None for the model's own (2 for bicubic).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Returns:
        An :class:`SRModel`.

    Raises:
        ModelError: unknown name, no shipped weights for that scale, weights file missing or
            unsafe (needs full unpickling), card malformed, an unrecognised checkpoint without
            a card, scale disagreeing with the model.
        InputError: bad device, or ``scale`` not an integer >= 2.
    """
    dev = resolve_device(device)
    catalog.check_scale(scale)
    if ref == "bicubic":
        return _bicubic(scale or DEFAULT_SCALE, dev)
    name = catalog.shipped_name(ref, scale)
    if name is None and ref in ARCHITECTURES:
        want = scale or DEFAULT_SCALE
        raise ModelError(f"{ref}: no shipped weights for x{want} (shipped: none); use 'bicubic' "
                         f"or a local .safetensors trained for x{want}")
    if name is not None:
        path = catalog.shipped_path(name)
        if not path.is_file():
            raise ModelError(
                f"{name}: shipped weights file {path} is missing (not trained yet, or the package "
                f"was installed without it); use 'bicubic' or a local .safetensors"
            )
        return _from_file(path, name, scale, dev)
    if ref.startswith("s3://"):
        return _from_file(_fetch_s3_model(ref), None, scale, dev)
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelError(f"{ref}: model weights file not found")
        return _from_file(path, None, scale, dev)
    raise ModelError(
        f"unknown model {ref!r}; expected one of: bicubic, "
        f"{', '.join([*(a for a in ARCHITECTURES if a != 'bicubic'), *SHIPPED])}, "
        f"or a path to a .safetensors file"
    )


def model_reach(model: SRModel, *, budget_s: float | None = None):
    """The model's effective receptive field (:mod:`sr_core.models.effective`): read from the
    cache by the weights' SHA-256, else measured (within ``budget_s`` seconds, default
    :data:`~sr_core.models.effective.BUDGET_S`) and cached.

    Returns:
        An :class:`~sr_core.models.effective.EffectiveReach`, or ``None`` for a model without
        weights (bicubic: its analytic radius is exact and tiny).

    Raises:
        ModelError, InputError: the model cannot run on the probe image.
    """
    from sr_core.models import effective

    sha = model.card.get("sha256")
    if not sha:
        return None
    return effective.reach_for(model, sha, budget_s=budget_s or effective.BUDGET_S)


def list_models() -> list[dict]:
    """One row per model ``load_model`` knows by name, for ``sr-pipeline models``.

    Returns:
        Dicts with ``name``, ``architecture``, ``scale`` (int, or ``"any"`` for bicubic),
        ``channels`` (1 = band by band), ``receptive_field_px`` (LR px) and ``weights`` (the file
        name, ``"none"`` for bicubic, ``"<file> (missing)"`` when not installed,
        ``"<file> (bad card)"``). A shipped model's row comes from its card when installed, else
        from :data:`SHIPPED_ARGUMENTS`.
    """
    rows = [{"name": "bicubic", "architecture": "bicubic", "scale": "any", "channels": 1,
             "receptive_field_px": describe("bicubic", "bicubic").receptive_field_px,
             "weights": "none"}]
    for name, stem in SHIPPED.items():
        architecture, scale = catalog.split_shipped_name(name)
        file = f"{stem}{SAFETENSORS_SUFFIX}"
        arguments, weights = SHIPPED_ARGUMENTS[name], f"{file} (missing)"
        if catalog.shipped_path(name).is_file():
            try:  # the card, when installed, is the truth
                arguments, weights = read_card(catalog.shipped_path(name))["arguments"], file
            except ModelError:
                weights = f"{file} (bad card)"
        d = describe(architecture, name, **arguments)
        rows.append({
            "name": name, "architecture": architecture, "scale": scale,
            "channels": d.in_channels, "receptive_field_px": d.receptive_field_px,
            "weights": weights,
        })
    return rows
