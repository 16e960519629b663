"""Super-resolution models: networks, descriptors, weights files and the registry.

The one list of what exists is :mod:`sr_core.models.registry`; start there (``load_model``,
``list_models``).
"""

from sr_core.models.base import SRModel
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.registry import (
    ARCHITECTURES,
    DEFAULT_MODEL,
    SHIPPED,
    build_module,
    describe,
    list_models,
    load_model,
    resolve_device,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "SHIPPED",
    "ModelDescriptor",
    "SRModel",
    "build_module",
    "describe",
    "list_models",
    "load_model",
    "resolve_device",
]
