"""Saliency maps: what in an image a class score (or a channel, or one neuron) responds to.

``saliency`` makes one method's map of one image; the methods are a registry (``methods.py``), the ReLU
backward rules on every kind of ReLU live in ``rules.py`` and Grad-CAM in ``gradcam.py``.
"""

from __future__ import annotations

import time

import torch

from cnnviz.analyzers.common import Output, model_record
from cnnviz.analyzers.saliency.gradcam import cam_layer, check_cam_layer, gradcam
from cnnviz.analyzers.saliency.methods import (
    DISPLAY_PERCENTILE,
    GRADCAM,
    GUIDED_GRADCAM,
    HEATMAP,
    METHODS,
    RULES,
    Method,
    attribute,
    get_method,
    picture,
)
from cnnviz.analyzers.saliency.rules import clipped_relu_rule
from cnnviz.analyzers.target import resolve_target, top_classes
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, source_name
from cnnviz.core.layers import LOGITS
from cnnviz.core.memory import check_fits

__all__ = ["GRADCAM", "GUIDED_GRADCAM", "METHODS", "RULES", "Method", "attribute", "cam_layer", "clipped_relu_rule",
           "gradcam", "get_method", "picture", "saliency"]


def saliency(
    model: HookedModel,
    image: ImageSource = "chelsea",
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    method: str = "guided",
    size: int | None = 256,
    gradcam_layer: str | None = None,
    seed: int = 0,
) -> Output:
    """The ``method`` map of one image for a class (``target``: a name, an index or 'top', the default)
    or for a channel/neuron of ``layer``. ``size`` sets the long side (None: keep the image's size).
    The output's image is the map's picture, ``raw`` the map itself, ``record.params`` the target, its
    score and (for class targets) the model's top-5 for the image."""
    chosen = get_method(method)
    photo = as_image(image, size, model.device)
    check_fits(model, [LOGITS if layer is None else layer], photo.shape, batch=chosen.batch)
    resolved = resolve_target(model, photo, target, layer, channel, y, x)
    if chosen.cam:
        gradcam_layer = check_cam_layer(model, resolved, photo, gradcam_layer)
    start = time.perf_counter()
    with torch.no_grad():
        value = float(resolved.score(model(photo, [resolved.layer]))[0])
    raw = attribute(model, photo, resolved, chosen.name, gradcam_layer, seed)
    params = {"image": source_name(image), "size": size, "method": chosen.name, **resolved.params(), "score": value,
              "display": "jet overlay" if chosen.map == HEATMAP else f"clipped at p{DISPLAY_PERCENTILE}"}
    if resolved.layer == LOGITS:
        params["top5"] = [[name, round(p, 4)] for name, p in top_classes(model, photo, 5)]
    if chosen.cam:
        params["gradcam_layer"] = gradcam_layer
    params.update(chosen.params, **({"seed": seed} if chosen.seeded else {}))
    record = model_record("saliency", model, [resolved.layer], params, seconds=round(time.perf_counter() - start, 3))
    return Output(picture(raw, chosen.name, photo), record, raw=raw[0], input=photo)

