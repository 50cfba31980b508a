"""cnnviz: show what a convolutional network sees.

The analyzers, of one shape (see ``cnnviz.api``): ``saliency`` (and its checks ``sanity`` and
``faithfulness``), ``ascent``, ``render``, ``invert``, ``texture``, ``transfer`` and ``patches``;
``microscope`` (every unit of some layers over an image set, as a site); feature visualization's
objectives (``Objective``, ``channel``, ``neuron``, ``diversity``) and regularizers; ``load_model`` gives a
``HookedModel`` that returns named activations. This list is the public surface. Names are imported on first use, so ``import cnnviz``
(and the command line) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(("saliency", "sanity", "faithfulness", "ascent", "render", "invert", "texture", "transfer", "patches"),
                   "cnnviz.api"),
    **dict.fromkeys(("Objective", "channel", "neuron", "diversity"), "cnnviz.optvis.objectives"),
    **dict.fromkeys(("Blur", "Clip", "Decay"), "cnnviz.optvis.regularizers"),
    "HookedModel": "cnnviz.core.hooked", "load_model": "cnnviz.core.hooked", "load_image": "cnnviz.core.images",
    "save_png": "cnnviz.core.images", "Output": "cnnviz.analyzers.common", "Outputs": "cnnviz.analyzers.common",
    "Patches": "cnnviz.analyzers.patches", "Recipe": "cnnviz.analyzers.ascent", "CnnvizError": "cnnviz.errors",
    "Settings": "cnnviz.optim.settings", "microscope": "cnnviz.microscope.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnviz' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
