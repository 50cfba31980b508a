"""What the optimization engine is told and what it reports: ``Settings`` in, a ``Step`` per evaluation,
a ``Result`` at the end; and how many image-sized tensors each optimizer keeps (for the memory estimate)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cnnviz.errors import CnnvizError
from cnnviz.optim.lbfgs import HISTORY, LINE_SEARCHES
from cnnviz.optim.readout import READ_EVERY

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
MIN_SCALE = 16  # the smallest coarse-to-fine size, in pixels
LINE_SEARCH_NAMES = {"none" if search is None else search.replace("_", "-"): search for search in LINE_SEARCHES}
"""``--line-search`` values and the ``Settings.line_search`` each stands for."""

Transform = Callable[[Tensor, torch.Generator], Tensor]
"""A random change of the image before a forward pass, drawing from the run's generator (``cnnviz.optvis.transforms``)."""
Regularizer = Callable[[Tensor, Tensor | None, Tensor, int], Tensor]
"""``(pixels, gradient of the objective, zero image, step) -> pixels``, applied after a step
(``cnnviz.optvis.regularizers``); the gradient leaves out the image penalties (``LossFunction.penalties``)."""

STATE_IMAGES = {"lbfgs": 2 * HISTORY + 8 + 11 + READ_EVERY, "adam": 8 + READ_EVERY}
"""Image-sized fp32 tensors an optimizer keeps: L-BFGS its curvature pairs, 8 working copies, the
backtracking search's 5 state vectors and ~6 temporaries, and the images of the readings not yet read;
Adam its moments and working copies (a run without an optimizer: ``core.memory.WORKING_IMAGES``)."""


def state_images(optimizer: str) -> int:
    """Image-sized fp32 tensors ``optimizer`` keeps, for ``core.memory.check_fits``."""
    return STATE_IMAGES[optimizer]


def compose(transforms: Sequence[Transform], image: Tensor, generator: torch.Generator) -> Tensor:
    """Apply ``transforms`` in order."""
    for transform in transforms:
        image = transform(image, generator)
    return image


@dataclass
class Settings:
    """How to optimise: optimizer, iterations (per scale), learning rate, scales, per-step regularizers.

    ``scales``: the coarse-to-fine sizes run before the final one, each a long side in pixels (at least 16)
    or a fraction (0 < s < 1) of the final long side; a fraction that comes to under 16 px is left out.

    ``line_search``: L-BFGS's: ``strong_wolfe`` (decided on the host, which reads every loss),
    ``backtracking`` (decided on the device: one evaluation per iteration, nothing read back) or None (a
    capped step of ``lr`` per iteration); see ``cnnviz.optim.lbfgs``.
    ``cuda_graph``: on a CUDA device, record each evaluation (forward, loss, backward) once as a CUDA graph
    and replay it (``cnnviz.optim.evaluation``); random transforms and non-pixel parameterizations run eagerly."""

    optimizer: str = "lbfgs"
    iters: int = 200
    lr: float | None = None
    scales: Sequence[float] = ()
    seed: int = 0
    transforms: Sequence[Transform] = ()
    regularizers: Sequence[Regularizer] = ()
    line_search: str | None = "backtracking"
    cuda_graph: bool = True

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise CnnvizError(f"unknown optimizer '{self.optimizer}' (choices: {', '.join(OPTIMIZERS)})")
        if self.iters < 1:
            raise CnnvizError(f"--iters must be at least 1, got {self.iters}")
        if self.line_search not in LINE_SEARCHES:
            raise CnnvizError(f"unknown --line-search '{self.line_search}' (choices: {', '.join(LINE_SEARCH_NAMES)})")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise CnnvizError(f"--lr must be a positive number, got {self.lr}")
        if not all(0 < s < 1 or (math.isfinite(s) and s >= MIN_SCALE and s == int(s)) for s in self.scales):
            raise CnnvizError(f"every --scales value must be a whole number of pixels (at least {MIN_SCALE}) or a "
                              f"fraction of --size between 0 and 1, got {','.join(f'{s:g}' for s in self.scales)}")
        if self.optimizer == "lbfgs" and (self.transforms or self.regularizers):
            raise CnnvizError(
                "random transforms (jitter), blur, clip and decay change the objective between steps, which L-BFGS "
                "cannot follow: use --optimizer adam, or turn them off (--jitter 0 --blur 0 --clip-norm 0 --clip-contribution 0)"
            )

    @property
    def step_size(self) -> float:
        """The learning rate in use: ``lr``, or the optimizer's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class Step:
    """One function evaluation, as reported to the progress callback: its losses, and the run's result so
    far as ``image`` (the image evaluated, or under the backtracking search the lowest-loss one evaluated
    at this scale, so that a checkpoint does not save a trial the search rejected for a higher loss)."""

    evaluation: int
    iteration: int
    total: int
    scale: int
    losses: dict[str, float]
    loss: float
    seconds: float
    image: Tensor


@dataclass
class Result:
    """The optimised image and how the run went."""

    image: Tensor
    iterations: int
    losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None
