"""The one optimization loop shared by ascent, inversion, texture synthesis and style transfer.

The image is optimised as RGB pixels in [0, 1] (the model's normalisation is part of the forward
pass). The bound is part of the problem: L-BFGS minimises f(clip(x)), a function of its own iterate,
so its line searches and curvature memory always describe the function being minimised (projecting
every few iterations instead left curvature pairs of steps the projection undid, and restarting the
memory after each projection lost more than it saved: both end at higher losses, see the note of
issue 10). Adam steps are projected after each step. Every run ends within its budget: L-BFGS with
the strong-Wolfe search stops early when it makes no progress (a zero gradient, say); the backtracking
search, which never reads back, spends its budget. Each function evaluation is reported to a callback as
a ``Step``; SIGINT/SIGTERM stop the run and return the latest image marked interrupted; a NaN/inf loss
stops it, keeping the last finite one. Losses stay on the device and are read in batches
(``cnnviz.readout``), so neither Adam nor L-BFGS with the backtracking search (the default) waits for the
GPU within an evaluation.

What is optimised is a ``Parameterization`` (cnnviz.param): the pixels themselves (``Pixels``, the
default when an image is given) or, for feature visualization, a spectrum and colour basis squashed by a
sigmoid. ``Settings.transforms`` (cnnviz.transforms: jitter, pad, zoom, turn) are applied to the image
before each forward pass. Randomness comes from a local generator seeded by ``Settings.seed``: torch's
global generator is left alone.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from cnnviz.core.images import fit_size, resize
from cnnviz.errors import CnnvizError
from cnnviz.evaluation import evaluation
from cnnviz.lbfgs import LBFGS, LINE_SEARCHES
from cnnviz.objectives import Objective
from cnnviz.param import Parameterization, Pixels
from cnnviz.readout import READ_EVERY, Reading, Readout
from cnnviz.transforms import Transform

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
LBFGS_CHUNK = 10
HISTORY = 50  # L-BFGS curvature pairs (core.memory counts them)
LINE_SEARCH_NAMES = {"none" if search is None else search.replace("_", "-"): search for search in LINE_SEARCHES}
"""``--line-search`` values and the ``Settings.line_search`` each stands for."""
NONFINITE_LIMIT = 10  # the backtracking search's non-finite trials in a row that stop a run (its step has shrunk 10¹⁰×)


@dataclass(frozen=True)
class Blur:
    """Gaussian blur every ``every`` steps (Yosinski et al. 2015)."""

    sigma: float = 0.5
    every: int = 4

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        if self.sigma <= 0 or step % self.every:
            return image
        radius = max(1, math.ceil(3 * self.sigma))
        return TF.gaussian_blur(image, [2 * radius + 1] * 2, [self.sigma] * 2)


@dataclass(frozen=True)
class Decay:
    """L2 decay towards the model's zero input: x ← zero + (1 − θ)(x − zero) (Yosinski et al. 2015)."""

    theta: float = 0.01

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        return zero + (1 - self.theta) * (image - zero)


@dataclass(frozen=True)
class Clip:
    """Set to the model's zero input the pixels with the smallest norm or contribution (Yosinski et al. 2015).

    ``norm_pct``: pixels whose norm (distance from zero) is below this percentile;
    ``contribution_pct``: pixels whose |Σ_c x·∂L/∂x| is below this percentile.
    """

    norm_pct: float = 10.0
    contribution_pct: float = 10.0

    def __call__(self, image: Tensor, grad: Tensor | None, zero: Tensor, step: int) -> Tensor:
        centred = image - zero
        keep = torch.ones_like(image[:, :1], dtype=torch.bool)
        if self.norm_pct > 0:
            keep &= _above_percentile(centred.norm(dim=1, keepdim=True), self.norm_pct)
        if self.contribution_pct > 0 and grad is not None:
            keep &= _above_percentile((centred * grad).sum(dim=1, keepdim=True).abs(), self.contribution_pct)
        return torch.where(keep, image, zero.expand_as(image))


def _above_percentile(values: Tensor, pct: float) -> Tensor:
    """Where (B, 1, H, W) ``values`` reach their image's ``pct`` percentile (each batch item on its own)."""
    cut = torch.quantile(values.flatten(1), pct / 100, dim=1)
    return values >= cut.reshape(-1, 1, 1, 1)


Regularizer = Callable[[Tensor, Tensor | None, Tensor, int], Tensor]


@dataclass
class Settings:
    """How to optimise: optimizer, iterations (per scale), learning rate, scales, per-step regularizers.

    ``line_search``: L-BFGS's: ``strong_wolfe`` (decided on the host, which reads every loss),
    ``backtracking`` (decided on the device: one evaluation per iteration, nothing read back) or None (a
    capped step of ``lr`` per iteration); see ``cnnviz.lbfgs``.
    ``cuda_graph``: on a CUDA device, record each evaluation (forward, loss, backward) once as a CUDA graph
    and replay it (``cnnviz.evaluation``); random transforms and non-pixel parameterizations run eagerly."""

    optimizer: str = "lbfgs"
    iters: int = 200
    lr: float | None = None
    scales: Sequence[int] = ()
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
        if any(s < 16 for s in self.scales):
            raise CnnvizError(f"every scale must be at least 16 px, got {list(self.scales)}")
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


class _Abort(Exception):
    """Raised inside a closure to leave the optimizer at once (signal or non-finite loss)."""


@contextmanager
def _stop_on_signals(flag: threading.Event):
    """SIGINT/SIGTERM set ``flag`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: flag.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _sizes(final: tuple[int, int], scales: Sequence[int]) -> list[tuple[int, int]]:
    sizes = [fit_size(final, s) for s in sorted(scales) if s < max(final)]
    return [*sizes, final]


def optimize(
    problem: Callable[[tuple[int, int]], Objective],
    init: Tensor | Parameterization,
    settings: Settings,
    callback: Callable[[Step], None] | None = None,
    zero: Tensor | None = None,
) -> Result:
    """Minimise ``problem(size)(image)`` over the image, coarse to fine.

    ``problem`` builds the objective for an image size (H, W), so targets can be recomputed per
    scale. ``init`` is the start image (B, 3, H, W) in [0, 1], optimised as ``Pixels``, or any
    ``Parameterization``; it sets the final size. ``zero`` is the model's zero input as an image (the
    regularizers' reference point; black if not given). Per-pixel regularizers and coarse-to-fine
    need ``Pixels``.
    """
    settings.check()
    param = Pixels(init) if isinstance(init, Tensor) else init
    final = tuple(param().shape[-2:])
    if not param.pixels and (settings.regularizers or settings.scales):
        raise CnnvizError(f"blur, clip, decay and --scales work on pixels, not on the {param.describe} parameterization")
    generator = torch.Generator().manual_seed(settings.seed)
    stop = threading.Event()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    sizes = _sizes(final, settings.scales)
    total_iters = settings.iters * len(sizes)
    if len(sizes) > 1:
        param = Pixels(resize(param(), sizes[0]))
    with torch.no_grad():
        latest: dict = {"image": param().detach(), "losses": {}, "iteration": 0}
    zero = torch.zeros_like(latest["image"][:1, :, :1, :1]) if zero is None else zero
    error = None
    evaluations = 0
    base = 0
    searching = settings.optimizer == "lbfgs" and settings.line_search == "strong_wolfe"  # reads every loss anyway
    monotone = settings.optimizer == "lbfgs" and settings.line_search == "backtracking"  # rejected trials are not results
    best = {"loss": math.inf}
    nonfinite = 0  # non-finite readings in a row
    readout = Readout(every=1 if searching else READ_EVERY)
    kept = {"image": latest["image"]}

    def report(readings: list[Reading]) -> str | None:
        """Record evaluations read from the device; at a non-finite loss, restore the last finite image and
        say why the run stops (Adam may have taken a few steps past it before the read). Under a
        backtracking line search the latest image is the lowest-loss one of its scale: trials it rejected
        are recorded in the history only, non-finite ones not at all, and only ``NONFINITE_LIMIT`` of them
        in a row stop the run."""
        nonlocal nonfinite
        for r in readings:
            if not math.isfinite(r.loss):
                nonfinite += 1
                if monotone and nonfinite < NONFINITE_LIMIT:
                    continue  # the search has rejected it and shrunk its step
                latest["image"] = kept["image"]
                return f"the loss became {r.loss} at iteration {r.iteration}"
            nonfinite = 0
            if not monotone or r.loss <= best["loss"]:
                best["loss"] = r.loss
                kept["image"] = r.image
                latest.update(image=r.image, losses=r.losses)
            latest["iteration"] = r.iteration
            history.append({"evaluation": r.evaluation, "iteration": r.iteration, "scale": r.scale, "loss": r.loss, **r.losses})
            if callback:
                callback(Step(r.evaluation, r.iteration, total_iters, r.scale, r.losses, r.loss, r.seconds, latest["image"]))
        return None

    with _stop_on_signals(stop):
        for scale_index, size in enumerate(sizes):
            if scale_index:
                param = Pixels(resize(latest["image"], size))
            objective = problem(size)
            best["loss"] = math.inf
            leaves = param.parameters()
            if settings.optimizer == "adam":
                optimizer = torch.optim.Adam(leaves, lr=settings.step_size)
            else:
                optimizer = LBFGS(leaves, lr=settings.step_size, max_iter=LBFGS_CHUNK, history_size=min(HISTORY, settings.iters),
                                  line_search=settings.line_search)
            evaluate = evaluation(param, objective, settings.transforms, generator, graph=settings.cuda_graph)

            def closure() -> Tensor:
                nonlocal evaluations
                if stop.is_set():
                    raise _Abort
                terms, loss, image = evaluate()
                evaluations += 1
                iteration = base + done + (max(1, optimizer.iterations - chunk_start) if settings.optimizer == "lbfgs" else 1)
                readout.add(terms, loss, evaluation=evaluations, iteration=iteration, scale=max(size),
                            seconds=time.perf_counter() - start, image=image)
                if (searching or readout.due) and (failed := report(readout.read())):
                    raise _Abort(failed)  # the strong-Wolfe search reads every loss itself and must never see a NaN
                return loss

            done = 0
            chunk_start = 0
            base = latest["iteration"]
            try:
                while done < settings.iters:
                    if settings.optimizer == "lbfgs":
                        optimizer.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, settings.iters - done)
                        chunk_start = optimizer.iterations
                        optimizer.step(closure)
                        advanced = optimizer.iterations - chunk_start
                        if advanced == 0:
                            break
                        done += advanced
                    else:
                        optimizer.step(closure)
                        done += 1
                    with torch.no_grad():
                        if settings.regularizers:
                            (pixels,) = leaves
                            for regularizer in settings.regularizers:
                                pixels.copy_(regularizer(pixels, pixels.grad, zero, done))
                        if settings.optimizer == "adam":
                            param.project()
                        if not monotone:
                            latest["image"] = param().detach()
                    if stop.is_set():
                        raise _Abort
            except _Abort as abort:
                error = str(abort) or None
            finally:
                for leaf in leaves:
                    leaf.requires_grad_(False)
            error = error or report(readout.read())
            if error is None and settings.optimizer == "adam":
                with torch.no_grad():
                    latest["image"] = param().detach()  # the image after the last step, not the last one evaluated
            if error or stop.is_set():
                break
    return Result(
        image=resize(latest["image"].clamp(0, 1), final), iterations=latest["iteration"], losses=latest["losses"], history=history,
        seconds=time.perf_counter() - start, interrupted=stop.is_set(), error=error,
    )

