import json
import math

import pytest
import torch

from cnnviz.analyzers.color import match_color_histogram, rgb_to_yiq
from cnnviz.analyzers.texture import texture
from cnnviz.analyzers.transfer import transfer
from cnnviz.core.images import load_image
from cnnviz.errors import CnnvizError
from cnnviz.losses import (
    Loss,
    Term,
    content_loss,
    content_term,
    feature_loss,
    gram,
    gram_targets,
    reference_activations,
    style_layer_loss,
    style_term,
)
from cnnviz.optim.settings import Settings
from cnnviz.optvis.regularizers import tv_loss

from conftest import run_cli


def test_gram_and_e_l_match_hand_computation():
    f = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]]])  # N = 2 channels, M = 4
    g_raw = gram(f, normalize=False)[0]
    assert g_raw.tolist() == [[6.0, 4.0], [4.0, 11.0]]
    target = torch.tensor([[5.0, 1.0], [2.0, 7.0]])
    n, m = 2, 4
    paper = ((g_raw - target) ** 2).sum() / (4 * n**2 * m**2)
    ours = style_layer_loss(gram(f), (target / m).unsqueeze(0))
    assert math.isclose(float(ours), float(paper), rel_tol=1e-6)
    assert math.isclose(float(content_loss(f, torch.zeros_like(f))), 0.5 * float((f**2).sum()))


def test_texture_lowers_the_gram_loss_and_is_no_copy(vgg):
    source = load_image("brick", 64)
    out = texture(vgg, source, layers=["relu1_1", "pool1", "pool2"], size=64, settings=Settings(iters=40))
    history = out.record.history
    assert out.record.losses["gram"] < history[0]["gram"] / 30
    # not a shifted copy: normalized cross-correlation with the source is low at every shift
    a = out.image[0].mean(0) - out.image[0].mean()
    b = source[0].mean(0) - source[0].mean()
    spectrum = torch.fft.irfft2(torch.fft.rfft2(a) * torch.conj(torch.fft.rfft2(b)), s=a.shape)
    assert float(spectrum.max() / (a.norm() * b.norm())) < 0.6


def test_texture_output_size_may_differ_from_source(vgg):
    out = texture(vgg, "gravel", layers=["relu1_1"], size=40, image_size=64, settings=Settings(iters=2))
    assert out.image.shape == (1, 3, 40, 40)


def _style_loss(vgg, image, style_name, size):
    grams = gram_targets(vgg, [load_image(style_name, size)], [1.0], ["relu1_1", "relu2_1", "relu3_1"])
    term = style_term(1.0, grams)
    with torch.no_grad():
        return float(term.fn(reference_activations(vgg, image, list(grams)), image))


def test_transfer_output_has_far_lower_style_loss_than_the_content(vgg):
    out = transfer(vgg, "chelsea", ["starry_night"], size=64, style_layers=["relu1_1", "relu2_1", "relu3_1"],
                   content_layers=["relu3_2"], style_weight=1e3, settings=Settings(iters=30))
    content = load_image("chelsea", 64)
    assert _style_loss(vgg, out.image, "starry_night", 64) < _style_loss(vgg, content, "starry_night", 64) / 5
    assert out.record.params["content_weight"] == 1.0 and out.record.params["style_weight"] == 1e3


def test_style_blend_weights_change_the_result(vgg):
    kwargs = dict(size=48, style_layers=["relu1_1", "relu2_1"], content_layers=["relu2_2"], settings=Settings(iters=5))
    a = transfer(vgg, "coffee", ["starry_night", "great_wave"], style_blend=[1, 0], **kwargs)
    b = transfer(vgg, "coffee", ["starry_night", "great_wave"], style_blend=[0, 1], **kwargs)
    c = transfer(vgg, "coffee", ["starry_night"], **kwargs)
    assert (a.image - b.image).abs().mean() > 0.01
    torch.testing.assert_close(a.image, c.image)
    with pytest.raises(CnnvizError, match="blend weight"):
        transfer(vgg, "coffee", ["starry_night"], style_blend=[1, 2], **kwargs)


def test_preserve_color_keeps_the_content_chroma(vgg):
    kwargs = dict(size=48, style_layers=["relu1_1", "relu2_1"], content_layers=["relu2_2"], settings=Settings(iters=5))
    content = rgb_to_yiq(load_image("coffee", 48))[:, 1:]
    kept = rgb_to_yiq(transfer(vgg, "coffee", ["starry_night"], preserve_color="luminance", **kwargs).image)[:, 1:]
    free = rgb_to_yiq(transfer(vgg, "coffee", ["starry_night"], **kwargs).image)[:, 1:]
    assert (kept - content).abs().mean() < 0.02
    assert (free - content).abs().mean() > 2 * (kept - content).abs().mean()


def test_histogram_matching_gives_the_style_the_content_mean_and_covariance():
    style = load_image("starry_night", 64)
    mixing = torch.tensor([[0.08, 0.02, 0.0], [0.03, 0.06, 0.01], [0.0, 0.02, 0.05]])
    content = (torch.tensor([0.55, 0.45, 0.4]).view(3, 1) + mixing @ torch.randn(3, 64 * 48)).reshape(1, 3, 64, 48)
    matched = match_color_histogram(style, content)
    flat = lambda x: x[0].reshape(3, -1)  # noqa: E731
    torch.testing.assert_close(flat(matched).mean(1), flat(content).mean(1), atol=2e-3, rtol=0)
    torch.testing.assert_close(torch.cov(flat(matched)), torch.cov(flat(content)), atol=5e-4, rtol=0)


def test_cli_texture_and_transfer_write_png_and_sidecar(tmp_path):
    result = run_cli("texture", "grass", "--size", "32", "--iters", "2", "--layers", "relu1_1,relu2_1", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "texture_grass.json").read_text())
    assert record["analyzer"] == "texture" and record["layers"] == ["relu1_1", "relu2_1"]
    result = run_cli("transfer", "coffee", "great_wave", "--size", "32", "--iters", "2", "--out", str(tmp_path), "-q",
                     "--sweep", "content-layer")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "transfer_coffee_great_wave_content-layer.png").is_file()
    for layer in ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"):
        sidecar = tmp_path / f"transfer_coffee_great_wave_content-layer_{layer}.json"
        assert json.loads(sidecar.read_text())["params"]["content_layers"] == [layer]


def test_texture_init_content_starts_from_the_source_and_tensor_sources_honour_source_size(vgg):
    from pathlib import Path

    from cnnviz.core.images import image_path

    settings = Settings(iters=1)
    start = []
    out = texture(vgg, Path(image_path("brick")), layers=["relu1_1"], size=32, init="content", settings=settings,
                  callback=lambda step: start.append(step.image) if not start else None)
    source = load_image("brick", 32)
    assert (start[0] - source).abs().mean() < 0.05 and out.record.params["image"].endswith("brick.jpg")
    big = load_image("brick", 96)
    small = texture(vgg, big, layers=["relu1_1"], size=32, image_size=48, settings=settings)
    assert small.input.shape[-1] == 48 and small.image.shape[-1] == 32


def test_the_style_term_has_the_values_worked_out_by_hand():
    """Σ_l w_l E_l/Ê_l (w_l = 1/2 for two layers): zero activations give Σ w_l = 1, the style's own give 0,
    others the mean over layers of ‖G − Ĝ‖²/‖Ĝ‖², with G = F Fᵀ / M worked out in float64; and
    E_l = Σ(G − Ĝ)² / (4 N²) per image, as Gatys et al. write it for M-normalised Grams."""
    generator = torch.Generator().manual_seed(7)
    style = {"a": torch.rand(1, 3, 4, 4, generator=generator), "b": torch.rand(1, 2, 2, 3, generator=generator)}
    other = {name: torch.rand(f.shape, generator=generator) for name, f in style.items()}

    def plain(features):
        f = features.double().flatten(2)
        return f @ f.transpose(1, 2) / f.shape[-1]

    term = style_term(1.0, {name: gram(f) for name, f in style.items()})
    image = torch.zeros(1, 3, 4, 4)
    assert float(term.fn({k: torch.zeros_like(v) for k, v in style.items()}, image)) == pytest.approx(1.0, rel=1e-6)
    assert float(term.fn(style, image)) == pytest.approx(0.0, abs=1e-7)
    expected = sum(float((plain(other[k]) - plain(style[k])).pow(2).sum() / plain(style[k]).pow(2).sum()) for k in style) / 2
    assert float(term.fn(other, image)) == pytest.approx(expected, rel=1e-5)
    g, g_hat = plain(other["a"]), plain(style["a"])
    assert float(style_layer_loss(g, g_hat)) == pytest.approx(float((g - g_hat).pow(2).sum() / (4 * 3 * 3)), rel=1e-9)


def test_content_and_feature_losses_against_hand_values():
    f, p = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert content_loss(f, p).item() == 2.5  # ½ (1 + 4)
    assert feature_loss(f, p).item() == 5.0 / 16.0
    assert feature_loss(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.5])).item() == pytest.approx(0.1 / 0.25)  # ΣP² < 1
    assert feature_loss(torch.tensor([2.0, 4.0]), torch.tensor([3.0, 4.0])).item() == pytest.approx(1.0 / 25.0)


def test_the_content_term_is_the_mean_over_layers_of_each_normalised_loss(vgg):
    reference = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layers = ["relu1_1", "relu2_1"]
    term = content_term(1.0, reference, vgg, layers)
    with torch.no_grad():
        p, f = vgg(reference, layers), vgg(image, layers)
    expected = sum(((f[n] - p[n]).pow(2).sum() / p[n].pow(2).sum()).item() for n in layers) / 2
    assert term.name == "content" and term.fn(f, image).item() == pytest.approx(expected, rel=1e-5)


def test_blended_gram_targets_are_the_weighted_sum(vgg):
    a, b = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in (3, 4))
    grams = gram_targets(vgg, [a, b], [0.7, 0.3], ["relu1_1"])
    with torch.no_grad():
        expected = 0.7 * gram(vgg(a, ["relu1_1"])["relu1_1"]) + 0.3 * gram(vgg(b, ["relu1_1"])["relu1_1"])
    assert torch.allclose(grams["relu1_1"], expected, rtol=1e-5)


def test_the_style_layer_loss_divides_by_4_n_squared_per_image():
    g, g_hat = torch.zeros(2, 2, 2), torch.ones(2, 2)
    assert style_layer_loss(g, g_hat).item() == 8.0 / (4 * 2 * 2 * 2)
    term = style_term(1.0, {"relu1_1": torch.eye(3)})
    assert term.name == "style" and term.layers == ("relu1_1",)
    with pytest.raises(CnnvizError, match="^1 style layers but 2 layer weights$"):
        style_term(1.0, {"relu1_1": torch.eye(3)}, [0.5, 0.5])


def test_a_loss_names_its_image_only_terms_and_runs_no_network_for_them(vgg):
    """The engine's ``penalties`` are the terms with no layer (TV, L2, α); a loss made of them alone needs no
    forward pass, so none is run."""
    image = torch.rand(1, 3, 32, 32)
    target = reference_activations(vgg, image, ["relu1_1"])["relu1_1"]
    terms = [Term("feature", 1.0, ("relu1_1",), lambda acts, x: feature_loss(acts["relu1_1"], target)),
             Term("tv", 0.5, (), lambda acts, x: tv_loss(x, 2.0))]
    assert Loss(vgg, terms).penalties == ["tv"]
    calls = []
    handle = vgg.net.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        values = Loss(vgg, terms[1:])(image)
        assert calls == [] and set(values) == {"tv"}
        Loss(vgg, terms)(image)
        assert calls == [1]
    finally:
        handle.remove()
