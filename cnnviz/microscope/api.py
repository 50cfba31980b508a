"""``cnnviz.microscope``: the microscope from Python, in the API's shape (what it looks at first, then
``model=`` a name or a loaded model, ``weights=``, ``device=``, ``quiet=``); in a notebook it shows a live
progress bar of its stages. Returns the site's index.html."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnnviz import notebook
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.microscope import run


def microscope(images: Sequence[str | Path] | None = None, *, model: str | HookedModel = "vgg16", weights: str | None = None,
               device: str = "auto", quiet: bool = False, callback: Callable[[Any], None] | None = None, **options: Any) -> Path:
    """Every chosen unit of ``layers`` over ``images`` as tables and a site; ``options`` are ``run.microscope``'s
    (``layers``, ``units``, ``out``, ``top``, ``sizes``, ``engine``, ``address``, ``resume``, ...)."""
    hooked = load_model(model, weights, device) if isinstance(model, str) else model
    with notebook.progress("microscope", quiet) as bar:
        return run.microscope(hooked, images, callback=notebook.chain(callback, bar), **options)
