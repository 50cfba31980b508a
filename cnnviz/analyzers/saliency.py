"""Saliency maps: what in an image a class score (or a channel, or one neuron) responds to.

The three ReLU backward rules (Springenberg et al. 2015), from captum:
- ``backprop``: the plain, signed gradient ∂S/∂x (``Saliency(abs=False)``);
- ``deconvnet``: each ReLU passes the positive part of its upstream gradient, wherever its input was
  (Zeiler & Fergus 2014 as a backward rule), ``Deconvolution``. Its only link to the image is the
  max-pooling switches: on a network without max-pooling (EfficientNet) the map is the same for
  every image of a size, a regular grid from the strided convolutions;
- ``guided``: each ReLU passes the positive upstream gradient where its input was positive,
  ``GuidedBackprop``.
What users of attribution tools expect beside them:
- ``simonyan``: Simonyan et al. 2014's map, max over colour channels of |∂S/∂x|;
- ``smoothgrad``: the same map averaged over noisy copies of the image (Smilkov et al. 2017), captum
  ``NoiseTunnel`` with seeded noise;
- ``integrated-gradients``: ∫ ∂S/∂x along the line from a black image (Sundararajan et al. 2017), captum
  ``IntegratedGradients``; shown as |Σ_c attribution|;
- ``gradcam``: ReLU(Σ_k α_k A^k) at a late spatial layer A, α_k the mean gradient of S over channel k's
  positions (Selvaraju et al. 2017), bilinearly upsampled and laid over the photo as a heat map;
- ``guided-gradcam``: the guided map times the Grad-CAM map: Grad-CAM says where, guided backprop what.

captum rewrites the backward pass of ``nn.ReLU`` modules only; ReLU6 (EfficientNet-Lite's activation,
an ``nn.Hardtanh``) gets the same rule here, from our own backward hooks, so a rule holds at every
activation of the network. Maps are gradients with respect to the RGB image in [0, 1]: the model's
normalisation is part of the differentiated function, so channels are R, G, B whatever the convention.
Grad-CAM is computed on the hooked core's activations, so it works on any named layer, including one
call of a module that runs several times per forward.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency
from torch import Tensor, nn

from cnnviz.analyzers.common import Output, model_record
from cnnviz.analyzers.target import Target, resolve_target, top_classes
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, source_name
from cnnviz.core.memory import check_fits
from cnnviz.core.layers import LOGITS
from cnnviz.errors import CnnvizError, unknown

RULES = ("backprop", "deconvnet", "guided")
GRADCAM = "gradcam"
GUIDED_GRADCAM = "guided-gradcam"
METHODS = ("backprop", "simonyan", "deconvnet", "guided", "smoothgrad", "integrated-gradients", GRADCAM, GUIDED_GRADCAM)
DISPLAY_PERCENTILE = 99.5
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_STD = 0.15
IG_STEPS = 32
_MAGNITUDE = {"simonyan", "smoothgrad", "integrated-gradients"}
BATCH = {"smoothgrad": 4, "integrated-gradients": 8}


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


def _is_clipped_relu(module: nn.Module) -> bool:
    """ReLU6 and any Hardtanh(0, t): a ReLU with a ceiling, which captum leaves alone."""
    return isinstance(module, nn.Hardtanh) and module.min_val == 0


@contextmanager
def clipped_relu_rule(net: nn.Module, rule: str) -> Iterator[int]:
    """Apply ``rule``'s ReLU backward rule (``deconvnet``: ReLU of the upstream gradient; ``guided``:
    ReLU of the gradient the activation passes) at every clipped ReLU of ``net``; yields their number.
    Hooks are removed on exit."""
    handles = []

    def deconvnet(_module: nn.Module, _grad_in: tuple, grad_out: tuple) -> tuple:
        return (F.relu(grad_out[0]),)

    def guided(_module: nn.Module, grad_in: tuple, _grad_out: tuple) -> tuple:
        return (F.relu(grad_in[0]),)

    try:
        if rule in ("deconvnet", "guided"):
            for module in net.modules():
                if _is_clipped_relu(module):
                    handles.append(module.register_full_backward_hook(deconvnet if rule == "deconvnet" else guided))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


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


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators (captum's noise draws from them) and restore their state afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def gradient(
    model: HookedModel, image: Tensor, target: Target, method: str = "guided", gradcam_layer: str | None = None, seed: int = 0,
) -> Tensor:
    """The raw map of ``method`` for ``image`` (1, 3, H, W) in [0, 1]: (1, 3, H, W) for the gradient
    rules, integrated gradients and guided Grad-CAM; (1, 1, H, W) for simonyan, smoothgrad and gradcam."""
    if method not in METHODS:
        raise unknown("saliency method", method, METHODS)
    score = _Score(model, target)
    image = image.detach().to(model.device)
    if method == GRADCAM:
        return gradcam(model, image, target, gradcam_layer or cam_layer(model, target, image))
    if method == GUIDED_GRADCAM:
        cam = gradcam(model, image, target, gradcam_layer or cam_layer(model, target, image))
        return gradient(model, image, target, "guided") * cam
    x = image.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        if method in ("backprop", "simonyan"):
            grad = Saliency(score).attribute(x, abs=method == "simonyan").detach()
            return grad.amax(dim=1, keepdim=True) if method == "simonyan" else grad
        if method == "smoothgrad":
            with _seeded(seed, model.device):
                grad = NoiseTunnel(Saliency(score)).attribute(
                    x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, nt_samples_batch_size=BATCH[method], stdevs=SMOOTHGRAD_STD,
                )
            return grad.detach().amax(dim=1, keepdim=True)
        if method == "integrated-gradients":
            return IntegratedGradients(score).attribute(x, baselines=torch.zeros_like(x), n_steps=IG_STEPS,
                                                        internal_batch_size=BATCH[method]).detach()
        with clipped_relu_rule(model.net, method):
            explainer = Deconvolution(score) if method == "deconvnet" else GuidedBackprop(score)
            return explainer.attribute(x).detach()


def _percentile(values: Tensor) -> Tensor:
    return torch.quantile(values.flatten().float(), DISPLAY_PERCENTILE / 100).clamp_min(1e-12)


def display(raw: Tensor, method: str, photo: Tensor) -> Tensor:
    """A map as an RGB picture in [0, 1], each scaled on its own with its top 0.5 % clipped so faint
    structure shows. Signed maps (gradient rules, guided Grad-CAM): 0.5 + 0.5·g/p, grey is zero.
    Magnitude maps (simonyan, smoothgrad, integrated gradients): white on black, |g|/p.
    Grad-CAM: the 'jet' heat map blended half and half with the photo, as in Selvaraju et al."""
    if method == GRADCAM:
        heat = (raw[0, 0] / raw.max().clamp_min(1e-12)).cpu().numpy()
        colours = torch.from_numpy(matplotlib.colormaps["jet"](heat)[..., :3]).float().permute(2, 0, 1)
        return (0.5 * photo + 0.5 * colours.unsqueeze(0).to(photo.device)).clamp(0, 1)
    if method in _MAGNITUDE:
        magnitude = raw.sum(dim=1, keepdim=True).abs() if raw.shape[1] == 3 else raw.abs()
        return (magnitude / _percentile(magnitude)).clamp(0, 1).expand(-1, 3, -1, -1)
    return (0.5 + 0.5 * raw / _percentile(raw.abs())).clamp(0, 1)


def saliency(
    model: HookedModel,
    image: ImageSource = "chelsea",
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    method: str = "guided",
    size: int | None = 256,
    gradcam_layer: str | None = None,
    seed: int = 0,
) -> Output:
    """The ``method`` map of one image for a class (``target``: a name, an index or 'top', the default)
    or for a channel/neuron of ``layer``. ``size`` sets the long side (None: keep the image's size).
    The output's image is the displayed map, ``raw`` the map itself, ``record.params`` the target, its
    score and (for class targets) the model's top-5 for the image."""
    if method not in METHODS:
        raise unknown("saliency method", method, METHODS)
    picture = as_image(image, size, model.device)
    check_fits(model, [LOGITS if layer is None else layer], picture.shape, batch=BATCH.get(method, 1))
    goal = resolve_target(model, picture, target, layer, channel, y, x)
    if method in (GRADCAM, GUIDED_GRADCAM):
        gradcam_layer = _check_cam_layer(model, goal, picture, gradcam_layer)
    start = time.perf_counter()
    with torch.no_grad():
        acts = model(picture, [goal.layer])
    value = float(goal.score(acts)[0])
    raw = gradient(model, picture, goal, method, gradcam_layer, seed)
    params = {"image": source_name(image), "size": size, "method": method, **goal.params(), "score": value,
              "display": "jet overlay" if method == GRADCAM else f"clipped at p{DISPLAY_PERCENTILE}"}
    if goal.layer == LOGITS:
        params["top5"] = [[name, round(p, 4)] for name, p in top_classes(model, picture, 5)]
    if method in (GRADCAM, GUIDED_GRADCAM):
        params["gradcam_layer"] = gradcam_layer
    if method == "smoothgrad":
        params.update(samples=SMOOTHGRAD_SAMPLES, noise_std=SMOOTHGRAD_STD, seed=seed)
    if method == "integrated-gradients":
        params.update(steps=IG_STEPS, baseline="black")
    record = model_record("saliency", model, [goal.layer], params, seconds=round(time.perf_counter() - start, 3))
    return Output(display(raw, method, picture), record, raw=raw[0], input=picture)


def _check_cam_layer(model: HookedModel, target: Target, image: Tensor, layer: str | None) -> str:
    """The Grad-CAM layer: the given one if it is spatial and not after the target, else the default."""
    if layer is None:
        return cam_layer(model, target, image)
    name = model.table.get(layer).name
    names = model.table.names()
    if target.layer in names and names.index(name) > names.index(target.layer):
        raise CnnvizError(f"the Grad-CAM layer {name} must come before the target's layer {target.layer}")
    return name
