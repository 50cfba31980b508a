"""Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k α_k A^k) at a late spatial layer A, α_k the mean gradient of
the score over channel k's positions, bilinearly upsampled to the image.

It is computed on the hooked core's activations, so it works on any named layer, including one call of a
module that runs several times per forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel
from cnnviz.errors import CnnvizError


def spatial_layers(model: HookedModel, image: Tensor, target: Target) -> dict[str, Tensor]:
    """Activations of every layer up to the target's (all layers for a class) that keep a spatial map."""
    names = model.table.names()
    if target.layer in names:
        names = names[: names.index(target.layer) + 1]
    with torch.no_grad():
        acts = model(image, names)
    return {name: act for name, act in acts.items() if act.dim() == 4}


def cam_layer(model: HookedModel, target: Target, image: Tensor | None = None) -> str:
    """Grad-CAM's default layer: the last spatial (4-D) ReLU at or before the target's layer (VGG-16's
    relu5_3 for a class, never a fully-connected relu7), else the last spatial layer of any kind."""
    probe = image if image is not None else torch.zeros(1, 3, 224, 224, device=model.device)
    spatial = list(spatial_layers(model, probe, target))
    relus = [name for name in spatial if model.table.get(name).kind == "relu"]
    if relus or spatial:
        return (relus or spatial)[-1]
    raise CnnvizError(f"{model.name} has no spatial layer up to {target.layer} for Grad-CAM")


def check_cam_layer(model: HookedModel, target: Target, image: Tensor, layer: str | None) -> str:
    """The Grad-CAM layer: the given one if it is spatial and not after the target, else the default."""
    if layer is None:
        return cam_layer(model, target, image)
    name = model.table.get(layer).name
    names = model.table.names()
    if target.layer in names and names.index(name) > names.index(target.layer):
        raise CnnvizError(f"the Grad-CAM layer {name} must come before the target's layer {target.layer}")
    return name


def gradcam(model: HookedModel, image: Tensor, target: Target, layer: str) -> Tensor:
    """The Grad-CAM map (B, 1, H, W) of ``target`` at ``layer``, upsampled bilinearly to the image."""
    x = image.detach().requires_grad_(True)
    acts = model(x, [layer, target.layer])
    activation = acts[layer]
    if activation.dim() != 4:
        raise CnnvizError(f"Grad-CAM needs a spatial layer, but {layer} has shape {tuple(activation.shape)}")
    (grad,) = torch.autograd.grad(target.score(acts).sum(), activation)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True))
    return F.interpolate(cam.detach(), size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
