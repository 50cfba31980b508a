"""Lucid's redirected ReLU gradient, for feature visualization of units behind ReLU and ReLU6 modules.

A unit that is zero at the start image (its ReLU input negative everywhere) has no gradient, so plain
ascent never moves it; a ReLU6 unit above 6 stops climbing the same way. Lucid (``redirected_relu_grad``,
``redirected_relu6_grad``) lets the gradient through such a ReLU where it pushes the input back into the
range the ReLU passes, but only for a batch item through which the ordinary gradient passes nothing: once a
unit is alive, the true gradient is used; and since a unit alive once stays alive, the redirection can be
stopped after the first steps (``Redirection.stop``), when its extra backward work is no longer worth it.
The forward pass is unchanged, except at ``pre_activation``: that
layer's ReLU (or ReLU6) passes its input through, so a visualization climbs the pre-activation, as Lucid's
``*_pre_relu`` targets do (a ReLU6 unit would otherwise stop at 6 everywhere, long before its picture forms).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from cnnviz.core.hooked import HookedModel


class _Redirected(torch.autograd.Function):
    """clamp(x, low, high) whose backward redirects the gradient of items that would get none."""

    @staticmethod
    def forward(ctx, x: Tensor, low: float, high: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high) if math.isfinite(high) else x.clamp(min=low)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        inside = (x > ctx.low) & (x < ctx.high)
        plain = grad.masked_fill(~inside, 0)
        alive = plain.ne(0).flatten(1).any(dim=1)
        if grad.device.type == "cpu" and bool(alive.all()):  # the usual case once units fire; a host check is free here
            return plain, None, None
        toward = inside | ((x <= ctx.low) & (grad < 0)) | ((x >= ctx.high) & (grad > 0))  # a descent step moves x into range
        redirected = grad.masked_fill(~toward, 0)
        return torch.where(alive.view(-1, *[1] * (grad.dim() - 1)), plain, redirected), None, None


def _bounds(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.ReLU) and not module.inplace:  # an in-place ReLU has overwritten its input
        return 0.0, math.inf
    return None


def _identity(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> Tensor:
    return inputs[0]


class Redirection:
    """The hooks ``redirected_relus`` holds: ``stop()`` ends the redirection (the pre-activation stays)."""

    def __init__(self) -> None:
        self.redirecting: list = []
        self.kept: list = []

    def stop(self) -> None:
        for handle in self.redirecting:
            handle.remove()
        self.redirecting.clear()


@contextmanager
def redirected_relus(model: HookedModel, pre_activation: str | None = None) -> Iterator[Redirection]:
    """Within the block, every ReLU6 and out-of-place ReLU of ``model`` back-propagates Lucid's redirected gradient
    (until ``stop()``); the layer ``pre_activation``, if it is such a module called once, gives its input instead
    of its output."""
    hooks = Redirection()
    own = None
    if pre_activation is not None:
        layer = model.table.get(pre_activation)
        shared = sum(other.path == layer.path for other in model.table) > 1
        own = None if shared else model.net.get_submodule(layer.path)
    for module in model.net.modules():
        bounds = _bounds(module)
        if module is own and bounds is not None:
            hooks.kept.append(module.register_forward_hook(_identity))
        elif bounds is not None:
            hooks.redirecting.append(module.register_forward_hook(
                lambda _m, inputs, _out, b=bounds: _Redirected.apply(inputs[0], *b)))
    try:
        yield hooks
    finally:
        hooks.stop()
        for handle in hooks.kept:
            handle.remove()
