"""Texture synthesis (Gatys, Ecker & Bethge 2015): match Gram matrices from noise, L = Σ w_l E_l."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cnnviz.analyzers.common import Output, initial_image, record
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, check_size, fit_size, resize, source_name
from cnnviz.core.memory import check_fits
from cnnviz.losses import Loss, gram_targets, style_term
from cnnviz.optim.loop import optimize
from cnnviz.optim.settings import Settings, Step, state_images

# Gatys et al. 2015, Fig. 1: the texture model matched "up to" each of these layers. Caffe's
# in-place ReLUs mean their conv1_1 is our relu1_1; pooling outputs keep their names.
PAPER_TEXTURE_SETS: dict[str, tuple[str, ...]] = {
    "conv1_1": ("relu1_1",),
    "pool1": ("relu1_1", "pool1"),
    "pool2": ("relu1_1", "pool1", "pool2"),
    "pool3": ("relu1_1", "pool1", "pool2", "pool3"),
    "pool4": ("relu1_1", "pool1", "pool2", "pool3", "pool4"),
}
DEFAULT_LAYERS = PAPER_TEXTURE_SETS["pool4"]
DEFAULT_ITERS = 300


def texture(
    model: HookedModel,
    image: ImageSource = "starry_night",
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    layer_weights: Sequence[float] | None = None,
    size: int = 256,
    image_size: int | None = None,
    init: str = "noise",
    settings: Settings | None = None,
    callback: Callable[[Step], None] | None = None,
) -> Output:
    """Synthesize a texture of ``image`` with long side ``size`` (the source image is read at ``image_size``,
    default ``size``); ``init`` is noise, zeros, content (the source itself) or an image file."""
    settings = settings or Settings(iters=DEFAULT_ITERS)
    model = model.for_optimization()
    check_size(size)
    layers = [model.table.get(name).name for name in layers]
    src = as_image(image, image_size or size, model.device)
    check_fits(model, layers, src.shape)
    check_fits(model, layers, fit_size(tuple(src.shape[-2:]), size), state_images(settings.optimizer))
    grams = gram_targets(model, [src], [1.0], layers)
    term = style_term(1.0, grams, layer_weights, name="gram", dtype=model.autocast)
    reference = resize(src, fit_size(tuple(src.shape[-2:]), size))
    start = initial_image(init, reference, model, settings.seed)
    result = optimize(lambda _size: Loss(model, [term]), start, settings, callback)
    params = {"image": source_name(image), "size": size, "image_size": image_size,
              "layer_weights": list(layer_weights) if layer_weights else None, "init": init}
    return Output(result.image, record("texture", model, list(layers), params, settings, result), input=src)
