"""L-BFGS whose search direction never waits on the device.

torch.optim.LBFGS computes its direction with the two-loop recursion, one history pair at a time,
reading each step's coefficient on the host: with 50 pairs that is about 100 device-to-host reads per
iteration, which on a GPU cost as much as the network's evaluation itself. Here the pairs live in one
(2m, n) buffer and the direction comes from the compact representation of the inverse Hessian (Byrd,
Nocedal & Schnabel 1994, Theorem 2.2): two passes over the buffer (as many as the two-loop recursion
makes) and a few m × m operations, all on the device, and on a GPU replayed as one CUDA graph. A pair with sᵀy ≤ 1e-10 (no positive curvature) is stored as zeros and
masked, so that even the curvature test needs no read. The step length comes from torch's strong-Wolfe
line search, which reads each evaluation's loss (one read per evaluation, which any line search needs).

Like torch's LBFGS, ``step(closure)`` runs up to ``max_iter`` iterations; unlike it, a later ``step``
continues from the loss and gradient the previous one ended with instead of evaluating the same point
again, so chunked runs waste no evaluation. Without a line search (``line_search=None``, torch's
``line_search_fn=None`` and the Lua optim.lbfgs that neural-style used) every iteration takes the step
``lr``·d, one evaluation each, and nothing at all is read back: on a GPU the iterations queue up like
Adam's steps. Any direction from positive-curvature pairs is a descent direction, so no check is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim.lbfgs import _strong_wolfe

from cnnviz.graphs import capture

CURVATURE_MIN = 1e-10
LINE_SEARCHES = ("strong_wolfe", None)
MAX_STEP = 0.1  # without a line search: the largest change of one value per iteration (pixels are in [0, 1])


class CurvaturePairs:
    """The last ``m`` pairs s = x_{k+1} − x_k, y = g_{k+1} − g_k in a ring, with their inner products.

    The ring's newest slot is a device tensor, so ``update`` is the same sequence of kernels at every
    call (on a GPU, ``graphed`` records it once as a CUDA graph)."""

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

    def add(self, s: Tensor, y: Tensor, g: Tensor | None = None) -> Tensor | None:
        """Store the pair (s, y), or a masked empty slot where its curvature sᵀy is not positive; with
        ``g``, also return [S; Y] g, from the same pass over the buffer."""
        m = self.m
        k = (self.newest + 1) % m
        ys = y.dot(s)
        accept = (ys > CURVATURE_MIN).to(s.dtype)
        pair = torch.stack([s * accept, y * accept])  # (2, n)
        self.pairs.index_copy_(0, torch.cat([k, k + m]), pair)
        columns = pair if g is None else torch.cat([pair, g.unsqueeze(0)])
        products = self.pairs @ columns.T  # (2m, 2 or 3): [S s, S y (, S g); Y s, Y y (, Y g)]
        self.sy.index_copy_(1, k, products[:m, 1:2])
        self.sy.index_copy_(0, k, products[m:, :1].T)
        self.yy.index_copy_(1, k, products[m:, 1:2])
        self.yy.index_copy_(0, k, products[m:, 1:2].T)
        self.masked.index_copy_(0, k, 1 - accept.reshape(1))
        self.gamma.copy_(torch.where(accept > 0, ys / y.dot(y).clamp_min(CURVATURE_MIN), self.gamma))
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


class _Graphed:
    """``memory.update`` on a CUDA GPU: the first call runs eagerly (which initialises the libraries it
    calls), the second records it as a CUDA graph, and from then on each call replays it, so that its ~50
    small kernels cost one launch; eagerly for good if the capture fails."""

    def __init__(self, memory: CurvaturePairs) -> None:
        self.memory = memory
        self.calls = 0
        self.inputs: list[Tensor] = []
        self.recorded: tuple[torch.cuda.CUDAGraph, Tensor] | None = None

    def __call__(self, g: Tensor, previous: Tensor, taken: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == 2:
            self.inputs = [g.clone(), previous.clone(), taken.clone()]
            self.recorded = capture(lambda: self.memory.update(*self.inputs), "L-BFGS")
        if self.recorded is None:
            return self.memory.update(g, previous, taken)
        graph, output = self.recorded
        for static, value in zip(self.inputs, (g, previous, taken)):
            static.copy_(value)
        graph.replay()
        return output.clone()


def graphed(memory: CurvaturePairs) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``memory.update``, replayed as a CUDA graph on a CUDA GPU (``_Graphed``)."""
    return _Graphed(memory) if memory.pairs.device.type == "cuda" else memory.update


class LBFGS(torch.optim.Optimizer):
    """L-BFGS with ``history_size`` curvature pairs and a strong-Wolfe line search, or none (see the
    module doc).

    ``iterations`` counts the iterations since the optimizer was made. With the line search it stops
    before ``max_iter`` when the gradient is exactly zero, the direction is not a descent direction, or
    the step is zero.
    """

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1.0, max_iter: int = 20, history_size: int = 50,
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
        self._update: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
        self._last: tuple[Tensor, Tensor] | None = None  # the previous gradient and the step taken from it

    def _flat(self, tensors: Iterable[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _set(self, flat: Tensor) -> None:
        offset = 0
        for leaf in self.leaves:
            leaf.copy_(flat[offset:offset + leaf.numel()].view_as(leaf))
            offset += leaf.numel()

    def _evaluate(self, closure: Callable[[], Tensor], read: bool = True) -> tuple[float | Tensor, Tensor]:
        """The loss (read to the host, or left on the device) and the flat gradient after ``closure``."""
        with torch.enable_grad():
            loss = closure().detach()
        grad = self._flat(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in self.leaves)
        return (float(loss) if read else loss), grad

    def _direction(self, g: Tensor) -> tuple[Tensor, float | Tensor]:
        """The search direction at gradient ``g`` and its first trial step: −g and lr·min(1, 1/‖g‖₁) (on
        the device) before there is any history, then the L-BFGS direction and lr."""
        lr = self.param_groups[0]["lr"]
        if self._update is None:
            self._update = graphed(CurvaturePairs(self.param_groups[0]["history_size"], g.numel(), g))
            return -g, (1.0 / g.abs().sum().double()).clamp(max=1.0) * lr
        return self._update(g, *self._last), lr

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> float | Tensor:  # type: ignore[override]
        """Up to ``max_iter`` iterations; ``closure`` clears the gradients, evaluates, back-propagates and
        returns the loss (returned as a float, or without a line search as a device tensor)."""
        if self.line_search is None:
            return self._fixed_steps(closure)
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
            x = self._flat(self.leaves)
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
            self._set(self._flat(self.leaves) + step)
            self._last = (g, step)
            loss, g = self._evaluate(closure, read=False)
            self._point = (loss, g)
        return loss
