"""Loss terms from the papers, as pure functions, and ``Objective``: named, weighted terms over one forward.

Every term takes activations (and the image, RGB in [0, 1]) and returns a scalar to minimise;
an ``Objective`` runs the model once, to the deepest layer any term needs, and reports each term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cnnviz.core.hooked import HookedModel


def gram(features: Tensor, normalize: bool = True) -> Tensor:
    """Gram matrix G = F Fᵀ of (B, C, H, W) features reshaped to F = (B, C, M), M = H·W.

    With ``normalize`` (the default) G is divided by M, so that Grams of images of different
    sizes can be compared; Gatys et al. use the raw G and images of equal size.
    """
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    g = f @ f.transpose(1, 2)
    return g / (h * w) if normalize else g


def style_layer_loss(g: Tensor, g_hat: Tensor) -> Tensor:
    """E_l = 1/(4 N² M²) Σ (G − Ĝ)² (Gatys et al. 2015), given M-normalised Grams (B, N, N).

    With G/M in place of G the M² cancels, so this equals the paper's E_l for equal sizes and
    stays defined when the synthesized image and the source differ in size.
    """
    n = g.shape[-1]
    return (g - g_hat).pow(2).sum() / (4 * n * n * g.shape[0])


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """L_content = ½ Σ (F − P)² (Gatys et al. 2016)."""
    return 0.5 * (features - target).pow(2).sum()


def feature_loss(features: Tensor, target: Tensor) -> Tensor:
    """‖Φ(x) − Φ0‖² / ‖Φ0‖² (Mahendran & Vedaldi 2015): the relative feature reconstruction error, squared."""
    return (features - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


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
    """Mean |x|^α (Mahendran & Vedaldi's bounded-range prior), on the model's input."""
    return x.abs().pow(alpha).mean()


def l2_norm(x: Tensor) -> Tensor:
    """Mean squared value, ‖I‖² / size (Simonyan et al. 2014's regulariser)."""
    return x.pow(2).mean()


def channel_mean(activation: Tensor, channel: int) -> Tensor:
    """Mean activation of one channel, per batch item (B,) (Lucid's ``channel`` objective).

    On (B, C) outputs such as ``logits`` this is the score of class ``channel``.
    """
    return activation[:, channel].reshape(activation.shape[0], -1).mean(dim=1)


def neuron(activation: Tensor, channel: int, y: int | None = None, x: int | None = None) -> Tensor:
    """One unit per batch item (B,): channel at (y, x); the centre when the position is not given."""
    if activation.dim() == 2:
        return activation[:, channel]
    h, w = activation.shape[-2:]
    return activation[:, channel, h // 2 if y is None else y, w // 2 if x is None else x]


Activations = dict[str, Tensor]


@dataclass(frozen=True)
class Term:
    """A named, weighted loss term: ``weight * fn(activations, image)``."""

    name: str
    weight: float
    layers: tuple[str, ...]
    fn: Callable[[Activations, Tensor], Tensor]


class Objective:
    """The sum of terms to minimise, from one forward pass to the deepest layer any term needs."""

    def __init__(self, model: HookedModel, terms: Sequence[Term]) -> None:
        self.model = model
        self.terms = [t for t in terms if t.weight != 0]
        self.layers = list(dict.fromkeys(layer for t in self.terms for layer in t.layers))

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        """Each term's weighted value for ``image`` (B, 3, H, W) in [0, 1]."""
        acts = self.model(image, self.layers) if self.layers else {}
        return {t.name: t.weight * t.fn(acts, image) for t in self.terms}


def targets(model: HookedModel, image: Tensor, layers: Sequence[str]) -> Activations:
    """Activations of a reference image, computed once without grad."""
    with torch.no_grad():
        return {k: v.detach() for k, v in model(image, layers).items()}
