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
"""What the engine minimises: the image (B, 3, H, W) in [0, 1] -> its named, weighted loss terms. It may
name the terms computed from the image alone (priors such as L2) in a ``penalties`` attribute."""
Evaluated = tuple[dict[str, Tensor], Tensor, Tensor, Tensor | None]
"""(terms, total, image evaluated, gradient of the objective: the terms other than the penalties)."""
Evaluate = Callable[[], Evaluated]
WARMUP = 2  # eager runs before capture


def evaluation(
    param: Parameterization, loss: LossFunction, transforms: Sequence[Transform], generator: torch.Generator,
    graph: bool = True, objective_gradient: bool = False,
) -> Evaluate:
    """A function that evaluates ``loss`` at ``param``'s image, back-propagates to its parameters and
    returns ``Evaluated``; replayed as a CUDA graph when ``graph`` and the run allows it. With
    ``objective_gradient`` (pixel parameterizations, for the step regularizers) it also returns the
    gradient of the terms that are not ``loss.penalties``, from one more backward pass through the
    penalties alone (which never reach the network)."""
    leaves = param.parameters()
    penalties = tuple(getattr(loss, "penalties", ()))

    def eager() -> Evaluated:
        for leaf in leaves:
            leaf.grad = None
        image = param()
        terms = loss(compose(transforms, image, generator))
        total = sum(terms.values())
        penalty_grad = None
        if objective_gradient and penalties:
            (penalty_grad,) = torch.autograd.grad(sum(terms[name] for name in penalties), leaves, retain_graph=True,
                                                  allow_unused=True)
        total.backward()
        grad = None
        if objective_gradient:
            grad = leaves[0].grad if penalty_grad is None else leaves[0].grad - penalty_grad
        return terms, total, image.detach(), grad

    if graph and param.pixels and not transforms:
        return graphed(eager, leaves[0], "evaluating", warmup=WARMUP)
    return eager
