"""Gram-based style representation shared by texture synthesis and style transfer (written once).

Each layer's E_l is divided by the target's own energy Ê_l = Σ Ĝ² / (4N²) (E_l of an all-zero
image), so every layer starts near the same scale whatever its activations' magnitude: the
style loss Σ_l w_l E_l / Ê_l equals Σ_l w_l ‖G − Ĝ‖² / ‖Ĝ‖². Gatys et al. instead rescaled the
network's weights; this keeps the bundled and ImageNet networks on one footing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel
from cnnviz.errors import CnnvizError
from cnnviz.objectives import Term, gram, style_layer_loss, targets

# Gatys et al. 2015, Fig. 1: the texture model matched "up to" each of these layers. Caffe's
# in-place ReLUs mean their conv1_1 is our relu1_1; pooling outputs keep their names.
PAPER_TEXTURE_SETS: dict[str, tuple[str, ...]] = {
    "conv1_1": ("relu1_1",),
    "pool1": ("relu1_1", "pool1"),
    "pool2": ("relu1_1", "pool1", "pool2"),
    "pool3": ("relu1_1", "pool1", "pool2", "pool3"),
    "pool4": ("relu1_1", "pool1", "pool2", "pool3", "pool4"),
}
# Gatys et al. 2016: style at conv1_1 ... conv5_1 (after their in-place ReLUs).
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def blend_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Blend weights of several style images, normalised to sum to one (equal by default)."""
    weights = list(weights) if weights else [1.0] * count
    if len(weights) != count:
        raise CnnvizError(f"{count} style image(s) but {len(weights)} blend weight(s) (--blend)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise CnnvizError(f"blend weights (--blend) must be >= 0 with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


def gram_targets(model: HookedModel, images: Sequence[Tensor], weights: Sequence[float], layers: Sequence[str]) -> dict[str, Tensor]:
    """Ĝ per layer: the blend Σ_s w_s Ĝ_s of the style images' normalised Grams (computed once, no grad)."""
    grams: dict[str, Tensor] = {}
    for image, weight in zip(images, weights):
        for layer, act in targets(model, image, layers).items():
            g = weight * gram(act)
            grams[layer] = grams[layer] + g if layer in grams else g
    return grams


def style_term(
    weight: float, grams: dict[str, Tensor], layer_weights: Sequence[float] | None = None, name: str = "style",
    dtype: torch.dtype | None = None,
) -> Term:
    """β · Σ_l w_l E_l / Ê_l over the layers of ``grams`` (w_l = 1/|L| by default); the Grams of the
    image's features are computed in ``dtype`` (the network's autocast dtype, see ``gram``)."""
    layers = tuple(grams)
    if layer_weights is None:
        layer_weights = [1.0 / len(layers)] * len(layers)
    if len(layer_weights) != len(layers):
        raise CnnvizError(f"{len(layers)} style layers but {len(layer_weights)} layer weights")
    energy = {layer: style_layer_loss(torch.zeros_like(g), g).clamp_min(1e-12) for layer, g in grams.items()}

    def loss(acts: dict[str, Tensor], image: Tensor) -> Tensor:
        return sum(w * style_layer_loss(gram(acts[l], dtype=dtype), grams[l]) / energy[l] for w, l in zip(layer_weights, layers))

    return Term(name, weight, layers, loss)
