"""The model as the main process sees it (:class:`ModelInfo`) and how it is resolved from a name
or weights path without loading weights where a cache already describes it
(:func:`resolve_model`).

May import: :mod:`sr_core.storage` and :mod:`sr_core.models` (catalog, registry, descriptor,
effective receptive field cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sr_core import storage
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.effective import EffectiveReach


@dataclass(frozen=True)
class ModelInfo:
    """The model as the main process sees it: reference, descriptor, card (no weights) and its
    effective receptive field (:mod:`sr_core.models.effective`; ``None`` for bicubic)."""

    ref: str
    descriptor: ModelDescriptor
    card: dict
    reach: EffectiveReach | None = None



def resolve_model(ref: str | None, scale: int | None) -> ModelInfo:
    """The model's descriptor, card and effective receptive field in the main process (weights
    are loaded on workers).

    A shipped model is described from its card without importing torch
    (:func:`sr_core.models.catalog.describe_shipped`) and its effective receptive field read
    from the cache (:mod:`sr_core.models.effective`, keyed by the weights' SHA-256); so is a
    local weights file described before (:func:`_cached_checkpoint`). Anything else, or a cache
    miss, loads the model once here, which also checks the weights file before any work starts,
    and measures it (bounded by the probe's compute budget; cached).

    Raises:
        ModelError: unknown name, missing or malformed weights, or a scale it does not support.
    """
    from sr_core.models.catalog import DEFAULT_MODEL, describe_shipped
    from sr_core.models.effective import cached_reach

    ref = ref or DEFAULT_MODEL
    found = describe_shipped(ref, scale)
    if found is not None:
        sha = found[1].get("sha256")
        reach = cached_reach(sha) if sha else None
        if reach is not None or not sha:
            return ModelInfo(ref=ref, descriptor=found[0], card=found[1], reach=reach)
    key = _checkpoint_key(ref, scale)
    cached = _cached_checkpoint(ref, key)
    if cached is not None:
        return cached
    from sr_core.models.registry import load_model, model_reach

    model = load_model(ref, scale=scale, device="cpu")
    info = ModelInfo(ref=ref, descriptor=model.descriptor, card=model.card,
                     reach=model_reach(model))
    if key is not None and model.card.get("sha256") == key[0]:
        from sr_core.models.effective import save_description

        save_description(key[0], key[1], model.descriptor.to_dict(), model.card)
    return info


def _checkpoint_key(ref: str, scale: int | None) -> tuple[str, dict] | None:
    """For a local weights file: its SHA-256 and what else its description depends on (the file
    name, the scale asked for, the SHA-256 of the card beside it if any); else ``None``."""
    if storage.is_s3(ref) or not os.path.isfile(ref):
        return None
    card = os.path.splitext(ref)[0] + ".json"
    card_sha = storage.sha256_file(card) if os.path.isfile(card) else None
    name = os.path.splitext(os.path.basename(ref))[0]  # a card-less model's name
    return storage.sha256_file(ref), {"name": name, "scale": scale, "card_sha256": card_sha}


def _cached_checkpoint(ref: str, key: tuple[str, dict] | None) -> ModelInfo | None:
    """A local weights file described from the cache under ``key`` (:func:`_checkpoint_key`:
    its SHA-256, its card's and the scale; descriptor, card and effective receptive field)
    without importing torch; ``None`` when not cached. The workers still check the weights
    against the card when they load them."""
    if key is None:
        return None
    from sr_core.models.effective import cached_description, cached_reach

    found, reach = cached_description(*key), cached_reach(key[0])
    if found is None or reach is None:
        return None
    desc, card = found
    try:
        scales = desc.get("supported_scales")
        descriptor = ModelDescriptor(**{**desc, "supported_scales":
                                        tuple(scales) if scales else None})
    except TypeError:  # written by another version
        return None
    return ModelInfo(ref=ref, descriptor=descriptor, card=card, reach=reach)

