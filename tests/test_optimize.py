import inspect
import math

import pytest
import torch
from torch import nn

from cnnviz.analyzers.inversion import START_NOISE, alpha_term, invert
from cnnviz.core.convention import Convention
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.images import resize
from cnnviz.core.models import ModelSpec
from cnnviz.core.weights import Weights
from cnnviz.errors import CnnvizError
from cnnviz.losses import Loss, Term, feature_loss, reference_activations
from cnnviz.optim.loop import optimize
from cnnviz.optim.settings import Settings
from cnnviz.optvis.regularizers import Blur, Clip, Decay, tv_loss
from cnnviz.optvis.transforms import Jitter


def _inversion_problem(vgg, reference, layer="relu1_2"):
    def problem(shape):
        phi0 = reference_activations(vgg, resize(reference, shape), [layer])[layer]
        return Loss(vgg, [Term("feature", 1.0, (layer,), lambda acts, x: feature_loss(acts[layer], phi0))])

    return problem


@pytest.mark.parametrize("size", [48, 96])
def test_lbfgs_moves_the_image_and_the_loss_falls_at_two_sizes(vgg, size):
    reference = torch.rand(1, 3, size, size)
    init = torch.full_like(reference, 0.5) + 0.1 * torch.randn_like(reference)
    init = init.clamp(0, 1)
    result = optimize(_inversion_problem(vgg, reference), init, Settings(optimizer="lbfgs", iters=10))
    first, last = result.history[0]["feature"], result.losses["feature"]
    assert (result.image - init).abs().mean() > 1e-2
    assert last < first / 10, (first, last)
    assert 0 <= result.image.min() and result.image.max() <= 1


def test_adam_moves_the_image_and_the_loss_falls(vgg):
    reference = torch.rand(1, 3, 48, 48)
    init = torch.full_like(reference, 0.5)
    result = optimize(_inversion_problem(vgg, reference), init, Settings(optimizer="adam", iters=30, lr=0.02))
    assert result.losses["feature"] < result.history[0]["feature"] / 2
    assert result.iterations == 30


def test_tv_beta_matches_hand_computation():
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 4.0, 4.0], [2.0, 0.0, 1.0]]]])
    # pixels (0,0),(0,1),(1,0),(1,1): (dx, dy) = (1,2), (2,3), (2,0), (0,-4)
    squares = torch.tensor([1 + 4, 4 + 9, 4 + 0, 0 + 16], dtype=torch.float32)
    assert math.isclose(float(tv_loss(x, 2.0)), float(squares.mean()), rel_tol=1e-6)
    assert math.isclose(float(tv_loss(x, 1.0)), float(squares.sqrt().mean()), rel_tol=1e-3)


def test_backtracking_steps_back_from_a_nan_trial_and_stops_only_when_the_loss_stays_nan(vgg):
    def problem(shape):
        def bounded(acts, x):  # the loss of pulling the image to 0.2, NaN where the image leaves [0.25, 1]
            loss = (x - 0.2).pow(2).mean()
            return torch.where(x.min() < 0.25, torch.full_like(loss, float("nan")), loss)

        return Loss(vgg, [Term("bounded", 1.0, (), bounded)])

    init = torch.full((1, 3, 16, 16), 0.9)
    result = optimize(problem, init, Settings(iters=30))
    losses = [h["loss"] for h in result.history]
    assert result.error is None and len(losses) < 31  # some trials were NaN, left out of the history
    assert all(math.isfinite(v) for v in losses) and result.losses["bounded"] < 0.1 * losses[0]
    assert result.image.min() >= 0.25

    def always(shape):
        return Loss(vgg, [Term("nan", 1.0, (), lambda acts, x: x.mean() * float("nan"))])

    result = optimize(always, init, Settings(iters=30))
    assert result.error and "nan" in result.error and result.history == []
    assert torch.equal(result.image, init)


def test_nan_loss_stops_with_an_error_and_keeps_the_last_finite_image(vgg):
    calls = {"n": 0}

    def problem(shape):
        def bad(acts, x):
            calls["n"] += 1
            return (x - 0.2).pow(2).mean() * (float("nan") if calls["n"] > 3 else 1.0)

        return Loss(vgg, [Term("bad", 1.0, (), bad)])

    init = torch.full((1, 3, 16, 16), 0.9)
    result = optimize(problem, init, Settings(optimizer="adam", iters=50, lr=0.05))
    assert result.error and "nan" in result.error
    assert torch.isfinite(result.image).all()
    assert (result.image - init).abs().max() > 0
    assert len(result.history) == 3


def test_multi_scale_ends_at_the_final_size(vgg):
    reference = torch.rand(1, 3, 64, 48)
    result = optimize(_inversion_problem(vgg, reference.clone()), reference.clone() * 0 + 0.5,
                      Settings(optimizer="lbfgs", iters=3, scales=(32,)))
    assert result.image.shape == (1, 3, 64, 48)
    assert {h["scale"] for h in result.history} == {32, 64}


def test_fractional_scales_run_at_that_fraction_of_the_final_size_and_tiny_ones_are_left_out(vgg):
    reference = torch.rand(1, 3, 64, 48)
    result = optimize(_inversion_problem(vgg, reference.clone()), torch.full_like(reference, 0.5),
                      Settings(iters=2, scales=(0.5, 0.2, 40)))  # 0.2 of 64 px is 13 px: under 16, left out
    assert result.image.shape == (1, 3, 64, 48)
    assert list(dict.fromkeys(h["scale"] for h in result.history)) == [32, 40, 64]


@pytest.mark.parametrize("scales", [(8,), (1.0,), (0.0,), (-0.5,), (100.5,), (math.inf,), (math.nan,)])
def test_scales_that_are_neither_pixels_nor_a_fraction_are_refused(scales):
    with pytest.raises(CnnvizError, match="--scales"):
        Settings(scales=scales).check()


def test_coarse_to_fine_beats_one_scale_at_equal_cost():
    """40 iterations at half the size and 40 at 96 px cost as much as 50 at 96 px (an evaluation's cost goes
    with its pixels); from the same noise the half-size pass leaves a far lower feature error at relu2_2."""
    vgg = load_model("vgg16", device="cpu", precision="fp32")
    coarse_to_fine = invert(vgg, "astronaut", "relu2_2", size=96, settings=Settings(iters=40, scales=(0.5,)))
    one_scale = invert(vgg, "astronaut", "relu2_2", size=96, settings=Settings(iters=50))
    assert list(dict.fromkeys(h["scale"] for h in coarse_to_fine.record.history)) == [48, 96]
    error, single = coarse_to_fine.record.params["relative_error"], one_scale.record.params["relative_error"]
    assert error < 0.85 * single, (error, single)


def test_inversion_starts_from_quieter_noise_than_texture_synthesis(vgg):
    """±0.1 around grey, seeded: each evaluation of the run reports the image it evaluated, the first the start."""
    steps = []
    invert(vgg, "astronaut", "relu1_2", size=64, settings=Settings(iters=1, seed=3), callback=steps.append)
    start = steps[0].image
    assert START_NOISE == 0.1
    assert start.min() >= 0.4 and start.max() <= 0.6 and start.std() == pytest.approx(0.1 / math.sqrt(3), rel=0.05)
    other = []
    invert(vgg, "astronaut", "relu1_2", size=64, settings=Settings(iters=1, seed=4), callback=other.append)
    assert not torch.equal(start, other[0].image)


def test_seed_makes_runs_deterministic(vgg):
    a = invert(vgg, "astronaut", "relu1_2", size=32, settings=Settings(iters=3, seed=5))
    b = invert(vgg, "astronaut", "relu1_2", size=32, settings=Settings(iters=3, seed=5))
    c = invert(vgg, "astronaut", "relu1_2", size=32, settings=Settings(iters=3, seed=6))
    torch.testing.assert_close(a.image, b.image)
    assert not torch.equal(a.image, c.image)


def test_per_step_regularizers():
    zero = torch.full((1, 3, 1, 1), 0.5)
    x = torch.rand(1, 3, 8, 8)
    decayed = Decay(0.5)(x, None, zero, 1)
    torch.testing.assert_close(decayed - zero, 0.5 * (x - zero))
    clipped = Clip(norm_pct=50, contribution_pct=0)(x, None, zero, 1)
    assert ((clipped == zero).all(dim=1)).float().mean() == pytest.approx(0.5, abs=0.02)
    blurred = Blur(sigma=1.0, every=2)(x, None, zero, 2)
    assert blurred.std() < x.std()
    torch.testing.assert_close(Blur(sigma=1.0, every=2)(x, None, zero, 3), x)


def test_bad_settings_are_user_errors():
    for bad in (Settings(optimizer="sgd"), Settings(iters=0), Settings(lr=-1.0), Settings(transforms=(Jitter(2),))):
        with pytest.raises(CnnvizError):
            bad.check()


def test_top_level_api_takes_a_model_name_or_a_loaded_model(vgg):
    import cnnviz

    by_name = cnnviz.invert("coffee", layer="relu1_1", size=32, settings=Settings(iters=2), device="cpu")
    loaded = cnnviz.invert("coffee", layer="relu1_1", size=32, settings=Settings(iters=2), model=vgg)
    torch.testing.assert_close(by_name.image, loaded.image)
    assert by_name.record.analyzer == "invert" and by_name.record.model == "vgg16"


def test_the_five_analyzers_share_one_shape():
    import cnnviz
    from cnnviz.analyzers.common import Output

    first = {"saliency": "image", "ascent": "target", "invert": "image", "texture": "image", "transfer": "image"}
    for name, argument in first.items():
        parameters = inspect.signature(getattr(cnnviz, name)).parameters
        assert list(parameters)[0] == argument, name
        assert {"model", "weights", "device", "size"} <= set(parameters), name
        assert parameters["size"].default == 256 and parameters["model"].default in ("vgg16", "efficientnet_lite0")
    assert inspect.signature(cnnviz.invert).return_annotation in (Output, "Output")


def test_the_apis_loop_defaults_are_the_clis():
    """``cnnviz.invert(image)`` runs what ``cnnviz invert`` runs: iterations and coarse-to-fine scales alike."""
    from cli import invert as invert_cli
    from cli import texture as texture_cli
    from cli import transfer as transfer_cli
    from cnnviz.analyzers import texture, transfer

    def cli_default(module, name):
        return inspect.signature(module.command).parameters[name].default

    assert cli_default(invert_cli, "iters") == Settings().iters == 200
    assert cli_default(invert_cli, "scales") == "none" and Settings().scales == ()
    for cli, analyzer in ((texture_cli, texture), (transfer_cli, transfer)):
        assert cli_default(cli, "iters") == analyzer.DEFAULT_ITERS == 300
        assert cli_default(cli, "scales") == "none"
    assert texture.texture(load_model("vgg16", device="cpu"), "brick", layers=["relu1_1"], size=16).record.iterations == 300


def test_lbfgs_ends_within_its_budget_when_the_gradient_is_exactly_zero(vgg):
    """invert from the content itself with no prior: the gradient is zero at the start."""
    output = invert(vgg, "coffee", "relu2_1", size=32, init="content", tv_weight=0.0, settings=Settings(iters=20))
    assert len(output.record.history) <= 20 * 2 and output.record.losses["feature"] == 0


@pytest.mark.parametrize("line_search", ["strong_wolfe", "backtracking", None])
def test_lbfgs_minimises_the_clipped_image_and_reports_its_loss(vgg, line_search):
    """The loss of the returned image is the one reported: the bound is part of the problem. Under the
    backtracking search, whose rejected trials are evaluated too, that is the lowest loss evaluated."""
    reference = torch.rand(1, 3, 32, 32)
    problem = _inversion_problem(vgg, reference)
    steps = []
    result = optimize(problem, torch.full_like(reference, 0.5), Settings(iters=15, line_search=line_search),
                      callback=steps.append)
    with torch.no_grad():
        final = float(problem((32, 32))(result.image)["feature"])
    assert final == pytest.approx(result.losses["feature"], rel=1e-4)
    if line_search == "backtracking":
        assert result.losses["feature"] == min(h["feature"] for h in result.history)
        with torch.no_grad():  # a checkpoint saves the result so far, never a rejected trial
            shown = [float(problem((32, 32))(step.image)["feature"]) for step in steps]
        assert all(later <= earlier * (1 + 1e-5) for earlier, later in zip(shown, shown[1:]))
        evaluated = [h["feature"] for h in result.history]
        assert any(evaluated[i] > min(evaluated[:i]) for i in range(1, len(evaluated)))  # some trial was rejected


def test_the_global_generator_is_left_alone(vgg):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    invert(vgg, "coffee", "relu1_1", size=32, settings=Settings(optimizer="adam", iters=2, seed=3, transforms=(Jitter(2),)))
    load_model("resnet18", weights="random", device="cpu", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_progress_counts_every_scale_and_the_record_holds_the_step_size(vgg):
    steps = []
    output = invert(vgg, "coffee", "relu1_1", size=64, settings=Settings(iters=3, scales=(32,)), callback=steps.append)
    assert steps[0].total == 6 and steps[-1].iteration <= 6 and steps[-1].iteration > 3
    assert output.record.params["lr"] == 1.0


def test_an_evaluation_returns_the_loss_and_a_fresh_gradient_each_time(vgg):
    from cnnviz.optim.evaluation import evaluation
    from cnnviz.optim.parameterization import Pixels

    param = Pixels(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    objective = Loss(vgg, [Term("tv", 1.0, (), lambda acts, x: tv_loss(x))])
    evaluate = evaluation(param, objective, (), torch.Generator(), graph=True)  # no CUDA here: eager
    terms, first, image, objective_grad = evaluate()
    gradient = param.x.grad.clone()
    _, second, _, _ = evaluate()
    (expected,) = torch.autograd.grad(tv_loss(param.x.clamp(0, 1)), param.x)
    assert first.detach().item() == second.detach().item() == terms["tv"].detach().item()
    torch.testing.assert_close(param.x.grad, gradient)  # cleared, not accumulated
    torch.testing.assert_close(gradient, expected)
    assert not image.requires_grad and objective_grad is None  # asked for by step regularizers only


def test_the_alpha_prior_means_the_same_whatever_the_input_convention():
    """Two networks fed the same RGB mean but at scales 1 and 255 (Caffe's): the α-norm term of one image is
    equal on both, and is mean |x − mean colour|^α in [0, 1] pixel units."""
    image = torch.rand(1, 3, 8, 8)
    mean = (0.4, 0.5, 0.6)
    values = []
    for convention in (Convention("unit", mean, (0.2, 0.2, 0.2), 1.0, False),
                       Convention("bytes", tuple(255 * m for m in mean), (1.0, 1.0, 1.0), 255.0, False)):
        model = HookedModel(nn.Sequential(nn.ReLU()), ModelSpec("tiny"), Weights("tiny", None, convention), torch.device("cpu"))
        term = alpha_term(model, 1.0, 6.0)
        values.append(float(term.fn({}, image)))
    expected = float((image - torch.tensor(mean).view(1, 3, 1, 1)).abs().pow(6).mean())
    assert values == pytest.approx([expected, expected], rel=1e-5)


def test_clipping_by_contribution_uses_the_objectives_gradient_not_the_penalty(vgg):
    """Yosinski et al. clip pixels by |x · ∂a/∂x|, the activation's own gradient: a large L2 penalty in the
    loss must not change which pixels are reset (one Adam step of 1e-9, so the pixels barely move)."""
    from cnnviz.optvis.regularizers import l2_norm

    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    zero = torch.full((1, 3, 1, 1), 0.5)
    score = Term("score", -1.0, ("relu1_2",), lambda acts, x: acts["relu1_2"][:, 3].mean())
    penalty = Term("l2", 50.0, (), lambda acts, x: l2_norm(x - zero))
    settings = Settings(optimizer="adam", iters=1, lr=1e-9, regularizers=(Clip(norm_pct=0, contribution_pct=50),))
    result = optimize(lambda _: Loss(vgg, [score, penalty]), image, settings, zero=zero)
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(vgg(x, ["relu1_2"])["relu1_2"][:, 3].mean(), x)
    contribution = ((image - zero) * grad).sum(dim=1).abs().flatten()
    expected = contribution >= torch.quantile(contribution, 0.5)
    kept = ~(result.image == 0.5).all(dim=1).flatten()
    assert torch.equal(kept, expected)
