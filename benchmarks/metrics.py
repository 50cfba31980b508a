"""How good a feature visualization is, for the benchmarks and the tests: whether it keeps its class under
views it was not optimised for, and how much of its energy is fine speckle."""

from __future__ import annotations

import torch
from torch import Tensor

from cnnviz.analyzers.target import Target, class_probabilities
from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS
from cnnviz.errors import CnnvizError
from cnnviz.optim.settings import compose
from cnnviz.optvis.param import frequencies
from cnnviz.optvis.transforms import Jitter, RandomRotate, RandomScale


def robust_probability(model: HookedModel, target: Target, image: Tensor, draws: int = 16, seed: int = 1234) -> float:
    """The target class's softmax probability for ``image`` (1, 3, H, W), averaged over ``draws`` random
    views it was not optimised for: zoom 0.9–1.1, turn ±10°, shift ±16 px, from a generator of its own."""
    if target.layer != LOGITS:
        raise CnnvizError("a probability needs a class target")
    generator = torch.Generator().manual_seed(seed)
    views = (RandomScale(0.9, 1.1), RandomRotate(10.0), Jitter(16))
    batch = torch.cat([compose(views, image, generator) for _ in range(draws)])
    return float(class_probabilities(model, batch)[:, target.channel].mean())


def high_frequency_share(image: Tensor) -> float:
    """The share of an image's spectral energy (its mean removed) above half the Nyquist frequency,
    i.e. at more than 0.25 cycles per pixel: a few per cent for photographs, about 0.8 for white noise."""
    x = image.detach().float()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    energy = torch.fft.rfft2(x, norm="ortho").abs().pow(2)
    h, w = x.shape[-2:]
    f = frequencies(h, w)
    weight = torch.full_like(f, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    total = (energy * weight).sum()
    return float((energy * weight * (f > 0.25)).sum() / total) if total > 0 else 0.0
