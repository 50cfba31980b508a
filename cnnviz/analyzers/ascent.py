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
(cnnviz.param), optionally colour-decorrelated, under random pad, jitter, zoom and turn
(cnnviz.transforms), and Adam maximises S itself.

Targets are taken as named: ``relu4_3`` climbs the ReLU's output, ``conv4_3`` its pre-activation (whose
gradient is never cut off by the ReLU, Lucid's ``*_pre_relu``). Several targets, and several copies of
each (pushed apart by ``diversity``, a Gram-similarity penalty), run as one batch where memory allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from cnnviz.analyzers.common import Output, record, zero_image
from cnnviz.analyzers.target import Target, is_class, resolve_target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import check_size
from cnnviz.core.layers import LOGITS
from cnnviz.core.memory import check_fits
from cnnviz.errors import CnnvizError
from cnnviz.objectives import Objective, Score, Term, diversity as diversity_score, l2_norm
from cnnviz.optimize import Blur, Clip, Decay, Settings, Step, optimize
from cnnviz.param import Parameterization, Pixels, Squashed, check_param
from cnnviz.transforms import Jitter, RandomRotate, RandomScale, Transform, compose, standard

DEFAULT_L2 = 2.0
DEFAULT_ITERS = 200
DEFAULT_LR = 0.05
DEFAULT_BLUR = Blur(sigma=0.5, every=4)
DEFAULT_CLIP = Clip(norm_pct=10.0, contribution_pct=10.0)
DEFAULT_JITTER = 4
ROWS = ("none", "L2", "L2+blur", "L2+blur+clip", "+jitter")
PARAM_ROWS = ("pixel+L2+blur", "fft", "fft+decorrelate", "fft+decorrelate+transforms")


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
        return self.param != "pixel" or self.decorrelate

    def check(self) -> None:
        check_param(self.param)
        if not (self.l2_weight >= 0 and self.init_noise >= 0 and math.isfinite(self.l2_weight) and math.isfinite(self.init_noise)):
            raise CnnvizError(f"--l2 and --init-noise must be finite and at least 0, got {self.l2_weight} and {self.init_noise}")

    def params(self) -> dict:
        return {"param": self.param, "decorrelate": self.decorrelate, "l2_weight": self.l2_weight, "init_noise": self.init_noise}


def default_settings(**changes) -> Settings:
    """Adam from the zero image with every regularizer on (blur, clip, jitter: the grid's last row),
    as the CLI runs it."""
    return replace(Settings(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR, transforms=(Jitter(DEFAULT_JITTER),),
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
    transforms = (Jitter(jitter),) if level >= 4 and jitter else ()
    return (l2_weight if level >= 1 else 0.0), replace(base, regularizers=tuple(regularizers), transforms=transforms)


def param_row(name: str, base: Settings, l2_weight: float = DEFAULT_L2, blur: Blur = DEFAULT_BLUR,
              transforms: Sequence[Transform] | None = None) -> tuple[Recipe, Settings]:
    """(recipe, settings) of one row of the parameterization grid: pixel+L2+blur (Simonyan et al. with
    Yosinski et al.'s blur), fft, fft+decorrelate, fft+decorrelate+transforms (Olah et al.'s recipe;
    ``transforms`` default to ``standard()``)."""
    if name not in PARAM_ROWS:
        raise CnnvizError(f"unknown parameterization row '{name}' (choices: {', '.join(PARAM_ROWS)})")
    if name == "pixel+L2+blur":
        return Recipe("pixel", False, l2_weight), replace(base, regularizers=(blur,) if blur.sigma > 0 else (), transforms=())
    robust = name.endswith("+transforms")
    chosen = tuple(standard() if transforms is None else transforms) if robust else ()
    return Recipe("fft", "decorrelate" in name, 0.0), replace(base, regularizers=(), transforms=chosen)


def target_for(
    model: HookedModel, size: int, cls: str | int | None = None, layer: str | None = None,
    channel: str | int | None = None, y: int | None = None, x: int | None = None,
) -> Target:
    """The ascent's target on ``model`` for a square image of ``size`` px: a class, or a channel/neuron of a layer."""
    if is_class(layer) and cls is None:
        raise CnnvizError("give a class (--class NAME or index) or a layer and channel (--layer relu4_3 --channel 10)")
    return resolve_target(model, zero_image(model, (1, 3, size, size)), cls, layer, channel, y, x)


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


def robust_probability(model: HookedModel, target: Target, image: Tensor, draws: int = 16, seed: int = 1234) -> float:
    """The target class's softmax probability for ``image`` (1, 3, H, W), averaged over ``draws`` random
    views it was not optimised for: zoom 0.9–1.1, turn ±10°, shift ±16 px, from a generator of its own."""
    if target.layer != LOGITS:
        raise CnnvizError("a probability needs a class target")
    generator = torch.Generator().manual_seed(seed)
    views = (RandomScale(0.9, 1.1), RandomRotate(10.0), Jitter(16))
    batch = torch.cat([compose(views, image, generator) for _ in range(draws)])
    with torch.no_grad():
        probs = model(batch, [LOGITS])[LOGITS].float().softmax(dim=1)
    return float(probs[:, target.channel].mean())


def start_image(model: HookedModel, recipe: Recipe, shape: tuple[int, int, int, int], seed: int) -> Parameterization:
    """The recipe's start: the zero image (plus seeded noise) as pixels, or seeded grey noise under a sigmoid."""
    generator = torch.Generator().manual_seed(seed)
    if recipe.squashed:
        return Squashed(shape, recipe.param, recipe.decorrelate, generator=generator, device=model.device)
    noise = recipe.init_noise * torch.randn(shape, generator=generator).to(model.device)
    return Pixels((zero_image(model, shape) + noise).clamp(0, 1))


def _batch_that_fits(model: HookedModel, layers: list[str], shape: tuple[int, int], optimizer: str, wanted: int) -> int:
    """The largest batch up to ``wanted`` (halving) whose run fits in memory; the error of a single image if none does."""
    batch = wanted
    while True:
        try:
            check_fits(model, layers, shape, optimizer, batch=batch)
            return batch
        except CnnvizError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)


def ascend_many(
    model: HookedModel,
    goals: Sequence[Target],
    *,
    size: int = 256,
    recipe: Recipe | None = None,
    copies: int = 1,
    diversity: float = 0.0,
    diversity_layer: str | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> list[Output]:
    """Maximise each target in ``goals``, ``copies`` images each, as few batched runs as memory allows;
    one ``Output`` per image, target by target. With ``diversity`` λ > 0 each target's copies also
    maximise λ·diversity at ``diversity_layer`` (default: the target's layer if spatial, else the
    last spatial ReLU). The progress callback sees S, the targets' mean real score."""
    recipe, settings = recipe or Recipe(), settings or default_settings()
    recipe.check()
    check_size(size)
    if copies < 1 or not (diversity >= 0 and math.isfinite(diversity)):
        raise CnnvizError(f"--copies must be at least 1 and --diversity finite and at least 0, got {copies} and {diversity}")
    if recipe.squashed and settings.regularizers:
        raise CnnvizError("blur, clip and decay work on pixels: turn them off with --param fft or --decorrelate")
    if not goals:
        raise CnnvizError("nothing to maximise: give at least one target")
    layers = {goal: [goal.layer] + ([_diversity_layer(model, goal, diversity_layer)] if diversity and copies > 1 else [])
              for goal in goals}
    viewed = tuple(compose(settings.transforms, torch.zeros(1, 3, size, size), torch.Generator()).shape[-2:])
    per_run = _batch_that_fits(model, sorted({name for names in layers.values() for name in names}), viewed,
                               settings.optimizer, len(goals) * copies) // copies or 1
    outputs: list[Output] = []
    for first in range(0, len(goals), per_run):
        chunk = list(goals[first:first + per_run])
        outputs += _ascend_batch(model, chunk, layers, size, recipe, copies, diversity, settings, callback)
    return outputs


def _diversity_layer(model: HookedModel, goal: Target, chosen: str | None) -> str:
    if chosen is not None:
        model.table.get(chosen)
        return chosen
    if goal.layer != LOGITS and model.table.get(goal.layer).kind != "linear":
        return goal.layer
    return model.table.names("relu")[-1]


def _ascend_batch(
    model: HookedModel, goals: list[Target], layers: dict[Target, list[str]], size: int, recipe: Recipe, copies: int,
    diversity: float, settings: Settings, callback: Callable[[Step], None] | None,
) -> list[Output]:
    batch = len(goals) * copies
    shape = (batch, 3, size, size)
    param = start_image(model, recipe, shape, settings.seed)
    start = param().detach()
    zero = zero_image(model, (1, 3, 1, 1))
    groups = [list(range(i * copies, (i + 1) * copies)) for i in range(len(goals))]
    scale = [gradient_scale(model, goal, start[items[:1]]) if not recipe.squashed else 1.0 for goal, items in zip(goals, groups)]
    terms = [Term(f"score{i}", -1.0 / g, (goal.layer,), lambda acts, x, s=goal.objective(items): s(acts))
             for i, (goal, items, g) in enumerate(zip(goals, groups, scale))]
    if diversity and copies > 1:
        terms += [Term(f"diversity{i}", -diversity / g, (layers[goal][1],),
                       lambda acts, x, s=diversity_score(layers[goal][1], items): s(acts))
                  for i, (goal, items, g) in enumerate(zip(goals, groups, scale))]
    terms.append(Term("l2", recipe.l2_weight * batch, (), lambda acts, x: l2_norm(x - zero)))
    objective = Objective(model, terms)

    def report(step: Step) -> None:
        mean = sum(-step.losses[f"score{i}"] * g for i, g in enumerate(scale)) / batch
        rest = {k: v for k, v in step.losses.items() if not k.startswith("score")}
        callback(replace(step, losses={"S": mean, **rest}))

    result = optimize(lambda _: objective, param, settings, report if callback else None, zero=zero)
    outputs = []
    for goal, items in zip(goals, groups):
        before, after = scores(model, goal, start[items]), scores(model, goal, result.image[items])
        for k, item in enumerate(items):
            image = result.image[item:item + 1]
            params = {"size": size, **recipe.params(), **goal.params(), "copy": k, "copies": copies, "diversity": diversity,
                      "batch": batch, "score_start": float(before[k]), "score": float(after[k])}
            if goal.layer == LOGITS:
                params["probability"] = _probability(model, goal, image)
            outputs.append(Output(image, record("ascent", model, layers[goal], params, settings, result)))
    return outputs


def _probability(model: HookedModel, goal: Target, image: Tensor) -> float:
    with torch.no_grad():
        return float(model(image, [LOGITS])[LOGITS].float().softmax(dim=1)[0, goal.channel])


def render(
    model: HookedModel,
    score: Score,
    *,
    size: int = 256,
    batch: int = 1,
    recipe: Recipe | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> list[Output]:
    """Maximise a composed ``Score`` (cnnviz.objectives: ``channel_score(...) + 0.5 * neuron_score(...)``,
    ``... + λ * diversity(...)``) over ``batch`` images, as Lucid's ``render_vis`` does; by default with
    Olah et al.'s recipe (fft, decorrelated colours, standard transforms). One ``Output`` per image,
    each recording the score of the whole batch."""
    recipe = recipe or Recipe("fft", True, 0.0)
    recipe.check()
    check_size(size)
    settings = settings or default_settings(regularizers=(), transforms=() if not recipe.squashed else standard())
    if batch < 1:
        raise CnnvizError(f"batch must be at least 1, got {batch}")
    check_fits(model, list(score.layers), (size, size), settings.optimizer, batch=batch)
    param = start_image(model, recipe, (batch, 3, size, size), settings.seed)
    zero = zero_image(model, (1, 3, 1, 1))
    objective = Objective(model, [
        Term("score", -1.0, score.layers, lambda acts, x: score(acts)),
        Term("l2", recipe.l2_weight * batch, (), lambda acts, x: l2_norm(x - zero)),
    ])
    result = optimize(lambda _: objective, param, settings, callback, zero=zero)
    with torch.no_grad():
        final = float(score(model(result.image, score.layers)))
    params = {"size": size, **recipe.params(), "objective": repr(score), "batch": batch, "score": final}
    return [Output(result.image[i:i + 1], record("ascent", model, list(score.layers), {**params, "copy": i}, settings, result))
            for i in range(batch)]


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
    with ``decorrelate=True`` and ``settings`` with ``transforms=standard()`` is Olah et al.'s recipe
    (``param_row("fft+decorrelate+transforms", ...)``). ``l2_weight`` defaults to ``DEFAULT_L2`` for
    pixels and 0 for the sigmoid parameterizations. The progress callback sees the target's real score S."""
    squashed = param != "pixel" or decorrelate
    recipe = Recipe(param, decorrelate, (0.0 if squashed else DEFAULT_L2) if l2_weight is None else l2_weight, init_noise)
    recipe.check()
    check_size(size)
    settings = settings or (default_settings(regularizers=(), transforms=standard()) if recipe.squashed else None)
    goal = target_for(model, size, target, layer, channel, y, x)
    return ascend_many(model, [goal], size=size, recipe=recipe, settings=settings, callback=callback)[0]
