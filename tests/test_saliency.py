import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import run_cli
from cnnviz.analyzers.saliency import GUIDED_GRADCAM, METHODS, RULES, cam_layer, gradient, saliency
from cnnviz.analyzers.target import Target, class_index
from cnnviz.core.convention import CAFFE_BGR, Convention
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.models import ModelSpec
from cnnviz.core.weights import Weights
from cnnviz.errors import CnnvizError

IDENTITY = Convention("identity", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, False)
FORWARD = [[1, -1, 5], [2, -5, -7], [-3, 2, 4]]
SEED_UPSTREAM = [[-2, 3, -1], [6, -3, 1], [2, -1, 3]]
DESIGN_UPSTREAM = [[-2, 0, -1], [6, -3, 1], [2, -1, 3]]
BACKPROP = [[-2, 0, -1], [6, 0, 0], [0, -1, 3]]
GUIDED = [[0, 0, 0], [6, 0, 0], [0, 0, 3]]
SEED_DECONVNET = [[0, 3, 0], [6, 0, 1], [2, 0, 3]]
DESIGN_DECONVNET = [[0, 0, 0], [6, 0, 1], [2, 0, 3]]


class Upstream(nn.Module):
    """score = Σ relu(x) · upstream: the gradient arriving at the ReLU's output is ``upstream``."""

    def __init__(self, upstream: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("upstream", upstream)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.upstream).sum(dim=(1, 2, 3)).unsqueeze(1)


def hooked(net: nn.Module, classes=("score",), convention: Convention = IDENTITY) -> HookedModel:
    return HookedModel(net, ModelSpec("tiny"), Weights("tiny", None, convention), torch.device("cpu"), classes)


def grid3(values) -> torch.Tensor:
    """A 3x3 grid repeated over the three colour channels, (1, 3, 3, 3)."""
    return torch.tensor(values, dtype=torch.float32).expand(1, 3, 3, 3).clone()


@pytest.mark.parametrize("upstream, deconvnet", [(SEED_UPSTREAM, SEED_DECONVNET), (DESIGN_UPSTREAM, DESIGN_DECONVNET)])
def test_seed_3x3_example_exactly(upstream, deconvnet):
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(grid3(upstream)[0])))
    maps = saliency(model, grid3(FORWARD), cls="score", size=None)
    expected = {"backprop": BACKPROP, "deconvnet": deconvnet, "guided": GUIDED}
    for rule in RULES:
        raw = maps.outputs[rule].raw
        assert raw.shape == (3, 3, 3)
        for channel in raw:
            assert torch.equal(channel, torch.tensor(expected[rule], dtype=torch.float32)), (rule, channel)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.net.modules())


def test_rules_differ_as_the_seed_says():
    """backprop keeps the forward mask, deconvnet the sign of the upstream gradient, guided both."""
    x, up = grid3(FORWARD), grid3(SEED_UPSTREAM)
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(up[0])))
    target = Target("logits", 0)
    assert torch.equal(gradient(model, x, target, "backprop"), up * (x > 0))
    assert torch.equal(gradient(model, x, target, "deconvnet"), up.clamp(min=0))
    assert torch.equal(gradient(model, x, target, "guided"), up.clamp(min=0) * (x > 0))


def test_backprop_map_is_the_finite_difference_gradient_of_the_rgb_image():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = hooked(net.double(), classes=("a", "b", "c"), convention=CAFFE_BGR)
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    maps = saliency(model, image, cls="b", size=None, rules=("backprop",))
    grad = maps.outputs["backprop"].raw
    eps = 1e-6
    with torch.no_grad():
        for c, i, j in [(0, 1, 2), (2, 5, 5), (1, 7, 0), (0, 4, 4)]:
            step = torch.zeros_like(image)
            step[0, c, i, j] = eps
            plus = model(image + step, ["logits"])["logits"][0, 1]
            minus = model(image - step, ["logits"])["logits"][0, 1]
            assert float(grad[c, i, j]) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5, abs=1e-9)


def test_channel_and_neuron_targets_are_the_autograd_gradient(vgg):
    image = torch.rand(1, 3, 32, 32)
    x = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(vgg(x, ["relu3_1"])["relu3_1"][:, 5].mean(), x)
    maps = saliency(vgg, image, layer="relu3_1", channel=5, size=None, rules=("backprop",))
    torch.testing.assert_close(maps.outputs["backprop"].raw, expected[0])
    x = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(vgg(x, ["conv2_2"])["conv2_2"][0, 7, 3, 9], x)
    maps = saliency(vgg, image, layer="conv2_2", channel=7, y=3, x=9, size=None, rules=("backprop",))
    torch.testing.assert_close(maps.outputs["backprop"].raw, expected[0])
    assert maps.target.label == "conv2_2 channel 7 at (3, 9)"


def test_channel_max_is_the_most_activated_channel_and_maps_differ(vgg):
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        means = vgg(image, ["relu4_1"])["relu4_1"][0].mean(dim=(1, 2))
    maps = saliency(vgg, image, layer="relu4_1", channel="max", size=None)
    assert maps.target.channel == int(means.argmax())
    raws = [maps.outputs[rule].raw for rule in RULES]
    assert all(not torch.allclose(a, b) for a, b in [(raws[0], raws[1]), (raws[0], raws[2]), (raws[1], raws[2])])
    for rule in RULES:
        shown = maps.outputs[rule].image
        assert shown.shape == (1, 3, 32, 32) and 0 <= float(shown.min()) and float(shown.max()) <= 1


def test_guided_gradcam_is_the_guided_map_times_the_upsampled_positive_cam(vgg):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 40)
    maps = saliency(vgg, image, layer="relu4_3", channel=5, size=None, rules=("guided", GUIDED_GRADCAM), gradcam_layer="relu3_3")
    x = image.clone().requires_grad_(True)
    acts = vgg(x, ["relu3_3", "relu4_3"])
    (grad,) = torch.autograd.grad(acts["relu4_3"][0, 5].mean(), acts["relu3_3"])
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * acts["relu3_3"]).sum(dim=1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=(40, 40), mode="bilinear")
    expected = maps.outputs["guided"].raw * cam[0]
    torch.testing.assert_close(maps.outputs[GUIDED_GRADCAM].raw, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert float(cam.min()) == 0 < float(cam.max()) and maps.outputs[GUIDED_GRADCAM].record.params["gradcam_layer"] == "relu3_3"


def test_gradcam_layer_defaults_to_the_last_relu_up_to_the_target(vgg):
    assert cam_layer(vgg, Target("relu4_3", 0)) == "relu4_3"
    assert cam_layer(vgg, Target("conv4_3", 0)) == "relu4_2"
    assert cam_layer(vgg, Target("pool5", 0)) == "relu5_3"
    with pytest.raises(CnnvizError, match="must come before"):
        saliency(vgg, torch.rand(1, 3, 32, 32), layer="relu3_3", channel=0, size=None, gradcam_layer="relu4_1")


def test_bad_targets_are_user_errors(vgg):
    image = torch.rand(1, 3, 32, 32)
    cases = [(dict(layer="relu4_3", channel=512), "out of range"), (dict(layer="relu4_3"), "needs --channel"),
             (dict(layer="relu4_3", channel="many"), "whole number"), (dict(layer="relu4_3", channel=1, y=9), "outside"),
             (dict(cls="brick", layer="relu4_3", channel=1), "not both"), (dict(), "no class scores")]
    for kwargs, message in cases:
        with pytest.raises(CnnvizError, match=message):
            saliency(vgg, image, size=None, **kwargs)


def test_unknown_class_names_suggest_the_closest():
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(grid3(FORWARD)[0])), classes=("brick", "grass", "gravel"))
    with pytest.raises(CnnvizError, match="did you mean brick"):
        saliency(model, grid3(FORWARD), cls="brik", size=None)
    assert class_index(model, "GRAVEL") == 2 and class_index(model, "1") == 1
    with pytest.raises(CnnvizError, match="out of range"):
        class_index(model, 3)


def test_imagenet_class_names_of_torchvision_models():
    model = load_model("resnet18", weights="random", device="cpu")
    assert len(model.classes) == 1000 and class_index(model, "tabby") == 281
    with pytest.raises(CnnvizError, match="did you mean tabby"):
        class_index(model, "tabbby")


def test_cli_writes_grid_maps_arrays_and_sidecars(tmp_path):
    result = run_cli("saliency", "brick", "coffee", "--size", "48", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "saliency_brick_coffee_grid.png").size[0] > 5 * 200
    for stem in ("brick", "coffee"):
        records = {}
        for rule in METHODS:
            (png,) = tmp_path.glob(f"saliency_{stem}_*_{rule}.png")
            raw = np.load(png.with_suffix(".npy"))
            width, height = Image.open(png).size
            assert raw.shape == (3, height, width) and raw.dtype == np.float32 and np.abs(raw).sum() > 0
            records[rule] = json.loads(png.with_suffix(".json").read_text())
        assert {r["params"]["rule"] for r in records.values()} == set(METHODS)
        assert records[GUIDED_GRADCAM]["params"]["gradcam_layer"] == "relu5_3"
        record = records["guided"]
        assert record["analyzer"] == "saliency" and record["model"] == "vgg16+head" and record["layers"] == ["logits"]
        assert "+head:vgg16_head.safetensors@" in record["weights"] and len(record["weights_sha256"]) == 64
        assert record["params"]["class_name"] in records["backprop"]["params"]["target"]


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    cases = {"did you mean starry_night": ("brick", "--class", "starry_nite"), "did you mean coffee": ("brick", "coffe")}
    for message, args in cases.items():
        result = run_cli("saliency", *args, "--size", "32", "--device", "cpu", "--out", str(tmp_path))
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []
