"""cnnviz: show what a convolutional network sees.

Five analyzers of one shape (see ``cnnviz.api``): ``saliency``, ``ascent``, ``invert``, ``texture`` and
``transfer``, each returning an ``Output``; ``load_model`` gives a ``HookedModel`` that returns named
activations. Names are imported on first use, so ``import cnnviz`` (and the command line) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "saliency": "cnnviz.api", "ascent": "cnnviz.api", "invert": "cnnviz.api", "texture": "cnnviz.api",
    "transfer": "cnnviz.api", "HookedModel": "cnnviz.core.hooked", "load_model": "cnnviz.core.hooked",
    "load_image": "cnnviz.core.images", "save_png": "cnnviz.core.images", "Output": "cnnviz.analyzers.common",
    "CnnvizError": "cnnviz.errors", "Settings": "cnnviz.optimize", "Blur": "cnnviz.optimize",
    "Clip": "cnnviz.optimize", "Decay": "cnnviz.optimize",
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
