"""The one optimization loop shared by ascent, inversion, texture synthesis and style transfer.

The image is optimised as RGB pixels in [0, 1] (the model's normalisation is part of the forward
pass). The bound is part of the problem: L-BFGS minimises f(clip(x)), a function of its own iterate,
so its line searches and curvature memory always describe the function being minimised (projecting
every few iterations instead leaves curvature pairs of steps the projection undid, and restarting the
memory after each projection loses more than it saves: both end at higher losses). Adam steps are
projected after each step. Every run ends within its budget: L-BFGS with the strong-Wolfe search stops
early when it makes no progress (a zero gradient, say); the backtracking search, which never reads back,
spends its budget. Each function evaluation is reported to a callback as a ``Step``; SIGINT/SIGTERM stop
the run and return the latest image marked interrupted; a NaN/inf loss stops it, keeping the last finite
one. Losses stay on the device and are read in batches (``cnnviz.optim.readout``), so neither Adam nor
L-BFGS with the backtracking search (the default) waits for the GPU within an evaluation.

What is optimised is a ``Parameterization``: the pixels themselves (``Pixels``, the default when an image
is given) or, for feature visualization, a spectrum and colour basis squashed by a sigmoid
(``cnnviz.optvis.param``). ``Settings.transforms`` are applied to the image before each forward pass.
Randomness comes from a local generator seeded by ``Settings.seed``: torch's global generator is left alone.

``optimize`` runs coarse to fine (``Settings.scales``), one ``_ScaleRun`` per size (as pystiche separates
its pyramid from its single-scale loop); a ``_Tracker`` keeps what the run has reached.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from cnnviz.core.images import fit_size, resize
from cnnviz.errors import CnnvizError
from cnnviz.optim.evaluation import LossFunction, evaluation
from cnnviz.optim.lbfgs import HISTORY, LBFGS
from cnnviz.optim.parameterization import Parameterization, Pixels
from cnnviz.optim.readout import READ_EVERY, Reading, Readout
from cnnviz.optim.settings import MIN_SCALE, Result, Settings, Step

LBFGS_CHUNK = 10  # L-BFGS iterations per ``step`` call, between checks of the stop flag and the regularizers
NONFINITE_LIMIT = 10  # the backtracking search's non-finite trials in a row that stop a run (its step has shrunk 10¹⁰×)


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


def _sizes(final: tuple[int, int], scales: Sequence[float]) -> list[tuple[int, int]]:
    """The sizes to run, coarse to fine: each scale below the final long side (a fraction of it, or pixels)."""
    sides = sorted({round(s * max(final)) if s < 1 else int(s) for s in scales})
    return [*(fit_size(final, side) for side in sides if MIN_SCALE <= side < max(final)), final]


def make_optimizer(settings: Settings, leaves: list[Tensor]) -> torch.optim.Optimizer:
    """The optimizer ``settings`` name, over ``leaves``."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(leaves, lr=settings.step_size)
    return LBFGS(leaves, lr=settings.step_size, max_iter=LBFGS_CHUNK, history_size=min(HISTORY, settings.iters),
                 line_search=settings.line_search)


class _Tracker:
    """What a run has reached, from the readings of its evaluations: the latest image and its losses, the
    iteration, the history, and the last finite image (restored at a non-finite loss).

    Under a backtracking line search (``monotone``) the latest image is the lowest-loss one of its scale:
    trials it rejected are recorded in the history only, non-finite ones not at all, and only
    ``NONFINITE_LIMIT`` of them in a row stop the run."""

    def __init__(self, image: Tensor, monotone: bool, total: int, callback: Callable[[Step], None] | None) -> None:
        self.image = self.kept = image
        self.losses: dict[str, float] = {}
        self.iteration = 0
        self.evaluations = 0
        self.history: list[dict[str, float]] = []
        self.monotone, self.total, self.callback = monotone, total, callback
        self.best = math.inf
        self.nonfinite = 0  # non-finite readings in a row

    def record(self, readings: list[Reading]) -> str | None:
        """Record evaluations read from the device; at a non-finite loss, restore the last finite image and
        say why the run stops (Adam may have taken a few steps past it before the read)."""
        for r in readings:
            if not math.isfinite(r.loss):
                self.nonfinite += 1
                if self.monotone and self.nonfinite < NONFINITE_LIMIT:
                    continue  # the search has rejected it and shrunk its step
                self.image = self.kept
                return f"the loss became {r.loss} at iteration {r.iteration}"
            self.nonfinite = 0
            if not self.monotone or r.loss <= self.best:
                self.best = r.loss
                self.kept = self.image = r.image
                self.losses = r.losses
            self.iteration = r.iteration
            self.history.append({"evaluation": r.evaluation, "iteration": r.iteration, "scale": r.scale, "loss": r.loss,
                                 **r.losses})
            if self.callback:
                self.callback(Step(r.evaluation, r.iteration, self.total, r.scale, r.losses, r.loss, r.seconds, self.image))
        return None


class _ScaleRun:
    """The optimization at one image size: ``settings.iters`` iterations of the optimizer on ``param``, with
    the regularizers and projection after each step, reporting every evaluation through ``readout``."""

    def __init__(self, param: Parameterization, loss: LossFunction, size: tuple[int, int], settings: Settings,
                 tracker: _Tracker, readout: Readout, generator: torch.Generator, stop: threading.Event, zero: Tensor,
                 start: float) -> None:
        self.param, self.settings, self.tracker, self.readout = param, settings, tracker, readout
        self.stop, self.zero, self.start = stop, zero, start
        self.leaves = param.parameters()
        self.optimizer = make_optimizer(settings, self.leaves)
        self.evaluate = evaluation(param, loss, settings.transforms, generator, graph=settings.cuda_graph,
                                   objective_gradient=bool(settings.regularizers))
        self.objective_grad: Tensor | None = None  # the last evaluation's, for the regularizers
        self.lbfgs = settings.optimizer == "lbfgs"
        self.scale = max(size)
        self.base = tracker.iteration
        self.done = 0
        self.chunk_start = 0

    def closure(self) -> Tensor:
        """One evaluation, queued for reading (at once under the strong-Wolfe search, whose readout reads every
        evaluation: it reads every loss itself and must never see a NaN)."""
        if self.stop.is_set():
            raise _Abort
        terms, loss, image, self.objective_grad = self.evaluate()
        self.tracker.evaluations += 1
        within = max(1, self.optimizer.iterations - self.chunk_start) if self.lbfgs else 1
        self.readout.add(terms, loss, evaluation=self.tracker.evaluations, iteration=self.base + self.done + within,
                         scale=self.scale, seconds=time.perf_counter() - self.start, image=image)
        if self.readout.due and (failed := self.tracker.record(self.readout.read())):
            raise _Abort(failed)
        return loss

    def step(self) -> int:
        """One Adam step or one chunk of L-BFGS iterations; the iterations it advanced."""
        if not self.lbfgs:
            self.optimizer.step(self.closure)
            return 1
        self.optimizer.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, self.settings.iters - self.done)
        self.chunk_start = self.optimizer.iterations
        self.optimizer.step(self.closure)
        return self.optimizer.iterations - self.chunk_start

    @torch.no_grad()
    def after_step(self) -> None:
        """The regularizers on the pixels (given the gradient of the objective, without the image's penalties),
        Adam's projection, and the latest image (where every step is kept)."""
        if self.settings.regularizers:
            (pixels,) = self.leaves
            for regularizer in self.settings.regularizers:
                pixels.copy_(regularizer(pixels, self.objective_grad, self.zero, self.done))
        if not self.lbfgs:
            self.param.project()
        if not self.tracker.monotone:
            self.tracker.image = self.param().detach()

    def run(self) -> str | None:
        """Optimise until the budget is spent, the optimizer stops, or the run is stopped; why it failed, if it did."""
        error = None
        try:
            while self.done < self.settings.iters:
                advanced = self.step()
                if advanced == 0:
                    break
                self.done += advanced
                self.after_step()
                if self.stop.is_set():
                    raise _Abort
        except _Abort as abort:
            error = str(abort) or None
        finally:
            for leaf in self.leaves:
                leaf.requires_grad_(False)
        error = error or self.tracker.record(self.readout.read())
        if error is None and not self.lbfgs:
            with torch.no_grad():
                self.tracker.image = self.param().detach()  # the image after the last step, not the last one evaluated
        return error


def optimize(
    problem: Callable[[tuple[int, int]], LossFunction],
    init: Tensor | Parameterization,
    settings: Settings,
    callback: Callable[[Step], None] | None = None,
    zero: Tensor | None = None,
) -> Result:
    """Minimise ``problem(size)(image)`` over the image, coarse to fine.

    ``problem`` builds the loss for an image size (H, W), so targets can be recomputed per scale.
    ``init`` is the start image (B, 3, H, W) in [0, 1], optimised as ``Pixels``, or any
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
    start = time.perf_counter()
    sizes = _sizes(final, settings.scales)
    if len(sizes) > 1:
        param = Pixels(resize(param(), sizes[0]))
    with torch.no_grad():
        first = param().detach()
    zero = torch.zeros_like(first[:1, :, :1, :1]) if zero is None else zero
    monotone = settings.optimizer == "lbfgs" and settings.line_search == "backtracking"  # rejected trials are not results
    tracker = _Tracker(first, monotone, settings.iters * len(sizes), callback)
    searching = settings.optimizer == "lbfgs" and settings.line_search == "strong_wolfe"  # reads every loss anyway
    readout = Readout(every=1 if searching else READ_EVERY)
    error = None
    with _stop_on_signals(stop):
        for scale_index, size in enumerate(sizes):
            if scale_index:
                param = Pixels(resize(tracker.image, size))
            tracker.best = math.inf
            error = _ScaleRun(param, problem(size), size, settings, tracker, readout, generator, stop, zero, start).run()
            if error or stop.is_set():
                break
    return Result(
        image=resize(tracker.image.clamp(0, 1), final), iterations=tracker.iteration, losses=tracker.losses,
        history=tracker.history, seconds=time.perf_counter() - start, interrupted=stop.is_set(), error=error,
    )
