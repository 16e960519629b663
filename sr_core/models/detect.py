"""Recognise a native architecture (and its arguments) from a checkpoint's keys and shapes.

A checkpoint given by path with no model card beside it is matched against the parameter layouts
of the reference implementations (the names each class in :mod:`sr_core.models` keeps), as
spandrel does for its architectures. The arguments are read off tensor shapes (channels, widths,
depths, upsampler layout). Some architectures do not encode the scale in their weights (SRCNN,
VDSR and FSRCNN: the scale is the bicubic pre-upsampling or the deconvolution's stride); the
caller's ``scale`` is then required.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from sr_core.errors import ModelError
from sr_core.models.architectures import build_module

State = dict[str, torch.Tensor]


def _count(state: State, pattern: str) -> int:
    """Number of distinct indices ``N`` in keys matching ``pattern`` (with one ``(\\d+)``)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def _need_scale(arch: str, scale: int | None, where: str) -> int:
    if scale is None:
        raise ModelError(f"{where}: recognised as {arch}, whose weights do not encode the scale; "
                         f"pass the scale it was trained for (--scale)")
    return scale


def _srcnn(state: State, scale: int | None, where: str) -> dict:
    w1, w2, w3 = state["conv1.weight"], state["conv2.weight"], state["conv3.weight"]
    return {"scale": _need_scale("srcnn", scale, where), "in_channels": int(w1.shape[1]),
            "n_feats": [int(w1.shape[0]), int(w2.shape[0])],
            "kernel_sizes": [int(w1.shape[-1]), int(w2.shape[-1]), int(w3.shape[-1])]}


def _fsrcnn(state: State, scale: int | None, where: str) -> dict:
    w = state["first_part.0.weight"]
    return {"scale": _need_scale("fsrcnn", scale, where), "in_channels": int(w.shape[1]),
            "d": int(w.shape[0]), "s": int(state["mid_part.0.weight"].shape[0]),
            "m": _count(state, r"mid_part\.(\d+)\.weight") // 2 - 2}


def _espcn(state: State, scale: int | None, where: str) -> dict:
    w1, w2, w3 = (state["first_part.0.weight"], state["first_part.2.weight"],
                  state["last_part.0.weight"])
    c = int(w1.shape[1])
    s = round((int(w3.shape[0]) / c) ** 0.5)
    return {"scale": s, "in_channels": c, "n_feats": [int(w1.shape[0]), int(w2.shape[0])]}


def _vdsr(state: State, scale: int | None, where: str) -> dict:
    w = state["input.weight"]
    return {"scale": _need_scale("vdsr", scale, where), "in_channels": int(w.shape[1]),
            "depth": _count(state, r"residual_layer\.(\d+)\.conv\.weight") + 2,
            "n_feats": int(w.shape[0])}


def _edsr(state: State, scale: int | None, where: str) -> dict:
    w = state["head.0.weight"]
    n_feats, c = int(w.shape[0]), int(w.shape[1])
    stages = _count(state, r"tail\.0\.(\d+)\.weight")
    first = int(state["tail.0.0.weight"].shape[0])
    s = 3 if first == 9 * n_feats else 2**stages
    return {"scale": s, "in_channels": c,
            "n_resblocks": _count(state, r"body\.(\d+)\.body\.0\.weight"), "n_feats": n_feats,
            # the reference trains the 256-map EDSR with residual scaling 0.1 and feeds 0..255
            "res_scale": 0.1 if n_feats >= 256 else 1.0, "rgb_range": 255.0}


def _srresnet(state: State, scale: int | None, where: str) -> dict:
    w = state["conv_first.weight"]
    return {"scale": 2 ** _count(state, r"upsample\.(\d+)\.0\.weight"),
            "in_channels": int(w.shape[1]), "n_feats": int(w.shape[0]),
            "n_blocks": _count(state, r"body\.(\d+)\.conv1\.weight")}


def _msrresnet(state: State, scale: int | None, where: str) -> dict:
    w = state["conv_first.weight"]
    nf = int(w.shape[0])
    s = 4 if "upconv2.weight" in state else round((state["upconv1.weight"].shape[0] / nf) ** 0.5)
    return {"scale": s, "in_channels": int(w.shape[1]), "n_feats": nf,
            "n_blocks": _count(state, r"body\.(\d+)\.conv1\.weight")}


def _rrdbnet(state: State, scale: int | None, where: str) -> dict:
    w, last = state["conv_first.weight"], state["conv_last.weight"]
    c = int(last.shape[0])
    ratio = int(w.shape[1]) // c
    if ratio not in (1, 4):
        raise ModelError(f"{where}: RRDBNet with {w.shape[1]} input maps for {c} channels is "
                         f"neither x4 nor x2")
    return {"scale": 4 if ratio == 1 else 2, "in_channels": c, "num_feat": int(w.shape[0]),
            "num_block": _count(state, r"body\.(\d+)\.rdb1\.conv1\.weight"),
            "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0])}


def _imdn(state: State, scale: int | None, where: str) -> dict:
    w, up = state["fea_conv.weight"], state["upsampler.0.weight"]
    c = int(w.shape[1])
    return {"scale": round((int(up.shape[0]) / c) ** 0.5), "in_channels": c,
            "nf": int(w.shape[0]), "num_modules": _count(state, r"IMDB(\d+)\.c1\.weight")}


#: (architecture, keys that must all be present, keys that must be absent, reader): the first
#: match wins, so more specific layouts come first.
_LAYOUTS: list[tuple[str, set[str], set[str], Callable[[State, int | None, str], dict]]] = [
    ("rrdbnet", {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight",
                 "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight"},
     set(), _rrdbnet),
    ("msrresnet", {"conv_first.weight", "upconv1.weight", "conv_hr.weight", "conv_last.weight"},
     set(), _msrresnet),
    ("srresnet", {"conv_first.weight", "act_first.weight", "conv_after_body.weight",
                  "bn_after_body.weight", "upsample.0.0.weight", "conv_last.weight"},
     set(), _srresnet),
    ("imdn", {"fea_conv.weight", "IMDB1.c1.weight", "c.0.weight", "LR_conv.weight",
              "upsampler.0.weight"}, set(), _imdn),
    ("edsr", {"head.0.weight", "body.0.body.0.weight", "tail.0.0.weight", "tail.1.weight"},
     set(), _edsr),
    ("fsrcnn", {"first_part.0.weight", "first_part.1.weight", "mid_part.0.weight",
                "last_part.weight"}, set(), _fsrcnn),
    ("espcn", {"first_part.0.weight", "first_part.2.weight", "last_part.0.weight"},
     {"mid_part.0.weight"}, _espcn),
    ("vdsr", {"input.weight", "residual_layer.0.conv.weight", "output.weight"}, set(), _vdsr),
    ("srcnn", {"conv1.weight", "conv2.weight", "conv3.weight"}, {"conv4.weight"}, _srcnn),
]


def detect_architecture(state: State, *, scale: int | None = None,
                        where: str = "checkpoint") -> tuple[str, dict] | None:
    """Recognise a native architecture from a state dict.

    Args:
        state: ``{parameter name: tensor}`` (already unwrapped, see
            :func:`sr_core.models.weights.unwrap_state_dict`).
        scale: the scale the caller asked for; required for SRCNN, VDSR and FSRCNN, whose
            weights do not encode it; for the others, compared by the caller.
        where: file name for messages.

    Returns:
        ``(architecture, constructor arguments)``, or ``None`` when no native layout matches
        (the key set must be exactly the layout's: extra or missing keys mean another network).

    Raises:
        ModelError: the layout matches but the scale is needed and not given, or the shapes
            make no sense.
    """
    keys = set(state)
    for architecture, required, absent, reader in _LAYOUTS:
        if not required <= keys or absent & keys:
            continue
        try:
            arguments = reader(state, scale, where)
        except (KeyError, IndexError, ZeroDivisionError):
            continue
        try:
            with torch.device("meta"):  # names only: no memory for the weights
                expected = set(build_module(architecture, **arguments).state_dict())
        except ModelError:
            continue
        if expected == keys:
            return architecture, arguments
    return None
