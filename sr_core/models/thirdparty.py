"""Third-party architectures through spandrel (Real-ESRGAN / ESRGAN, SwinIR, HAT, RCAN, CRAFT,
Compact, SPAN, ...).

spandrel (https://github.com/chaiNNer-org/spandrel) recognises an architecture from a state dict
and builds its network with the right hyper-parameters; its descriptor gives the scale, the
input/output channels, the size requirements (minimum, multiple of, square) and a tiling hint.
This module turns that into our :class:`~sr_core.models.descriptor.ModelDescriptor`:

* scale and channels from spandrel's descriptor; a model whose input and output channels
  differ, that is not super-resolution (scale 1), or that needs square inputs is refused;
* ``size_multiple`` and ``min_size_px`` from its size requirements (the runner pads and crops
  back); models that partition the image into attention windows (an integer ``window_size``
  attribute) also get that as ``size_multiple``, so tiles start on the same window grid as the
  whole image;
* ``global_context`` when the network has an adaptive pooling layer (:func:`uses_global_pooling`);
* ``tileable=False`` and ``receptive_field_px=0``: spandrel states no receptive field, and
  window-attention transformers (shifted windows chain the whole image together) have no useful
  analytic one. The halo is measured instead, as tiled against whole-image output on a probe
  image (:mod:`sr_core.models.effective`, cached by the weights' SHA-256), and chosen per scene
  by :func:`sr_core.compute.halo.choose_halo`; spandrel's own tiling hint (``SUPPORTED``,
  ``DISCOURAGED``, ``INTERNAL``) is kept in the card.

The state dict is loaded by :func:`sr_core.models.weights.load_weights` (safetensors or
``torch.load(weights_only=True)``), never by spandrel's own file loader, which accepts
TorchScript.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from math import lcm

import torch
from torch import nn

from sr_core.errors import ModelError
from sr_core.models.descriptor import ModelDescriptor

log = logging.getLogger(__name__)

#: Warnings (message regexes) that third-party network code raises while spandrel builds it or
#: it runs for the first time, and that no user can act on: torch's request for an ``indexing=``
#: argument to ``torch.meshgrid`` (SwinIR, HAT, DAT, CRAFT, ... call it in their constructors;
#: FDAT in its forward pass). Torch raises it once per process (``TORCH_WARN_ONCE``).
THIRD_PARTY_WARNINGS = (r"torch\.meshgrid: in an upcoming release",)


@contextmanager
def third_party_quiet() -> Iterator[None]:
    """Ignore :data:`THIRD_PARTY_WARNINGS` inside the block only: ``warnings.catch_warnings``
    restores the process's filters on exit, so no filter outlives the model's loading."""
    with warnings.catch_warnings():
        for message in THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def _first_forward(module: nn.Module, channels: int, side_px: int) -> None:
    """Run ``module`` once on a ``(1, channels, side_px, side_px)`` zero image under
    :func:`third_party_quiet`, so a warning torch gives once per process from a network's
    forward pass is spent here, not printed by the first tile. A network that fails on it is
    left to fail on a real tile, with the pipeline's own message."""
    try:
        with third_party_quiet(), torch.inference_mode():
            module(torch.zeros(1, channels, side_px, side_px))
    except Exception as e:  # noqa: BLE001 - a first tile reports it properly
        log.debug("first forward pass of %s failed: %s: %s", type(module).__name__,
                  type(e).__name__, e)


def _spandrel():
    try:
        import spandrel
    except ImportError as e:  # torchvision missing or mismatched with torch
        raise ModelError(f"spandrel is not usable here ({e}); install sr-pipeline's pinned "
                         f"spandrel and torchvision") from None
    return spandrel


def uses_global_pooling(module: nn.Module) -> bool:
    """Whether a network has an adaptive pooling layer (``nn.AdaptiveAvgPool2d`` /
    ``nn.AdaptiveMaxPool2d``: image-wide statistics, as in squeeze-and-excitation channel
    attention: RCAN, HAT, OmniSR). Channel attention written with tensor means (CRAFT's
    Restormer-style inter attention) is not seen here; the probe measures it."""
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d,
             nn.AdaptiveMaxPool1d)
    return any(isinstance(m, pools) for m in module.modules())


def load_spandrel(state: dict[str, torch.Tensor], *, name: str, where: str
                  ) -> tuple[nn.Module, ModelDescriptor, dict]:
    """Build a spandrel-recognised network from a state dict and describe it.

    Args:
        state: ``{parameter name: tensor}`` (unwrapped).
        name: model name for the descriptor and card.
        where: file name for messages.

    Returns:
        ``(module, descriptor, card)``; the module is spandrel's network (eval mode, CPU),
        run once on a small zero image. Building and that first pass run under
        :func:`third_party_quiet` (torch's warnings about the network's own code are not shown).

    Raises:
        ModelError: spandrel is missing, does not know the layout, or the model does not fit the
            pipeline (not SR, channels in != out, square inputs only).
    """
    spandrel = _spandrel()
    try:
        with third_party_quiet():
            desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        keys = sorted(state)[:4]
        raise ModelError(
            f"{where}: unknown architecture: no model card beside it, its keys (e.g. {keys}) "
            f"match no native layout, and spandrel does not recognise it"
        ) from None
    except Exception as e:
        raise ModelError(f"{where}: spandrel could not build the network: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from None
    arch = desc.architecture.id
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.scale < 2:
        raise ModelError(f"{where}: spandrel architecture {arch} is a {desc.purpose} model of "
                         f"scale {desc.scale}, not super-resolution")
    if desc.input_channels != desc.output_channels:
        raise ModelError(f"{where}: spandrel architecture {arch} maps {desc.input_channels} "
                         f"channels to {desc.output_channels}; the pipeline needs equal counts")
    req = desc.size_requirements
    if req.square:
        raise ModelError(f"{where}: spandrel architecture {arch} needs square inputs; the "
                         f"pipeline cannot tile it")
    module = desc.model.eval()
    window = getattr(module, "window_size", 1)
    multiple = lcm(req.multiple_of, window if isinstance(window, int) and window > 0 else 1)
    _first_forward(module, desc.input_channels, -(-max(req.minimum, multiple, 8) // multiple)
                   * multiple)
    descriptor = ModelDescriptor(
        name=name, architecture=f"spandrel:{arch}", scale=desc.scale,
        in_channels=desc.input_channels, out_channels=desc.output_channels,
        receptive_field_px=0, size_multiple=multiple, min_size_px=req.minimum,
        tileable=False, supported_scales=(desc.scale,), global_context=uses_global_pooling(module),
    )
    card = {
        "name": name, "architecture": descriptor.architecture, "arguments": {},
        "scale": desc.scale, "in_channels": desc.input_channels,
        "bands": "band by band" if desc.input_channels == 1 else
                 f"groups of {desc.input_channels} bands",
        "normalisation": "[0, 1] (spandrel's convention; 8-bit data / 255)",
        "source": f"recognised by spandrel {spandrel.__version__} as {desc.architecture.name} "
                  f"(no model card)",
        "spandrel": {"architecture": arch, "tags": list(desc.tags), "tiling": desc.tiling.name,
                     "size_requirements": {"minimum": req.minimum,
                                           "multiple_of": req.multiple_of},
                     "receptive_field": "effective, measured (sr_core.models.effective)"},
    }
    return module, descriptor, card
