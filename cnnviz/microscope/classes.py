"""Which classes a unit raises: for a layer that reaches the logits only through pooling and one linear map
(EfficientNet-Lite0's ``head``, a ResNet's last block, VGG-16's last convolution under its bundled head),
the logits' gradient with respect to the unit's activation, summed over the map, is that map's weights,
the same for every image. It is measured on two different images; where the two differ (a ReLU or a
second linear layer on the way), the layer has no such weights and None is returned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS

SIDE = 64
TOLERANCE = 1e-4


def class_weights(model: HookedModel, layer: str) -> Tensor | None:
    """(classes, units): how much a unit's activation, spread over its map, raises each logit; None where the
    model has no classes or the way from ``layer`` to the logits is not pooling and one linear map."""
    if model.classes is None or layer == LOGITS:
        return None
    found = [_weights(model, layer, seed) for seed in (0, 1)]
    if any(w is None for w in found):
        return None
    first, second = found
    if (first - second).abs().max() > TOLERANCE * max(float(first.abs().max()), 1e-12):
        return None
    return first


def _weights(model: HookedModel, layer: str, seed: int) -> Tensor | None:
    image = torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)).to(model.device)
    acts = model(image.requires_grad_(True), [layer, LOGITS])
    act, logits = acts[layer], acts[LOGITS]
    if act.dim() != 4 or logits.dim() != 2:
        return None
    eye = torch.eye(logits.shape[1], device=logits.device).unsqueeze(1)
    (grads,) = torch.autograd.grad(logits, act, grad_outputs=eye, is_grads_batched=True)
    return grads.sum(dim=(-2, -1))[:, 0].detach().float().cpu()  # (classes, units)
