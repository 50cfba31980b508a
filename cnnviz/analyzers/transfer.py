"""Style transfer (Gatys, Ecker & Bethge 2016): L = α L_content + β L_style.

L_content = ½ Σ (F − P)² at the content layer(s), divided by ½ Σ P² so that α is free of the
network's activation scale; L_style is the normalised Gram loss of ``style.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.analyzers.style import STYLE_LAYERS, blend_weights, gram_targets, style_term
from cnnviz.color import luminance, match_color_histogram, match_luminance, with_chroma
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import load_image, resize
from cnnviz.errors import CnnvizError
from cnnviz.objectives import Objective, Term, content_loss, targets, tv_loss
from cnnviz.optimize import Settings, Step, optimize

CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_WEIGHT = 1.0
PRESERVE = ("luminance", "histogram")


def _image(source: str | Tensor, size: int, model: HookedModel) -> Tensor:
    return load_image(source, size, model.device) if isinstance(source, str) else resize(source.to(model.device), size)


def check_preserve_color(preserve_color: str | None) -> None:
    if preserve_color not in (None, *PRESERVE):
        raise CnnvizError(f"unknown --preserve-color '{preserve_color}' (choices: {', '.join(PRESERVE)})")


def content_term(weight: float, reference: Tensor, model: HookedModel, layers: Sequence[str]) -> Term:
    """α · mean over layers of ½Σ(F − P)² / ½ΣP², with P from ``reference`` (computed once)."""
    p = targets(model, reference, layers)

    def loss(acts: dict[str, Tensor], image: Tensor) -> Tensor:
        return sum(content_loss(acts[l], p[l]) / content_loss(p[l], 0 * p[l]).clamp_min(1e-12) for l in layers) / len(layers)

    return Term("content", weight, tuple(layers), loss)


def transfer(
    model: HookedModel,
    content: str | Tensor = "astronaut",
    styles: Sequence[str | Tensor] = ("starry_night",),
    *,
    style_blend: Sequence[float] | None = None,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_layer_weights: Sequence[float] | None = None,
    tv_weight: float = 0.0,
    size: int = 512,
    style_size: int | None = None,
    init: str = "content",
    preserve_color: str | None = None,
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Render ``content`` in the style of ``styles`` (blended by ``style_blend``); returns image + record."""
    settings = settings or Settings()
    if not styles:
        raise CnnvizError("style transfer needs at least one style image")
    check_preserve_color(preserve_color)
    content_layers = [model.table.get(n).name for n in content_layers]
    style_layers = [model.table.get(n).name for n in style_layers]
    blend = blend_weights(style_blend, len(styles))
    photo = _image(content, size, model)
    style_images = [_image(s, style_size or size, model) for s in styles]
    if preserve_color == "luminance":
        style_images = [match_luminance(s, photo) for s in style_images]
        target = luminance(photo)
    else:
        if preserve_color == "histogram":
            style_images = [match_color_histogram(s, photo) for s in style_images]
        target = photo
    grams = gram_targets(model, style_images, blend, style_layers)
    style = style_term(style_weight, grams, style_layer_weights)

    def problem(shape: tuple[int, int]) -> Objective:
        return Objective(model, [
            content_term(content_weight, resize(target, shape), model, content_layers),
            style,
            Term("tv", tv_weight, (), lambda acts, x: tv_loss(x)),
        ])

    start = initial_image(init if init != "style" else _path_or_tensor(styles[0]), target, model, settings.seed)
    result = optimize(problem, start, settings, callback)
    image = with_chroma(result.image, photo) if preserve_color == "luminance" else result.image
    params = {
        "content": content if isinstance(content, str) else "tensor",
        "styles": [s if isinstance(s, str) else "tensor" for s in styles], "style_blend": blend,
        "alpha": content_weight, "beta": style_weight, "content_layers": content_layers,
        "style_layers": style_layers, "style_layer_weights": list(style_layer_weights) if style_layer_weights else None,
        "tv_weight": tv_weight, "size": size, "style_size": style_size, "init": init, "preserve_color": preserve_color,
    }
    return Output(image, record("transfer", model, [*content_layers, *style_layers], params, settings, result))


def _path_or_tensor(style: str | Tensor) -> str:
    if not isinstance(style, str):
        raise CnnvizError("--init style needs the style given as an image file or bundled name")
    return style
