"""Image regularizers: what keeps an optimised image natural, side by side.

Penalties added to a loss (Mahendran & Vedaldi 2015; Simonyan et al. 2014): ``tv_loss`` (R_TV^β),
``alpha_norm`` (the bounded-range prior) and ``l2_norm`` (λ‖I‖²). Step regularizers the engine applies to
the pixels after each step (Yosinski et al. 2015): ``Blur``, ``Decay`` and ``Clip`` (``Settings.regularizers``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from cnnviz.core.images import quantile


def tv_loss(image: Tensor, beta: float = 2.0) -> Tensor:
    """R_TV^β = mean over pixels of ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^(β/2).

    Mahendran & Vedaldi sum over pixels; the mean keeps one weight right at any image size.
    Pixel differences are in [0, 1] units.
    """
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]
    squared = (dx.pow(2) + dy.pow(2)).sum(dim=1)
    if beta == 2.0:
        return squared.mean()
    return (squared + 1e-8).pow(beta / 2).mean()


def alpha_norm(x: Tensor, alpha: float = 6.0) -> Tensor:
    """Mean |x|^α (Mahendran & Vedaldi's bounded-range prior), of an image measured from its mean."""
    return x.abs().pow(alpha).mean()


def l2_norm(x: Tensor) -> Tensor:
    """Mean squared value, ‖I‖² / size (Simonyan et al. 2014's regulariser)."""
    return x.pow(2).mean()


@dataclass(frozen=True)
class Blur:
    """Gaussian blur every ``every`` steps (Yosinski et al. 2015)."""

    sigma: float = 0.5
    every: int = 4

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        if self.sigma <= 0 or step % self.every:
            return image
        radius = max(1, math.ceil(3 * self.sigma))
        return TF.gaussian_blur(image, [2 * radius + 1] * 2, [self.sigma] * 2)


@dataclass(frozen=True)
class Decay:
    """L2 decay towards the model's zero input: x ← zero + (1 − θ)(x − zero) (Yosinski et al. 2015)."""

    theta: float = 0.01

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        return zero + (1 - self.theta) * (image - zero)


@dataclass(frozen=True)
class Clip:
    """Set to the model's zero input the pixels with the smallest norm or contribution (Yosinski et al. 2015).

    ``norm_pct``: pixels whose norm (distance from zero) is below this percentile;
    ``contribution_pct``: pixels whose |Σ_c (x − zero)·∂S/∂x| is below this percentile, ``grad`` being the
    gradient of the objective alone (the engine leaves the image penalties such as L2 out of it): the
    pixel's contribution to the activation, as Yosinski et al. define it.
    """

    norm_pct: float = 10.0
    contribution_pct: float = 10.0

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        centred = image - zero
        keep = torch.ones_like(image[:, :1], dtype=torch.bool)
        if self.norm_pct > 0:
            keep &= _above_percentile(centred.norm(dim=1, keepdim=True), self.norm_pct)
        if self.contribution_pct > 0 and grad is not None:
            keep &= _above_percentile((centred * grad).sum(dim=1, keepdim=True).abs(), self.contribution_pct)
        return torch.where(keep, image, zero.expand_as(image))


def _above_percentile(values: Tensor, pct: float) -> Tensor:
    """Where (B, 1, H, W) ``values`` reach their image's ``pct`` percentile (each batch item on its own)."""
    cut = quantile(values.flatten(1), pct / 100)
    return values >= cut.reshape(-1, 1, 1, 1)
