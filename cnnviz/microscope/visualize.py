"""Feature visualizations of many units: Olah et al.'s recipe (a 1/f-scaled Fourier image, decorrelated
colours, the standard random transforms), each unit's channel mean climbed with Lucid's redirected ReLU
gradient in the first steps (so units that start dead still climb) and, at a ReLU or ReLU6 layer run out of place, its
pre-activation (which does not stop at 6), as many units per batch as fit
(``ascend_many`` halves the batch until it does); ``copies`` > 1 gives each unit diverse images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviz.analyzers.ascent import Recipe, ascend_many, default_settings
from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel
from cnnviz.optvis.redirect import redirected_relus
from cnnviz.optvis.transforms import standard

REDIRECT_STEPS = 16
"""Steps with the redirected ReLU gradient: enough to wake a dead unit; after them the plain gradient is cheaper."""
DIVERSITY = 100.0
"""λ of the diversity term when a unit gets several copies (the ascent CLI's example value)."""


@dataclass(frozen=True)
class VisSpec:
    """How each unit is drawn: ``size`` px, ``iters`` Adam steps, ``copies`` images, the run's ``seed``."""

    size: int
    iters: int
    copies: int
    seed: int


def visualize(model: HookedModel, layer: str, units: list[int], spec: VisSpec) -> list[tuple[int, list[np.ndarray], list[float]]]:
    """Per unit: its images as (H, W, 3) uint8 arrays and the channel mean each reaches."""
    settings = default_settings(regularizers=(), transforms=standard(), iters=spec.iters, seed=spec.seed)
    with redirected_relus(model, layer) as redirection:
        outputs = ascend_many(model, [Target(layer, unit) for unit in units], size=spec.size, recipe=Recipe("fft", True, 0.0),
                              copies=spec.copies, diversity=DIVERSITY if spec.copies > 1 else 0.0, settings=settings,
                              callback=lambda step: redirection.stop() if step.iteration >= REDIRECT_STEPS else None)
    out = []
    for i, unit in enumerate(units):
        mine = outputs[i * spec.copies:(i + 1) * spec.copies]
        pictures = [o.image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy() for o in mine]
        out.append((unit, pictures, [o.record.params["score"] for o in mine]))
    return out
