"""Receptive fields: VGG-16's known sizes, and the exact supports of units of ResNet-18, EfficientNet-Lite0,
ShuffleNet and ConvNeXt (branches, depthwise convolutions, TF "same" padding at odd and non-square sizes,
reshapes, permuted layouts, pixels a strided layer never sees) against the support of a gradient through
a linearised float64 copy of the network."""

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz.core.device import one_thread
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.receptive import Span, field
from cnnviz.errors import CnnvizError

from conftest import run_cli

VGG16_SIZES = {"relu1_2": 5, "pool1": 6, "relu2_2": 14, "pool2": 16, "relu3_3": 40, "pool3": 44, "relu4_3": 92,
               "pool4": 100, "relu5_3": 196, "pool5": 212}
VGG16_STRIDES = {"relu1_2": 1, "pool1": 2, "relu2_2": 2, "pool2": 4, "relu3_3": 4, "pool3": 8, "relu4_3": 8,
                 "pool4": 16, "relu5_3": 16, "pool5": 32}


def test_vgg16_receptive_fields_and_strides(vgg):
    for layer, size in VGG16_SIZES.items():
        rf = field(vgg, layer, (224, 224))
        assert rf.size == (size, size), layer
        assert rf.stride == (VGG16_STRIDES[layer],) * 2, layer
    # conv1_1's first unit is centred on pixel 0: its 3x3 window starts one pixel of padding before it.
    assert field(vgg, "conv1_1").box(0, 0) == (-1, -1, 2, 2)
    assert field(vgg, "relu4_3").box(3, 5) == (-42 + 24, -42 + 40, -42 + 24 + 92, -42 + 40 + 92)


def test_layers_without_a_map_have_no_field():
    model = load_model("resnet18", weights="random", device="cpu")
    assert field(model, "fc") is None


def _linearised(model: HookedModel) -> HookedModel:
    """A float64 copy in which every unit depends linearly on every pixel of its field: activations
    become identities and max-pooling averages over the same window, so nothing cuts a path."""
    net = copy.deepcopy(model.net).double().eval()
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.ReLU, nn.Hardtanh)):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    linear = HookedModel(net, model.spec, model.weights, torch.device("cpu"))
    linear.table = model.table
    return linear


def _support(model: HookedModel, layer: str, shape: tuple[int, int], y: int, x: int, solid: bool = True) -> tuple[int, int, int, int]:
    """The bounding box of the pixels whose gradient reaches unit (y, x), checking it is ``solid`` (dilation
    leaves holes)."""
    image = torch.rand(1, 3, *shape, dtype=torch.float64, requires_grad=True)
    with one_thread():  # float64 convolutions take torch's slow path: hundreds of times slower on several busy threads
        model.run(image, [layer])[layer][0, :, y, x].sum().backward()
    reached = image.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = reached.any(dim=1).nonzero()[:, 0], reached.any(dim=0).nonzero()[:, 0]
    box = int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
    assert not solid or reached[box[0]:box[2], box[1]:box[3]].all(), "the support has holes"
    return box


@pytest.mark.parametrize("name, weights, layer, shape", [
    ("resnet18", "random", "layer2.0.relu_1", (75, 96)),     # stem, max-pool, a strided block with a 1x1 shortcut
    ("efficientnet_lite0", None, "block3_1", (49, 54)),      # TF "same" padding at odd and even sizes, depthwise
    ("efficientnet_lite0", None, "block2_2_dw", (33, 30)),   # a residual block before it
    ("shufflenet_v2_x0_5", "random", "stage2.1", (65, 72)),  # channel shuffle: 5-D views and a transpose
    ("convnext_tiny", "random", "features.1.0", (61, 72)),   # permuted (N, H, W, C) layers; an unseen last row
])
def test_fields_match_the_gradient_support(name, weights, layer, shape):
    model = load_model(name, weights=weights, device="cpu")
    rf = field(model, layer, shape)
    linear = _linearised(model)
    with torch.no_grad():
        height, width = model.run(torch.zeros(1, 3, *shape), [layer])[layer].shape[-2:]
    for y, x in [(0, 0), (height // 2, width // 2), (height - 1, width - 1), (0, width - 1), (height // 2, 1)]:
        assert _support(linear, layer, shape, y, x) == rf.support(y, x), (y, x)
    # At least one unit sees its whole field inside the image: the size itself is checked, not only its clipping.
    top, left, bottom, right = rf.box(height // 2, width // 2)
    assert top >= 0 and left >= 0 and bottom <= shape[0] and right <= shape[1]


def test_tf_same_padding_shifts_the_field_with_the_input_size():
    lite = load_model("efficientnet_lite0", device="cpu")
    even, odd = field(lite, "stem", (224, 224)), field(lite, "stem", (225, 225))
    assert even.box(0, 0) == (0, 0, 3, 3)        # TF pads (0, 1): the odd pixel after
    assert odd.box(0, 0) == (-1, -1, 2, 2)       # TF pads (1, 1)


def test_layers_command_lists_receptive_fields(tmp_path):
    result = run_cli("layers", "vgg16", "-o", str(tmp_path), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "rf" in result.stdout
    rows = {row["layer"]: row for row in json.loads((tmp_path / "layers_vgg16.json").read_text())}
    assert rows["relu4_3"] == {"layer": "relu4_3", "kind": "relu", "channels": 512, "stride": 8, "receptive_field": 92}
    assert rows["pool5"]["receptive_field"] == 212


class _Odd(nn.Module):
    """The window rules at once: a zero pad, a strided convolution with unequal padding, a
    dilated max-pool (``linear``: the same window as a dilated averaging convolution, so that gradients reach
    every pixel of the field), a functional pad, a tall kernel and a strided average pool."""

    def __init__(self, linear: bool = False) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((2, 0, 1, 0))
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=(1, 2))
        if linear:
            self.pool1 = nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=2, groups=4, bias=False)
            nn.init.constant_(self.pool1.weight, 1 / 9)
        else:
            self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, dilation=2)
        self.conv2 = nn.Conv2d(4, 4, (3, 1))
        self.pool2 = nn.AvgPool2d(2, stride=2)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(self.pad(x)))
        return self.out(self.pool2(self.conv2(F.pad(x, (1, 0, 0, 2)))))


def test_every_window_rule_matches_the_gradient_support():
    resnet = load_model("resnet18", weights="random", device="cpu")
    torch.manual_seed(0)
    model = HookedModel(_Odd(), resnet.spec, resnet.weights, torch.device("cpu"))
    linear = HookedModel(_Odd(linear=True).double(), resnet.spec, resnet.weights, torch.device("cpu"))
    shape = (70, 61)
    for layer in ("conv1", "pool1", "conv2", "pool2", "out"):
        rf = field(model, layer, shape)
        with torch.no_grad():
            height, width = linear.run(torch.zeros(1, 3, *shape, dtype=torch.float64), [layer])[layer].shape[-2:]
        for y, x in [(1, 2), (height // 2, width // 2), (height - 1, width - 1)]:
            assert rf.support(y, x) == _support(linear, layer, shape, y, x, solid=False), (layer, y, x)


class _Branches(nn.Module):
    """Two branches of different fields summed (their union; one padded by a two-value pad), a flatten with an
    element-wise step on the flat map and its undoing (the grid merged into one dim and split back), a new leading
    dim and its removal (the grid's dims moved), a convolution with a different stride, padding and dilation per
    axis, adaptive pooling by 3 and 2 and to the same size, an average pool whose windows overlap, and a global mean
    kept as a 1x1 map (the whole grid) and scaled; a global mean also weighs a map as context (squeeze-excitation's
    channel weights, detached so that the gradient, like the rule, leaves it out)."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=(1, 0))
        self.right = nn.Conv2d(3, 4, 3, padding=(1, 0))
        self.sum = nn.Identity()
        self.unflat = nn.Identity()
        self.wide = nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 3))
        self.pooled = nn.AdaptiveAvgPool2d((8, 5))
        self.same = nn.AdaptiveMaxPool2d((8, 5))
        self.overlap = nn.AvgPool2d(3, stride=2, padding=1)
        self.whole = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sum(self.left(F.pad(x, (2, 0))) + self.right(F.pad(x, (0, 2, 0, 0))))
        n, c, h, w = s.shape
        u = (s.flatten(2) * 2).reshape(n, c, h, w).unsqueeze(1).squeeze(1)
        u = self.unflat(u.mean(dim=(2, 3), keepdim=True).detach() * u)  # context first: no position of its own
        p = self.overlap(self.same(self.pooled(self.wide(u))))
        return self.whole(p.mean(dim=(2, 3), keepdim=True) * 2)


def test_sums_flattens_global_means_and_adaptive_pooling_match_the_gradient_support():
    resnet = load_model("resnet18", weights="random", device="cpu")
    torch.manual_seed(0)
    model = HookedModel(_Branches().double(), resnet.spec, resnet.weights, torch.device("cpu"))
    shape = (24, 20)
    # the sum: rows -1..2 from both branches; columns -2..1 from the left one and 0..3 from the right one
    assert field(model, "sum", shape).box(0, 0) == (-1, -2, 2, 3)
    assert field(model, "wide", shape).size == (3 + 2 * 2, 5 + 3 * 1) and field(model, "wide", shape).stride == (1, 2)
    whole, overlap = field(model, "whole", shape), field(model, "overlap", shape)  # overlap: a 4x3 map
    assert whole.support(0, 0) == (0, 0) + shape
    assert whole.size == (overlap.y.size + 3 * overlap.y.stride, overlap.x.size + 2 * overlap.x.stride)
    for layer, units in (("sum", [(0, 0), (12, 9), (23, 19)]), ("unflat", [(5, 7), (23, 0)]),
                         ("wide", [(0, 0), (11, 4), (23, 9)]), ("pooled", [(0, 0), (3, 2), (7, 4)]), ("same", [(3, 2)]),
                         ("overlap", [(0, 0), (2, 1), (3, 2)]),
                         ("whole", [(0, 0)])):
        rf = field(model, layer, shape)
        for y, x in units:
            assert rf.support(y, x) == _support(model, layer, shape, y, x), (layer, y, x)


class _Wrong(nn.Module):
    """Operations whose field no grid describes: ``kind`` picks one."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.across = nn.Conv2d(8, 4, 1)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.kind == "upsampled":
            x = self.up(x)
        elif self.kind == "channels-last":
            x = x.permute(0, 2, 3, 1)
        elif self.kind == "across-rows":
            x = self.across(x.transpose(1, 2))
        elif self.kind == "reshuffled":
            x = x.reshape(1, 4, 4, 16)
        elif self.kind == "made-anew":
            x = torch.zeros(1, 4, 8, 8)
        elif self.kind == "reflect":
            x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        elif self.kind == "replicate":
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        elif self.kind == "adaptive":
            x = F.adaptive_avg_pool2d(x, 3)
        elif self.kind == "transposed":
            x = x + x.transpose(2, 3)
        elif self.kind == "context":
            x = x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 8, 8)
        elif self.kind == "positions":
            x = (x.flatten(2) @ torch.ones(64, 64)).view(x.shape)
        elif self.kind == "attention":
            q = x.flatten(2)
            x = torch.bmm(q.transpose(1, 2), q).view(1, 64, 8, 8)
        return self.out(x)


@pytest.mark.parametrize("kind, says", [
    ("reflect", "reflection or replication pad"), ("replicate", "reflection or replication pad"),
    ("adaptive", "adaptive pooling from 8 to 3"), ("transposed", "differently laid out maps"),
    ("context", "context without positions"), ("positions", "over the positions of a map"),
    ("attention", "of two maps"), ("upsampled", "a transposed convolution"),
    ("channels-last", "a layout other than (N, C, H, W)"), ("across-rows", "on a map not laid out as (N, C, H, W)"),
    ("reshuffled", "which moves the map's positions"), ("made-anew", "an operation that does not keep a spatial map"),
])
def test_operations_no_grid_describes_are_a_clear_error(kind, says):
    """A reflection pad once gave a field with right < left: its border copies units from inside the map."""
    resnet = load_model("resnet18", weights="random", device="cpu")
    model = HookedModel(_Wrong(kind), resnet.spec, resnet.weights, torch.device("cpu"))
    with pytest.raises(CnnvizError, match=f"field of out in .*{re.escape(says)}"):
        field(model, "out", (8, 8))
    assert field(model, "conv", (8, 8)).size == (3, 3)


class _Cropped(nn.Module):
    """A negative pad crops the map: its units never see the pixels before the crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (-3, 0, -2, 1)))


def test_a_cropped_map_does_not_see_what_was_cropped():
    resnet = load_model("resnet18", weights="random", device="cpu")
    model = HookedModel(_Cropped().double(), resnet.spec, resnet.weights, torch.device("cpu"))
    rf = field(model, "conv", (12, 14))
    assert (rf.y.seen_from, rf.x.seen_from) == (2, 3) and rf.box(0, 0) == (1, 2, 4, 5)
    for y, x in [(0, 0), (5, 6), (10, 10)]:
        assert rf.support(y, x) == _support(model, "conv", (12, 14), y, x), (y, x)


def test_an_input_too_small_to_reach_the_layer_is_named(vgg):
    with pytest.raises(CnnvizError, match="a 20x12 input is too small to reach relu5_3 in vgg16"):
        field(vgg, "relu5_3", (20, 12))


def test_span_rules_by_hand():
    span = Span(start=-1, stride=2, size=5, seen_from=0, seen_to=20)
    assert span.whole(4) == Span(-1, 8, 5 + 3 * 2, 0, 20)
    assert span.then(3, stride=2, padding=1, dilation=2) == Span(-1 - 2, 4, 5 + 2 * 2 * 2, 0, 20)
    assert span.shifted(3) == Span(-7, 2, 5, 0, 20) and span.shifted(-1) == Span(1, 2, 5, 0, 20)
    assert span.covering(9) == Span(-1, 2, 5, 0, 20) and span.covering(4) == Span(-1, 2, 5, 0, -1 + 3 * 2 + 5)
    assert span.union(Span(2, 2, 3, 3, 21)) == Span(-1, 2, 6, 0, 21)
    assert span.union(Span(-1, 1, 5, 0, 20)) is None  # different strides
