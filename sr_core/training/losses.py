"""Training losses beyond the pixel ones: VGG perceptual loss and the SRGAN adversarial loss.

* Perceptual (content) loss: distance between VGG-19 feature maps of the SR and HR images
  (Johnson, Alahi & Fei-Fei, ECCV 2016; SRGAN's "VGG54", Ledig et al., CVPR 2017). The VGG-19
  weights are **supplied by the user as a file** (torchvision's ``vgg19`` state dict, e.g.
  ``vgg19-dcbb9e9d.pth``, or a safetensors copy); nothing is downloaded. The file is read with
  :func:`sr_core.models.weights.load_weights` (safetensors or ``torch.load(weights_only=True)``).
* Adversarial loss: binary cross-entropy on the logits of
  :class:`sr_core.models.srresnet.SRGANDiscriminator` (Goodfellow et al., NeurIPS 2014; SRGAN's
  ``-log D(G(LR))`` generator loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_core.errors import InputError, ModelError

#: feature layer -> index of that layer in torchvision's ``vgg19().features`` (after its ReLU).
VGG19_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
#: ImageNet statistics torchvision's VGG weights were trained with (RGB, [0, 1] input).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """MSE between VGG-19 features of SR and HR images, frozen network.

    One-band images are repeated to RGB; inputs in [0, 1] are normalised with the ImageNet mean
    and standard deviation.

    Args:
        vgg_weights: path of a torchvision ``vgg19`` state dict (``features.N.weight`` keys).
        layer: feature layer, a key of :data:`VGG19_LAYERS` (``relu5_4`` = SRGAN's VGG54).

    Raises:
        InputError: unknown layer, or the weights file does not hold VGG-19 features.
        ModelError: the file is missing or unsafe (needs full unpickling).
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, vgg_weights: str, *, layer: str = "relu5_4") -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        from sr_core.models.weights import load_weights

        if layer not in VGG19_LAYERS:
            raise InputError(f"VGG layer {layer!r}: expected one of {', '.join(VGG19_LAYERS)}")
        state, _ = load_weights(vgg_weights, require_card=False)
        # torchvision's VGG-19 feature extractor (configuration "E"), without its classifier
        features = make_layers(cfgs["E"])[: VGG19_LAYERS[layer] + 1]
        wanted = {k.removeprefix("features."): v for k, v in state.items()
                  if k.startswith("features.")}
        wanted = {k: v for k, v in wanted.items() if k in features.state_dict()}
        try:
            features.load_state_dict(wanted, strict=True)
        except RuntimeError:
            raise InputError(f"{vgg_weights}: not a torchvision VGG-19 state dict (its "
                             f"'features.N.weight' tensors are missing or of other shapes)"
                             ) from None
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _feat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ModelError(f"perceptual loss: needs 1 or 3 channels, got {x.shape[1]}")
        return self.features((x - self.mean) / self.std)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` SR and HR in [0, 1] -> scalar loss."""
        return F.mse_loss(self._feat(sr), self._feat(hr).detach())


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE of discriminator logits against the label ``real`` (1) or fake (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
