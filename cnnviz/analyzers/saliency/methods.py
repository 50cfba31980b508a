"""The saliency methods, one registry entry each: how it attributes, what kind of map it gives, how it
batches and what it costs. Adding a method touches this file only (the CLI, the gallery and its time
estimate read the registry).

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
- ``gradcam``: Grad-CAM (``gradcam.py``), laid over the photo as a heat map;
- ``guided-gradcam``: the guided map times the Grad-CAM map: Grad-CAM says where, guided backprop what;
- ``occlusion``: Zeiler & Fergus 2014's experiment, captum ``Occlusion``: the drop in the score when a grey
  window hides each place (forward passes only, batched), laid over the photo as a heat map.

Maps are gradients with respect to the RGB image in [0, 1]: the model's normalisation is part of the
differentiated function, so channels are R, G, B whatever the convention.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import torch
from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import Tensor

from cnnviz.analyzers.saliency.gradcam import cam_layer, gradcam
from cnnviz.analyzers.saliency.rules import TargetScore, clipped_relu_rule
from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import quantile
from cnnviz.errors import CnnvizError, unknown

SIGNED, MAGNITUDE, HEATMAP = "signed", "magnitude", "heat map"
DISPLAY_PERCENTILE = 99.5
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_STD = 0.15
IG_STEPS = 32
OCCLUSION_WINDOWS = 7
"""The default occlusion window is this fraction of the image's short side (Zeiler & Fergus: about 1/5),
slid by half its width: about 13 × 13 positions whatever the size."""
OCCLUSION_GREY = 0.5


@dataclass(frozen=True)
class Options:
    """What a method may need besides the image and target: the Grad-CAM layer, the seed of its noise, the
    occlusion window's side and stride in pixels (None: the defaults for the image's size)."""

    gradcam_layer: str | None = None
    seed: int = 0
    window: int | None = None
    stride: int | None = None


Attribute = Callable[[HookedModel, Tensor, Target, Options], Tensor]
"""``(model, image requiring grad, target, options) -> raw map``."""


@dataclass(frozen=True)
class Method:
    """One saliency method: ``attribute`` makes its raw map, ``map`` says what kind it is (``signed``: grey
    is zero; ``magnitude``: white on black; ``heat map``: laid over the photo), ``batch`` how many images
    it runs per forward pass, ``passes`` the forward+backward passes it costs per image, ``cam`` whether it
    needs a Grad-CAM layer, ``params`` what its record adds (``seeded``: and the seed)."""

    name: str
    attribute: Attribute
    map: str
    passes: int = 1
    batch: int = 1
    cam: bool = False
    seeded: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators (captum's noise draws from them) and restore their state afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _backprop(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    return Saliency(TargetScore(model, target)).attribute(x, abs=False)


def _simonyan(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    return Saliency(TargetScore(model, target)).attribute(x, abs=True).amax(dim=1, keepdim=True)


def _rule(explainer: type) -> Attribute:
    """A ReLU backward rule of captum's, applied at the clipped ReLUs too (``rules.clipped_relu_rule``)."""
    rule = "deconvnet" if explainer is Deconvolution else "guided"

    def attribute(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
        with clipped_relu_rule(model.net, rule):
            return explainer(TargetScore(model, target)).attribute(x)

    return attribute


def _smoothgrad(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    with _seeded(options.seed, model.device):
        grad = NoiseTunnel(Saliency(TargetScore(model, target))).attribute(
            x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, nt_samples_batch_size=METHODS["smoothgrad"].batch,
            stdevs=SMOOTHGRAD_STD,
        )
    return grad.amax(dim=1, keepdim=True)


def _integrated_gradients(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    return IntegratedGradients(TargetScore(model, target)).attribute(
        x, baselines=torch.zeros_like(x), n_steps=IG_STEPS, internal_batch_size=METHODS["integrated-gradients"].batch)


def _gradcam(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    return gradcam(model, x, target, options.gradcam_layer or cam_layer(model, target, x))


def _guided_gradcam(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    cam = _gradcam(model, x, target, options)
    return _rule(GuidedBackprop)(model, x.detach().clone().requires_grad_(True), target, options) * cam


def occlusion_window(shape: tuple[int, ...], window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """The occlusion window's side and stride for an image of ``shape`` (..., H, W): the given ones, checked,
    or 1/``OCCLUSION_WINDOWS`` of the short side slid by half of it."""
    side = min(shape[-2:])
    window = window if window is not None else max(2, round(side / OCCLUSION_WINDOWS))
    stride = stride if stride is not None else max(1, window // 2)
    if not 1 <= window <= side:
        raise CnnvizError(f"the occlusion window ({window} px) must be between 1 px and the image's short side ({side} px)")
    if not 1 <= stride <= side:
        raise CnnvizError(f"the occlusion stride ({stride} px) must be between 1 px and the image's short side ({side} px)")
    return window, stride


def _occlusion(model: HookedModel, x: Tensor, target: Target, options: Options) -> Tensor:
    window, stride = occlusion_window(tuple(x.shape), options.window, options.stride)
    with torch.no_grad():
        drop = Occlusion(TargetScore(model, target)).attribute(
            x.detach(), sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=OCCLUSION_GREY,
            perturbations_per_eval=METHODS["occlusion"].batch)
    return drop[:, :1]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("backprop", _backprop, SIGNED),
    Method("simonyan", _simonyan, MAGNITUDE),
    Method("deconvnet", _rule(Deconvolution), SIGNED),
    Method("guided", _rule(GuidedBackprop), SIGNED),
    Method("smoothgrad", _smoothgrad, MAGNITUDE, passes=SMOOTHGRAD_SAMPLES, batch=4, seeded=True,
           params={"samples": SMOOTHGRAD_SAMPLES, "noise_std": SMOOTHGRAD_STD}),
    Method("integrated-gradients", _integrated_gradients, MAGNITUDE, passes=IG_STEPS, batch=8,
           params={"steps": IG_STEPS, "baseline": "black"}),
    Method("gradcam", _gradcam, HEATMAP, cam=True),
    Method("guided-gradcam", _guided_gradcam, SIGNED, passes=2, cam=True),
    Method("occlusion", _occlusion, HEATMAP, passes=round((2 * OCCLUSION_WINDOWS - 1) ** 2 * 0.35), batch=16,
           params={"window": "1/7 of the short side", "stride": "half the window", "fill": "grey"}),
)}
RULES = ("backprop", "deconvnet", "guided")
GRADCAM, GUIDED_GRADCAM = "gradcam", "guided-gradcam"


def get_method(name: str) -> Method:
    """The registry entry of ``name``; an unknown name suggests the closest."""
    if name not in METHODS:
        raise unknown("saliency method", name, METHODS)
    return METHODS[name]


def attribute(
    model: HookedModel, image: Tensor, target: Target, name: str = "guided", options: Options = Options(),
) -> Tensor:
    """The raw map of method ``name`` for ``image`` (1, 3, H, W) in [0, 1]: (1, 3, H, W) for the gradient
    rules, integrated gradients and guided Grad-CAM; (1, 1, H, W) for simonyan, smoothgrad, gradcam and
    occlusion."""
    chosen = get_method(name)
    x = image.detach().to(model.device).clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return chosen.attribute(model, x, target, options).detach()


def magnitude(raw: Tensor) -> Tensor:
    """A map's importance per pixel, (B, 1, H, W): |Σ over colours| of a 3-channel map, |map| otherwise (what
    the magnitude pictures show, and what the trust checks rank pixels by)."""
    return raw.sum(dim=1, keepdim=True).abs() if raw.shape[1] == 3 else raw.abs()


def _percentile(values: Tensor) -> Tensor:
    return quantile(values.flatten().float(), DISPLAY_PERCENTILE / 100).clamp_min(1e-12)


def picture(raw: Tensor, name: str, photo: Tensor) -> Tensor:
    """A map as an RGB picture in [0, 1], each scaled on its own with its top 0.5 % clipped so faint
    structure shows. Signed maps: 0.5 + 0.5·g/p, grey is zero. Magnitude maps: white on black, |g|/p.
    Heat maps (Grad-CAM): the 'jet' colours blended half and half with the photo, as in Selvaraju et al."""
    kind = get_method(name).map
    if kind == HEATMAP:
        heat = (raw[0, 0] / raw.max().clamp_min(1e-12)).cpu().numpy()
        colours = torch.from_numpy(matplotlib.colormaps["jet"](heat)[..., :3]).float().permute(2, 0, 1)
        return (0.5 * photo + 0.5 * colours.unsqueeze(0).to(photo.device)).clamp(0, 1)
    if kind == MAGNITUDE:
        size = magnitude(raw)
        return (size / _percentile(size)).clamp(0, 1).expand(-1, 3, -1, -1)
    return (0.5 + 0.5 * raw / _percentile(raw.abs())).clamp(0, 1)
