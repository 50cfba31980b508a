"""The ReLU backward rules of Springenberg et al. 2015 on any network, and the score captum differentiates.

captum rewrites the backward pass of ``nn.ReLU`` modules only; ReLU6 (EfficientNet-Lite's activation,
an ``nn.Hardtanh``) gets the same rule here, from our own backward hooks, so a rule holds at every
activation of the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn

from cnnviz.analyzers.target import Target
from cnnviz.core.hooked import HookedModel


class TargetScore(nn.Module):
    """The target's score per image as a function of the RGB image: the module captum hooks and
    differentiates. It holds the network as a sub-module, so captum finds the network's ReLUs."""

    def __init__(self, model: HookedModel, target: Target) -> None:
        super().__init__()
        self.net = model.net
        self.model = model
        self.target = target

    def forward(self, image: Tensor) -> Tensor:
        return self.target.score(self.model(image, [self.target.layer]))


def _is_clipped_relu(module: nn.Module) -> bool:
    """ReLU6 and any Hardtanh(0, t): a ReLU with a ceiling, which captum leaves alone."""
    return isinstance(module, nn.Hardtanh) and module.min_val == 0


@contextmanager
def clipped_relu_rule(net: nn.Module, rule: str) -> Iterator[int]:
    """Apply ``rule``'s ReLU backward rule (``deconvnet``: ReLU of the upstream gradient; ``guided``:
    ReLU of the gradient the activation passes) at every clipped ReLU of ``net``; yields their number.
    Hooks are removed on exit."""
    handles = []

    def deconvnet(_module: nn.Module, _grad_in: tuple, grad_out: tuple) -> tuple:
        return (F.relu(grad_out[0]),)

    def guided(_module: nn.Module, grad_in: tuple, _grad_out: tuple) -> tuple:
        return (F.relu(grad_in[0]),)

    try:
        if rule in ("deconvnet", "guided"):
            for module in net.modules():
                if _is_clipped_relu(module):
                    handles.append(module.register_full_backward_hook(deconvnet if rule == "deconvnet" else guided))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
