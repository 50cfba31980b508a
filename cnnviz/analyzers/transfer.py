"""Style transfer (Gatys, Ecker & Bethge 2016): L = α L_content + β L_style.

L_content = ½ Σ (F − P)² at the content layer(s), divided by ½ Σ P² so that α is free of the
network's activation scale; L_style is the normalised Gram loss (``cnnviz.losses.style_term``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL.Image import Image as PILImage
from torch import Tensor

from cnnviz.analyzers.color import luminance, match_color_histogram, match_luminance, with_chroma
from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, check_size, resize, source_name
from cnnviz.core.memory import check_fits
from cnnviz.errors import CnnvizError
from cnnviz.losses import Loss, Term, content_term, gram_targets, style_term
from cnnviz.optim.loop import optimize
from cnnviz.optim.settings import Settings, Step, state_images
from cnnviz.optvis.regularizers import tv_loss

CONTENT_LAYERS = ("relu4_2",)
# Gatys et al. 2016: style at conv1_1 ... conv5_1 (after their in-place ReLUs).
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_STYLE_WEIGHT = 1.0
DEFAULT_ITERS = 300
PRESERVE = ("luminance", "histogram")


def check_preserve_color(preserve_color: str | None) -> None:
    if preserve_color not in (None, *PRESERVE):
        raise CnnvizError(f"unknown --preserve-color '{preserve_color}' (choices: {', '.join(PRESERVE)})")


def blend_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Blend weights of several style images, normalised to sum to one (equal by default)."""
    weights = list(weights) if weights else [1.0] * count
    if len(weights) != count:
        raise CnnvizError(f"{count} style image(s) but {len(weights)} blend weight(s) (--style-blend)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise CnnvizError(f"blend weights (--style-blend) must be >= 0 with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


def transfer_problem(
    model: HookedModel, content: Tensor, style_images: Sequence[Tensor], blend: Sequence[float], *, content_weight: float,
    style_weight: float, content_layers: Sequence[str], style_layers: Sequence[str],
    style_layer_weights: Sequence[float] | None, tv_weight: float,
) -> Callable[[tuple[int, int]], Loss]:
    """The loss of a transfer for each image size (H, W): α content of ``content`` + β style of the
    ``blend`` of ``style_images`` (+ TV); the style Grams are computed once, the content features per size."""
    grams = gram_targets(model, style_images, blend, style_layers)
    style = style_term(style_weight, grams, style_layer_weights, dtype=model.autocast)

    def problem(shape: tuple[int, int]) -> Loss:
        return Loss(model, [
            content_term(content_weight, resize(content, shape), model, content_layers),
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
    settings = settings or Settings(iters=DEFAULT_ITERS)
    model = model.for_optimization()
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
    check_fits(model, [*content_layers, *style_layers], photo.shape, state_images(settings.optimizer))
    if preserve_color == "luminance":
        style_images = [match_luminance(s, photo) for s in style_images]
        content = luminance(photo)
    else:
        if preserve_color == "histogram":
            style_images = [match_color_histogram(s, photo) for s in style_images]
        content = photo
    problem = transfer_problem(model, content, style_images, blend, content_weight=content_weight, style_weight=style_weight,
                               content_layers=content_layers, style_layers=style_layers,
                               style_layer_weights=style_layer_weights, tv_weight=tv_weight)
    start = resize(style_images[0], tuple(content.shape[-2:])) if init == "style" else initial_image(init, content, model, settings.seed)
    result = optimize(problem, start, settings, callback)
    picture = with_chroma(result.image, photo) if preserve_color == "luminance" else result.image
    params = {
        "image": source_name(image), "styles": [source_name(s) for s in styles], "style_blend": blend,
        "content_weight": content_weight, "style_weight": style_weight, "content_layers": content_layers,
        "style_layers": style_layers, "style_layer_weights": list(style_layer_weights) if style_layer_weights else None,
        "tv_weight": tv_weight, "size": size, "style_size": style_size, "init": init, "preserve_color": preserve_color,
    }
    return Output(picture, record("transfer", model, [*content_layers, *style_layers], params, settings, result), input=photo)
