import copy

import torch

from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS


def _count_calls(model):
    calls = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append(n)) for n, m in model.net.features.named_children()]
    return calls, handles


def test_early_exit_runs_only_the_first_modules(vgg):
    calls, handles = _count_calls(vgg)
    try:
        with torch.no_grad():
            acts = vgg(torch.rand(1, 3, 32, 32), ["relu1_2"])
    finally:
        for h in handles:
            h.remove()
    assert calls == ["0", "1", "2", "3"]
    assert acts["relu1_2"].shape == (1, 64, 32, 32)


def test_hooks_are_removed_and_order_of_request_kept(vgg):
    with torch.no_grad():
        acts = vgg(torch.rand(1, 3, 32, 32), ["relu3_1", "conv1_1"])
    assert list(acts) == ["relu3_1", "conv1_1"]
    assert all(not m._forward_hooks for m in vgg.net.modules())


def test_conv_output_not_clobbered_by_inplace_relu(vgg):
    with torch.no_grad():
        acts = vgg(torch.rand(1, 3, 16, 16), ["conv1_1", "relu1_1"])
    assert acts["conv1_1"].min() < 0
    torch.testing.assert_close(acts["relu1_1"], acts["conv1_1"].clamp(min=0))


def test_gradients_flow_to_the_input_and_match_finite_difference(vgg):
    vgg = HookedModel(copy.deepcopy(vgg.net).double(), vgg.spec, vgg.weights, vgg.device)
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    loss = vgg(x, ["relu2_1"])["relu2_1"].pow(2).mean()
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().sum() > 0
    direction = torch.randn_like(x)
    eps = 1e-6
    with torch.no_grad():
        plus = vgg(x + eps * direction, ["relu2_1"])["relu2_1"].pow(2).mean()
        minus = vgg(x - eps * direction, ["relu2_1"])["relu2_1"].pow(2).mean()
    numeric = (plus - minus) / (2 * eps)
    analytic = (grad * direction).sum()
    assert abs(float(numeric - analytic)) <= 1e-4 * abs(float(analytic))


def test_batch_of_two_matches_single_images(vgg):
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        both = vgg(x, ["relu2_2"])["relu2_2"]
        first = vgg(x[:1], ["relu2_2"])["relu2_2"]
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-3)


def test_logits_of_a_full_network():
    from cnnviz.core.hooked import load_model

    model = load_model("resnet18", weights="random", device="cpu")
    acts = model(torch.rand(1, 3, 64, 64), ["layer1", LOGITS])
    assert acts[LOGITS].shape == (1, 1000)


def test_meta_device_needs_no_memory():
    """On the meta device a network holds no weights' data and a forward pass gives shapes only."""
    from cnnviz.core.device import resolve_device
    from cnnviz.core.hooked import load_model

    assert resolve_device("meta").type == "meta"
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    model = load_model("vgg16", device="meta")
    assert all(p.is_meta for p in model.net.parameters())  # meta tensors have shapes, no data
    activation = model(torch.zeros(1, 3, 64, 64, device="meta"), ["relu4_3"])["relu4_3"]
    assert activation.is_meta and activation.shape == (1, 512, 8, 8)


def test_a_module_called_twice_has_one_name_per_call():
    """torchvision ResNet reuses each block's relu: layer1.0.relu (first call) and layer1.0.relu_1 (second)
    are different tensors, and each name gives the same tensor asked alone or with later layers."""
    from cnnviz.core.hooked import load_model

    model = load_model("resnet18", weights="random", device="cpu")
    assert {"layer1.0.relu", "layer1.0.relu_1", "layer4.1.relu_1"} <= set(model.table.names())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        alone = model(x, ["layer1.0.relu"])["layer1.0.relu"]
        both = model(x, ["layer1.0.relu", "layer2.0.conv1"])
        second = model(x, ["layer1.0.relu_1"])["layer1.0.relu_1"]
        block = model(x, ["layer1.0"])["layer1.0"]
    torch.testing.assert_close(alone, both["layer1.0.relu"])
    assert not torch.allclose(alone, second)
    torch.testing.assert_close(second, block)
