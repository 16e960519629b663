"""Weights files: our safetensors + model-card format, and safe loading of PyTorch checkpoints.

Our format is two files side by side:

* ``NAME.safetensors``: the network's ``state_dict`` (tensors only; loading runs no code);
* ``NAME.json``: the model card, a JSON object with

  - ``name``: registry name, e.g. ``"edsr-x2"``;
  - ``architecture``: key of :data:`sr_core.models.architectures.ARCHITECTURES`;
  - ``arguments``: the constructor's keyword arguments (``scale`` included);
  - ``scale``, ``in_channels``: repeated for readers that do not build the network;
  - ``bands``: the band policy in words; ``normalisation``: what [0, 1] input means;
  - ``colour`` (optional): ``"y"`` for a 1-channel model trained on BT.601 luma (run on Y of
    3-band scenes, chroma by bicubic), else absent or ``"bands"``;
  - ``training``: ``scenes``, ``validation_scenes``, ``epochs``/``steps``, ``patch_size``,
    ``loss``, ``optimiser``, ``seed``;
  - ``metrics``: ``{"validation": {"model": {"psnr":, "ssim":}, "bicubic": {...}}}``;
  - ``sha256``: hex digest of the weights file (the pin), written by :func:`save_model` and
    checked by :func:`verify_pin` *before* the file is deserialised, so a swapped or corrupted
    file is refused unread.

  ``name``, ``architecture``, ``arguments``, ``scale`` and ``sha256`` are required.

Third-party PyTorch checkpoints (``.pth``, ``.pt``, ``.ckpt``) are read only with
``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain
containers; a checkpoint that needs full unpickling (which can run arbitrary code) is refused.
A third-party checkpoint may come without a card (its layout is then recognised from its keys);
with a card beside it, the card's ``sha256`` pins it like our own files.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sr_core.errors import ModelError
from sr_core.storage import sha256_file  # noqa: F401 - re-exported: cards pin it

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
REQUIRED_CARD_KEYS = {"name": str, "architecture": str, "arguments": dict, "scale": int,
                      "sha256": str}
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")

if TYPE_CHECKING:  # torch is imported where tensors are read or written: reading a card needs none
    import torch
    from torch import nn


def card_path(weights_path: str | os.PathLike) -> Path:
    """The model card's path for a weights file: same stem, ``.json``."""
    return Path(weights_path).with_suffix(".json")


def _check_card(card: Any, where: str, *, with_sha: bool = True) -> dict:
    if not isinstance(card, dict):
        raise ModelError(f"{where}: model card must be a JSON object")
    for key, typ in REQUIRED_CARD_KEYS.items():
        if key == "sha256" and not with_sha:
            continue
        value = card.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ModelError(
                f"{where}: model card needs '{key}' ({typ.__name__}), got {value!r}"
            )
    if card["arguments"].get("scale", card["scale"]) != card["scale"]:
        raise ModelError(
            f"{where}: model card says scale {card['scale']} but arguments say "
            f"{card['arguments']['scale']}"
        )
    return card


def read_card(weights_path: str | os.PathLike) -> dict:
    """Read and check the model card beside a weights file.

    Args:
        weights_path: the ``.safetensors`` (or ``.pth``) file; the card is its ``.json`` sibling.

    Returns:
        The card as a dict, with the required keys present and typed.

    Raises:
        ModelError: the card is missing, not JSON, or lacks a required key (message names it).
    """
    path = card_path(weights_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(
            f"{path}: model card missing; every weights file needs its NAME.json card beside it "
            f"(write both with sr_core.models.weights.save_model)"
        ) from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read model card: {e}") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: model card is not valid JSON: {e}") from None
    return _check_card(card, str(path))


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint and normalise its keys.

    Unwraps (repeatedly) the containers training frameworks put around it, preferring
    ``params_ema`` (BasicSR's EMA weights) over ``params``, ``state_dict`` (Lightning) and
    ``model``, then strips a ``module.`` prefix (``DataParallel``) when every key has it.

    Args:
        obj: what ``torch.load`` returned.
        where: file name for messages.

    Returns:
        ``{parameter name: tensor}``.

    Raises:
        ModelError: no mapping of names to tensors is found.
    """
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{where}: no state dict found (expected a mapping of names to tensors)")
    import torch

    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{where}: not a state dict: entries {bad[:3]} are not named tensors "
            f"(top-level keys: {list(obj)[:5]})"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _load_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path}: checkpoint needs full unpickling, which can run code; refusing. Convert it "
            f"to safetensors in a trusted environment (torch.load, then "
            f"sr_core.models.weights.save_model)"
        ) from None
    except Exception as e:  # corrupt zip, truncated file, ...
        raise ModelError(f"{path}: cannot read PyTorch checkpoint: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return unwrap_state_dict(obj, str(path))


def load_weights(path: str | os.PathLike, *, require_card: bool = True
                 ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Load a weights file (safetensors or PyTorch checkpoint) and its model card.

    Args:
        path: ``NAME.safetensors``, or ``NAME.pth`` / ``.pt`` / ``.ckpt``.
        require_card: the ``NAME.json`` card must exist; when False and the file has no card,
            the card returned is ``None`` (the caller recognises the architecture).

    Returns:
        ``(state_dict, card)``: CPU tensors keyed by parameter name, and the card.

    Raises:
        ModelError: the file is missing, unreadable, of an unknown type, needs full unpickling,
            holds no state dict, its card is missing or malformed, or its SHA-256 differs from
            the card's.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if suffix != SAFETENSORS_SUFFIX and suffix not in TORCH_SUFFIXES:
        raise ModelError(
            f"{path}: unknown weights format '{suffix}'; expected .safetensors or "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    card = None
    if require_card or card_path(path).exists():
        card = read_card(path)
        verify_pin(path, card["sha256"])  # before a single byte is deserialised
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as e:
            raise ModelError(f"{path}: cannot read safetensors file: {e}") from None
    else:
        state = _load_torch_checkpoint(path)
    return state, card


def verify_pin(path: str | os.PathLike, pinned: str) -> None:
    """Check a weights file against the SHA-256 its card pins, before it is loaded.

    Args:
        path: the weights file.
        pinned: the card's ``sha256`` (64 hex digits, any case; ``sha256:`` prefix allowed).

    Raises:
        ModelError: the pin is not a SHA-256 hex digest, or the file's digest differs (one line
            with both digests' first 12 digits).
    """
    want = pinned.strip().lower().removeprefix("sha256:")
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ModelError(f"{card_path(path)}: 'sha256' must be 64 hex digits, got {pinned!r}")
    digest = sha256_file(path)
    if digest != want:
        raise ModelError(
            f"{path}: SHA-256 {digest[:12]}... differs from the {want[:12]}... its card pins; "
            f"refusing to load it (the weights changed after the card was written)"
        )


def save_model(module: nn.Module, card: dict, path: str | os.PathLike) -> Path:
    """Write ``NAME.safetensors`` and its ``NAME.json`` card (with ``sha256`` filled in).

    Args:
        module: the network; its ``state_dict`` is saved (moved to CPU, made contiguous).
        card: the model card without ``sha256`` (see the module docstring); not modified.
        path: ``NAME.safetensors`` (the suffix is added when absent). Parent folders are
            created.

    Returns:
        The ``.safetensors`` path.

    Raises:
        ModelError: the card lacks a required key or has a wrong type.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        path = path.with_name(path.name + SAFETENSORS_SUFFIX)
    card = _check_card(dict(card), str(card_path(path)), with_sha=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, tmp, metadata={"name": card["name"], "architecture": card["architecture"]})
    os.replace(tmp, path)
    card["sha256"] = sha256_file(path)
    card_tmp = card_path(path).with_name(card_path(path).name + ".tmp")
    card_tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(card_tmp, card_path(path))
    return path
