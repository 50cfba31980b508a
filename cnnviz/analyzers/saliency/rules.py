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


def _rule_hooks(module: nn.Module, rule: str) -> list:
    """Hooks that give one clipped ReLU ``rule``'s backward pass, as captum does for ``nn.ReLU``: a tensor
    hook on the output keeps the gradient arriving there, a tensor hook on (a copy of) the input replaces
    the gradient the activation passes with the rule's. Tensor hooks see every gradient reaching the
    output, also the one from a score taken at this very activation (which a module backward hook misses,
    since the hooked core captures the output before torch wraps it)."""
    pending: list[dict[str, Tensor]] = []

    def before(_module: nn.Module, inputs: tuple) -> tuple:
        upstream: dict[str, Tensor] = {}
        pending.append(upstream)
        x = inputs[0].clone()  # a tensor of its own: an in-place activation would overwrite the input
        if x.requires_grad:
            x.register_hook(lambda grad: F.relu(upstream["grad"] if rule == "deconvnet" else grad) if upstream else grad)
        return (x, *inputs[1:])

    def after(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        upstream = pending.pop()
        if output.requires_grad:
            output.register_hook(lambda grad: upstream.__setitem__("grad", grad))

    return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


@contextmanager
def clipped_relu_rule(net: nn.Module, rule: str) -> Iterator[int]:
    """Apply ``rule``'s ReLU backward rule (``deconvnet``: ReLU of the upstream gradient; ``guided``:
    ReLU of the gradient the activation passes) at every clipped ReLU of ``net``; yields their number.
    Hooks are removed on exit."""
    handles = []
    try:
        if rule in ("deconvnet", "guided"):
            for module in net.modules():
                if _is_clipped_relu(module):
                    handles += _rule_hooks(module, rule)
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()
