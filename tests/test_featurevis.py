"""Feature visualization (Olah et al. 2017): parameterizations, transforms, composable objectives, and
the batched ascent that uses them."""

import json
import re

import pytest
import torch
from PIL import Image

from cnnviz.analyzers.ascent import Recipe, ascend_many, default_settings, render, start_image, target_for
from cnnviz.core.hooked import load_model
from cnnviz.core.images import bundled_images, load_image
from cnnviz.errors import CnnvizError
from cnnviz.gallery.plan import PARAM_ROWS, param_row
from cnnviz.optim.parameterization import Pixels
from cnnviz.optim.settings import compose
from cnnviz.optvis.color import COLOR_SQRT, correlate, decorrelate
from cnnviz.optvis.objectives import Objective, channel, diversity, neuron
from cnnviz.optvis.param import Squashed, from_spectrum, to_spectrum
from cnnviz.optvis.transforms import BLACK, Jitter, Pad, RandomRotate, RandomScale, Shift, parse, standard

from conftest import run_cli
from metrics import high_frequency_share


@pytest.fixture(scope="module")
def tiny():
    return load_model("resnet18", weights="random", device="cpu", seed=3)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 31, 46)])
def test_fft_round_trips(shape):
    image = torch.rand(shape)
    spectrum = to_spectrum(image)
    assert spectrum.shape == (*shape[:2], shape[2], shape[3] // 2 + 1, 2)
    torch.testing.assert_close(from_spectrum(spectrum, shape[-2:]), image, atol=1e-5, rtol=0)


def test_the_spectrum_is_scaled_by_one_over_frequency():
    low, high = torch.zeros(1, 3, 32, 17, 2), torch.zeros(1, 3, 32, 17, 2)
    low[..., 1, 0, 0] = 1.0  # one cycle per image
    high[..., 8, 0, 0] = 1.0  # eight cycles per image
    ratio = from_spectrum(low, (32, 32)).std() / from_spectrum(high, (32, 32)).std()
    assert float(ratio) == pytest.approx(8.0, rel=1e-4)


def estimate_color_sqrt(side: int = 128) -> torch.Tensor:
    """U·√S / max column norm, U·S·Uᵀ the eigen-decomposition of the 3×3 covariance of the RGB values in
    [0, 1] of the bundled photographs (content and texture images; the paintings are left out), each
    resized to ``side`` px; axes by falling variance, each signed so that its largest entry is positive."""
    photos = {**bundled_images("content"), **bundled_images("texture")}
    pixels = torch.cat([load_image(path, side)[0].reshape(3, -1) for _, path in sorted(photos.items())], dim=1)
    values, vectors = torch.linalg.eigh(torch.cov(pixels.double()))
    order = values.argsort(descending=True)
    values, vectors = values[order], vectors[:, order]
    vectors = vectors * torch.sign(vectors[vectors.abs().argmax(dim=0), torch.arange(3)])
    root = (vectors * values.clamp_min(0).sqrt()).float()
    return root / root.norm(dim=0).max()


def test_decorrelation_is_invertible_and_estimated_from_the_bundled_photos():
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(correlate(decorrelate(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(estimate_color_sqrt(), COLOR_SQRT, atol=1e-3, rtol=0)
    assert float(COLOR_SQRT.norm(dim=0).max()) == pytest.approx(1.0, abs=1e-3)
    covariance = COLOR_SQRT @ COLOR_SQRT.T
    torch.testing.assert_close(COLOR_SQRT.T @ COLOR_SQRT, torch.diag(torch.linalg.eigvalsh(covariance).flip(0)), atol=1e-3, rtol=0)
    assert (COLOR_SQRT[:, 0] > 0.5).all()  # the first axis is luminance: all three channels together


def test_sigmoid_parameterizations_stay_in_range_and_are_seeded():
    for basis in ("pixel", "fft"):
        a = Squashed((2, 3, 24, 20), basis, True, sd=5.0, generator=torch.Generator().manual_seed(1))
        b = Squashed((2, 3, 24, 20), basis, True, sd=5.0, generator=torch.Generator().manual_seed(1))
        image = a().detach()
        assert image.shape == (2, 3, 24, 20) and 0 < float(image.min()) and float(image.max()) < 1
        assert torch.equal(image, b())
    with pytest.raises(CnnvizError, match="unknown parameterization"):
        Squashed((1, 3, 8, 8), "wavelet")


def test_high_frequency_share_tells_photos_from_noise():
    assert high_frequency_share(load_image("chelsea", 128)) < 0.05
    assert high_frequency_share(torch.rand(1, 3, 128, 128)) == pytest.approx(0.8, abs=0.03)


RANDOM = [Jitter(5), RandomScale(0.8, 1.2), RandomRotate(15.0)]


@pytest.mark.parametrize("transform", RANDOM, ids=repr)
def test_every_transform_is_seeded_shape_preserving_and_differentiable(transform):
    image = torch.rand(2, 3, 20, 24, requires_grad=True)
    a = transform(image, torch.Generator().manual_seed(4))
    b = transform(image, torch.Generator().manual_seed(4))
    assert a.shape == image.shape and torch.equal(a, b)
    others = [transform(image, torch.Generator().manual_seed(s)) for s in range(5, 9)]
    assert any(not torch.equal(a, o) for o in others)
    (grad,) = torch.autograd.grad(a.sum(), image)
    assert float(grad.abs().sum()) > 0


def test_pad_grows_by_its_width_with_grey_and_standard_is_olahs_list():
    image = torch.zeros(1, 3, 10, 10)
    padded = Pad(3)(image, torch.Generator())
    assert padded.shape == (1, 3, 16, 16) and float(padded[..., 0, 0].mean()) == 0.5
    assert standard() == (Pad(12), Shift(8), RandomScale(0.9, 1.1), RandomRotate(10.0, BLACK), Shift(4))
    assert parse("standard") == standard() and parse("none") == ()
    assert parse("pad=4,scale=0.95:1.05,rotate=5,jitter=2,shift=3") == (
        Pad(4), RandomScale(0.95, 1.05), RandomRotate(5.0, BLACK), Jitter(2), Shift(3))


def test_shift_moves_the_picture_without_wrapping_and_fills_black():
    image = torch.arange(36.0).view(1, 1, 6, 6).expand(1, 3, 6, 6).contiguous() + 1
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        dy, dx = torch.randint(0, 4, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
        moved = Shift(4)(image, generator)
        assert moved.shape == image.shape
        assert torch.equal(moved[..., dy:, dx:], image[..., : 6 - dy, : 6 - dx])
        assert (moved[..., :dy, :] == BLACK).all() and (moved[..., :, :dx] == BLACK).all()
    turned = [RandomRotate(10.0, BLACK)(torch.ones(1, 3, 32, 32), torch.Generator().manual_seed(s)) for s in range(8)]
    assert min(float(t[..., 0, 0].max()) for t in turned) < 0.5 < min(float(t[..., 16, 16].min()) for t in turned)
    for bad in ("blur=3", "pad=x", "scale=1.2:0.8", "rotate=-4"):
        with pytest.raises(CnnvizError, match="--transforms"):
            parse(bad)
    out = compose(standard(), torch.rand(1, 3, 40, 40), torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1


def _grad(score: Objective, acts: dict) -> torch.Tensor:
    (grad,) = torch.autograd.grad(score(acts), acts["a"], retain_graph=True)
    return grad


def test_objectives_compose_and_the_sums_gradient_is_the_sum_of_gradients():
    acts = {"a": torch.randn(3, 4, 5, 5, requires_grad=True)}
    ch, nr = channel("a", 1), neuron("a", 2, 1, 3)
    torch.testing.assert_close(_grad(ch + 0.5 * nr, acts), _grad(ch, acts) + 0.5 * _grad(nr, acts))
    torch.testing.assert_close(_grad(ch - nr / 4, acts), _grad(ch, acts) - 0.25 * _grad(nr, acts))
    product = ch * nr
    torch.testing.assert_close(_grad(product, acts), _grad(ch, acts) * nr(acts) + ch(acts) * _grad(nr, acts))
    assert float((-ch)(acts).detach()) == pytest.approx(-float(ch(acts).detach()))
    assert sum([ch, nr]).layers == ("a",) and "0.5" in repr(ch + 0.5 * nr)
    assert float(channel("a", 1, items=[0])(acts).detach()) == pytest.approx(float(acts["a"][0, 1].mean().detach()))


def test_diversity_is_minus_the_mean_gram_similarity():
    same = {"a": torch.rand(1, 4, 6, 6).expand(3, -1, -1, -1)}
    assert float(diversity("a")(same)) == pytest.approx(-1.0, abs=1e-5)
    assert float(diversity("a", items=[0])(same)) == 0.0
    apart = {"a": torch.zeros(2, 4, 6, 6)}
    apart["a"][0, 0] = 1.0
    apart["a"][1, 1] = 1.0
    assert float(diversity("a")(apart)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("recipe", [Recipe("pixel", False, 0.0, 0.1), Recipe("pixel", True, 0.0),
                                    Recipe("fft", False, 0.0), Recipe("fft", True, 0.0)], ids=lambda r: f"{r.param}-{r.decorrelate}")
def test_each_parameterization_raises_its_objective_in_a_few_steps(tiny, recipe):
    goal = target_for(tiny, 32, layer="layer2.0.relu_1", channel=3)
    settings = default_settings(iters=5, lr=0.05, regularizers=(), transforms=())
    (output,) = ascend_many(tiny, [goal], size=32, recipe=recipe, settings=settings)
    assert output.record.params["score"] > 2 * output.record.params["score_start"] > 0, output.record.params
    assert isinstance(start_image(tiny, recipe, (1, 3, 8, 8), 0), Squashed if recipe.squashed else Pixels)


def test_batched_targets_and_diverse_copies(tiny):
    goals = [target_for(tiny, 32, 281), target_for(tiny, 32, 1)]
    settings = default_settings(iters=4, regularizers=(), transforms=())
    outputs = ascend_many(tiny, goals, size=32, recipe=Recipe("fft", True), copies=2, settings=settings)
    assert [(o.record.params["channel"], o.record.params["copy"]) for o in outputs] == [(281, 0), (281, 1), (1, 0), (1, 1)]
    assert all(o.record.params["batch"] == 4 and 0 <= o.record.params["probability"] <= 1 for o in outputs)
    with pytest.raises(CnnvizError, match="work on pixels"):
        ascend_many(tiny, goals, recipe=Recipe("fft"), settings=default_settings(iters=1))


def test_diversity_pushes_copies_apart(tiny):
    goal = target_for(tiny, 32, layer="layer2.0.relu_1", channel=3)
    settings = default_settings(iters=8, lr=0.05, regularizers=(), transforms=())

    def similarity(weight: float) -> float:
        outputs = ascend_many(tiny, [goal], size=32, recipe=Recipe("fft", True), copies=2, diversity=weight, settings=settings)
        acts = tiny(torch.cat([o.image for o in outputs]), ["layer2.0.relu_1"])
        return -float(diversity("layer2.0.relu_1")(acts))

    assert similarity(50.0) < similarity(0.0) - 0.01


def test_render_maximises_a_composed_objective(tiny):
    goal = channel("layer2.0.relu_1", 3) + 0.5 * channel("layer3.0.relu_1", 7) + 2.0 * diversity("layer2.0.relu_1")
    settings = default_settings(iters=6, lr=0.05, regularizers=(), transforms=standard(pad=2, jitter=2))
    start = render(tiny, goal, size=32, copies=2, settings=default_settings(iters=1, lr=1e-9, regularizers=(), transforms=()))
    outputs = render(tiny, goal, size=32, copies=2, settings=settings)
    assert len(outputs) == 2 and outputs[1].record.params["copy"] == 1
    assert outputs[0].record.layers == ["layer2.0.relu_1", "layer3.0.relu_1"]
    assert outputs[0].record.params["score"] > start[0].record.params["score"] + 0.01


def test_param_rows_are_the_pixel_recipe_and_olahs():
    rows = {name: param_row(name, default_settings()) for name in PARAM_ROWS}
    assert rows["pixel+L2+blur"][0] == Recipe("pixel", False, 2.0) and rows["pixel+L2+blur"][1].transforms == ()
    assert rows["fft"][0] == Recipe("fft", False, 0.0) and rows["fft"][1].regularizers == ()
    assert rows["fft+decorrelate+transforms"][0].decorrelate and rows["fft+decorrelate+transforms"][1].transforms == standard()


def test_cli_param_grid_writes_four_rows_with_sidecars(tmp_path):
    result = run_cli("ascent", "--model", "vgg16", "--layer", "conv3_3", "--channel", "3,7", "--grid", "param", "--size", "32",
                     "--iters", "2", "--device", "cpu", "-q", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    grid = json.loads((tmp_path / "ascent_conv3_3-c3_conv3_3-c7_param_grid.json").read_text())
    assert grid["row_titles"] == list(PARAM_ROWS) and len(grid["cells"]) == 4
    record = json.loads((tmp_path / "ascent_conv3_3-c7_fft-decorrelate-transforms.json").read_text())
    assert record["params"]["param"] == "fft" and record["params"]["decorrelate"] and len(record["params"]["transforms"]) == 5
    assert record["params"]["batch"] == 2
    assert Image.open(tmp_path / "ascent_conv3_3-c3_pixel-L2-blur.png").size == (32, 32)


def test_pixels_project_into_the_unit_range_on_both_sides():
    pixels = Pixels(torch.tensor([[-0.5, 0.25, 1.5]]))
    assert pixels().tolist() == [[0.0, 0.25, 1.0]] and pixels.x.tolist() == [[-0.5, 0.25, 1.5]]
    pixels.project()
    assert pixels.x.tolist() == [[0.0, 0.25, 1.0]] and pixels().tolist() == [[0.0, 0.25, 1.0]]


@pytest.mark.parametrize("shape", [(1, 3, 6, 7), (2, 3, 5, 8)])
def test_the_spectrum_round_trip_keeps_odd_and_even_sizes(shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    spectrum = to_spectrum(image)
    assert spectrum.shape == (*shape[:2], shape[2], shape[3] // 2 + 1, 2)
    assert torch.allclose(from_spectrum(spectrum, shape[-2:]), image, atol=1e-5)


def test_squashed_defaults_shape_check_and_colours():
    from cnnviz.optvis.param import check_param, is_squashed

    default = Squashed((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert default.basis == "fft" and default.decorrelated and default.describe == "fft+decorrelate"
    plain = Squashed((1, 3, 8, 8), "fft", False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.logits(), from_spectrum(plain.p, (8, 8)))
    assert torch.allclose(default.logits(), decorrelate(from_spectrum(default.p, (8, 8))))
    for bad in ((1, 4, 8, 8), (3, 8, 8)):
        with pytest.raises(CnnvizError, match=r"\(B, 3, H, W\), got " + re.escape(str(bad))):
            Squashed(bad)
    assert (is_squashed("pixel", False), is_squashed("pixel", True), is_squashed("fft", False)) == (False, True, True)
    with pytest.raises(CnnvizError, match="choices: pixel, fft"):
        check_param("wavelet")
