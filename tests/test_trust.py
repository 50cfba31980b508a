"""Can a saliency map be trusted: occlusion, Adebayo et al.'s randomization checks and Petsiuk et al.'s
deletion and insertion curves, on nets whose answers are known and on the three network kinds."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnviz
from cnnviz.analyzers.saliency import attribute, faithfulness, sanity
from cnnviz.analyzers.saliency.faithfulness import RANDOM, area, curves, ranks
from cnnviz.analyzers.saliency.methods import Options
from cnnviz.analyzers.saliency.sanity import ORIGINAL, blocks, randomized, rank_correlation, ssim
from cnnviz.analyzers.target import Target
from cnnviz.core.convention import Convention
from cnnviz.core.hooked import HookedModel
from cnnviz.core.models import ModelSpec
from cnnviz.core.weights import Weights
from cnnviz.errors import CnnvizError

from conftest import run_cli

IDENTITY = Convention("identity", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, False)
SIDE = 48
REGION = (slice(8, 24), slice(20, 36))
"""The only place the region net looks at: rows 8-23, columns 20-35 of a 48 px image."""


class RegionNet(nn.Module):
    """Class 0's score is the mean high-frequency energy (a Laplacian, rectified) inside ``REGION`` only."""

    def __init__(self) -> None:
        super().__init__()
        laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.edges = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.edges.weight.copy_(laplacian.expand(1, 3, 3, 3) / 3)
            self.fc.weight.copy_(torch.tensor([[20.0], [-20.0]]))
            self.fc.bias.copy_(torch.tensor([-3.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.edges(x))[:, :, REGION[0], REGION[1]].mean(dim=(2, 3)))


class Small(nn.Module):
    """Two seeded convolutions and a linear classifier: weights that the randomization can replace."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(8 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def hooked(net: nn.Module, classes=("inside", "other")) -> HookedModel:
    return HookedModel(net.eval(), ModelSpec("tiny"), Weights("tiny", None, IDENTITY), torch.device("cpu"), classes)


def textured() -> torch.Tensor:
    return torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


def region_mask() -> torch.Tensor:
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[REGION] = True
    return mask


def test_occlusion_finds_the_only_region_the_score_reads():
    model, image = hooked(RegionNet()), textured()
    drop = attribute(model, image, Target("logits", 0), "occlusion", Options(window=6, stride=2))[0, 0]
    near = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    near[REGION[0].start - 7: REGION[0].stop + 7, REGION[1].start - 7: REGION[1].stop + 7] = True
    assert drop[~near].abs().max() == 0  # a window that cannot reach the region changes nothing
    assert drop[region_mask()].mean() > 0.5 * drop.max() > 0
    peak = divmod(int(drop.argmax()), SIDE)
    assert region_mask()[peak]


def test_a_map_of_the_region_beats_a_random_order_in_deletion_and_insertion():
    model, image = hooked(RegionNet()), textured()
    target = Target("logits", 0, name="inside")
    truth = ranks(region_mask().float())
    shuffled = torch.randperm(SIDE * SIDE, generator=torch.Generator().manual_seed(1)).view(SIDE, SIDE)
    (down, up), (down_random, up_random) = curves(model, image, truth, target), curves(model, image, shuffled, target)
    assert down[0] > 0.9 and up[0] < 0.5  # the textured region drives class 0; the blurred image does not
    assert area(down) < area(down_random) - 0.2 and area(up) > area(up_random) + 0.2
    result = cnnviz.faithfulness(image, "inside", model=model, methods=["backprop", "occlusion"], size=None, occlusion_window=6)
    for method in result.methods:
        assert result.auc[method]["deletion"] < result.auc[RANDOM]["deletion"], method
        assert result.auc[method]["insertion"] > result.auc[RANDOM]["insertion"], method
    assert result.fractions[0] == 0 and result.fractions[-1] == 1 and len(result.deletion["backprop"]) == 26
    assert result.record.params["auc"] == result.auc and result.score == "probability"


def test_area_ranks_and_similarities_by_hand():
    assert area(torch.tensor([0.0, 1.0])) == 0.5 and area(torch.tensor([1.0, 1.0, 1.0])) == 1.0
    assert ranks(torch.tensor([[0.2, 0.9], [0.5, 0.1]])).tolist() == [[2, 0], [1, 3]]
    a = torch.tensor([1.0, 2.0, 2.0, 3.0]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 2, 2)
    ra, rb = np.array([0, 1.5, 1.5, 3]), np.array([0, 2, 1, 3])  # ties share their mean rank
    expected = np.corrcoef(ra, rb)[0, 1]
    assert rank_correlation(a, b) == pytest.approx(expected)
    assert rank_correlation(a, -a ** 3) == pytest.approx(1.0)  # magnitudes, ranked: any monotone map of |a|
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    assert ssim(x, 2 * x) == pytest.approx(1.0) and ssim(x, x.flip(-1)) < 0.5


def test_randomizing_every_block_changes_the_gradient_map_and_the_check_can_fail():
    model, image = hooked(Small(), ("a", "b", "c")), textured()[..., :16, :16]
    check = sanity(model, image, "a", methods=["backprop", "gradcam"], size=None)
    assert check.steps == [ORIGINAL, "classifier", "features.2", "features.0"]
    assert all(check.spearman[m][0] == pytest.approx(1.0) and check.ssim[m][0] == pytest.approx(1.0) for m in check.methods)
    assert check.spearman["backprop"][-1] < 0.5
    same = sanity(model, image, "a", methods=["backprop"], size=None, seed=0)
    assert same.spearman == {"backprop": check.spearman["backprop"]}  # seeded: the same steps again


@pytest.mark.parametrize("randomization", ["cascading", "independent"])
def test_the_cascade_goes_top_down_one_block_more_each_step_and_leaves_the_callers_model_alone(randomization):
    model, image = hooked(Small(), ("a", "b", "c")), textured()[..., :16, :16]
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    found = blocks(model, image)
    order = [block.path for block in found]
    assert order == ["features.0", "features.2", "classifier"]
    for k, (name, twin) in enumerate(randomized(model, found, randomization, seed=0)):
        changed = {key.rsplit(".", 1)[0] for key, value in twin.net.state_dict().items() if not torch.equal(value, before[key])}
        expected = order[::-1][: k + 1] if randomization == "cascading" else [order[::-1][k]]
        assert name == ["classifier", "features.2", "features.0"][k] and changed == set(expected)
    sanity(model, image, "a", methods=["backprop"], size=None, randomization=randomization)
    assert all(torch.equal(value, before[key]) for key, value in model.net.state_dict().items())


def test_bad_values_are_refused():
    image = textured()
    with pytest.raises(CnnvizError, match="no parameters to randomize"):
        sanity(hooked(nn.Sequential(nn.ReLU())), image, layer="0", channel=0, methods=["backprop"], size=None)
    with pytest.raises(CnnvizError, match="occlusion window"):
        faithfulness(hooked(RegionNet()), image, "inside", methods=["occlusion"], size=None, occlusion_window=SIDE + 1)
    with pytest.raises(CnnvizError, match="did you mean"):
        faithfulness(hooked(RegionNet()), image, "inside", methods=["guidedd"], size=None)
    with pytest.raises(CnnvizError, match="randomization"):
        sanity(hooked(RegionNet()), image, "inside", methods=["backprop"], size=None, randomization="shuffled")


@pytest.mark.parametrize("model, weights", [("efficientnet_lite0", None), ("vgg16", "random"), ("resnet18", "random")])
def test_cli_sanity_and_faithfulness_on_each_kind_of_network(tmp_path, model, weights):
    extra = ["--weights", weights] if weights else []
    result = run_cli("saliency", "coffee", "--model", model, *extra, "--size", "64", "--methods", "backprop,guided,gradcam",
                     "--sanity", "--faithfulness", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (grid,) = tmp_path.glob("saliency_coffee_*_sanity_cascading.png")
    sidecar = json.loads(grid.with_suffix(".json").read_text())
    params = sidecar["record"]["params"]
    assert sidecar["analyzer"] == "trust" and params["steps"][0] == ORIGINAL and len(params["steps"]) > 3
    assert set(params["spearman"]) == {"backprop", "guided", "gradcam"}
    assert Image.open(grid).size[0] > 4 * 200 and grid.with_name(grid.stem + "_similarity.png").is_file()
    maps = np.load(grid.with_name(grid.stem + "_maps.npz"))
    assert len(maps.files) == 3 * len(params["steps"])
    (plot,) = tmp_path.glob("saliency_coffee_*_faithfulness.png")
    record = json.loads(plot.with_suffix(".json").read_text())["record"]["params"]
    assert set(record["auc"]) == {"backprop", "guided", "gradcam", RANDOM}
    assert "deletion (lower is better)" in result.stderr
