"""Gradient ascent and feature visualization: the image that maximises a class score, a channel or a
neuron, I* = argmax_I S(I) − λ‖I‖².

Two recipes share the one loop. **Pixel** (Simonyan et al. 2014; Yosinski et al. 2015): the image
starts at the model's zero input (its mean colour) and Adam minimises −S(I)/g + λ·mean((I − I₀)²) over
the pixels, where I₀ is that zero image, so the L2 penalty is measured in [0, 1] pixel units whatever
the model's input convention and one λ suits every model; g (``gradient_scale``) is the size of S's
gradient at the start, so one λ suits every target and image size. Yosinski et al.'s blur, clip and
decay come with the loop's ``Settings.regularizers``, jitter with its ``transforms``. ``init_noise``
adds seeded Gaussian noise to the start, for networks whose gradient is zero at the zero image.
**Fourier** (Olah et al. 2017, "Feature Visualization"): the image is sigmoid(C · 1/f-scaled spectrum)
(``cnnviz.optvis.param``), optionally colour-decorrelated, under random pad, shift, zoom and turn
(``cnnviz.optvis.transforms``), and Adam maximises S itself. ``render`` maximises any composed
``cnnviz.optvis.objectives.Objective``, as Lucid's ``render_vis`` does.

Targets are taken as named: ``relu4_3`` climbs the ReLU's output, ``conv4_3`` its pre-activation (whose
gradient is never cut off by the ReLU, Lucid's ``*_pre_relu``). Several targets, and several copies of
each (pushed apart by ``diversity``, a Gram-similarity penalty), run as one batch where memory allows.
The optimization runs in the machine's fast precision (``HookedModel.for_optimization``: bf16 where
native); the recorded scores and probabilities are computed in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from cnnviz.analyzers.common import Output, Outputs, record, zero_image
from cnnviz.analyzers.saliency.gradcam import cam_layer
from cnnviz.analyzers.target import Target, check_target_given, class_probabilities, resolve_target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import check_size
from cnnviz.core.layers import LOGITS
from cnnviz.core.memory import check_fits
from cnnviz.errors import CnnvizError
from cnnviz.losses import Loss, Term
from cnnviz.optim.loop import optimize
from cnnviz.optim.parameterization import Parameterization, Pixels
from cnnviz.optim.settings import Settings, Step, compose, state_images
from cnnviz.optvis.objectives import Objective
from cnnviz.optvis.objectives import diversity as diversity_objective
from cnnviz.optvis.param import Squashed, check_param, is_squashed
from cnnviz.optvis.regularizers import Blur, Clip, l2_norm
from cnnviz.optvis.transforms import Jitter, standard

DEFAULT_L2 = 2.0
DEFAULT_ITERS = 200
DEFAULT_LR = 0.05
DEFAULT_BLUR = Blur(sigma=0.5, every=4)
DEFAULT_CLIP = Clip(norm_pct=10.0, contribution_pct=10.0)
DEFAULT_JITTER = 4


@dataclass(frozen=True)
class Recipe:
    """How the image is made: ``param`` ``pixel`` (the pixels from the zero image, clamped; λ is the L2
    weight) or ``fft`` (a 1/f-scaled spectrum under a sigmoid); ``decorrelate`` colours (sigmoid
    parameterizations only: ``pixel`` with it is sigmoid of per-pixel logits)."""

    param: str = "pixel"
    decorrelate: bool = False
    l2_weight: float = DEFAULT_L2
    init_noise: float = 0.0

    @property
    def squashed(self) -> bool:
        return is_squashed(self.param, self.decorrelate)

    def check(self) -> None:
        check_param(self.param)
        if not (self.l2_weight >= 0 and self.init_noise >= 0 and math.isfinite(self.l2_weight) and math.isfinite(self.init_noise)):
            raise CnnvizError(f"--l2 and --init-noise must be finite and at least 0, got {self.l2_weight} and {self.init_noise}")

    def params(self) -> dict:
        return {"param": self.param, "decorrelate": self.decorrelate, "l2_weight": self.l2_weight, "init_noise": self.init_noise}


def default_l2(param: str, decorrelate: bool) -> float:
    """λ's default: ``DEFAULT_L2`` for pixels, 0 under a sigmoid (which keeps the image bounded itself)."""
    return 0.0 if is_squashed(param, decorrelate) else DEFAULT_L2


def default_settings(**changes) -> Settings:
    """Adam from the zero image with every regularizer on (blur, clip, jitter), as the CLI runs it."""
    return replace(Settings(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR, transforms=(Jitter(DEFAULT_JITTER),),
                            regularizers=(DEFAULT_BLUR, DEFAULT_CLIP)), **changes)


def target_for(
    model: HookedModel, size: int, target: str | int | None = None, layer: str | None = None,
    channel: str | int | None = None, y: int | None = None, x: int | None = None,
) -> Target:
    """The ascent's target on ``model`` for a square image of ``size`` px: a class, or a channel/neuron of a layer."""
    check_target_given(target, layer)
    return resolve_target(model, zero_image(model, (1, 3, size, size)), target, layer, channel, y, x)


def gradient_scale(model: HookedModel, target: Target, image: Tensor) -> float:
    """n · RMS of ∂S/∂I at ``image`` (one image), n its number of values: S divided by it has a gradient of RMS 1/n."""
    image = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.score(model(image, [target.layer])).sum(), image)
    scale = float(grad.pow(2).mean().sqrt()) * grad.numel()
    if not scale > 0:
        hint = " or climb its pre-activation (the conv layer before it)" if model.table.get(target.layer).kind == "relu" else ""
        raise CnnvizError(f"the gradient of {target.label} is zero at the start image: add noise (--init-noise 0.05){hint}")
    return scale


def scores(model: HookedModel, target: Target, image: Tensor) -> Tensor:
    """S of each image of the batch, without grad."""
    with torch.no_grad():
        return target.score(model(image, [target.layer])).float()


def start_image(model: HookedModel, recipe: Recipe, shape: tuple[int, int, int, int], seed: int) -> Parameterization:
    """The recipe's start: the zero image (plus seeded noise) as pixels, or seeded grey noise under a sigmoid."""
    generator = torch.Generator().manual_seed(seed)
    if recipe.squashed:
        return Squashed(shape, recipe.param, recipe.decorrelate, generator=generator, device=model.device)
    noise = recipe.init_noise * torch.randn(shape, generator=generator).to(model.device)
    return Pixels((zero_image(model, shape) + noise).clamp(0, 1))


def _batch_that_fits(model: HookedModel, layers: list[str], shape: tuple[int, int], state: int, wanted: int) -> int:
    """The largest batch up to ``wanted`` (halving) whose run fits in memory; the error of a single image if none does."""
    batch = wanted
    while True:
        try:
            check_fits(model, layers, shape, state, batch=batch)
            return batch
        except CnnvizError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)


def ascend_many(
    model: HookedModel,
    targets: Sequence[Target],
    *,
    size: int = 256,
    recipe: Recipe | None = None,
    copies: int = 1,
    diversity: float = 0.0,
    diversity_layer: str | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> list[Output]:
    """Maximise each of ``targets``, ``copies`` images each, as few batched runs as memory allows;
    one ``Output`` per image, target by target. With ``diversity`` λ > 0 each target's copies also
    maximise λ·diversity at ``diversity_layer`` (default: the target's layer if spatial, else the
    last spatial ReLU before it). All copies of a target run in one batch: where they do not fit, the
    run is refused, naming how many do. The progress callback sees S, the targets' mean real score."""
    recipe, settings = recipe or Recipe(), settings or default_settings()
    recipe.check()
    check_size(size)
    if copies < 1 or not (diversity >= 0 and math.isfinite(diversity)):
        raise CnnvizError(f"--copies must be at least 1 and --diversity finite and at least 0, got {copies} and {diversity}")
    if recipe.squashed and settings.regularizers:
        raise CnnvizError("blur, clip and decay work on pixels: turn them off with --param fft or --decorrelate")
    if not targets:
        raise CnnvizError("nothing to maximise: give at least one target")
    layers = {t: [t.layer] + ([_diversity_layer(model, t, diversity_layer, size)] if diversity and copies > 1 else [])
              for t in targets}
    viewed = tuple(compose(settings.transforms, torch.zeros(1, 3, size, size), torch.Generator()).shape[-2:])
    fits = _batch_that_fits(model, sorted({name for names in layers.values() for name in names}), viewed,
                            state_images(settings.optimizer), len(targets) * copies)
    if fits < copies:
        raise CnnvizError(f"{copies} copies of a {size} px image do not fit in memory together (about {fits} do): "
                          f"use --copies {fits} or a smaller --size")
    per_run = fits // copies
    outputs: list[Output] = []
    for first in range(0, len(targets), per_run):
        chunk = list(targets[first:first + per_run])
        outputs += _ascend_batch(model, chunk, layers, size, recipe, copies, diversity, settings, callback)
    return outputs


def _diversity_layer(model: HookedModel, target: Target, chosen: str | None, size: int) -> str:
    """The layer whose Grams diversity compares: ``chosen`` (which must keep a spatial map), else the
    target's layer if it keeps one, else Grad-CAM's default (the last spatial ReLU up to the target)."""
    probe = zero_image(model, (1, 3, size, size))
    layer = model.table.get(chosen or target.layer).name
    with torch.no_grad():
        spatial = model(probe, [layer])[layer].dim() == 4
    if chosen is not None and not spatial:
        raise CnnvizError(f"--diversity-layer {layer} has no spatial map to compare Gram matrices of: choose a convolution "
                          "or ReLU layer")
    return layer if spatial else cam_layer(model, target, probe)


def _ascend_batch(
    model: HookedModel, targets: list[Target], layers: dict[Target, list[str]], size: int, recipe: Recipe, copies: int,
    diversity: float, settings: Settings, callback: Callable[[Step], None] | None,
) -> list[Output]:
    batch = len(targets) * copies
    shape = (batch, 3, size, size)
    param = start_image(model, recipe, shape, settings.seed)
    start = param().detach()
    zero = zero_image(model, (1, 3, 1, 1))
    groups = [list(range(i * copies, (i + 1) * copies)) for i in range(len(targets))]
    scale = [gradient_scale(model, t, start[items[:1]]) if not recipe.squashed else 1.0 for t, items in zip(targets, groups)]
    terms = [Term(f"score{i}", -1.0 / g, (t.layer,), lambda acts, x, s=t.objective(items): s(acts))
             for i, (t, items, g) in enumerate(zip(targets, groups, scale))]
    if diversity and copies > 1:
        terms += [Term(f"diversity{i}", -diversity / g, (layers[t][1],),
                       lambda acts, x, s=diversity_objective(layers[t][1], items): s(acts))
                  for i, (t, items, g) in enumerate(zip(targets, groups, scale))]
    terms.append(Term("l2", recipe.l2_weight * batch, (), lambda acts, x: l2_norm(x - zero)))
    fast = model.for_optimization()
    loss = Loss(fast, terms)

    def report(step: Step) -> None:
        mean = sum(-step.losses[f"score{i}"] * g for i, g in enumerate(scale)) / batch
        rest = {k: v for k, v in step.losses.items() if not k.startswith("score")}
        callback(replace(step, losses={"S": mean, **rest}))

    result = optimize(lambda _: loss, param, settings, report if callback else None, zero=zero)
    outputs = []
    for t, items in zip(targets, groups):
        before, after = scores(model, t, start[items]), scores(model, t, result.image[items])
        for k, item in enumerate(items):
            image = result.image[item:item + 1]
            params = {"size": size, **recipe.params(), **t.params(), "copy": k, "copies": copies, "diversity": diversity,
                      "batch": batch, "score_start": float(before[k]), "score": float(after[k])}
            if t.layer == LOGITS:
                params["probability"] = float(class_probabilities(model, image)[0, t.channel])
            outputs.append(Output(image, record("ascent", fast, layers[t], params, settings, result)))
    return outputs


def render(
    model: HookedModel,
    objective: Objective,
    *,
    size: int = 256,
    copies: int = 1,
    recipe: Recipe | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> list[Output]:
    """Maximise a composed ``Objective`` (``cnnviz.optvis.objectives``: ``channel(...) + 0.5 * neuron(...)``,
    ``... + λ * diversity(...)``) over a batch of ``copies`` images, as Lucid's ``render_vis`` does; by
    default with Olah et al.'s recipe (fft, decorrelated colours, standard transforms). One ``Output`` per
    image, each recording the objective's value for the whole batch (``score``), as ``Outputs`` (a list that a
    notebook shows as one row)."""
    recipe = recipe or Recipe("fft", True, 0.0)
    recipe.check()
    check_size(size)
    settings = settings or default_settings(regularizers=(), transforms=() if not recipe.squashed else standard())
    if copies < 1:
        raise CnnvizError(f"copies must be at least 1, got {copies}")
    check_fits(model, list(objective.layers), (size, size), state_images(settings.optimizer), batch=copies)
    param = start_image(model, recipe, (copies, 3, size, size), settings.seed)
    zero = zero_image(model, (1, 3, 1, 1))
    fast = model.for_optimization()
    loss = Loss(fast, [
        Term("score", -1.0, objective.layers, lambda acts, x: objective(acts)),
        Term("l2", recipe.l2_weight * copies, (), lambda acts, x: l2_norm(x - zero)),
    ])
    result = optimize(lambda _: loss, param, settings, callback, zero=zero)
    with torch.no_grad():
        final = float(objective(model(result.image, objective.layers)))
    params = {"size": size, **recipe.params(), "objective": repr(objective), "copies": copies, "score": final}
    return Outputs(Output(result.image[i:i + 1], record("ascent", fast, list(objective.layers), {**params, "copy": i}, settings,
                                                      result)) for i in range(copies))


def ascend(
    model: HookedModel,
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    size: int = 256,
    l2_weight: float | None = None,
    init_noise: float = 0.0,
    param: str = "pixel",
    decorrelate: bool = False,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Maximise a class score (``target``: a class name or index), or a channel (its mean, or its neuron
    at y, x) of ``layer``, over a size × size image; returns the image and its record. ``param="fft"``
    with ``decorrelate=True`` and ``settings`` with ``transforms=standard()`` is Olah et al.'s recipe.
    ``l2_weight`` defaults to ``DEFAULT_L2`` for pixels and 0 for the sigmoid parameterizations. The
    progress callback sees the target's real score S."""
    recipe = Recipe(param, decorrelate, default_l2(param, decorrelate) if l2_weight is None else l2_weight, init_noise)
    recipe.check()
    check_size(size)
    settings = settings or (default_settings(regularizers=(), transforms=standard()) if recipe.squashed else None)
    chosen = target_for(model, size, target, layer, channel, y, x)
    return ascend_many(model, [chosen], size=size, recipe=recipe, settings=settings, callback=callback)[0]
