"""Decorrelated colours (Olah et al. 2017): feature visualization optimises luminance and two
colour-opponent axes, which ``decorrelate`` mixes into RGB logits, so that a step can change one without
the others.

``COLOR_SQRT`` is the symmetric square root Σ^½ of the 3×3 covariance of the RGB values in [0, 1] of the
bundled photographs (content and texture images; the paintings are left out), scaled so that its
largest column has norm 1 (Lucid uses the factor U·√S of an ImageNet covariance's SVD instead; both
are square roots of a natural-image covariance). A test re-estimates it from the photographs. Its
dominant direction is luminance (all three channels together), then a red-blue and a green-magenta axis.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.core.images import mix_channels

COLOR_SQRT = torch.tensor([
    [0.9030, 0.3987, 0.1599],
    [0.3987, 0.5884, 0.4634],
    [0.1599, 0.4634, 0.7075],
])


def decorrelate(x: Tensor) -> Tensor:
    """(B, 3, H, W) in decorrelated colour coordinates -> RGB logits: C · x per pixel."""
    return mix_channels(COLOR_SQRT, x)


def correlate(rgb: Tensor) -> Tensor:
    """The inverse of ``decorrelate``: RGB logits -> decorrelated colour coordinates."""
    return mix_channels(torch.linalg.inv(COLOR_SQRT), rgb)
