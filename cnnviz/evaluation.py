"""One evaluation of an optimization problem (the image from its parameterization, the transforms, the
loss terms and the backward pass), recorded once as a CUDA graph where it can be and replayed.

On a GPU a 512 px VGG-16 evaluation runs in a few milliseconds, about as long as Python takes to queue
its kernels (hooks, loss terms, autograd), so the GPU waits on the CPU. A CUDA graph queues the whole
evaluation with one call. It needs fixed shapes and no random draws on the host, so it is used for
pixel parameterizations without random transforms (inversion, texture, style transfer). Its tensors,
the gradients included, live in the graph's own memory and each replay overwrites them: gradients are
not cleared between evaluations, and the image handed out is a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from cnnviz.graphs import capture
from cnnviz.objectives import Objective
from cnnviz.param import Parameterization
from cnnviz.transforms import Transform, compose

Evaluate = Callable[[], tuple[dict[str, Tensor], Tensor, Tensor]]
WARMUP = 2  # eager runs on a side stream before capture (lazy initialisation must not happen in a graph)


def evaluation(
    param: Parameterization, objective: Objective, transforms: Sequence[Transform], generator: torch.Generator,
    graph: bool = True,
) -> Evaluate:
    """A function that evaluates ``objective`` at ``param``'s image, back-propagates to its parameters and
    returns (terms, loss, image evaluated); replayed as a CUDA graph when ``graph`` and the run allows it."""
    leaves = param.parameters()

    def eager() -> tuple[dict[str, Tensor], Tensor, Tensor]:
        for leaf in leaves:
            leaf.grad = None
        image = param()
        terms = objective(compose(transforms, image, generator))
        loss = sum(terms.values())
        loss.backward()
        return terms, loss, image.detach()

    if graph and leaves[0].device.type == "cuda" and param.pixels and not transforms:
        return _graphed(eager)
    return eager


def _graphed(eager: Evaluate) -> Evaluate:
    """``eager`` captured as a CUDA graph (after ``WARMUP`` eager runs); ``eager`` itself if capture fails."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            eager()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.empty_cache()  # the warm-up's cached blocks go back to the device for the graph's own pool
    recorded = capture(eager, "evaluating")
    if recorded is None:
        return eager
    graph, (terms, loss, image) = recorded

    def replay() -> tuple[dict[str, Tensor], Tensor, Tensor]:
        graph.replay()
        return terms, loss, image.clone()

    return replay
