"""The sync-free L-BFGS: its compact direction equals the two-loop recursion, its iterates follow
torch.optim.LBFGS, and its direction never reads a value back to the host."""

import pytest
import torch

from cnnviz.lbfgs import LBFGS, CurvaturePairs, graphed


def two_loop(pairs: list[tuple[torch.Tensor, torch.Tensor]], g: torch.Tensor) -> torch.Tensor:
    """−H g by the textbook two-loop recursion (Nocedal & Wright, Algorithm 7.4), pairs oldest first."""
    q = g.clone()
    alphas = []
    for s, y in reversed(pairs):
        alpha = s.dot(q) / y.dot(s)
        q -= alpha * y
        alphas.append(alpha)
    s, y = pairs[-1]
    r = q * (s.dot(y) / y.dot(y))
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        beta = y.dot(r) / y.dot(s)
        r += (alpha - beta) * s
    return -r


def _pairs(count: int, n: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs with positive curvature: y = A s for a random positive definite A."""
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    a = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    return [(s, a @ s) for s in torch.randn(count, n, generator=generator, dtype=torch.float64)]


@pytest.mark.parametrize("count", [1, 3, 5, 9])
def test_compact_direction_equals_the_two_loop_recursion_also_when_the_ring_wraps(count):
    generator = torch.Generator().manual_seed(count)
    n, m = 12, 5
    pairs = _pairs(count, n, generator)
    g = torch.randn(n, generator=generator, dtype=torch.float64)
    memory = CurvaturePairs(m, n, g)
    for s, y in pairs:
        memory.add(s, y)
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[-m:], g), rtol=1e-9, atol=1e-9)


def test_update_adds_the_pair_of_a_step_and_returns_the_new_direction():
    generator = torch.Generator().manual_seed(3)
    n = 10
    pairs = _pairs(4, n, generator)
    memory = CurvaturePairs(3, n, pairs[0][0])
    previous = torch.randn(n, generator=generator, dtype=torch.float64)
    for s, y in pairs:
        g = previous + y
        d = memory.update(g, previous, s)
        previous = g
    torch.testing.assert_close(d, two_loop(pairs[-3:], g), rtol=1e-9, atol=1e-9)


def test_a_pair_without_positive_curvature_is_masked_not_used():
    generator = torch.Generator().manual_seed(0)
    n = 8
    pairs = _pairs(3, n, generator)
    g = torch.randn(n, generator=generator, dtype=torch.float64)
    memory = CurvaturePairs(4, n, g)
    for s, y in pairs[:2]:
        memory.add(s, y)
    memory.add(pairs[2][0], -pairs[2][1])  # sᵀy < 0: rejected
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[:2], g), rtol=1e-9, atol=1e-9)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _run(optimizer_class, chunks: int, **options) -> tuple[torch.Tensor, int]:
    x = torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.5, -1.0], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([x], lr=1.0, max_iter=5, history_size=4, **options)
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    for _ in range(chunks):
        optimizer.step(closure)
    return x.detach(), evaluations


def test_iterates_follow_torch_lbfgs_with_fewer_evaluations_across_chunks():
    ours, our_evaluations = _run(LBFGS, chunks=4)
    theirs, their_evaluations = _run(torch.optim.LBFGS, chunks=4, line_search_fn="strong_wolfe",
                                     tolerance_grad=0.0, tolerance_change=0.0, max_eval=10**6)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-9)
    assert our_evaluations == their_evaluations - 3  # torch evaluates the same point again at each later step
    assert rosenbrock(ours) < 1e-2 * rosenbrock(torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.5, -1.0], dtype=torch.float64))


def test_counts_iterations_and_stops_at_a_zero_gradient():
    x = torch.zeros(4, requires_grad=True)
    optimizer = LBFGS([x], max_iter=10)

    def closure():
        optimizer.zero_grad()
        loss = (x * 0).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert optimizer.iterations == 0
    y = torch.full((4,), 3.0, requires_grad=True)
    optimizer = LBFGS([y], max_iter=7)

    def quadratic():
        optimizer.zero_grad()
        loss = (y - 1).pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(quadratic)
    assert 1 <= optimizer.iterations <= 7
    torch.testing.assert_close(y.detach(), torch.ones(4), atol=1e-4, rtol=0)


def test_update_and_direction_read_nothing_back_to_the_host(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    n = 10
    g = torch.randn(n, generator=generator, dtype=torch.float64)
    memory = CurvaturePairs(4, n, g)
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1])
    update = graphed(memory)
    assert update == memory.update  # on the CPU there is no graph to record
    previous = torch.randn(n, generator=generator, dtype=torch.float64)
    for s, y in _pairs(6, n, generator):
        update(previous + y, previous, s)
    memory.direction(g)
    assert reads == []


def test_without_line_search_each_iteration_is_one_capped_evaluation_and_a_quadratic_converges():
    from cnnviz.lbfgs import MAX_STEP

    target = torch.linspace(0.2, 0.8, 12, dtype=torch.float64)
    scale = torch.linspace(1.0, 4.0, 12, dtype=torch.float64)
    x = torch.full((12,), 0.5, dtype=torch.float64, requires_grad=True)
    optimizer = LBFGS([x], max_iter=5, line_search=None)
    positions = []

    def closure():
        positions.append(x.detach().clone())
        optimizer.zero_grad()
        loss = (scale * (x - target) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(6):
        loss = optimizer.step(closure)
    assert isinstance(loss, torch.Tensor) and optimizer.iterations == 30 and len(positions) == 31
    steps = torch.stack(positions).diff(dim=0).abs().amax(dim=1)
    assert steps.max() <= MAX_STEP + 1e-12
    torch.testing.assert_close(x.detach(), target, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="line_search"):
        LBFGS([x], line_search="armijo")
