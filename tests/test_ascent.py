import json

import pytest
import torch
from PIL import Image

import cnnviz
from cnnviz.analyzers.ascent import (
    DEFAULT_BLUR,
    DEFAULT_CLIP,
    DEFAULT_JITTER,
    Recipe,
    ascend,
    ascend_many,
    default_settings,
    gradient_scale,
    target_for,
)
from cnnviz.analyzers.common import zero_image
from cnnviz.analyzers.target import Target
from cnnviz.core import memory
from cnnviz.core.hooked import load_model
from cnnviz.errors import CnnvizError
from cnnviz.figures import CELL_INCHES, DPI
from cnnviz.gallery.plan import ROWS, row
from cnnviz.optim.settings import state_images
from cnnviz.optvis.regularizers import Blur, Clip, Decay
from cnnviz.optvis.transforms import Jitter, Pad

from conftest import run_cli


@pytest.fixture(scope="module")
def classifier():
    return load_model("vgg16+head", device="cpu")


def test_rows_switch_the_regularizers_on_one_by_one():
    base = default_settings()
    settings = {name: row(name, base, 2.0, Blur(1.0, 4), Clip(5, 5), 3, Decay(0.01)) for name in ROWS}
    assert settings["none"] == (0.0, default_settings(regularizers=(), transforms=()))
    assert row("+jitter", base, 2.0, DEFAULT_BLUR, DEFAULT_CLIP, DEFAULT_JITTER)[1] == base
    assert settings["L2"][0] == 2.0 and settings["L2"][1].regularizers == (Decay(0.01),)
    assert settings["L2+blur"][1].regularizers == (Decay(0.01), Blur(1.0, 4))
    assert settings["L2+blur+clip"][1].regularizers == (Decay(0.01), Blur(1.0, 4), Clip(5, 5))
    assert settings["L2+blur+clip"][1].transforms == () and settings["+jitter"][1].transforms == (Jitter(3),)
    assert row("+jitter", base, 1.0, Blur(0.0), Clip(0, 0), 2)[1].regularizers == ()
    with pytest.raises(CnnvizError, match="unknown regularizer row"):
        row("blur", base, 1.0, Blur(), Clip(), 0)


@pytest.mark.parametrize("name", ROWS)
def test_ascent_increases_a_channel_under_each_regularizer(vgg, name):
    l2_weight, settings = row(name, default_settings(iters=6, lr=0.05), 1.0, DEFAULT_BLUR, DEFAULT_CLIP, 2)
    record = ascend(vgg, layer="conv4_3", channel=100, size=32, l2_weight=l2_weight, settings=settings).record
    assert record.losses["score0"] < record.history[0]["score0"] - 0.02, record.history
    assert record.params["score"] > record.params["score_start"] + 10, record.params


def test_class_ascent_on_the_bundled_head_raises_the_score_by_a_large_factor(classifier):
    output = ascend(classifier, "brick", size=48, l2_weight=0.0,
                    settings=default_settings(iters=20, lr=0.05, regularizers=(), transforms=()))
    params = output.record.params
    assert params["class_name"] == "brick" and output.record.layers == ["logits"]
    assert params["score"] > 4 * abs(params["score_start"]) and params["score"] > params["score_start"] + 20, params
    assert output.image.shape == (1, 3, 48, 48)


def test_top_level_api_explains_imagenet_classes_and_gives_the_bundled_vgg_its_head():
    output = cnnviz.ascent("espresso", size=64, settings=default_settings(iters=2), device="cpu")
    assert output.record.model == "efficientnet_lite0" and output.record.params["class_name"] == "espresso"
    output = cnnviz.ascent("grass", model="vgg16", size=32, settings=default_settings(iters=2), device="cpu")
    assert output.record.model == "vgg16+head" and output.record.params["class_name"] == "grass"
    guided = cnnviz.saliency("brick", model="vgg16", size=32, method="guided", device="cpu")
    assert guided.record.layers == ["logits"] and guided.record.model == "vgg16+head"
    channel = cnnviz.saliency("brick", model="vgg16", layer="relu2_1", channel=3, size=32, device="cpu")
    assert channel.record.model == "vgg16"


def test_python_ascent_defaults_are_the_clis():
    settings = default_settings()
    assert settings.optimizer == "adam" and settings.transforms == (Jitter(4),) and settings.regularizers == (DEFAULT_BLUR, DEFAULT_CLIP)


def test_progress_shows_the_real_score_not_the_normalised_loss(vgg):
    steps = []
    output = ascend(vgg, layer="conv3_1", channel=2, size=32, settings=default_settings(iters=3), callback=steps.append)
    assert "S" in steps[-1].losses and not any(k.startswith("score") for k in steps[-1].losses)
    assert steps[-1].losses["S"] > 0 and output.record.params["score"] > output.record.params["score_start"]


def test_targets_are_climbed_as_named_pre_activation_or_relu(vgg):
    conv = ascend(vgg, layer="conv4_3", channel=5, size=32, settings=default_settings(iters=3)).record
    assert conv.layers == ["conv4_3"] and conv.params["target_layer"] == "conv4_3"
    dead = [c for c in range(64) if float(vgg(zero_image(vgg, (1, 3, 32, 32)), ["relu4_3"])["relu4_3"][0, c].max()) == 0]
    with pytest.raises(CnnvizError, match="pre-activation"):
        ascend(vgg, layer="relu4_3", channel=dead[0], size=32, settings=default_settings(iters=3))
    relu = ascend(vgg, layer="relu4_3", channel=dead[0], size=32, init_noise=0.3, settings=default_settings(iters=3)).record
    assert relu.layers == ["relu4_3"] and relu.params["target_layer"] == "relu4_3"


def test_gradient_scale_makes_the_score_push_one_over_n(vgg):
    target = Target("conv3_1", 4)
    image = zero_image(vgg, (1, 3, 32, 32))
    scale = gradient_scale(vgg, target, image)
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.score(vgg(x, [target.layer])).sum() / scale, x)
    assert float(grad.pow(2).mean().sqrt()) * grad.numel() == pytest.approx(1.0, rel=1e-4)


def test_imagenet_class_names_on_a_random_torchvision_model():
    model = load_model("resnet18", weights="random", device="cpu")
    target = target_for(model, 32, "tabby")
    assert target.channel == 281
    with pytest.raises(CnnvizError, match="gradient of class tabby is zero at the start"):
        ascend(model, "tabby", size=32, settings=default_settings(iters=4))
    params = ascend(model, 281, size=32, init_noise=0.1, settings=default_settings(iters=4, regularizers=(), transforms=())).record.params
    assert params["score"] > params["score_start"]
    with pytest.raises(CnnvizError, match="did you mean tabby"):
        target_for(model, 32, "tabbby")


def test_cli_regularizer_grid_of_classes_with_sidecars(tmp_path):
    result = run_cli("ascent", "--model", "vgg16", "--class", "brick,grass", "--grid", "regularizers", "--size", "32", "--iters", "2",
                     "--device", "cpu", "-q", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    width, _ = Image.open(tmp_path / "ascent_brick_grass_regularizers_grid.png").size
    assert width == round(2 * CELL_INCHES * DPI)
    cells = sorted(p.name for p in tmp_path.glob("ascent_*.png") if "grid" not in p.name)
    assert len(cells) == 10 and "ascent_grass_L2-blur-clip.png" in cells
    assert Image.open(tmp_path / "ascent_brick_jitter.png").size == (32, 32)
    record = json.loads((tmp_path / "ascent_brick_jitter.json").read_text())
    assert record["analyzer"] == "ascent" and record["model"] == "vgg16+head" and record["iterations"] == 2
    assert record["params"]["target"] == "class brick" and record["params"]["transforms"] == ["Jitter(pixels=4)"]
    assert record["params"]["l2_weight"] > 0 and len(record["params"]["regularizers"]) == 2
    none = json.loads((tmp_path / "ascent_brick_none.json").read_text())["params"]
    assert none["l2_weight"] == 0 and none["regularizers"] == [] and none["transforms"] == []


def test_diverse_class_copies_on_a_vgg_with_its_classifier_compare_its_last_spatial_relu():
    full = load_model("vgg16", weights="random", device="cpu")
    outputs = ascend_many(full, [target_for(full, 32, 3)], size=32, copies=2, diversity=10.0, recipe=Recipe("fft", True, 0.0),
                          settings=default_settings(iters=1, regularizers=(), transforms=()))
    assert [o.record.layers for o in outputs] == [["logits", "relu5_3"]] * 2
    with pytest.raises(CnnvizError, match="--diversity-layer relu7 has no spatial map"):
        ascend_many(full, [target_for(full, 32, 3)], size=32, copies=2, diversity=10.0, diversity_layer="relu7",
                    settings=default_settings(iters=1))


def test_copies_that_do_not_fit_together_are_refused_naming_how_many_do(vgg, monkeypatch):
    one = memory.needed_bytes(vgg, ["conv4_3"], (64, 64), state_images("adam"))
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(2.5 * one))
    target = target_for(vgg, 64, layer="conv4_3", channel=1)
    with pytest.raises(CnnvizError, match=r"4 copies .* \(about 2 do\): use --copies 2"):
        ascend_many(vgg, [target], size=64, copies=4, settings=default_settings(iters=1, regularizers=(), transforms=()))


def test_a_neuron_climbed_through_padding_is_the_unit_asked_for(vgg):
    """conv3_3's neuron (8, 8) of a 64 px image: its receptive field is centred near (32, 32). Climbed
    through a 12 px pad, the gradient reaching the unpadded image must still be centred there."""
    target = target_for(vgg, 64, layer="conv3_3", channel=5, y=8, x=8)
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    score = target.objective()(vgg(Pad(12)(image, torch.Generator()), [target.layer]))
    (grad,) = torch.autograd.grad(score, image)
    support = grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = support.any(dim=1).nonzero().flatten(), support.any(dim=0).nonzero().flatten()
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    assert abs(float(centre[0]) - 32) <= 2 and abs(float(centre[1]) - 32) <= 2, centre
