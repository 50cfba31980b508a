import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from cnnviz.analyzers.saliency import (
    GRADCAM,
    GUIDED_GRADCAM,
    RULES,
    attribute,
    cam_layer,
    clipped_relu_rule,
    saliency,
)
from cnnviz.analyzers.target import Target, class_index
from cnnviz.core.convention import CAFFE_BGR, Convention
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.images import load_image
from cnnviz.core.models import ModelSpec
from cnnviz.core.weights import Weights
from cnnviz.errors import CnnvizError, CnnvizNote

from conftest import run_cli

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


@pytest.fixture(scope="module")
def lite():
    return load_model("efficientnet_lite0", device="cpu")


@pytest.mark.parametrize("upstream, deconvnet", [(SEED_UPSTREAM, SEED_DECONVNET), (DESIGN_UPSTREAM, DESIGN_DECONVNET)])
def test_seed_3x3_example_exactly(upstream, deconvnet):
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(grid3(upstream)[0])))
    target = Target("logits", 0)
    expected = {"backprop": BACKPROP, "deconvnet": deconvnet, "guided": GUIDED}
    for rule in RULES:
        raw = attribute(model, grid3(FORWARD), target, rule)[0]
        assert raw.shape == (3, 3, 3)
        for channel in raw:
            assert torch.equal(channel, torch.tensor(expected[rule], dtype=torch.float32)), (rule, channel)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.net.modules())


def test_rules_differ_as_the_papers_say():
    """backprop keeps the forward mask, deconvnet the sign of the upstream gradient, guided both."""
    x, up = grid3(FORWARD), grid3(SEED_UPSTREAM)
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(up[0])))
    target = Target("logits", 0)
    assert torch.equal(attribute(model, x, target, "backprop"), up * (x > 0))
    assert torch.equal(attribute(model, x, target, "deconvnet"), up.clamp(min=0))
    assert torch.equal(attribute(model, x, target, "guided"), up.clamp(min=0) * (x > 0))
    assert torch.equal(attribute(model, x, target, "simonyan"), (up * (x > 0)).abs().amax(dim=1, keepdim=True))


def test_relu6_gets_the_rule_at_every_activation():
    """ReLU6 passes a gradient only where 0 < x < 6; guided keeps the positive part of that, deconvnet
    the positive part of the upstream gradient whatever x was, at each of the two activations."""
    x = torch.tensor([[1.0, -1.0, 7.0], [2.0, -5.0, 3.0], [0.5, 2.0, 4.0]]).expand(1, 3, 3, 3).clone()
    up = grid3(SEED_UPSTREAM)
    model = hooked(nn.Sequential(nn.ReLU6(), nn.ReLU6(), Upstream(up[0])))
    target = Target("logits", 0)
    passes = (x > 0) & (x < 6)
    assert torch.equal(attribute(model, x, target, "backprop"), up * passes)
    assert torch.equal(attribute(model, x, target, "guided"), up.clamp(min=0) * passes)
    assert torch.equal(attribute(model, x, target, "deconvnet"), up.clamp(min=0))
    with clipped_relu_rule(model.net, "guided") as count:
        assert count == 2
    assert all(not m._backward_hooks for m in model.net.modules())


def test_the_rule_holds_at_a_relu6_that_is_the_target_itself():
    """Channel 0's mean at the second of two ReLU6s, by hand: the upstream gradient is g = 1/9 on channel 0.
    Deconvnet passes ReLU(g) through both activations whatever the input; guided passes g where both
    activations were in (0, 6)."""
    x = torch.tensor([[1.0, -1.0, 7.0], [2.0, -5.0, 3.0], [0.5, 8.0, 4.0]]).expand(1, 3, 3, 3).clone()
    model = hooked(nn.Sequential(nn.ReLU6(), nn.ReLU6()))
    target = Target("1", 0)
    g = torch.zeros(1, 3, 3, 3)
    g[:, 0] = 1 / 9
    passes = (x > 0) & (x < 6)
    assert torch.equal(attribute(model, x, target, "deconvnet"), g)
    assert torch.equal(attribute(model, x, target, "guided"), g * passes)
    assert torch.equal(attribute(model, x, target, "backprop"), g * passes)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.net.modules())


def test_every_relu6_of_efficientnet_is_hooked_and_fires(lite):
    relu6 = [m for m in lite.net.modules() if isinstance(m, nn.ReLU6)]
    fired = []
    handles = [m.register_full_backward_hook(lambda *args, i=i: fired.append(i)) for i, m in enumerate(relu6)]
    try:
        with clipped_relu_rule(lite.net, "guided") as count:
            assert count == len(relu6) == 33
        attribute(lite, torch.rand(1, 3, 64, 64), Target("logits", 285), "guided")
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(fired) == list(range(33))


def test_backprop_map_is_the_finite_difference_gradient_of_the_rgb_image():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = hooked(net.double(), classes=("a", "b", "c"), convention=CAFFE_BGR)
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    grad = saliency(model, image, "b", size=None, method="backprop").raw
    eps = 1e-6
    with torch.no_grad():
        for c, i, j in [(0, 1, 2), (2, 5, 5), (1, 7, 0), (0, 4, 4)]:
            step = torch.zeros_like(image)
            step[0, c, i, j] = eps
            plus = model(image + step, ["logits"])["logits"][0, 1]
            minus = model(image - step, ["logits"])["logits"][0, 1]
            assert float(grad[c, i, j]) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5, abs=1e-9)


def test_integrated_gradients_sum_to_the_score_difference():
    """Completeness (Sundararajan et al.): Σ attributions = S(x) − S(black)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    model = hooked(net, classes=("a", "b"))
    image = torch.rand(1, 3, 8, 8)
    raw = saliency(model, image, "a", size=None, method="integrated-gradients").raw
    with torch.no_grad():
        difference = model(image, ["logits"])["logits"][0, 0] - model(torch.zeros_like(image), ["logits"])["logits"][0, 0]
    assert float(raw.sum()) == pytest.approx(float(difference), rel=1e-3, abs=1e-5)


def test_smoothgrad_is_seeded_and_leaves_the_global_generator_alone(lite):
    image = torch.rand(1, 3, 48, 48)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = saliency(lite, image, "tabby", size=None, method="smoothgrad", seed=1).raw
    assert torch.equal(torch.random.get_rng_state(), before)
    b = saliency(lite, image, "tabby", size=None, method="smoothgrad", seed=1).raw
    c = saliency(lite, image, "tabby", size=None, method="smoothgrad", seed=2).raw
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (1, 48, 48)


def test_channel_and_neuron_targets_are_the_autograd_gradient(vgg):
    image = torch.rand(1, 3, 32, 32)
    x = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(vgg(x, ["relu3_1"])["relu3_1"][:, 5].mean(), x)
    out = saliency(vgg, image, layer="relu3_1", channel=5, size=None, method="backprop")
    torch.testing.assert_close(out.raw, expected[0])
    x = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(vgg(x, ["conv2_2"])["conv2_2"][0, 7, 3, 9], x)
    out = saliency(vgg, image, layer="conv2_2", channel=7, y=3, x=9, size=None, method="backprop")
    torch.testing.assert_close(out.raw, expected[0])
    assert out.record.params["target"] == "conv2_2 channel 7 at (3, 9)"


def test_channel_max_is_the_most_activated_channel_and_maps_differ(vgg):
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        means = vgg(image, ["relu4_1"])["relu4_1"][0].mean(dim=(1, 2))
    outs = {rule: saliency(vgg, image, layer="relu4_1", channel="max", size=None, method=rule) for rule in RULES}
    assert outs["guided"].record.params["channel"] == int(means.argmax())
    raws = [outs[rule].raw for rule in RULES]
    assert all(not torch.allclose(a, b) for a, b in [(raws[0], raws[1]), (raws[0], raws[2]), (raws[1], raws[2])])
    for out in outs.values():
        assert out.image.shape == (1, 3, 32, 32) and 0 <= float(out.image.min()) and float(out.image.max()) <= 1


def test_guided_gradcam_is_the_guided_map_times_the_upsampled_positive_cam(vgg):
    """Both factors worked out apart from the code under test: guided backprop through a copy of the network
    whose ReLUs carry the rule by hand, and the CAM from autograd."""
    import copy

    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 40)
    kwargs = dict(layer="relu4_3", channel=5, size=None, gradcam_layer="relu3_3")
    combined = saliency(vgg, image, method=GUIDED_GRADCAM, **kwargs)
    by_hand = copy.deepcopy(vgg.net)
    for index, module in enumerate(by_hand.features):
        if isinstance(module, nn.ReLU):
            by_hand.features[index] = _RuleReLU("guided")
    x = image.clone().requires_grad_(True)
    (guided,) = torch.autograd.grad(HookedModel(by_hand, vgg.spec, vgg.weights, vgg.device)(x, ["relu4_3"])["relu4_3"][0, 5].mean(), x)
    acts = vgg(image.clone().requires_grad_(True), ["relu3_3", "relu4_3"])
    (grad,) = torch.autograd.grad(acts["relu4_3"][0, 5].mean(), acts["relu3_3"])
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * acts["relu3_3"]).sum(dim=1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=(40, 40), mode="bilinear")
    expected = (guided * cam)[0]
    torch.testing.assert_close(combined.raw, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert float(cam.min()) == 0 < float(cam.max()) and combined.record.params["gradcam_layer"] == "relu3_3"


def test_gradcam_layer_is_the_last_spatial_relu_up_to_the_target(vgg):
    assert cam_layer(vgg, Target("relu4_3", 0)) == "relu4_3"
    assert cam_layer(vgg, Target("conv4_3", 0)) == "relu4_2"
    assert cam_layer(vgg, Target("pool5", 0)) == "relu5_3"
    with pytest.raises(CnnvizError, match="must come before"):
        saliency(vgg, torch.rand(1, 3, 32, 32), layer="relu3_3", channel=0, size=None, method=GRADCAM, gradcam_layer="relu4_1")


def test_gradcam_on_a_full_vgg_uses_relu5_3_not_a_fully_connected_relu():
    full = load_model("vgg16", weights="random", device="cpu")
    assert "relu7" in full.table.names()
    assert cam_layer(full, Target("logits", 3)) == "relu5_3"
    out = saliency(full, torch.rand(1, 3, 64, 64), 3, size=None, method=GUIDED_GRADCAM)
    assert out.record.params["gradcam_layer"] == "relu5_3" and torch.isfinite(out.image).all()


def test_gradcam_on_resnet_names_the_last_call_of_a_reused_relu():
    resnet = load_model("resnet18", weights="random", device="cpu")
    assert cam_layer(resnet, Target("logits", 0)) == "layer4.1.relu_1"
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    out = saliency(resnet, image, 0, size=None, method=GRADCAM)
    kept = []  # the CAM by hand: layer4's output is its last block's second ReLU call
    handle = resnet.net.layer4.register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        x = image.clone().requires_grad_(True)
        logit = resnet.net(resnet.normalize(x).contiguous(memory_format=torch.channels_last))[0, 0]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logit, kept[0])
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * kept[0]).sum(dim=1, keepdim=True)).detach()
    expected = nn.functional.interpolate(cam, size=(64, 64), mode="bilinear")[0]
    assert float(expected.max()) > 0
    torch.testing.assert_close(out.raw, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_a_batch_is_refused_not_cut_to_its_first_image(vgg):
    with pytest.raises(CnnvizError, match="one image at a time"):
        saliency(vgg, torch.rand(2, 3, 32, 32), layer="relu2_1", channel=0, size=None)


def test_bad_targets_are_user_errors(vgg):
    image = torch.rand(1, 3, 32, 32)
    cases = [(dict(layer="relu4_3", channel=512), "out of range"), (dict(layer="relu4_3"), "needs --channel"),
             (dict(layer="relu4_3", channel="many"), "whole number"), (dict(layer="relu4_3", channel=1, y=9), "outside"),
             (dict(target="brick", layer="relu4_3", channel=1), "not both"), (dict(), "no class scores")]
    for kwargs, message in cases:
        with pytest.raises(CnnvizError, match=message):
            saliency(vgg, image, size=None, **kwargs)


def test_unknown_class_names_suggest_the_closest():
    model = hooked(nn.Sequential(nn.ReLU(), Upstream(grid3(FORWARD)[0])), classes=("brick", "grass", "gravel"))
    with pytest.raises(CnnvizError, match="did you mean brick"):
        class_index(model, "brik")
    assert class_index(model, "GRAVEL") == 2 and class_index(model, "1") == 1
    with pytest.raises(CnnvizError, match="out of range"):
        class_index(model, 3)


def test_imagenet_class_names(lite):
    assert len(lite.classes) == 1000 and class_index(lite, "tabby") == 281 and class_index(lite, 281) == 281
    assert class_index(lite, "tabby cat") == 281 and class_index(lite, "Tiger Cat") == 282
    with pytest.raises(CnnvizError, match="did you mean tabby"):
        class_index(lite, "tabbby")


DELETION_METHODS = ("guided", "smoothgrad", "integrated-gradients", GUIDED_GRADCAM)


def _blur_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, TF.gaussian_blur(image, [19, 19], [3.0, 3.0]), image)


def test_maps_of_chelsea_point_at_the_cat_and_pass_a_deletion_test(lite):
    """Blurring the 10 % most salient pixels lowers the class score more than twice as much as blurring
    10 % random pixels (mean of five draws), for the methods that read like the papers (the plain
    gradient does not: it is as scattered as noise); guided backprop's energy lies on the cat's face."""
    image = load_image("chelsea", 224)
    index = class_index(lite, "Egyptian cat")

    def score(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(lite(x, ["logits"])["logits"][0, index])

    base = score(image)
    random_drops = []
    for seed in range(5):
        mask = torch.rand(image.shape[-2:], generator=torch.Generator().manual_seed(seed)) < 0.1
        random_drops.append(base - score(_blur_mask(image, mask.expand_as(image))))
    random_drop = sum(random_drops) / len(random_drops)
    for method in DELETION_METHODS:
        magnitude = saliency(lite, image, "Egyptian cat", size=None, method=method).raw.abs().amax(dim=0)
        mask = (magnitude >= torch.quantile(magnitude.flatten(), 0.9)).expand_as(image)
        drop = base - score(_blur_mask(image, mask))
        assert drop > 2 * random_drop > 0, (method, drop, random_drop)
    guided = saliency(lite, image, "Egyptian cat", size=None, method="guided").raw.abs().sum(dim=0)
    h, w = guided.shape
    face = guided[int(0.1 * h):, int(0.1 * w): int(0.8 * w)].sum() / guided.sum()
    assert face > 0.75


def test_cli_writes_grid_maps_arrays_and_sidecars(tmp_path):
    result = run_cli("saliency", "brick", "coffee", "--size", "48", "--device", "cpu", "--out", str(tmp_path),
                     "--methods", "backprop,guided,gradcam,guided-gradcam")
    assert result.returncode == 0, result.stderr
    assert "coffee: top-5 " in result.stderr and "coffee: explaining class" in result.stderr
    assert Image.open(tmp_path / "saliency_brick_coffee_grid.png").size[0] > 5 * 200
    for stem in ("brick", "coffee"):
        records = {}
        for rule in ("backprop", "guided", GRADCAM, GUIDED_GRADCAM):
            (png,) = tmp_path.glob(f"saliency_{stem}_*_{rule}.png")
            raw = np.load(png.with_suffix(".npy"))
            width, height = Image.open(png).size
            assert raw.shape == ((1 if rule == GRADCAM else 3), height, width) and raw.dtype == np.float32
            assert np.abs(raw).sum() > 0
            records[rule] = json.loads(png.with_suffix(".json").read_text())
        assert records[GUIDED_GRADCAM]["params"]["gradcam_layer"] == "head"
        record = records["guided"]
        assert record["analyzer"] == "saliency" and record["model"] == "efficientnet_lite0" and record["layers"] == ["logits"]
        assert len(record["weights_sha256"]) == 64 and len(record["params"]["top5"]) == 5
        assert record["params"]["class_name"] == record["params"]["top5"][0][0]


def test_cli_on_the_bundled_vgg_uses_its_head(tmp_path):
    result = run_cli("saliency", "brick", "--model", "vgg16", "--size", "48", "--device", "cpu", "--out", str(tmp_path),
                     "--methods", "guided", "-q")
    assert result.returncode == 0, result.stderr
    (png,) = tmp_path.glob("saliency_brick_*_guided.png")
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["model"] == "vgg16+head" and "+head:vgg16_head.safetensors@" in record["weights"]


def test_a_class_name_is_taken_from_a_longer_one_only_when_its_other_words_are_class_words(lite, tmp_path):
    with pytest.warns(CnnvizNote, match="'tabby cat' taken as class 281 tabby"):
        assert class_index(lite, "tabby cat") == 281
    with pytest.raises(CnnvizError, match="unknown class"):
        class_index(lite, "volcano-dream-x")
    result = run_cli("ascent", "--class", "volcano-dream-x", "--size", "32", "--iters", "1", "--device", "cpu", "-q")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown class") and len(result.stderr.splitlines()) == 1
    result = run_cli("saliency", "chelsea", "--class", "tabby cat", "--methods", "guided", "--size", "32", "--device", "cpu",
                     "-q", "--out", str(tmp_path))
    assert result.returncode == 0 and result.stderr.splitlines() == ["note: 'tabby cat' taken as class 281 tabby"], result.stderr


class _RuleReLU(nn.ReLU):
    """A ReLU whose backward is a rule written out by hand: deconvnet passes ReLU(g), guided ReLU(g)·[x > 0]."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Rule.apply(x, self.rule)


class _Rule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule):
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passed = grad.clamp(min=0)
        return (passed if ctx.rule == "deconvnet" else passed * (x > 0)), None


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_captums_rules_on_a_deep_vgg_with_in_place_relus_match_the_rule_by_hand(rule):
    import copy

    vgg = copy.copy(load_model("vgg11", weights="random", device="cpu", seed=2))
    vgg.net = copy.deepcopy(vgg.net)
    for module in vgg.net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True  # as torchvision builds them (cnnviz's loader turns it off; a user's net may not)
    vgg._modules = dict(vgg.net.named_modules())
    by_hand = copy.deepcopy(vgg.net)
    for index, module in enumerate(by_hand.features):
        if isinstance(module, nn.ReLU):
            by_hand.features[index] = _RuleReLU(rule)
    reference = HookedModel(by_hand, vgg.spec, vgg.weights, vgg.device)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for layer in ("relu2_1", "relu4_1"):
        target = Target(layer, 3)
        x = image.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(target.score(reference(x, [layer])).sum(), x)
        torch.testing.assert_close(attribute(vgg, image, target, rule), expected, rtol=1e-5, atol=1e-8)
