"""Recording work as a CUDA graph, for the evaluation (``cnnviz.evaluation``) and L-BFGS's update
(``cnnviz.lbfgs``): on a GPU, replaying a graph queues all its kernels with one call."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def capture(fn: Callable[[], T], what: str) -> tuple[torch.cuda.CUDAGraph, T] | None:
    """``fn`` recorded, not run, as a CUDA graph: the graph and ``fn``'s outputs, which every replay
    refills; None, with a warning that ``what`` runs without a graph, where the capture fails."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            outputs = fn()
    except RuntimeError as error:
        warnings.warn(f"{what} without a CUDA graph: capture failed ({str(error).splitlines()[0]})", stacklevel=3)
        return None
    return graph, outputs
