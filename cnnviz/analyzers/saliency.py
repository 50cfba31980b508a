"""Saliency maps: the gradient of a target with respect to the image under three ReLU backward rules.

- ``backprop``: the plain gradient (Simonyan et al. 2014), captum's ``Saliency(abs=False)``;
- ``deconvnet``: each ReLU passes the positive part of its upstream gradient, wherever its input
  was (Zeiler & Fergus 2014, as a backward rule in Springenberg et al. 2015), ``Deconvolution``;
- ``guided``: each ReLU passes the positive upstream gradient where its input was positive
  (Springenberg et al. 2015), ``GuidedBackprop``;
- ``guided-gradcam``: the guided map times the Grad-CAM map of a late layer, bilinearly upsampled
  (Selvaraju et al. 2017), ``GuidedGradCam``. Grad-CAM weights each channel of that layer by the
  mean of the target's gradient over its positions and keeps the positive part of the weighted sum:
  it says where, the guided map says what.

Maps are gradients with respect to the RGB image in [0, 1], not the model's normalised input: the
normalisation is part of the differentiated function, so a map's channels are R, G, B whatever the
model's convention (Caffe's BGR 0–255 included). Captum overrides the gradients of the ``nn.ReLU``
modules with hooks and removes them after each call. The rules apply at every ReLU up to and
including the target's layer; Zeiler & Fergus instead project the target layer's activations down.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, Saliency
from torch import Tensor, nn

from cnnviz.analyzers.common import Output, model_record
from cnnviz.analyzers.target import Target, resolve_target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import load_image, resize
from cnnviz.errors import CnnvizError, unknown

RULES = ("backprop", "deconvnet", "guided")
GUIDED_GRADCAM = "guided-gradcam"
METHODS = (*RULES, GUIDED_GRADCAM)
DISPLAY_PERCENTILE = 99.5


class _Score(nn.Module):
    """The target's score per image as a function of the RGB image: the module captum hooks and
    differentiates. It holds the network as a sub-module, so captum finds the network's ReLUs."""

    def __init__(self, model: HookedModel, target: Target) -> None:
        super().__init__()
        self.net = model.net
        self.model = model
        self.target = target

    def forward(self, image: Tensor) -> Tensor:
        return self.target.score(self.model(image, [self.target.layer]))


def cam_layer(model: HookedModel, target: Target) -> str:
    """Grad-CAM's default layer: the last ReLU at or before the target's layer (VGG-16's relu5_3 for a
    class); for networks without the papers' names, the last convolution (their ReLU modules may be
    called more than once per forward), else the last ReLU."""
    names = model.table.names()
    if target.layer in names:
        names = names[: names.index(target.layer) + 1]
    kinds = {name: model.table.get(name).kind for name in names}
    for kind in ("relu", "conv") if model.spec.is_vgg else ("conv", "relu"):
        late = [name for name in names if kinds[name] == kind]
        if late:
            return late[-1]
    raise CnnvizError(f"{model.name} has no convolution or ReLU up to {target.layer} for Grad-CAM")


def gradient(model: HookedModel, image: Tensor, target: Target, rule: str = "guided", gradcam_layer: str | None = None) -> Tensor:
    """∂ target / ∂ image under ``rule``, for ``image`` (B, 3, H, W) in [0, 1]; the same shape.
    ``gradcam_layer`` is guided Grad-CAM's layer (default: ``cam_layer``)."""
    if rule not in METHODS:
        raise unknown("saliency rule", rule, METHODS)
    score = _Score(model, target)
    image = image.detach().to(model.device).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        if rule == "backprop":
            return Saliency(score).attribute(image, abs=False).detach()
        if rule == GUIDED_GRADCAM:
            module = model.module(gradcam_layer or cam_layer(model, target))
            return GuidedGradCam(score, module).attribute(image, interpolate_mode="bilinear").detach()
        method = Deconvolution(score) if rule == "deconvnet" else GuidedBackprop(score)
        return method.attribute(image).detach()


def display(grad: Tensor) -> Tensor:
    """A map as an RGB picture in [0, 1]: 0.5 + 0.5·g/p, clipped, where p is the 99.5th percentile of
    |g| over the map (each map scaled on its own; like Captum's visualisation, the top 0.5% outliers
    saturate). Grey is zero; a colour brighter or darker than grey is a positive or negative gradient."""
    p = torch.quantile(grad.abs().flatten().float(), DISPLAY_PERCENTILE / 100).clamp_min(1e-12)
    return (0.5 + 0.5 * grad / p).clamp(0, 1)


@dataclass
class Maps:
    """An image (1, 3, H, W) in [0, 1], the target its maps explain, and one ``Output`` per rule."""

    image: Tensor
    target: Target
    outputs: dict[str, Output]


def saliency(
    model: HookedModel,
    image: str | Tensor = "astronaut",
    *,
    cls: str | int | None = None,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    size: int | None = 224,
    rules: tuple[str, ...] = METHODS,
    gradcam_layer: str | None = None,
) -> Maps:
    """Saliency maps of one image for a class (default: its top class) or a channel/neuron of a layer.

    ``size`` sets the long side (None: keep a tensor's size). Each ``Output`` holds the displayed map
    as its image and the raw gradient (3, H, W) as ``raw``.
    """
    for rule in rules:
        if rule not in METHODS:
            raise unknown("saliency rule", rule, METHODS)
    picture = load_image(image, size, model.device) if isinstance(image, str) else image.to(model.device)
    if size is not None:
        picture = resize(picture, size)
    target = resolve_target(model, picture, cls, layer, channel, y, x)
    if GUIDED_GRADCAM in rules:
        gradcam_layer = gradcam_layer or cam_layer(model, target)
        names = model.table.names()
        if model.table.get(gradcam_layer).name not in names or (
                target.layer in names and names.index(gradcam_layer) > names.index(target.layer)):
            raise CnnvizError(f"the Grad-CAM layer {gradcam_layer} must come before the target's layer {target.layer}")
    with torch.no_grad():
        value = float(target.score(model(picture, [target.layer]))[0])
    outputs = {}
    for rule in rules:
        start = time.perf_counter()
        grad = gradient(model, picture, target, rule, gradcam_layer)
        params = {"image": image if isinstance(image, str) else "tensor", "size": size, "rule": rule,
                  **target.params(), "score": value, "display": f"0.5 + 0.5 g / p{DISPLAY_PERCENTILE}(|g|)"}
        if rule == GUIDED_GRADCAM:
            params["gradcam_layer"] = gradcam_layer
        record = model_record("saliency", model, [target.layer], params, seconds=round(time.perf_counter() - start, 3))
        outputs[rule] = Output(display(grad), record, raw=grad[0])
    return Maps(picture, target, outputs)
