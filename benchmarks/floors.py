"""The floor: a bare VGG-16 (its convolution stack cut at a layer) doing one forward pass and one
backward pass to the input, i.e. one evaluation with no loss, no optimizer and no hooks. Every
analyzer's seconds per evaluation is compared to the floor of its deepest layer, layout and precision."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from cnnviz.core.hooked import HookedModel

from machine import sync

# name: (memory layout, autocast dtype); fp32 on CUDA means TF32 convolutions, torch's default.
VARIANTS: dict[str, tuple[torch.memory_format, torch.dtype | None]] = {
    "fp32": (torch.contiguous_format, None),
    "channels_last": (torch.channels_last, None),
    "bf16": (torch.contiguous_format, torch.bfloat16),
    "bf16+channels_last": (torch.channels_last, torch.bfloat16),
}


def trunk(model: HookedModel, layer: str) -> nn.Sequential:
    """A copy of ``model``'s VGG convolutions up to and including ``layer``."""
    index = int(model.table.get(layer).path.rsplit(".", 1)[-1])
    return copy.deepcopy(nn.Sequential(*list(model.net.features.children())[: index + 1]))


def floor(model: HookedModel, layer: str, shape: int | tuple[int, int], variant: str, repeats: int = 3,
          typical: bool = False) -> float:
    """Fastest (or with ``typical`` the median) of ``repeats`` timed runs, after a warm-up, of one forward +
    input-gradient backward of an image of ``shape`` (H, W), or ``shape``² px, to ``layer``. The fastest is
    the least disturbed by other work on a shared machine; the median compares with an analyzer's mean."""
    layout, dtype = VARIANTS[variant]
    net = trunk(model, layer).to(memory_format=layout)
    h, w = (shape, shape) if isinstance(shape, int) else shape
    x = torch.rand(1, 3, h, w, device=model.device).contiguous(memory_format=layout).requires_grad_(True)
    times = []
    for _ in range(repeats + 1):
        sync(model.device)
        start = time.perf_counter()
        with torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None):
            out = net(x)
        out.backward(torch.ones_like(out))
        sync(model.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) if typical else min(times[1:])


def variant_of(precision: str) -> str:
    """The floor variant matching an analyzer run in ``precision`` (cnnviz always uses channels-last)."""
    return "bf16+channels_last" if precision == "bf16" else "channels_last"
