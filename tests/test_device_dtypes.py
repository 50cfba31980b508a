"""Device math stays in the device's dtypes: MPS has no float64, so L-BFGS and the patches scan (the
paths ``--device auto`` takes on a Mac) must create no float64 tensor. On the CPU every tensor is
treated as a device tensor: a dispatch mode records the dtype of everything made."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cnnviz.analyzers.patches import patches
from cnnviz.core.hooked import load_model
from cnnviz.optim.lbfgs import LBFGS


class Float64Ops(TorchDispatchMode):
    """Records every operation that makes a float64 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_flatten(out)[0]):
            self.ops.append(str(func))
        return out


def _quadratic_run(line_search: str | None) -> None:
    x = torch.tensor([3.0, -2.0, 1.0, 0.5], requires_grad=True)
    scale = torch.tensor([1.0, 4.0, 9.0, 16.0])
    optimizer = LBFGS([x], lr=1.0, max_iter=6, history_size=3, line_search=line_search)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (scale * x * x).sum()
        loss.backward()
        return loss

    for _ in range(2):
        optimizer.step(closure)


def test_lbfgs_makes_no_float64_tensor():
    for line_search in ("backtracking", "strong_wolfe", None):
        with Float64Ops() as mode:
            _quadratic_run(line_search)
        assert mode.ops == [], (line_search, mode.ops)


def test_the_patches_scan_and_its_guided_maps_make_no_float64_tensor():
    model = load_model("resnet18", weights="random", device="cpu", seed=1)
    with Float64Ops() as mode:
        result = patches(model, ["coffee", "chelsea"], layer="layer1.0.relu_1", channels="0-2", top=2, sizes=(40,),
                         batch=2, guided=True)
    assert mode.ops == []
    assert result.values.dtype == torch.float32 and not result.values.isnan().all()  # the activations' own dtype
