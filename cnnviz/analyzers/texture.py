"""Texture synthesis (Gatys, Ecker & Bethge 2015): match Gram matrices from noise, L = Σ w_l E_l."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.analyzers.style import PAPER_TEXTURE_SETS, gram_targets, style_term
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import fit_size, load_image
from cnnviz.objectives import Objective
from cnnviz.optimize import Settings, Step, optimize

DEFAULT_LAYERS = PAPER_TEXTURE_SETS["pool4"]


def texture(
    model: HookedModel,
    source: str | Tensor = "starry_night",
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    layer_weights: Sequence[float] | None = None,
    size: int = 256,
    source_size: int | None = None,
    init: str = "noise",
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Synthesize a texture of ``source`` with long side ``size`` (the source is read at ``source_size``)."""
    settings = settings or Settings()
    layers = [model.table.get(name).name for name in layers]
    src = load_image(source, source_size or size, model.device) if isinstance(source, str) else source.to(model.device)
    grams = gram_targets(model, [src], [1.0], layers)
    term = style_term(1.0, grams, layer_weights, name="gram")
    shape = (1, 3, *fit_size(tuple(src.shape[-2:]), size))
    start = initial_image(init, src.new_zeros(shape), model, settings.seed)
    result = optimize(lambda _size: Objective(model, [term]), start, settings, callback)
    params = {"source": source if isinstance(source, str) else "tensor", "size": size, "source_size": source_size,
              "layer_weights": list(layer_weights) if layer_weights else None, "init": init}
    return Output(result.image, record("texture", model, list(layers), params, settings, result))
