"""What the engine optimises: an image as a differentiable function of the tensors the optimizer
updates. ``Pixels`` is the classic case (the RGB values themselves); feature visualization's Fourier and
colour-decorrelated images (``cnnviz.optvis.param``) are other ``Parameterization``s."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Parameterization(ABC):
    """An image (B, 3, H, W) in [0, 1] as a differentiable function of ``parameters()``."""

    #: Whether the parameters are the pixels themselves (so pixel regularizers and coarse-to-fine apply).
    pixels: bool = False

    @abstractmethod
    def parameters(self) -> list[Tensor]:
        """The leaf tensors the optimizer updates."""

    @abstractmethod
    def __call__(self) -> Tensor:
        """The image, differentiable with respect to ``parameters()``."""

    def project(self) -> None:  # noqa: B027 (most parameterizations have no bounds to restore)
        """Bring the parameters back into their domain after a step (nothing by default)."""

    @property
    def describe(self) -> str:
        return type(self).__name__.lower()


class Pixels(Parameterization):
    """The pixels themselves, clamped into [0, 1] on the way in and after each step."""

    pixels = True

    def __init__(self, image: Tensor) -> None:
        self.x = image.detach().clone().requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return [self.x]

    def __call__(self) -> Tensor:
        return self.x.clamp(0, 1)

    def project(self) -> None:
        with torch.no_grad():
            self.x.clamp_(0, 1)

    @property
    def describe(self) -> str:
        return "pixel"
