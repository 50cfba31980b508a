"""What every saliency run resolves before it attributes: the photo at its size, the target, and each
method's options (checked once, so a bad value fails before any long work)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cnnviz.analyzers.saliency.gradcam import check_cam_layer
from cnnviz.analyzers.saliency.methods import Method, Options, get_method, occlusion_window
from cnnviz.analyzers.target import Target, resolve_target
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image
from cnnviz.core.layers import LOGITS
from cnnviz.core.memory import check_fits
from cnnviz.errors import CnnvizError


def prepare(
    model: HookedModel, image: ImageSource, size: int | None, target: str | int | None, layer: str | None,
    channel: str | int | None, y: int | None, x: int | None, methods: Sequence[Method],
) -> tuple[Tensor, Target]:
    """The photo (1, 3, H, W) on the model's device and the resolved target, after checking that the
    methods' batches fit in memory."""
    photo = as_image(image, size, model.device)
    check_fits(model, [LOGITS if layer is None else layer], photo.shape, batch=max(m.batch for m in methods))
    return photo, resolve_target(model, photo, target, layer, channel, y, x)


def method_options(
    model: HookedModel, target: Target, photo: Tensor, method: Method, gradcam_layer: str | None = None,
    window: int | None = None, stride: int | None = None, seed: int = 0,
) -> Options:
    """``method``'s options for ``photo``, checked: its Grad-CAM layer, its occlusion window (resolved to
    pixels, so the record says what ran) and its seed."""
    if method.cam:
        gradcam_layer = check_cam_layer(model, target, photo, gradcam_layer)
    if method.name == "occlusion":
        window, stride = occlusion_window(tuple(photo.shape), window, stride)
    return Options(gradcam_layer, seed, window, stride)


def chosen_methods(names: Sequence[str]) -> list[Method]:
    """The registry entries of ``names``, in order, each once; at least one."""
    methods = [get_method(name) for name in dict.fromkeys(names)]
    if not methods:
        raise CnnvizError("give at least one saliency method")
    return methods


def option_params(options: Options) -> dict[str, object]:
    """What a record says of the options that were used."""
    params: dict[str, object] = {}
    if options.gradcam_layer is not None:
        params["gradcam_layer"] = options.gradcam_layer
    if options.window is not None:
        params.update(window=options.window, stride=options.stride)
    return params


def no_grad_score(model: HookedModel, photo: Tensor, target: Target) -> float:
    """The target's score for ``photo``, without gradients."""
    with torch.no_grad():
        return float(target.score(model(photo, [target.layer]))[0])
