"""Super-resolution models: networks, descriptors, weights files and the registry.

The one list of what exists is :mod:`sr_core.models.registry`; start there (``load_model``,
``list_models``); the architectures themselves are listed in :mod:`sr_core.models.architectures`.
The names below are imported on first use, so that importing
:mod:`sr_core.models.descriptor` or :mod:`sr_core.models.catalog` (what a process that only plans
a run needs) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SRModel": "sr_core.models.base",
    "ModelDescriptor": "sr_core.models.descriptor",
    "ARCHITECTURES": "sr_core.models.architectures",
    "DEFAULT_MODEL": "sr_core.models.catalog",
    "SHIPPED": "sr_core.models.catalog",
    "build_module": "sr_core.models.architectures",
    "describe": "sr_core.models.architectures",
    "list_models": "sr_core.models.registry",
    "load_model": "sr_core.models.registry",
    "resolve_device": "sr_core.models.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sr_core.models' has no attribute {name!r}")
