import re

import pytest
import torch

from cnnviz.analyzers.inversion import invert
from cnnviz.core import memory
from cnnviz.core.images import as_image
from cnnviz.errors import CnnvizError
from cnnviz.optim.settings import Settings, state_images

from conftest import run_cli


def test_the_estimate_grows_with_pixels_and_depth(vgg):
    shallow = memory.needed_bytes(vgg, ["relu2_2"], (256, 256), state_images("lbfgs"))
    deep = memory.needed_bytes(vgg, ["relu5_3"], (256, 256), state_images("lbfgs"))
    assert deep > shallow
    assert memory.needed_bytes(vgg, ["relu2_2"], (512, 512), state_images("lbfgs")) == pytest.approx(4 * shallow, rel=1e-6)
    with torch.no_grad():
        acts = vgg(torch.zeros(1, 3, 64, 64), vgg.table.names()[: vgg.table.names().index("relu2_2") + 1])
    assert memory.values_per_pixel(vgg, ["relu2_2"]) == sum(a.numel() for a in acts.values()) / 64**2


def test_a_run_that_cannot_fit_is_refused_before_it_starts_with_the_size_that_fits(vgg, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 200 * 2**20)
    with pytest.raises(CnnvizError, match=r"needs about .* GiB, but 0\.2 GiB are free on cpu: use --size \d+ or less") as refused:
        invert(vgg, "coffee", "relu4_3", size=1024, settings=Settings(iters=1))
    invert(vgg, "coffee", "relu4_3", size=32, settings=Settings(iters=1))
    suggested = int(re.search(r"--size (\d+)", str(refused.value)).group(1))
    state = state_images("lbfgs")

    def need(side: int) -> int:
        return memory.needed_bytes(vgg.for_optimization(), ["relu4_3"], tuple(as_image("coffee", side).shape[-2:]), state)

    assert need(suggested) <= 200 * 2**20 < need(suggested + 8)  # the suggestion fits, one step (8 px) more does not


def test_cli_refuses_a_huge_size_at_once(tmp_path):
    result = run_cli("invert", "--size", "20000", "--iters", "1", "--device", "cpu", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "use --size" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_optimizer_state_of_every_image_of_a_batch_is_counted(vgg):
    """Activations and the optimizer's state both grow with the batch: four images need four times one."""
    one = memory.needed_bytes(vgg, ["relu2_2"], (64, 64), state_images("lbfgs"))
    assert memory.needed_bytes(vgg, ["relu2_2"], (64, 64), state_images("lbfgs"), batch=4) == pytest.approx(4 * one, rel=1e-6)
