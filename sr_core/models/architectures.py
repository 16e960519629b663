"""The one list of architectures: architecture key -> network class, descriptor function, paper
and scales, and building a network or its descriptor from constructor arguments.

Below :mod:`sr_core.models.registry` (loading by name or path) and
:mod:`sr_core.models.detect` (recognising a checkpoint's layout), which both build networks
through :func:`build_module`. May import :mod:`sr_core.errors` and the network modules of
:mod:`sr_core.models` (each a module plus its ``describe_*`` function); nothing above them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from sr_core.errors import ModelError
from sr_core.models.bicubic import Bicubic, describe_bicubic
from sr_core.models.descriptor import ModelDescriptor
from sr_core.models.edsr import EDSR, describe_edsr
from sr_core.models.espcn import ESPCN, describe_espcn
from sr_core.models.fsrcnn import FSRCNN, describe_fsrcnn
from sr_core.models.imdn import IMDN, describe_imdn
from sr_core.models.rrdbnet import RRDBNet, describe_rrdbnet
from sr_core.models.srcnn import SRCNN, describe_srcnn
from sr_core.models.srresnet import (
    MSRResNet,
    SRResNet,
    describe_msrresnet,
    describe_srresnet,
)
from sr_core.models.vdsr import VDSR, describe_vdsr


@dataclass(frozen=True)
class Architecture:
    """An architecture: how to build its network and describe it from the same arguments.

    Attributes:
        builder: the network class (keyword-only constructor with the paper's defaults).
        describe: ``describe(name, **arguments) -> ModelDescriptor``.
        paper: short citation (the class docstring has the full one).
        scales: the scales it can be built for; ``None``: any integer >= 2.
    """

    builder: Callable[..., nn.Module]
    describe: Callable[..., ModelDescriptor]
    paper: str
    scales: tuple[int, ...] | None = None


ARCHITECTURES: dict[str, Architecture] = {
    "bicubic": Architecture(Bicubic, describe_bicubic, "Keys, IEEE Trans. ASSP 1981"),
    "srcnn": Architecture(SRCNN, describe_srcnn, "Dong et al., ECCV 2014"),
    "fsrcnn": Architecture(FSRCNN, describe_fsrcnn, "Dong et al., ECCV 2016",
                           (2, 3, 4, 5, 6, 7, 8)),
    "espcn": Architecture(ESPCN, describe_espcn, "Shi et al., CVPR 2016"),
    "vdsr": Architecture(VDSR, describe_vdsr, "Kim et al., CVPR 2016"),
    "edsr": Architecture(EDSR, describe_edsr, "Lim et al., CVPRW 2017", (2, 3, 4, 8)),
    "srresnet": Architecture(SRResNet, describe_srresnet, "Ledig et al., CVPR 2017", (2, 4, 8)),
    "msrresnet": Architecture(MSRResNet, describe_msrresnet, "Wang et al., ECCVW 2018 (BasicSR)",
                              (2, 3, 4)),
    "imdn": Architecture(IMDN, describe_imdn, "Hui et al., ACM MM 2019"),
    "rrdbnet": Architecture(RRDBNet, describe_rrdbnet, "Wang et al., ECCVW 2018", (2, 4)),
}


def _architecture(architecture: str) -> Architecture:
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise ModelError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None


def _bind(architecture: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with the constructor's defaults filled in; unknown names -> ModelError."""
    sig = inspect.signature(_architecture(architecture).builder)
    try:
        bound = sig.bind(**arguments)
    except TypeError as e:
        raise ModelError(f"{architecture}: bad arguments {arguments}: {e}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def build_module(architecture: str, **arguments: Any) -> nn.Module:
    """Build an architecture's network (randomly initialised, train mode).

    Args:
        architecture: a key of :data:`ARCHITECTURES`.
        **arguments: the constructor's keyword arguments.

    Returns:
        The ``nn.Module``.

    Raises:
        ModelError: unknown architecture or bad arguments.
    """
    return _architecture(architecture).builder(**_bind(architecture, arguments))


def describe(architecture: str, name: str, **arguments: Any) -> ModelDescriptor:
    """The descriptor of ``architecture`` built with ``arguments`` (defaults filled in).

    Raises:
        ModelError: unknown architecture or bad arguments.
    """
    arch = _architecture(architecture)
    return replace(arch.describe(name, **_bind(architecture, arguments)),
                   supported_scales=arch.scales)
