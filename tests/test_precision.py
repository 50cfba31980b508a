"""Speed-ups that must keep results: bf16 autocast, the fused Gram, precision ``auto``, and no host-device
synchronization per Adam evaluation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import cnnviz
from cnnviz.analyzers.transfer import transfer
from cnnviz.core import device, memory
from cnnviz.core.hooked import load_model
from cnnviz.errors import CnnvizError
from cnnviz.losses import Loss, Term, feature_loss, gram, reference_activations
from cnnviz.optim import readout
from cnnviz.optim.loop import optimize
from cnnviz.optim.settings import Settings

from conftest import run_cli


def _plain_gram(features: torch.Tensor) -> torch.Tensor:
    b, c, h, w = features.shape
    f = features.contiguous().reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_fused_gram_equals_the_plain_one_with_its_gradient(layout):
    features = torch.rand(2, 8, 5, 7, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    fused, plain = gram(features), _plain_gram(features)
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(gram(features, normalize=False), plain * 35)
    weights = torch.rand_like(plain)
    (fused_grad,) = torch.autograd.grad((fused * weights).sum(), features)
    (plain_grad,) = torch.autograd.grad((plain * weights).sum(), features)
    torch.testing.assert_close(fused_grad, plain_grad)


@pytest.mark.parametrize("chunked", [False, True])
def test_gram_of_bf16_features_is_float32_and_matches_the_upcast_one(chunked):
    size = (64, 64) if chunked else (5, 7)  # 4096 positions: split into blocks; 35: one matmul
    features = torch.rand(1, 8, *size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    native = features.clone().requires_grad_(True)
    upcast = features.float().requires_grad_(True)
    g_native, g_upcast = gram(native, dtype=torch.bfloat16), gram(upcast, dtype=torch.bfloat16)
    assert g_native.dtype == torch.float32
    torch.testing.assert_close(g_native, g_upcast)
    weights = torch.rand_like(g_native)
    (g_native * weights).sum().backward()
    (g_upcast * weights).sum().backward()
    assert native.grad.dtype == torch.bfloat16
    torch.testing.assert_close(native.grad.float(), upcast.grad.to(torch.bfloat16).float())
    exact = features.double().requires_grad_(True)  # bf16 values are exact in float64
    g_exact = _plain_gram(exact)
    torch.testing.assert_close(g_native.double(), g_exact, rtol=1e-2, atol=1e-4)  # a bf16 matmul rounds to 8 bits
    (g_exact * weights.double()).sum().backward()
    torch.testing.assert_close(native.grad.double(), exact.grad, rtol=2e-2, atol=1e-3)  # bf16 output: 8 bits


def test_losses_get_activations_in_the_networks_dtype_and_stay_float32(vgg):
    fast = load_model("vgg16", device="cpu", precision="bf16").for_optimization()
    image = torch.rand(1, 3, 32, 32)
    assert fast(image, ["relu2_1"])["relu2_1"].dtype == torch.float32
    assert fast(image, ["relu2_1"], native=True)["relu2_1"].dtype == torch.bfloat16
    reference = reference_activations(fast, torch.rand(1, 3, 32, 32), ["relu2_1"])["relu2_1"]
    seen = {}

    def feature(acts, x):
        seen["dtype"] = acts["relu2_1"].dtype
        return feature_loss(acts["relu2_1"], reference)

    terms = Loss(fast, [Term("feature", 1.0, ("relu2_1",), feature)])(image)
    assert seen["dtype"] == torch.bfloat16 and terms["feature"].dtype == torch.float32


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, None), ({"avx512f", "avx512_bf16"}, torch.bfloat16), ({"amx_bf16"}, torch.bfloat16),
])
def test_auto_is_bf16_only_where_the_cpu_computes_bf16_natively(monkeypatch, flags, expected):
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert device.autocast_dtype("auto", cpu) is expected
    assert device.autocast_dtype("fp32", cpu) is None and device.autocast_dtype("bf16", cpu) is torch.bfloat16
    model = load_model("vgg16", device="cpu", precision="auto")
    assert model.compute_precision == "fp32"  # saliency and patches stay exact
    assert model.for_optimization().compute_precision == ("fp32" if expected is None else "bf16")


@pytest.mark.parametrize("capability, expected", [((7, 5), None), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_on_cuda_is_bf16_only_with_bf16_tensor_cores(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"amx_bf16"}))  # the CPU's flags do not decide
    gpu = torch.device("cuda")
    assert device.autocast_dtype("auto", gpu) is expected
    assert device.autocast_dtype("fp32", gpu) is None and device.autocast_dtype("fp16", gpu) is torch.float16


def test_fp16_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(CnnvizError, match="fp16 needs a CUDA GPU"):
        device.autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(CnnvizError, match="unknown precision 'fp8'"):
        device.check_precision("fp8", torch.device("cpu"))


def test_cli_refuses_fp16_on_the_cpu_with_one_error_line(tmp_path):
    result = run_cli("invert", "--precision", "fp16", "--device", "cpu", "--size", "32", "--iters", "1",
                     "--out", str(tmp_path), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "fp16" in lines[0]


def test_bf16_activations_come_back_as_float32_close_to_fp32(vgg):
    image = torch.rand(1, 3, 64, 64)
    exact = reference_activations(vgg, image, ["relu3_1"])["relu3_1"]
    fast = reference_activations(load_model("vgg16", device="cpu", precision="bf16"), image, ["relu3_1"])["relu3_1"]
    assert fast.dtype == torch.float32
    assert float((fast - exact).norm() / exact.norm()) < 0.02


def test_bf16_transfer_ends_close_to_fp32_and_records_its_precision():
    losses = {}
    for precision in ("fp32", "bf16"):
        model = load_model("vgg16", device="cpu", precision=precision)
        output = transfer(model, size=48, settings=Settings(iters=15))
        assert output.record.params["precision"] == precision
        losses[precision] = sum(output.record.losses.values())
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)


def test_the_estimate_halves_activations_in_bf16(vgg):
    fp32 = memory.needed_bytes(load_model("vgg16", device="cpu", precision="fp32"), ["relu5_1"], (256, 256))
    bf16 = memory.needed_bytes(load_model("vgg16", device="cpu", precision="bf16"), ["relu5_1"], (256, 256))
    assert bf16 < 0.6 * fp32


SYNCS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@pytest.mark.parametrize("options", [
    {"optimizer": "adam"}, {"optimizer": "lbfgs", "line_search": None},
    {"optimizer": "lbfgs", "line_search": "backtracking"},
])
def test_adam_and_lbfgs_without_a_host_line_search_read_losses_in_batches(vgg, monkeypatch, options):
    """Count host reads of tensors made by cnnviz code (torch's own CPU-side step counters aside)."""
    package = str(Path(cnnviz.__file__).parent)
    reads = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                reads.append(name)
            return original(self, *args, **kwargs)

        return read

    reference = torch.rand(1, 3, 24, 24)
    phi0 = reference_activations(vgg, reference, ["relu1_2"])["relu1_2"]
    objective = Loss(vgg, [Term("feature", 1.0, ("relu1_2",), lambda acts, x: feature_loss(acts["relu1_2"], phi0))])
    steps = []
    monkeypatch.setattr(readout.Readout.__init__, "__defaults__", (readout.READ_EVERY, math.inf))
    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    iters = 4 * readout.READ_EVERY
    result = optimize(lambda _size: objective, torch.full_like(reference, 0.5), Settings(iters=iters, **options),
                      callback=steps.append)
    monkeypatch.undo()
    evaluations = iters + (options["optimizer"] == "lbfgs")  # L-BFGS evaluates its start point too
    assert len(reads) <= evaluations // readout.READ_EVERY + 1, reads
    assert [s.evaluation for s in steps] == list(range(1, evaluations + 1)) and len(result.history) == evaluations
    assert result.iterations == iters
    assert result.losses["feature"] < result.history[0]["feature"]
