"""Decorrelated colours (Olah et al. 2017): feature visualization optimises luminance and two
colour-opponent axes, which ``decorrelate`` mixes into RGB logits, so that a step can change one without
the others.

``COLOR_SQRT`` is a square root C of the 3×3 covariance Σ = C·Cᵀ of the RGB values in [0, 1] of the
bundled photographs (content and texture images; the paintings are left out): the factor U·√S of Σ's
eigen-decomposition, one column per principal colour axis (luminance, then a red-blue and a
green-magenta axis, each of its own standard deviation), scaled so that its largest column has norm 1,
as Lucid factors its ImageNet covariance. A test re-estimates it from the photographs. The factor form
matters to Adam, which steps each parameter by about its learning rate: with one parameter per
principal axis, the weak colour axes move by their small share of natural variation, where a symmetric
root mixing every axis into every parameter lets colour noise move as fast as luminance (saturated
speckle).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.core.images import mix_channels

COLOR_SQRT = torch.tensor([
    [0.6173, 0.3397, -0.0249],
    [0.5883, -0.0854, 0.0675],
    [0.5224, -0.3054, -0.0466],
])


def decorrelate(x: Tensor) -> Tensor:
    """(B, 3, H, W) in decorrelated colour coordinates -> RGB logits: C · x per pixel."""
    return mix_channels(COLOR_SQRT, x)


def correlate(rgb: Tensor) -> Tensor:
    """The inverse of ``decorrelate``: RGB logits -> decorrelated colour coordinates."""
    return mix_channels(torch.linalg.inv(COLOR_SQRT), rgb)
