"""cnnviz: show what a convolutional network sees.

The analyzers take the model as a keyword: a name (``model="vgg16"``, with ``weights=`` and
``device=``) or a loaded ``HookedModel``; each returns an ``Output`` (``.image``, ``.record``, ``.save()``),
``saliency`` one per ReLU rule (``Maps.outputs``). Class targets on the bundled VGG-16 use its bundled head.
"""

__version__ = "0.1.0"

import functools  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from cnnviz.analyzers import ascent as _ascent  # noqa: E402
from cnnviz.analyzers import inversion as _inversion  # noqa: E402
from cnnviz.analyzers import saliency as _saliency  # noqa: E402
from cnnviz.analyzers import texture as _texture  # noqa: E402
from cnnviz.analyzers import transfer as _transfer  # noqa: E402
from cnnviz.analyzers.target import is_class  # noqa: E402
from cnnviz.core.hooked import HookedModel, load_model, with_head  # noqa: E402
from cnnviz.core.images import load_image, save_png  # noqa: E402
from cnnviz.errors import CnnvizError  # noqa: E402
from cnnviz.optimize import Blur, Clip, Decay, Settings  # noqa: E402


def _with_model(analyzer: Callable[..., Any]) -> Callable[..., Any]:
    """Let an analyzer be called without a loaded model: ``model`` is a name or a HookedModel."""

    @functools.wraps(analyzer)
    def run(*args: Any, model: str | HookedModel = "vgg16", weights: str | None = None, device: str = "auto", **kwargs: Any):
        hooked = model if isinstance(model, HookedModel) else load_model(model, weights, device)
        return analyzer(hooked, *args, **kwargs)

    return run


def _with_classes(analyzer: Callable[..., Any]) -> Callable[..., Any]:
    """``_with_model`` that gives the bundled VGG-16 its bundled head for class targets (it has no classifier)."""
    run = _with_model(analyzer)

    @functools.wraps(analyzer)
    def classify(*args: Any, model: str | HookedModel = "vgg16", weights: str | None = None, **kwargs: Any):
        if isinstance(model, str) and is_class(kwargs.get("layer")):
            model = with_head(model, weights)
        return run(*args, model=model, weights=weights, **kwargs)

    return classify


saliency = _with_classes(_saliency.saliency)
ascent = _with_classes(_ascent.ascend)
invert = _with_model(_inversion.invert)
texture = _with_model(_texture.texture)
transfer = _with_model(_transfer.transfer)

__all__ = [
    "Blur", "Clip", "CnnvizError", "Decay", "HookedModel", "Settings", "ascent", "invert", "load_image", "load_model",
    "saliency", "save_png", "texture", "transfer",
]
