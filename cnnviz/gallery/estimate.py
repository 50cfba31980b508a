"""How long a gallery build will take on this machine, from measured evaluations.

Each figure is counted as forward+backward passes of its network up to its deepest layer at its size
(an L-BFGS iteration or an Adam step costs one of them, a strong-Wolfe iteration about ``LBFGS_EVALS``);
one such pass per (network, layer, size) is timed here, so the estimate follows this machine's speed and
load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from cnnviz.analyzers.ascent import PARAM_ROWS, ROWS
from cnnviz.analyzers.saliency import IG_STEPS, METHODS, SMOOTHGRAD_SAMPLES
from cnnviz.analyzers.style import PAPER_TEXTURE_SETS, STYLE_LAYERS
from cnnviz.analyzers.transfer import CONTENT_LAYERS
from cnnviz.cli.options import LINE_SEARCH
from cnnviz.cli.transfer import BETAS, STYLE_SIZE_FACTORS, SWEEP_CONTENT_LAYERS
from cnnviz.core.hooked import HookedModel, load_model, with_head
from cnnviz.core.layers import LOGITS
from cnnviz.gallery.calls import Call

LBFGS_EVALS = {"strong-wolfe": 1.2}
"""Loss evaluations per L-BFGS iteration where it is not one, line-search trials included (1.1-1.35 in
recorded strong-Wolfe histories; the backtracking search and none take one per iteration)."""
FORWARD_ONLY = 0.35
"""A forward pass without gradients, as a share of a forward+backward pass."""
TIMINGS = 3
"""Passes timed per (network, layer, size), the fastest counted: the first ones at a new size set up kernels."""
BUNDLED_IMAGES = 12


@dataclass(frozen=True)
class Work:
    """``passes`` forward+backward passes of a call's network up to ``layer`` on a ``size`` px square."""

    layer: str
    size: int
    passes: float


def _names(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part.strip()]


def _deepest(model: HookedModel, layers: Iterable[str]) -> str:
    order = model.table.names()
    return max(layers, key=lambda name: order.index(model.table.get(name).name))


def _evals(call: Call) -> float:
    iters = call.kwargs.get("iters", 200)
    if call.kwargs.get("optimizer", "lbfgs") != "lbfgs":
        return iters
    return iters * LBFGS_EVALS.get(call.kwargs.get("line_search", LINE_SEARCH), 1.0)


def _invert(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    layers = model.table.parse(k["layers"]) if k.get("layers") else [k.get("layer") or "relu4_3"]
    return [Work(layer, k["size"], _evals(call)) for layer in layers]


def _texture(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    sets = PAPER_TEXTURE_SETS.values() if k.get("layer_sets") else [PAPER_TEXTURE_SETS["pool4"]]
    sources = len(k.get("sources") or [None])
    return [Work(_deepest(model, layers), k["size"], sources * _evals(call)) for layers in sets]


def _transfer(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    deepest = _deepest(model, [*CONTENT_LAYERS, *STYLE_LAYERS])
    if k.get("sweep") == "content-layer":
        return [Work(_deepest(model, [layer, deepest]), k["size"], _evals(call)) for layer in SWEEP_CONTENT_LAYERS]
    cells = {"alpha-beta": len(BETAS), "style-size": len(STYLE_SIZE_FACTORS)}.get(k.get("sweep"), 1)
    return [Work(deepest, k["size"], cells * _evals(call))]


def _ascent(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    targets = len(_names(k.get("cls")) or [None]) * len(_names(k.get("channel")) or [None])
    rows = {"regularizers": len(ROWS), "param": len(PARAM_ROWS)}.get(k.get("grid"), 1)
    return [Work(layer, k["size"], targets * rows * _evals(call)) for layer in _names(k.get("layer")) or [LOGITS]]


def _saliency(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    per_image = len(METHODS) + SMOOTHGRAD_SAMPLES + IG_STEPS
    return [Work(k.get("layer") or LOGITS, k["size"], len(k.get("images") or [None]) * per_image)]


def _patches(call: Call, model: HookedModel) -> list[Work]:
    k = call.kwargs
    sides = [int(s) for s in k["scales"].split(",")]
    images = len(k.get("images") or [None] * BUNDLED_IMAGES)
    rows = len(_names(k["channels"]))
    works = [Work(layer, side, images * FORWARD_ONLY) for layer in _names(k["layer"]) for side in sides]
    guided = [Work(layer, min(sides), rows * k["top"]) for layer in _names(k["layer"])] if k.get("guided") else []
    return works + guided


WORK: dict[str, Callable[[Call, HookedModel], list[Work]]] = {
    "invert": _invert, "texture": _texture, "transfer": _transfer, "ascent": _ascent, "saliency": _saliency,
    "patches": _patches,
}


def _network(call: Call) -> str:
    """The network a call loads: class scores on the bundled VGG-16 need its head."""
    model = call.kwargs["model"]
    wants_class = call.name in ("ascent", "saliency") and call.kwargs.get("layer") is None
    return with_head(model, call.kwargs.get("weights")) if wants_class else model


def _timed(model: HookedModel, layer: str, size: int) -> float:
    """Seconds of one forward+backward pass of ``model`` up to ``layer`` on a ``size`` px square."""
    x = torch.rand(1, 3, size, size, device=model.device, requires_grad=True)
    start = time.perf_counter()
    model(x, [layer])[layer].float().square().mean().backward()
    return time.perf_counter() - start


def seconds(calls: Iterable[Call], device: str = "auto") -> float:
    """The estimated seconds of running ``calls`` here."""
    total = 0.0
    timings: dict[tuple[str, str | None, str | None, str, int], float] = {}
    for call in calls:
        network, k = _network(call), call.kwargs
        model = load_model(network, k.get("weights"), device, k.get("seed", 0), k.get("precision", "auto"))
        for work in WORK[call.name](call, model):
            key = (network, k.get("weights"), k.get("precision"), work.layer, work.size)
            if key not in timings:
                timings[key] = min(_timed(model, work.layer, work.size) for _ in range(TIMINGS))
            total += work.passes * timings[key]
    return total
