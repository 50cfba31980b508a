"""The one CUDA-graph helper, for the evaluation (``cnnviz.optim.evaluation``) and L-BFGS's update and
line search (``cnnviz.optim.lbfgs``): on a GPU, replaying a graph queues all its kernels with one call,
where Python would otherwise queue them one by one while the GPU waits."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_map


def _copy(output: Any) -> Any:
    """``output`` with each tensor in it copied: a replay overwrites the graph's own tensors."""
    return tree_map(lambda value: value.clone() if isinstance(value, Tensor) else value, output)


class Graphed:
    """``fn`` on a CUDA GPU: the first ``warmup`` calls run eagerly on a side stream (which initialises the
    libraries it calls: lazy initialisation must not happen inside a capture), the next one records it as a
    CUDA graph, and from then on each call replays it; eagerly for good if the capture fails (with a
    warning that ``what`` runs without a graph). ``fn`` takes tensors, keeps any state in tensors it updates
    in place, and returns tensors (or containers of them, or None), handed out as copies."""

    def __init__(self, fn: Callable[..., Any], what: str, warmup: int = 1) -> None:
        self.fn = fn
        self.what = what
        self.warmup = warmup
        self.calls = 0
        self.inputs: list[Tensor] = []
        self.recorded: tuple[torch.cuda.CUDAGraph, Any] | None = None

    def __call__(self, *args: Tensor) -> Any:
        self.calls += 1
        if self.calls <= self.warmup:
            return self._side(*args)
        if self.calls == self.warmup + 1:
            torch.cuda.empty_cache()  # the warm-up's cached blocks go back to the device for the graph's own pool
            self.inputs = [a.clone() for a in args]
            self.recorded = _capture(lambda: self.fn(*self.inputs), self.what)
        if self.recorded is None:
            return self.fn(*args)
        graph, output = self.recorded
        for static, value in zip(self.inputs, args):
            static.copy_(value)
        graph.replay()
        return _copy(output)

    def _side(self, *args: Tensor) -> Any:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            output = self.fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        return output


def _capture(fn: Callable[[], Any], what: str) -> tuple[torch.cuda.CUDAGraph, Any] | None:
    """``fn`` recorded, not run, as a CUDA graph: the graph and ``fn``'s outputs, which every replay
    refills; None, with a warning, where the capture fails."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            outputs = fn()
    except RuntimeError as error:
        warnings.warn(f"{what} without a CUDA graph: capture failed ({str(error).splitlines()[0]})", stacklevel=4)
        return None
    return graph, outputs


def graphed(fn: Callable[..., Any], like: Tensor, what: str = "the recorded work", warmup: int = 1) -> Callable[..., Any]:
    """``fn``, replayed as a CUDA graph where ``like`` is on a CUDA GPU (``Graphed``), else ``fn`` itself."""
    return Graphed(fn, what, warmup) if like.device.type == "cuda" else fn
