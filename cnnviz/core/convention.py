"""Input conventions: how an RGB image in [0, 1] becomes a model's input, and back."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor


@dataclass(frozen=True)
class Convention:
    """Channel order, scale, mean and std of a network's input.

    ``normalize`` maps RGB [0, 1] to the model's input; ``denormalize`` is its inverse.
    ``mean``/``std`` are given in the model's channel order and in its scale.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float
    bgr: bool

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _stats(self, x.device, x.dtype)

    def normalize(self, image: Tensor) -> Tensor:
        """RGB in [0, 1] -> model input."""
        x = image.flip(1) if self.bgr else image
        mean, std = self._stats(x)
        return (x * self.scale - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Model input -> RGB in [0, 1] (not clamped)."""
        mean, std = self._stats(x)
        image = (x * std + mean) / self.scale
        return image.flip(1) if self.bgr else image


@lru_cache(maxsize=32)
def _stats(convention: Convention, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors on ``device``, made once: a host-to-device copy in every
    evaluation would make a GPU wait, and cannot be recorded in a CUDA graph."""
    mean = torch.tensor(convention.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(convention.std, device=device, dtype=dtype).view(1, 3, 1, 1)
    return mean, std


CAFFE_BGR = Convention("caffe-bgr", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0, True)
IMAGENET = Convention("imagenet-rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, False)
# TensorFlow's EfficientNet-Lite: RGB mapped to [-1, 1].
TF_RGB = Convention("tf-rgb", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, False)
CONVENTIONS = {c.name: c for c in (CAFFE_BGR, IMAGENET, TF_RGB)}
