"""How long a gallery build will take on this machine, from measured evaluations.

Each figure of the plan (``cnnviz.gallery.plan``) is counted as forward+backward passes of its network up
to its deepest layer at its size (an iteration of the default optimizers costs one of them; a saliency
method costs what its registry entry says); one such pass per (network, layer, size) is timed here, so the
estimate follows this machine's speed and load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from cnnviz.analyzers.saliency import METHODS
from cnnviz.analyzers.saliency.faithfulness import STEPS
from cnnviz.analyzers.saliency.sanity import blocks
from cnnviz.analyzers.texture import PAPER_TEXTURE_SETS
from cnnviz.analyzers.transfer import CONTENT_LAYERS, STYLE_LAYERS
from cnnviz.core.hooked import HookedModel, load_model, with_head
from cnnviz.core.images import bundled_images
from cnnviz.core.layers import LOGITS
from cnnviz.gallery.plan import (
    BETAS,
    GRIDS,
    STYLE_SIZE_FACTORS,
    SWEEP_CONTENT_LAYERS,
    AscentFigure,
    Figure,
    InvertFigure,
    PatchesFigure,
    SaliencyFigure,
    TextureFigure,
    TransferFigure,
)

FORWARD_ONLY = 0.35
"""A forward pass without gradients, as a share of a forward+backward pass."""
TIMINGS = 3
"""Passes timed per (network, layer, size), the fastest counted: the first ones at a new size set up kernels."""


@dataclass(frozen=True)
class Work:
    """``passes`` forward+backward passes of a figure's network up to ``layer`` on a ``size`` px square."""

    layer: str
    size: int
    passes: float


def _deepest(model: HookedModel, layers: Iterable[str]) -> str:
    order = model.table.names()
    return max(layers, key=lambda name: order.index(model.table.get(name).name))


def _invert(figure: InvertFigure, model: HookedModel) -> list[Work]:
    return [Work(layer, figure.size, figure.iters) for layer in model.table.parse(figure.layers)]


def _texture(figure: TextureFigure, model: HookedModel) -> list[Work]:
    return [Work(_deepest(model, layers), figure.size, len(figure.images) * figure.iters)
            for layers in PAPER_TEXTURE_SETS.values()]


def _transfer(figure: TransferFigure, model: HookedModel) -> list[Work]:
    deepest = _deepest(model, [*CONTENT_LAYERS, *STYLE_LAYERS])
    if figure.sweep == "content-layer":
        return [Work(_deepest(model, [layer, deepest]), figure.size, figure.iters) for layer in SWEEP_CONTENT_LAYERS]
    cells = {"alpha-beta": len(BETAS), "style-size": len(STYLE_SIZE_FACTORS)}[figure.sweep]
    return [Work(deepest, figure.size, cells * figure.iters)]


def _ascent(figure: AscentFigure, model: HookedModel) -> list[Work]:
    targets = len(figure.classes or [None]) * len(figure.channels or [None])
    passes = targets * len(GRIDS[figure.grid]) * figure.iters
    return [Work(layer, figure.size, passes) for layer in figure.layers or [LOGITS]]


def _saliency(figure: SaliencyFigure, model: HookedModel) -> list[Work]:
    """Each method's passes per image; the sanity check repeats them once per randomized block, the
    faithfulness check adds two curves' forward passes per method and for the random order."""
    methods = [METHODS[name] for name in figure.methods or METHODS]
    per_image = sum(method.passes for method in methods)
    if figure.sanity:
        per_image *= 1 + len(blocks(model, torch.zeros(1, 3, 32, 32, device=model.device)))
    if figure.faithfulness:
        per_image += (len(methods) + 1) * 2 * (STEPS + 1) * FORWARD_ONLY
    return [Work(LOGITS, figure.size, len(figure.images) * per_image)]


def _patches(figure: PatchesFigure, model: HookedModel) -> list[Work]:
    images = len(bundled_images())
    scans = [Work(figure.layer, side, images * FORWARD_ONLY) for side in figure.sizes]
    guided = [Work(figure.layer, min(figure.sizes), len(figure.channels) * figure.top)] if figure.guided else []
    return scans + guided


WORK: dict[type, Callable[[Figure, HookedModel], list[Work]]] = {
    InvertFigure: _invert, TextureFigure: _texture, TransferFigure: _transfer, AscentFigure: _ascent,
    SaliencyFigure: _saliency, PatchesFigure: _patches,
}


def _network(figure: Figure) -> str:
    """The network a figure loads: class scores on the bundled VGG-16 need its head."""
    classes = isinstance(figure, SaliencyFigure) or isinstance(figure, AscentFigure) and not figure.layers
    return with_head(figure.model, figure.weights) if classes else figure.model


def _timed(model: HookedModel, layer: str, size: int) -> float:
    """Seconds of one forward+backward pass of ``model`` up to ``layer`` on a ``size`` px square."""
    x = torch.rand(1, 3, size, size, device=model.device, requires_grad=True)
    start = time.perf_counter()
    model(x, [layer])[layer].float().square().mean().backward()
    return time.perf_counter() - start


def seconds(figures: Iterable[Figure], device: str = "auto", seed: int = 0, precision: str = "auto") -> float:
    """The estimated seconds of making ``figures`` here."""
    total = 0.0
    timings: dict[tuple[str, str | None, str, int], float] = {}
    for figure in figures:
        network = _network(figure)
        model = load_model(network, figure.weights, device, seed, precision)
        for work in WORK[type(figure)](figure, model):
            key = (network, figure.weights, work.layer, work.size)
            if key not in timings:
                timings[key] = min(_timed(model, work.layer, work.size) for _ in range(TIMINGS))
            total += work.passes * timings[key]
    return total
