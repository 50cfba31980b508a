"""Texture synthesis (Gatys, Ecker & Bethge 2015): match Gram matrices from noise, L = Σ w_l E_l."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.analyzers.style import PAPER_TEXTURE_SETS, gram_targets, style_term
from cnnviz.core.hooked import HookedModel
from cnnviz.core.memory import check_fits
from cnnviz.core.images import ImageSource, as_image, check_size, fit_size, resize, source_name
from cnnviz.objectives import Objective
from cnnviz.optimize import Settings, Step, optimize

DEFAULT_LAYERS = PAPER_TEXTURE_SETS["pool4"]


def texture(
    model: HookedModel,
    image: ImageSource = "starry_night",
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    layer_weights: Sequence[float] | None = None,
    size: int = 256,
    source_size: int | None = None,
    init: str = "noise",
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Synthesize a texture of ``image`` with long side ``size`` (the source is read at ``source_size``,
    default ``size``); ``init`` is noise, zeros, content (the source itself) or an image file."""
    settings = settings or Settings()
    model = model.optimizing()
    check_size(size)
    layers = [model.table.get(name).name for name in layers]
    src = as_image(image, source_size or size, model.device)
    check_fits(model, layers, src.shape)
    check_fits(model, layers, fit_size(tuple(src.shape[-2:]), size), settings.optimizer)
    grams = gram_targets(model, [src], [1.0], layers)
    term = style_term(1.0, grams, layer_weights, name="gram", dtype=model.autocast)
    reference = resize(src, fit_size(tuple(src.shape[-2:]), size))
    start = initial_image(init, reference, model, settings.seed)
    result = optimize(lambda _size: Objective(model, [term]), start, settings, callback)
    params = {"image": source_name(image), "size": size, "source_size": source_size,
              "layer_weights": list(layer_weights) if layer_weights else None, "init": init}
    return Output(result.image, record("texture", model, list(layers), params, settings, result), input=src)
