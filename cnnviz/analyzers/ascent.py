"""Gradient ascent (Simonyan et al. 2014; Yosinski et al. 2015): I* = argmax_I S(I) − λ‖I‖².

S is a ``Target``: a class score (pre-softmax logits), a channel's mean activation or one neuron.
The image starts at the model's zero input (its mean colour: Simonyan et al.'s zero image) and the
one loop minimises −S(I)/g + λ·mean((I − I₀)²) with Adam, where I₀ is that zero image: the L2
penalty measures the distance from the model's mean colour in [0, 1] pixel units, whatever the
model's input convention (Caffe BGR 0–255, ImageNet mean/std, TF's [−1, 1]), so one λ suits every
model. g (``gradient_scale``) is the size of S's gradient at the start, so that one λ suits
every target, whose scores differ by orders of magnitude, and every image size: at the start S
pushes each pixel as hard as the penalty pulls a pixel 1/(2λ) away from the mean colour.
``init_noise`` adds seeded Gaussian noise to the start, for networks whose gradient is zero at the
zero image (a bias-free network maps it to zeros everywhere, where no ReLU passes a gradient).
Yosinski et al.'s per-step regularizers (``Blur``, ``Clip``, ``Decay``) and jitter come with the
loop's ``Settings``.

A channel of a VGG ReLU layer is climbed through its pre-activation (the convolution feeding the
ReLU, as Lucid's ``*_pre_relu`` objectives and as the logits stand before the softmax): the ReLU's
gradient is zero wherever the channel is off, and on the uniform zero image a third of the channels
of relu3_3 are off everywhere. The record's scores are those of the target itself.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from dataclasses import replace

import torch

from cnnviz.analyzers.common import Output, record, zero_image
from cnnviz.analyzers.target import Target, is_class, resolve_target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.memory import check_fits
from cnnviz.core.images import check_size, resize
from cnnviz.errors import CnnvizError
from cnnviz.objectives import Objective, Term, l2_norm
from cnnviz.optimize import Blur, Clip, Decay, Settings, Step, optimize

DEFAULT_L2 = 2.0
DEFAULT_ITERS = 200
DEFAULT_LR = 0.05
DEFAULT_BLUR = Blur(sigma=0.5, every=4)
DEFAULT_CLIP = Clip(norm_pct=10.0, contribution_pct=10.0)
DEFAULT_JITTER = 4
ROWS = ("none", "L2", "L2+blur", "L2+blur+clip", "+jitter")


def default_settings(**changes) -> Settings:
    """Adam from the zero image with every regularizer on (blur, clip, jitter: the grid's last row),
    as the CLI runs it."""
    return replace(Settings(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR, jitter=DEFAULT_JITTER,
                            regularizers=(DEFAULT_BLUR, DEFAULT_CLIP)), **changes)


def row(
    name: str, base: Settings, l2_weight: float, blur: Blur, clip: Clip, jitter: int, decay: Decay | None = None,
) -> tuple[float, Settings]:
    """(λ, settings) of one row of the regularizer grid: none, L2 (the penalty λ‖I‖², plus Yosinski's
    decay if given), L2+blur, L2+blur+clip, +jitter (all of them). A blur of σ 0 or a clip at
    percentiles 0 is left out."""
    if name not in ROWS:
        raise CnnvizError(f"unknown regularizer row '{name}' (choices: {', '.join(ROWS)})")
    level = ROWS.index(name)
    steps = (
        (decay, level >= 1 and decay is not None),
        (blur, level >= 2 and blur.sigma > 0),
        (clip, level >= 3 and (clip.norm_pct > 0 or clip.contribution_pct > 0)),
    )
    regularizers = [regularizer for regularizer, on in steps if on]
    return (l2_weight if level >= 1 else 0.0), replace(base, regularizers=tuple(regularizers), jitter=jitter if level >= 4 else 0)


def target_for(
    model: HookedModel, size: int, cls: str | int | None = None, layer: str | None = None,
    channel: str | int | None = None, y: int | None = None, x: int | None = None,
) -> Target:
    """The ascent's target on ``model`` for a square image of ``size`` px: a class, or a channel/neuron of a layer."""
    if is_class(layer) and cls is None:
        raise CnnvizError("give a class (--class NAME or index) or a layer and channel (--layer relu4_3 --channel 10)")
    return resolve_target(model, zero_image(model, (1, 3, size, size)), cls, layer, channel, y, x)


def climbed(model: HookedModel, target: Target) -> Target:
    """The target the ascent maximises: for a VGG ReLU layer, the same channel of the layer before it."""
    names = model.table.names()
    if not model.spec.is_vgg or target.layer not in names or model.table.get(target.layer).kind != "relu":
        return target
    return replace(target, layer=names[names.index(target.layer) - 1])


def gradient_scale(model: HookedModel, target: Target, image: torch.Tensor) -> float:
    """n · RMS of ∂S/∂I at ``image``, n its number of values: S divided by it has a gradient of RMS 1/n."""
    image = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.score(model(image, [target.layer])).sum(), image)
    scale = float(grad.pow(2).mean().sqrt()) * grad.numel()
    if not scale > 0:
        raise CnnvizError(f"the gradient of {target.label} is zero at the start image: add noise (--init-noise 0.05)")
    return scale


def score(model: HookedModel, target: Target, image: torch.Tensor) -> float:
    """S(image), without grad."""
    with torch.no_grad():
        return float(target.score(model(image, [target.layer]))[0])


def ascend(
    model: HookedModel,
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    size: int = 256,
    l2_weight: float = DEFAULT_L2,
    init_noise: float = 0.0,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Maximise a class score (``target``: a class name or index), or a channel (its mean, or its neuron
    at y, x) of ``layer``, from the zero image (size × size); returns the image and its record. The
    progress callback sees the target's real score S, not the normalised loss."""
    settings = settings or default_settings()
    check_size(size)
    if not (l2_weight >= 0 and init_noise >= 0 and math.isfinite(l2_weight) and math.isfinite(init_noise)):
        raise CnnvizError(f"--l2 and --init-noise must be finite and at least 0, got {l2_weight} and {init_noise}")
    goal = target_for(model, size, target, layer, channel, y, x)
    check_fits(model, [goal.layer], (size, size), settings.optimizer)
    zero = zero_image(model, (1, 3, 1, 1))
    generator = torch.Generator().manual_seed(settings.seed)
    noise = init_noise * torch.randn((1, 3, size, size), generator=generator).to(model.device)
    start = (zero_image(model, (1, 3, size, size)) + noise).clamp(0, 1)
    climb = climbed(model, goal)
    scales: list[float] = []

    def problem(shape: tuple[int, int]) -> Objective:
        scales.append(gradient_scale(model, climb, resize(start, shape)))
        return Objective(model, [
            Term("score", -1.0 / scales[-1], (climb.layer,), lambda acts, x: climb.score(acts).mean()),
            Term("l2", l2_weight, (), lambda acts, x: l2_norm(x - zero)),
        ])

    def report(step: Step) -> None:
        losses = {"S": -step.losses["score"] * scales[-1], **{k: v for k, v in step.losses.items() if k != "score"}}
        callback(replace(step, losses=losses))

    result = optimize(problem, start, settings, report if callback else None, zero=zero)
    params = {"size": size, "l2_weight": l2_weight, **goal.params(), "climbed_layer": climb.layer, "init_noise": init_noise,
              "score_start": score(model, goal, start), "score": score(model, goal, result.image)}
    return Output(result.image, record("ascent", model, [goal.layer], params, settings, result))
