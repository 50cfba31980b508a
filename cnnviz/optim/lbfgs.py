"""L-BFGS whose search direction never waits on the device.

torch.optim.LBFGS computes its direction with the two-loop recursion, one history pair at a time,
reading each step's coefficient on the host: with 50 pairs that is about 100 device-to-host reads per
iteration, which on a GPU cost as much as the network's evaluation itself. Here the pairs live in one
(2m, n) buffer and the direction comes from the compact representation of the inverse Hessian (Byrd,
Nocedal & Schnabel 1994, Theorem 2.2): two passes over the buffer (as many as the two-loop recursion
makes) and a few m × m operations, all on the device, and on a GPU replayed as one CUDA graph. A pair
with sᵀy ≤ 1e-10 (no positive curvature) is not stored, decided by tensors, so that even the curvature
test needs no read; the ring's empty slots are masked. The step length comes from torch's strong-Wolfe
line search or from a backtracking one made of tensors (below).

Like torch's LBFGS, ``step(closure)`` runs up to ``max_iter`` iterations; unlike it, a later ``step``
continues from the loss and gradient the previous one ended with instead of evaluating the same point
again, so chunked runs waste no evaluation. The strong-Wolfe search decides on the host after each
evaluation, so on a GPU every evaluation waits for the one before and for Python in between. With
``line_search="backtracking"`` every iteration is one trial step and the decision (accept it if the loss
fell enough, else shrink the step: Armijo backtracking, Nocedal & Wright §3.1; extend an accepted step
whose slope is still steep) is made by tensors on the device (``_Trial``), so nothing is read back and
the iterations queue up like Adam's steps. Without a line search (``line_search=None``, torch's
``line_search_fn=None`` and the Lua optim.lbfgs that neural-style used) every iteration takes the step
``lr``·d, capped, one evaluation each, also without a read. Any direction from positive-curvature pairs
is a descent direction, so no check is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim.lbfgs import _strong_wolfe

from cnnviz.optim.graphs import graphed

HISTORY = 50  # curvature pairs kept
CURVATURE_MIN = 1e-10
LINE_SEARCHES = ("strong_wolfe", "backtracking", None)
MAX_STEP = 0.1  # without a line search: the largest change of one value per iteration (pixels are in [0, 1])
ARMIJO = 1e-4  # backtracking accepts a step t when f(x + t d) ≤ f(x) + ARMIJO · t · gᵀd (sufficient decrease)
SHRINK = (0.1, 0.5)  # a rejected step t becomes the quadratic model's minimiser, kept within these fractions of t
CURVATURE = 0.9  # an accepted step whose slope is still below CURVATURE × the search's first slope is extended
EXPAND = 10.0  # ... to EXPAND times its length (the largest extrapolation of torch's strong-Wolfe search)


class CurvaturePairs:
    """The last ``m`` pairs s = x_{k+1} − x_k, y = g_{k+1} − g_k in a ring, with their inner products.

    The ring's newest slot is a device tensor, so ``update`` is the same sequence of kernels at every
    call (on a GPU, ``cnnviz.optim.graphs.graphed`` records it once as a CUDA graph)."""

    def __init__(self, m: int, n: int, like: Tensor) -> None:
        self.m = m
        self.pairs = like.new_zeros(2 * m, n)  # rows 0..m-1: s, rows m..2m-1: y
        self.sy = like.new_zeros(m, m)  # s_iᵀ y_j
        self.yy = like.new_zeros(m, m)  # y_iᵀ y_j
        self.masked = torch.ones(m, device=like.device, dtype=like.dtype)  # 1 where a slot holds no pair
        self.gamma = like.new_ones(())  # H_0 = γ I, γ = sᵀy / yᵀy of the newest accepted pair
        order = torch.arange(m, device=like.device)
        self.orders = (order.unsqueeze(0) + order.unsqueeze(1) + 1) % m  # row k: oldest → newest when k is newest
        self.newest = torch.full((1,), m - 1, device=like.device, dtype=torch.long)

    def add(self, s: Tensor, y: Tensor, g: Tensor | None = None, keep: Tensor | None = None) -> Tensor | None:
        """Store the pair (s, y) where its curvature sᵀy is positive; with ``g``, also return [S; Y] g, from
        the same pass over the buffer. ``keep`` (a 0-dim 0/1 tensor) decides on the device whether the pair
        may go in at all (a rejected trial step's does not). A pair that does not go in leaves the memory as
        it was (Nocedal & Wright: the ring does not advance, no older pair is evicted): the newest slot is
        written again with what it holds, so the kernels are the same and nothing is read back."""
        m = self.m
        write = (y.dot(s) > CURVATURE_MIN).to(s.dtype)
        if keep is not None:
            write = write * keep.to(s.dtype)
        k = (self.newest + write.long()) % m
        rows = torch.cat([k, k + m])
        pair = torch.where(write > 0, torch.stack([s, y]), self.pairs.index_select(0, rows))  # (2, n)
        accept = torch.where(write > 0, write, 1 - self.masked.index_select(0, k).squeeze(0))  # the slot holds a pair
        self.pairs.index_copy_(0, rows, pair)
        columns = pair if g is None else torch.cat([pair, g.unsqueeze(0)])
        products = self.pairs @ columns.T  # (2m, 2 or 3): [S s, S y (, S g); Y s, Y y (, Y g)]
        self.sy.index_copy_(1, k, products[:m, 1:2])
        self.sy.index_copy_(0, k, products[m:, :1].T)
        self.yy.index_copy_(1, k, products[m:, 1:2])
        self.yy.index_copy_(0, k, products[m:, 1:2].T)
        self.masked.index_copy_(0, k, 1 - accept.reshape(1))
        ys, yy = products[m:, :2].index_select(0, k).squeeze(0)  # y_kᵀ s_k, y_kᵀ y_k of the slot just written
        self.gamma.copy_(torch.where(accept > 0, ys / yy.clamp_min(CURVATURE_MIN), self.gamma))
        self.newest.copy_(k)
        return None if g is None else products[:, 2]

    def direction(self, g: Tensor, ab: Tensor | None = None) -> Tensor:
        """−H g, H the L-BFGS inverse Hessian of the stored pairs:
        H = γI + [S γY] [[R⁻ᵀ(D + γYᵀY)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]] [S γY]ᵀ,
        R the upper triangle of SᵀY and D its diagonal, pairs in time order; ``ab`` = [S; Y] g if known."""
        m, gamma = self.m, self.gamma
        order = self.orders.index_select(0, self.newest).squeeze(0)
        ab = self.pairs @ g if ab is None else ab
        a, b = ab[:m][order], ab[m:][order]
        sy = self.sy[order][:, order]
        r = torch.triu(sy) + torch.diag(self.masked[order])  # masked slots: zero rows and columns, unit diagonal
        z = torch.linalg.solve_triangular(r, a.unsqueeze(1), upper=True)
        inner = (torch.diag(sy.diagonal()) + gamma * self.yy[order][:, order]) @ z - gamma * b.unsqueeze(1)
        w = torch.linalg.solve_triangular(r.T, inner, upper=False)
        coefficients = torch.empty_like(ab)
        coefficients[order] = w.squeeze(1)
        coefficients[m + order] = -gamma * z.squeeze(1)
        return -(gamma * g + self.pairs.T @ coefficients)

    def update(self, g: Tensor, previous: Tensor, taken: Tensor) -> Tensor:
        """Add the pair of the step ``taken`` from the gradient ``previous`` to ``g``; the new direction."""
        return self.direction(g, self.add(taken, g - previous, g))


def _flat(tensors: Iterable[Tensor]) -> Tensor:
    """The tensors as one new flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def _assign(leaves: list[Tensor], flat: Tensor) -> None:
    """Copy the flat vector into the leaves, in place."""
    offset = 0
    for leaf in leaves:
        leaf.copy_(flat[offset:offset + leaf.numel()].view_as(leaf))
        offset += leaf.numel()


class LBFGS(torch.optim.Optimizer):
    """L-BFGS with ``history_size`` curvature pairs and a strong-Wolfe or backtracking line search, or
    none (see the module doc).

    ``iterations`` counts the iterations since the optimizer was made (under the backtracking search
    and without a search, evaluations). With the strong-Wolfe search it stops before ``max_iter`` when
    the gradient is exactly zero, the direction is not a descent direction, or the step is zero.
    """

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1.0, max_iter: int = 20, history_size: int = HISTORY,
        line_search: str | None = "strong_wolfe",
    ) -> None:
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
        super().__init__(params, {"lr": lr, "max_iter": max_iter, "history_size": history_size})
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS takes one group of parameters")
        self.line_search = line_search
        self.leaves: list[Tensor] = self.param_groups[0]["params"]
        self.iterations = 0
        self._point: tuple[float | Tensor, Tensor] | None = None  # loss and flat gradient at the current parameters
        self.memory: CurvaturePairs | None = None
        self._update: Callable[..., Tensor | None] | None = None
        self._last: tuple[Tensor, Tensor] | None = None  # the previous gradient and the step taken from it
        self._trial: _Trial | None = None  # the backtracking line search's state
        self._advance: Callable[..., Tensor | None] | None = None  # its ``advance``, a CUDA graph on a GPU

    def _set(self, flat: Tensor) -> None:
        _assign(self.leaves, flat)

    def _evaluate(self, closure: Callable[[], Tensor], read: bool = True) -> tuple[float | Tensor, Tensor]:
        """The loss (read to the host, or left on the device) and the flat gradient after ``closure``."""
        with torch.enable_grad():
            loss = closure().detach()
        grad = _flat(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in self.leaves)
        return (float(loss) if read else loss), grad

    def _direction(self, g: Tensor) -> tuple[Tensor, float | Tensor]:
        """The search direction at gradient ``g`` and its first trial step: −g and lr·min(1, 1/‖g‖₁) (on
        the device) before there is any history, then the L-BFGS direction and lr."""
        lr = self.param_groups[0]["lr"]
        if self._update is None:
            self.memory = CurvaturePairs(self.param_groups[0]["history_size"], g.numel(), g)
            self._update = graphed(self.memory.update, g, "L-BFGS")
            return -g, (1.0 / g.abs().sum()).clamp(max=1.0) * lr
        return self._update(g, *self._last), lr

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> float | Tensor:  # type: ignore[override]
        """Up to ``max_iter`` iterations; ``closure`` clears the gradients, evaluates, back-propagates and
        returns the loss (returned as a float after the strong-Wolfe search, else as a device tensor)."""
        if self.line_search is None:
            return self._fixed_steps(closure)
        if self.line_search == "backtracking":
            return self._backtracking(closure)
        group = self.param_groups[0]
        loss, g = self._point or self._evaluate(closure)
        self._point = (loss, g)
        if not bool(g.abs().max() > 0):
            return loss

        def along(x: Tensor, t: float | Tensor, d: Tensor) -> tuple[float, Tensor]:
            self._set(x + t * d)
            return self._evaluate(closure)

        for _ in range(group["max_iter"]):
            d, t = self._direction(g)
            gtd = float(g.dot(d))
            if gtd >= 0:
                break
            self.iterations += 1
            x = _flat(self.leaves)
            loss_new, g_new, t, _ = _strong_wolfe(along, x, float(t), d, loss, g, gtd)
            self._set(x + t * d)
            self._last = (g, t * d)
            loss, g = loss_new, g_new
            self._point = (loss, g)
            if float(t) == 0:  # d is a descent direction, so it is not zero: the step is zero only if t is
                break
        return loss

    def _fixed_steps(self, closure: Callable[[], Tensor]) -> Tensor:
        """``max_iter`` iterations of x ← x + t d (t from ``_direction``, as with the line search), one
        evaluation each, without reading anything back."""
        group = self.param_groups[0]
        loss, g = self._point or self._evaluate(closure, read=False)
        for _ in range(group["max_iter"]):
            d, t = self._direction(g)
            self.iterations += 1
            step = t * d
            step = step * (MAX_STEP / step.abs().max().clamp_min(MAX_STEP))  # no value moves more than MAX_STEP
            self._set(_flat(self.leaves) + step)
            self._last = (g, step)
            loss, g = self._evaluate(closure, read=False)
            self._point = (loss, g)
        return loss

    def _backtracking(self, closure: Callable[[], Tensor]) -> Tensor:
        """``max_iter`` trial steps x + t d, one evaluation each, decided on the device (``_Trial``); the
        parameters end at the last accepted point, whose loss is returned (a device tensor)."""
        if self._trial is None:
            loss, g = self._evaluate(closure, read=False)
            d, t = self._direction(g)
            self._trial = _Trial(self.memory, self.leaves, self.param_groups[0]["lr"], loss, g, d, t)
            self._advance = graphed(self._trial.advance, g, "L-BFGS line search")
        trial = self._trial
        self._set(trial.x + trial.t * trial.d)
        for _ in range(self.param_groups[0]["max_iter"]):
            self.iterations += 1
            self._advance(*self._evaluate(closure, read=False))
        self._set(trial.x)
        return trial.f.clone()  # trial.f itself is overwritten by the next advance


class _Trial:
    """L-BFGS with a line search made of tensors, so that no evaluation waits for the host's decision.

    After each trial x + t d, ``advance`` accepts it where it decreases the loss enough (Armijo; a NaN
    never does) and otherwise keeps x and shrinks t to the minimiser of the quadratic through f(x), gᵀd
    and f(x + t d). An accepted step along which the slope is still steep (Wolfe's curvature condition
    fails) is extended: the search goes on from there along the same d with t × ``EXPAND``, as strong
    Wolfe's extrapolation would (a step of t = lr can be far too short, as at the first iteration or
    where the loss is concave). The search ends at an accepted step with a flat enough slope, or at the
    first accepted one after a shrink: its pair (the whole step since the search began, and its gradient
    change) is stored and the next direction taken with t = lr. Either way ``advance`` writes the next
    trial point into the parameters. On a CUDA GPU it is replayed as one CUDA graph."""

    def __init__(self, memory: CurvaturePairs, leaves: list[Tensor], lr: float, loss: Tensor, g: Tensor, d: Tensor,
                 t: Tensor | float) -> None:
        self.memory, self.leaves, self.lr = memory, leaves, lr
        self.x = _flat(leaves)
        self.f = loss.to(g.dtype).clone()
        self.g, self.d = g.clone(), d.clone()
        self.gtd = g.dot(d)  # the slope along d at x
        self.t = torch.as_tensor(t, dtype=g.dtype, device=g.device).clone()
        self.start = (self.x.clone(), g.clone(), self.gtd.clone())  # x, g and the slope where this search began
        self.shrunk = torch.zeros((), dtype=torch.bool, device=g.device)  # a trial of this search was rejected

    def advance(self, f_new: Tensor, g_new: Tensor) -> None:
        """Decide on the trial x + t d, whose loss and gradient are ``f_new`` and ``g_new``, and write the
        next trial into the parameters."""
        f, g, t, gtd, d = self.f, self.g, self.t, self.gtd, self.d
        x0, g0, slope0 = self.start
        accept = (f_new <= f + ARMIJO * t * gtd) & g_new.isfinite().all()  # a NaN loss or gradient never passes
        slope = g_new.dot(d)
        end = accept & ((slope >= CURVATURE * slope0) | self.shrunk)
        x = torch.where(accept, self.x + t * d, self.x)
        g_next = torch.where(accept, g_new, g)
        memory = self.memory
        new_d = memory.direction(g_next, memory.add(x - x0, g_next - g0, g_next, keep=end.to(g.dtype)))
        new_slope = g_next.dot(new_d)
        descent = new_slope < 0  # always, for curvature pairs kept positive; else start again from −g
        new_d = torch.where(descent, new_d, -g_next)
        new_slope = torch.where(descent, new_slope, -g_next.dot(g_next))
        quadratic = -gtd * t * t / (2 * (f_new - f - gtd * t))
        shrunk = torch.where(quadratic.isfinite(), quadratic.clamp(SHRINK[0] * t, SHRINK[1] * t), SHRINK[0] * t)
        self.t.copy_(torch.where(end, torch.full_like(t, self.lr), torch.where(accept, t * EXPAND, shrunk)))
        self.gtd.copy_(torch.where(end, new_slope, torch.where(accept, slope, gtd)))
        self.d.copy_(torch.where(end, new_d, d))
        self.x.copy_(x)
        self.f.copy_(torch.where(accept, f_new, f))
        self.g.copy_(g_next)
        x0.copy_(torch.where(end, x, x0))
        g0.copy_(torch.where(end, g_next, g0))
        slope0.copy_(torch.where(end, new_slope, slope0))
        self.shrunk.copy_(~end & (self.shrunk | ~accept))
        _assign(self.leaves, self.x + self.t * self.d)
