"""The Python API: every analyzer as one function of the same shape.

``cnnviz.NAME(inputs..., *, model=..., weights=..., device=..., size=256, ...)``: the first arguments
are what the analyzer looks at (an image as a bundled name, a path, a PIL image or a tensor; ``transfer``
also takes its style images; ``ascent`` and ``saliency`` a class (``target``); ``patches`` an image set;
``render`` an ``Objective``), ``model`` is a name or a loaded ``HookedModel``, and every call returns a
result with ``.image``, ``.record`` and ``.save(path)``: an ``Output`` (also ``.raw``, ``.input``), a
list of them (``render``) or ``Patches``; saliency's checks ``sanity`` (model randomization) and
``faithfulness`` (deletion and insertion) return their maps, numbers and record (``.save`` writes them;
``cnnviz.figures.draw_sanity`` and ``draw_faithfulness`` draw them). Saliency, its checks, ascent and render
default to EfficientNet-Lite0 (ImageNet classes, offline); inversion, texture, transfer and patches to the papers' VGG-16. The
optimizing analyzers take ``settings=Settings(...)`` (optimizer, iterations, learning rate, scales, seed,
regularizers) and ``callback=`` (called with each evaluation's ``Step``); their defaults are the CLI's.
In a notebook every call that runs a loop or a scan shows a live progress bar; ``quiet=True`` turns it off.
Results show themselves inline (``cnnviz.core.display``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from cnnviz.analyzers import ascent as _ascent
from cnnviz.analyzers import inversion as _inversion
from cnnviz.analyzers import patches as _patches
from cnnviz.analyzers import saliency as _saliency
from cnnviz.analyzers import texture as _texture
from cnnviz.analyzers import transfer as _transfer
from cnnviz.analyzers.target import is_class
from cnnviz.core.hooked import HookedModel, load_model, with_head

CLASS_MODEL = "efficientnet_lite0"
PAPERS_MODEL = "vgg16"


def _api(analyzer: Callable[..., Any], default_model: str, classes: bool = False, name: str | None = None) -> Callable[..., Any]:
    """``analyzer(model, ...)`` as ``f(..., model=NAME | HookedModel, weights=None, device="auto", quiet=False)``.
    With ``classes``, the bundled VGG-16 gets its bundled head for class targets (it has no classifier). In a
    notebook, an analyzer that reports progress shows it as a live bar (``cnnviz.notebook``) unless ``quiet``;
    a ``callback=`` given is called as well. ``name``: the public name, where it is not the analyzer's."""

    reports = "callback" in inspect.signature(analyzer).parameters
    public = name or analyzer.__name__

    @functools.wraps(analyzer)
    def run(*args: Any, model: str | HookedModel = default_model, weights: str | None = None, device: str = "auto",
            quiet: bool = False, **kwargs: Any) -> Any:
        if isinstance(model, str):
            name = with_head(model, weights) if classes and is_class(kwargs.get("layer")) else model
            model = load_model(name, weights, device)
        if not reports:
            return analyzer(model, *args, **kwargs)
        from cnnviz import notebook

        with notebook.progress(public, quiet) as bar:
            return analyzer(model, *args, **{**kwargs, "callback": notebook.chain(kwargs.get("callback"), bar)})

    own = list(inspect.signature(analyzer).parameters.values())[1:]
    positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, default, annotation in (("model", default_model, "str | HookedModel"),
                                               ("weights", None, "str | None"), ("device", "auto", "str"),
                                               ("quiet", False, "bool"))]
    run.__signature__ = inspect.signature(analyzer).replace(parameters=[*positional, *extra, *keyword])
    del run.__wrapped__
    run.__name__ = run.__qualname__ = public
    return run


saliency = _api(_saliency.saliency, CLASS_MODEL, classes=True)
sanity = _api(_saliency.sanity, CLASS_MODEL, classes=True)
faithfulness = _api(_saliency.faithfulness, CLASS_MODEL, classes=True)
ascent = _api(_ascent.ascend, CLASS_MODEL, classes=True, name="ascent")
render = _api(_ascent.render, CLASS_MODEL)
invert = _api(_inversion.invert, PAPERS_MODEL)
texture = _api(_texture.texture, PAPERS_MODEL)
transfer = _api(_transfer.transfer, PAPERS_MODEL)
patches = _api(_patches.patches, PAPERS_MODEL)
