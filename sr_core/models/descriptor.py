"""Model descriptor: the metadata that lives beside a network, not inside it (the spandrel
pattern)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class ModelDescriptor:
    """What the pipeline needs to know to run a model tile by tile.

    Attributes:
        name: registry name, e.g. ``"edsr-x2"``.
        architecture: architecture key, e.g. ``"edsr"``, ``"espcn"``, ``"bicubic"``.
        scale: integer upscaling factor (output pixels per input pixel along each axis), >= 2.
        in_channels: channels the network takes; 1 means the pipeline runs it band by band.
        out_channels: channels the network returns (equal to ``in_channels`` for our models).
        receptive_field_px: analytic receptive-field radius on the LR (input) grid, in LR pixels:
            an output pixel depends only on input pixels at most this far away (Chebyshev
            distance); 0 when unknown (``tileable`` False). The halo is at most this: the
            measured effective radius when smaller (:func:`sr_core.compute.halo.choose_halo`).
        size_multiple: the input height and width must be a multiple of this; the runner pads
            (reflect) and crops back. 1 means any size.
        min_size_px: the input height and width must be at least this; the runner pads (then
            crops back). 0 means no minimum.
        input_grid: ``"lr"`` when the network takes the LR image, ``"hr"`` when it works on the
            bicubic-upsampled grid (SRCNN, VDSR).
        tileable: whether ``receptive_field_px`` is an exact analytic bound (every native
            convolutional architecture). False for models without one (global channel attention
            such as IMDN's; third-party checkpoints, window-attention transformers): their halo
            is measured (:mod:`sr_core.models.effective`) and chosen per scene by
            :func:`sr_core.compute.halo.choose_halo`, which runs the scene as one tile only within a
            memory budget.
        global_context: the network uses image-wide statistics (adaptive pooling, as IMDN's
            contrast-aware channel attention or RCAN's and HAT's channel attention), so no halo
            makes a tile equal the whole image on every scene: the halo rules skip the measured
            halo (:func:`sr_core.compute.halo.choose_halo`).
        colour: ``"bands"``: the network sees the scene's bands (policy in
            :class:`~sr_core.models.base.SRModel`); ``"y"``: a 1-channel network trained on the
            luma of BT.601 YCbCr (the reference SRCNN / FSRCNN / VDSR weights): on a 3-band
            scene it runs on Y and the chroma is upscaled by bicubic; other scenes band by band.
        supported_scales: the scales the architecture can be built for; ``None``: any integer
            >= 2 (filled in by :func:`sr_core.models.architectures.describe`).
    """

    name: str
    architecture: str
    scale: int
    in_channels: int = 1
    out_channels: int = 1
    receptive_field_px: int
    size_multiple: int = 1
    min_size_px: int = 0
    input_grid: Literal["lr", "hr"] = "lr"
    tileable: bool = True
    global_context: bool = False
    colour: Literal["bands", "y"] = "bands"
    supported_scales: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        """Plain-JSON form for reports and model cards."""
        return asdict(self)
