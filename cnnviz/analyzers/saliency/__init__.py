"""Saliency maps: what in an image a class score (or a channel, or one neuron) responds to.

``saliency`` makes one method's map of one image; the methods are a registry (``methods.py``), the ReLU
backward rules on every kind of ReLU live in ``rules.py`` and Grad-CAM in ``gradcam.py``. Whether a map
can be trusted: ``sanity`` (model randomization, ``sanity.py``) and ``faithfulness`` (deletion and
insertion, ``faithfulness.py``).
"""

from __future__ import annotations

import time

from cnnviz.analyzers.common import Output, model_record
from cnnviz.analyzers.saliency.faithfulness import Faithfulness, faithfulness
from cnnviz.analyzers.saliency.gradcam import cam_layer, gradcam
from cnnviz.analyzers.saliency.methods import (
    DISPLAY_PERCENTILE,
    GRADCAM,
    GUIDED_GRADCAM,
    HEATMAP,
    METHODS,
    RULES,
    Method,
    Options,
    attribute,
    get_method,
    magnitude,
    occlusion_window,
    picture,
)
from cnnviz.analyzers.saliency.request import method_options, no_grad_score, option_params, prepare
from cnnviz.analyzers.saliency.rules import clipped_relu_rule
from cnnviz.analyzers.saliency.sanity import SanityCheck, sanity
from cnnviz.analyzers.target import top_classes
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, source_name
from cnnviz.core.layers import LOGITS

__all__ = ["GRADCAM", "GUIDED_GRADCAM", "METHODS", "RULES", "Faithfulness", "Method", "Options", "SanityCheck", "attribute",
           "cam_layer", "clipped_relu_rule", "faithfulness", "gradcam", "get_method", "magnitude", "occlusion_window",
           "picture", "saliency", "sanity"]


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
    occlusion_window: int | None = None,
    occlusion_stride: int | None = None,
    seed: int = 0,
) -> Output:
    """The ``method`` map of one image for a class (``target``: a name, an index or 'top', the default)
    or for a channel/neuron of ``layer``. ``size`` sets the long side (None: keep the image's size).
    The output's image is the map's picture, ``raw`` the map itself, ``record.params`` the target, its
    score and (for class targets) the model's top-5 for the image. ``occlusion_window`` and
    ``occlusion_stride`` (pixels) set the occlusion method's grey window (default: 1/7 of the short side,
    slid by half of it)."""
    chosen = get_method(method)
    photo, resolved = prepare(model, image, size, target, layer, channel, y, x, [chosen])
    options = method_options(model, resolved, photo, chosen, gradcam_layer, occlusion_window, occlusion_stride, seed)
    start = time.perf_counter()
    value = no_grad_score(model, photo, resolved)
    raw = attribute(model, photo, resolved, chosen.name, options)
    params = {"image": source_name(image), "size": size, "method": chosen.name, **resolved.params(), "score": value,
              "display": "jet overlay" if chosen.map == HEATMAP else f"clipped at p{DISPLAY_PERCENTILE}"}
    if resolved.layer == LOGITS:
        params["top5"] = [[name, round(p, 4)] for name, p in top_classes(model, photo, 5)]
    params.update(chosen.params, **({"seed": seed} if chosen.seeded else {}))
    params.update(option_params(options))
    record = model_record("saliency", model, [resolved.layer], params, seconds=round(time.perf_counter() - start, 3))
    return Output(picture(raw, chosen.name, photo), record, raw=raw[0], input=photo)


