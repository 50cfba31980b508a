"""The sync-free L-BFGS: its compact direction equals the two-loop recursion, its iterates follow
torch.optim.LBFGS, and its direction never reads a value back to the host."""

import pytest
import torch

from cnnviz.optim.lbfgs import LBFGS, CurvaturePairs, graphed


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


def _memory(seed: int, count: int, n: int, m: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, CurvaturePairs]:
    """``count`` pairs, a gradient and an empty memory of ``m`` pairs, all of size ``n``."""
    generator = torch.Generator().manual_seed(seed)
    pairs = _pairs(count, n, generator)
    g = torch.randn(n, generator=generator, dtype=torch.float64)
    return pairs, g, CurvaturePairs(m, n, g)


@pytest.mark.parametrize("count", [1, 3, 5, 9])
def test_compact_direction_equals_the_two_loop_recursion_also_when_the_ring_wraps(count):
    m = 5
    pairs, g, memory = _memory(count, count, n=12, m=m)
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
    pairs, g, memory = _memory(0, 3, n=8, m=4)
    for s, y in pairs[:2]:
        memory.add(s, y)
    memory.add(pairs[2][0], -pairs[2][1])  # sᵀy < 0: rejected
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[:2], g), rtol=1e-9, atol=1e-9)


def test_a_rejected_pair_evicts_no_older_pair():
    """Nocedal & Wright skip a pair without positive curvature and leave the memory unchanged: with a full
    ring, the oldest good pair must still count afterwards, and the next good pair evicts it as usual."""
    pairs, g, memory = _memory(5, 4, n=8, m=3)
    for s, y in pairs[:3]:
        memory.add(s, y)
    memory.add(pairs[3][0], -pairs[3][1])  # sᵀy < 0: rejected
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[:3], g), rtol=1e-9, atol=1e-9)
    memory.add(*pairs[3])
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[1:4], g), rtol=1e-9, atol=1e-9)


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
    update = graphed(memory.update, g)
    assert update == memory.update  # on the CPU there is no graph to record
    previous = torch.randn(n, generator=generator, dtype=torch.float64)
    for s, y in _pairs(6, n, generator):
        update(previous + y, previous, s)
    memory.direction(g)
    assert reads == []


def test_without_line_search_each_iteration_is_one_capped_evaluation_and_a_quadratic_converges():
    from cnnviz.optim.lbfgs import MAX_STEP

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


def test_a_pair_kept_out_leaves_the_memory_as_it_was():
    pairs, g, memory = _memory(5, 4, n=9, m=3)
    for s, y in pairs[:3]:
        memory.add(s, y, keep=torch.ones((), dtype=torch.float64))
    before = [t.clone() for t in (memory.pairs, memory.sy, memory.yy, memory.masked, memory.gamma, memory.newest)]
    memory.add(*pairs[3], keep=torch.zeros((), dtype=torch.float64))
    for old, new in zip(before, (memory.pairs, memory.sy, memory.yy, memory.masked, memory.gamma, memory.newest)):
        torch.testing.assert_close(new, old, rtol=0, atol=0)
    torch.testing.assert_close(memory.direction(g), two_loop(pairs[:3], g), rtol=1e-9, atol=1e-9)


def _backtracking_run(objective, x0: torch.Tensor, steps: int, lr: float = 1.0) -> tuple[LBFGS, list, list]:
    """Run the backtracking L-BFGS for ``steps`` chunks of 5; every evaluated loss, and the loss at the
    parameters after each chunk."""
    x = x0.clone().requires_grad_(True)
    optimizer = LBFGS([x], lr=lr, max_iter=5, history_size=4, line_search="backtracking")
    evaluated, accepted = [], []

    def closure():
        optimizer.zero_grad()
        loss = objective(x)
        loss.backward()
        evaluated.append(float(loss.detach()))
        return loss

    for _ in range(steps):
        optimizer.step(closure)
        accepted.append(float(objective(x.detach())))
    return optimizer, evaluated, accepted


def test_backtracking_takes_one_evaluation_per_iteration_never_rises_and_solves_rosenbrock():
    start = torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.5, -1.0], dtype=torch.float64)
    optimizer, evaluated, accepted = _backtracking_run(rosenbrock, start, steps=20)
    assert optimizer.iterations == 100 and len(evaluated) == 101
    assert all(later <= earlier for earlier, later in zip(accepted, accepted[1:]))
    assert any(b > a for a, b in zip(evaluated, evaluated[1:]))  # a rise among evaluations: a rejected trial
    assert accepted[-1] < 1e-8


def test_backtracking_rejects_a_nan_trial_and_shrinks_the_step():
    def capped(x):  # a quadratic that is NaN beyond x = 5
        loss = ((x - 3) ** 2).sum()
        return torch.where((x > 5).any(), torch.full_like(loss, float("nan")), loss)

    _, evaluated, accepted = _backtracking_run(capped, torch.zeros(4, dtype=torch.float64), steps=2, lr=10.0)
    assert any(v != v for v in evaluated)
    assert accepted[-1] < 1e-12


def _backtracking_on_rosenbrock(max_iter: int):
    """A backtracking L-BFGS on Rosenbrock's function and its closure."""
    x = torch.tensor([-1.2, 1.0, -0.5, 0.8], dtype=torch.float64, requires_grad=True)
    optimizer = LBFGS([x], max_iter=max_iter, line_search="backtracking")

    def closure():
        optimizer.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    return optimizer, closure


def test_backtracking_reads_nothing_back_to_the_host(monkeypatch):
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1])
    optimizer, closure = _backtracking_on_rosenbrock(max_iter=5)
    returned = [optimizer.step(closure) for _ in range(3)]
    assert reads == [] and all(isinstance(loss, torch.Tensor) for loss in returned)
    monkeypatch.undo()
    assert returned[0] > returned[1] > returned[2]  # each step's own loss, not one tensor updated in place


def test_backtracking_extends_a_step_that_is_far_too_short():
    def well(x):  # concave far from its minimum at 3: there a step of t = 1 along −g moves about 1e-4
        return -torch.exp(-((x - 3) ** 2).sum() / 2)

    start = torch.zeros(2, dtype=torch.float64)
    _, evaluated, accepted = _backtracking_run(well, start, steps=6)
    assert accepted[-1] == pytest.approx(-1.0, abs=1e-9)
    x = start.clone().requires_grad_(True)
    fixed = LBFGS([x], max_iter=30, line_search=None)

    def closure():
        fixed.zero_grad()
        loss = well(x)
        loss.backward()
        return loss

    fixed.step(closure)
    assert float(well(x.detach())) > -1e-3  # the same 30 iterations without a search barely leave the start


def test_backtracking_replayed_as_a_recorded_graph_takes_the_same_steps(monkeypatch):
    """With a stand-in for CUDA-graph capture (keep the function, run it at each replay on the recorded
    input tensors), each call's loss and gradient must reach the replay through those tensors."""
    import cnnviz.optim.graphs as graphs
    import cnnviz.optim.lbfgs as lbfgs

    replays = []

    class Recorded:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            replays.append(1)
            self.fn()

    start = torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.5, -1.0], dtype=torch.float64)
    _, eager, _ = _backtracking_run(rosenbrock, start, steps=4)
    monkeypatch.setattr(graphs, "_capture", lambda fn, what: (Recorded(fn), None))
    monkeypatch.setattr(graphs.Graphed, "_side", lambda self, *args: self.fn(*args))  # no side stream on the CPU
    monkeypatch.setattr(lbfgs, "graphed", lambda fn, like, what, warmup=1: graphs.Graphed(fn, what, warmup))
    _, replayed, _ = _backtracking_run(rosenbrock, start, steps=4)
    assert replayed == eager and len(replays) == 20 - 1  # every call but the first, which runs eagerly


def test_a_finished_backtracking_optimizer_is_freed_at_once():
    """No reference cycle keeps an optimizer (and its history of 2m image-sized vectors) alive until the
    cycle collector runs: coarse-to-fine makes one per scale."""
    import gc
    import weakref

    optimizer, closure = _backtracking_on_rosenbrock(max_iter=3)
    gc.disable()
    try:
        optimizer.step(closure)
        freed = weakref.ref(optimizer)
        del optimizer, closure
        assert freed() is None
    finally:
        gc.enable()


# The backtracking search's decisions, one ``advance`` at a time, against values worked out by hand on
# f(x) = (x − 1)² from x = 0: f = 1, g = −2, d = −g = 2, so gᵀd = −4 (float64, so that equalities are exact).

def _trial(t: float = 1.5, lr: float = 1.0):
    from cnnviz.optim.lbfgs import _Trial

    x = torch.zeros(1, dtype=torch.float64)
    g = torch.tensor([-2.0], dtype=torch.float64)
    memory = CurvaturePairs(3, 1, g)
    trial = _Trial(memory, [x], lr, torch.tensor(1.0, dtype=torch.float64), g, -g, t)
    return trial, x, memory


def _f(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def test_a_rejected_trial_shrinks_to_the_quadratic_minimiser_within_its_bounds():
    trial, x, memory = _trial(1.5)
    trial.advance(_f(4.0), torch.tensor([4.0], dtype=torch.float64))  # x = 3: f = 4, no decrease
    # the quadratic through f(0) = 1, slope −4 and f(3) = 4 has its minimum at t = 4·1.5² / (2·(4 − 1 + 6)) = 0.5
    assert trial.t.item() == 0.5 and x.item() == 1.0 and bool(trial.shrunk)
    assert trial.f.item() == 1.0 and trial.d.item() == 2.0 and memory.masked.tolist() == [1.0, 1.0, 1.0]
    for f_new, expected in ((1000.0, 0.1 * 1.5), (0.9999, 0.5 * 1.5), (float("nan"), 0.1 * 1.5)):
        trial, x, _ = _trial(1.5)
        trial.advance(_f(f_new), torch.tensor([0.0], dtype=torch.float64))
        assert trial.t.item() == pytest.approx(expected, rel=1e-15), f_new  # clamped to [0.1 t, 0.5 t]; NaN: 0.1 t
    trial, x, _ = _trial(1.0)
    trial.advance(_f(0.5), torch.tensor([float("inf")], dtype=torch.float64))  # a finite loss with a non-finite gradient
    assert bool(trial.shrunk) and trial.f.item() == 1.0 and trial.t.item() == 0.5  # rejected: 4/7 clamped to 0.5 t


def test_armijo_accepts_at_its_bound_and_rejects_just_above_it():
    from cnnviz.optim.lbfgs import ARMIJO

    bound = 1.0 + ARMIJO * 1.5 * -4.0
    trial, _, _ = _trial(1.5)
    trial.advance(_f(bound), torch.tensor([0.0], dtype=torch.float64))  # slope 0: flat enough, the search ends
    assert not bool(trial.shrunk) and trial.f.item() == bound and trial.t.item() == 1.0
    trial, _, _ = _trial(1.5)
    trial.advance(_f(1.0 - 0.5 * ARMIJO * 1.5 * 4.0), torch.tensor([0.0], dtype=torch.float64))  # half the decrease
    assert bool(trial.shrunk) and trial.f.item() == 1.0


def test_a_steep_accepted_step_is_extended_and_stores_no_pair():
    from cnnviz.optim.lbfgs import CURVATURE, EXPAND

    trial, x, memory = _trial(0.1)
    steep = CURVATURE * -4.0 / 2.0 * 1.5  # slope along d = 2 steeper than CURVATURE × the first slope
    trial.advance(_f(0.7), torch.tensor([steep], dtype=torch.float64))
    assert trial.t.item() == pytest.approx(0.1 * EXPAND) and trial.gtd.item() == steep * 2.0
    assert memory.masked.tolist() == [1.0, 1.0, 1.0] and not bool(trial.shrunk)
    assert x.item() == pytest.approx(0.2 + 1.0 * 2.0)
    # at exactly CURVATURE × the first slope the search ends: the pair is stored and the step goes back to lr
    trial, x, memory = _trial(0.1, lr=0.5)
    trial.advance(_f(0.7), torch.tensor([CURVATURE * -4.0 / 2.0], dtype=torch.float64))
    assert trial.t.item() == 0.5 and memory.masked.tolist().count(0.0) == 1


def test_after_a_shrink_the_first_accepted_step_ends_the_search_even_when_steep():
    trial, x, memory = _trial(1.5)
    trial.advance(_f(4.0), torch.tensor([4.0], dtype=torch.float64))  # rejected: t = 0.5
    trial.advance(_f(0.5), torch.tensor([-1.9], dtype=torch.float64))  # accepted, slope −3.8 still steep
    assert trial.t.item() == 1.0 and not bool(trial.shrunk) and memory.masked.tolist().count(0.0) == 1


def test_a_pair_at_or_below_the_curvature_threshold_leaves_gamma_and_the_memory_alone():
    from cnnviz.optim.lbfgs import CURVATURE_MIN

    g = torch.ones(1, dtype=torch.float64)
    memory = CurvaturePairs(3, 1, g)
    memory.add(torch.tensor([CURVATURE_MIN], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    memory.add(torch.tensor([1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64))
    assert memory.gamma.item() == 1.0 and memory.masked.tolist() == [1.0, 1.0, 1.0]
    memory.add(torch.tensor([1.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64))
    assert memory.gamma.item() == 0.25 and memory.masked.tolist().count(0.0) == 1


@pytest.mark.parametrize("line_search", [None, "backtracking"])
def test_the_first_step_is_lr_times_at_most_one_over_the_gradient_norm(line_search):
    """Without a search the step is taken; under the backtracking search it is the first trial, which the
    quadratic accepts (its loss falls)."""
    for start, lr in ((torch.tensor([0.1, -0.2]), 0.5), (torch.full((5,), 0.3), 0.25)):  # steps under the 0.1 cap
        x = start.clone().requires_grad_(True)
        optimizer = LBFGS([x], lr=lr, max_iter=1, line_search=line_search)

        def closure(x=x, optimizer=optimizer):
            optimizer.zero_grad()
            loss = 0.5 * x.pow(2).sum()  # g = x
            loss.backward()
            return loss

        optimizer.step(closure)
        t = lr * min(1.0, 1.0 / start.abs().sum().item())
        assert torch.allclose(x.detach(), start - t * start), (start, lr)


def test_several_parameter_tensors_are_optimised_as_one_vector():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(3, 1, requires_grad=True)
    optimizer = LBFGS([a, b], max_iter=40, line_search="backtracking")

    def closure():
        optimizer.zero_grad()
        loss = (a - torch.tensor([1.0, 2.0])).pow(2).sum() + (b + torch.tensor([[1.0], [2.0], [3.0]])).pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert torch.allclose(a.detach(), torch.tensor([1.0, 2.0]), atol=1e-4)
    assert torch.allclose(b.detach().flatten(), torch.tensor([-1.0, -2.0, -3.0]), atol=1e-4)


def test_two_parameter_groups_are_refused():
    with pytest.raises(ValueError, match="^LBFGS takes one group of parameters$"):
        LBFGS([{"params": [torch.zeros(1, requires_grad=True)]}, {"params": [torch.zeros(1, requires_grad=True)]}])


def test_a_step_runs_twenty_iterations_by_default_as_torchs_does():
    x = torch.tensor([3.0, -2.0], requires_grad=True)
    optimizer = LBFGS([x], line_search=None)
    evaluations = []

    def closure():
        optimizer.zero_grad()
        loss = (x - 1).pow(4).sum()  # far from converged after 20 capped steps
        loss.backward()
        evaluations.append(1)
        return loss

    optimizer.step(closure)
    assert len(evaluations) == 1 + 20 and optimizer.iterations == 20
    assert torch.optim.LBFGS([x]).defaults["max_iter"] == 20
