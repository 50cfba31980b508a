"""Style transfer (Gatys, Ecker & Bethge 2016): L = α L_content + β L_style.

L_content = ½ Σ (F − P)² at the content layer(s), divided by ½ Σ P² so that α is free of the
network's activation scale; L_style is the normalised Gram loss of ``style.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL.Image import Image as PILImage
from torch import Tensor

from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.analyzers.style import STYLE_LAYERS, blend_weights, gram_targets, style_term
from cnnviz.color import luminance, match_color_histogram, match_luminance, with_chroma
from cnnviz.core.hooked import HookedModel
from cnnviz.core.memory import check_fits
from cnnviz.core.images import ImageSource, as_image, check_size, resize, source_name
from cnnviz.errors import CnnvizError
from cnnviz.objectives import Objective, Term, content_loss, targets, tv_loss
from cnnviz.optimize import Settings, Step, optimize

CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_WEIGHT = 1.0
PRESERVE = ("luminance", "histogram")


def check_preserve_color(preserve_color: str | None) -> None:
    if preserve_color not in (None, *PRESERVE):
        raise CnnvizError(f"unknown --preserve-color '{preserve_color}' (choices: {', '.join(PRESERVE)})")


def content_term(weight: float, reference: Tensor, model: HookedModel, layers: Sequence[str]) -> Term:
    """α · mean over layers of ½Σ(F − P)² / ½ΣP², with P and ½ΣP² from ``reference`` (computed once)."""
    p = targets(model, reference, layers)
    energy = {l: content_loss(p[l], torch.zeros_like(p[l])).clamp_min(1e-12) for l in layers}

    def loss(acts: dict[str, Tensor], image: Tensor) -> Tensor:
        return sum(content_loss(acts[l], p[l]) / energy[l] for l in layers) / len(layers)

    return Term("content", weight, tuple(layers), loss)


def transfer_problem(
    model: HookedModel, target: Tensor, style_images: Sequence[Tensor], blend: Sequence[float], *, content_weight: float,
    style_weight: float, content_layers: Sequence[str], style_layers: Sequence[str],
    style_layer_weights: Sequence[float] | None, tv_weight: float,
) -> Callable[[tuple[int, int]], Objective]:
    """The objective of a transfer for each image size (H, W): α content of ``target`` + β style of the
    ``blend`` of ``style_images`` (+ TV); the style Grams are computed once, the content targets per size."""
    grams = gram_targets(model, style_images, blend, style_layers)
    style = style_term(style_weight, grams, style_layer_weights, dtype=model.autocast)

    def problem(shape: tuple[int, int]) -> Objective:
        return Objective(model, [
            content_term(content_weight, resize(target, shape), model, content_layers),
            style,
            Term("tv", tv_weight, (), lambda acts, x: tv_loss(x)),
        ])

    return problem


def transfer(
    model: HookedModel,
    image: ImageSource = "astronaut",
    styles: Sequence[ImageSource] = ("starry_night",),
    *,
    style_blend: Sequence[float] | None = None,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_layer_weights: Sequence[float] | None = None,
    tv_weight: float = 0.0,
    size: int = 256,
    style_size: int | None = None,
    init: str = "content",
    preserve_color: str | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Render the content ``image`` in the style of ``styles`` (blended by ``style_blend``); returns
    image + record. ``init``: content, noise, style (the first style image) or an image file."""
    settings = settings or Settings()
    model = model.optimizing()
    check_size(size)
    check_size(style_size, "--style-size")
    if isinstance(styles, (str, Path, Tensor, PILImage)):
        styles = [styles]
    if not styles:
        raise CnnvizError("style transfer needs at least one style image")
    check_preserve_color(preserve_color)
    content_layers = [model.table.get(n).name for n in content_layers]
    style_layers = [model.table.get(n).name for n in style_layers]
    blend = blend_weights(style_blend, len(styles))
    photo = as_image(image, size, model.device)
    style_images = [as_image(s, style_size or size, model.device) for s in styles]
    for style_image in style_images:
        check_fits(model, style_layers, style_image.shape)
    check_fits(model, [*content_layers, *style_layers], photo.shape, settings.optimizer)
    if preserve_color == "luminance":
        style_images = [match_luminance(s, photo) for s in style_images]
        target = luminance(photo)
    else:
        if preserve_color == "histogram":
            style_images = [match_color_histogram(s, photo) for s in style_images]
        target = photo
    problem = transfer_problem(model, target, style_images, blend, content_weight=content_weight, style_weight=style_weight,
                               content_layers=content_layers, style_layers=style_layers,
                               style_layer_weights=style_layer_weights, tv_weight=tv_weight)
    start = resize(style_images[0], tuple(target.shape[-2:])) if init == "style" else initial_image(init, target, model, settings.seed)
    result = optimize(problem, start, settings, callback)
    picture = with_chroma(result.image, photo) if preserve_color == "luminance" else result.image
    params = {
        "image": source_name(image), "styles": [source_name(s) for s in styles], "style_blend": blend,
        "alpha": content_weight, "beta": style_weight, "content_layers": content_layers,
        "style_layers": style_layers, "style_layer_weights": list(style_layer_weights) if style_layer_weights else None,
        "tv_weight": tv_weight, "size": size, "style_size": style_size, "init": init, "preserve_color": preserve_color,
    }
    return Output(picture, record("transfer", model, [*content_layers, *style_layers], params, settings, result), input=photo)
