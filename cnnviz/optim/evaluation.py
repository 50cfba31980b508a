"""One evaluation of an optimization problem (the image from its parameterization, the transforms, the
loss terms and the backward pass), recorded once as a CUDA graph where it can be and replayed.

On a GPU a 512 px VGG-16 evaluation runs in a few milliseconds, about as long as Python takes to queue
its kernels (hooks, loss terms, autograd), so the GPU waits on the CPU. A CUDA graph queues the whole
evaluation with one call. It needs fixed shapes and no random draws on the host, so it is used for
pixel parameterizations without random transforms (inversion, texture, style transfer). Its tensors,
the gradients included, live in the graph's own memory and each replay overwrites them: gradients are
not cleared between evaluations, and what it hands out are copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from cnnviz.optim.graphs import graphed
from cnnviz.optim.parameterization import Parameterization
from cnnviz.optim.settings import Transform, compose

LossFunction = Callable[[Tensor], dict[str, Tensor]]
"""What the engine minimises: the image (B, 3, H, W) in [0, 1] -> its named, weighted loss terms."""
Evaluate = Callable[[], tuple[dict[str, Tensor], Tensor, Tensor]]
WARMUP = 2  # eager runs before capture


def evaluation(
    param: Parameterization, loss: LossFunction, transforms: Sequence[Transform], generator: torch.Generator,
    graph: bool = True,
) -> Evaluate:
    """A function that evaluates ``loss`` at ``param``'s image, back-propagates to its parameters and
    returns (terms, total, image evaluated); replayed as a CUDA graph when ``graph`` and the run allows it."""
    leaves = param.parameters()

    def eager() -> tuple[dict[str, Tensor], Tensor, Tensor]:
        for leaf in leaves:
            leaf.grad = None
        image = param()
        terms = loss(compose(transforms, image, generator))
        total = sum(terms.values())
        total.backward()
        return terms, total, image.detach()

    if graph and param.pixels and not transforms:
        return graphed(eager, leaves[0], "evaluating", warmup=WARMUP)
    return eager
