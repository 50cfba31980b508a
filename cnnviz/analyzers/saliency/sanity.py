"""Adebayo et al. 2018's sanity checks: does a saliency map change when the model's weights do?

A map that explains the model must change when its weights are replaced by random ones. The cascading
check re-initialises the network block by block from the logits down (each step one more block, seeded,
with each layer type's default initialisation) and recomputes every method's map; the independent check
randomizes one block at a time. Each map is compared with the original by the Spearman rank correlation
of its magnitude and by SSIM. The paper's finding: plain gradients and Grad-CAM lose their structure
as the top layers go, guided backprop and guided Grad-CAM keep drawing the image's edges.

Every randomization runs on a copy of the network: the caller's model is never changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnviz.analyzers.common import model_record, save_arrays
from cnnviz.analyzers.saliency.methods import attribute, magnitude
from cnnviz.analyzers.saliency.request import chosen_methods, method_options, option_params, prepare
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, source_name
from cnnviz.core.layers import LOGITS
from cnnviz.core.records import Record
from cnnviz.errors import CnnvizError, unknown

RANDOMIZATIONS = ("cascading", "independent")
SANITY_METHODS = ("backprop", "guided", "gradcam", "smoothgrad", "integrated-gradients")
"""The maps the paper's figure compares (its guided Grad-CAM behaves as guided backprop)."""
ORIGINAL = "original"


@dataclass(frozen=True)
class Block:
    """A unit of randomization: the modules with parameters under ``path`` (two levels of module names
    deep: a VGG layer, a ResNet basic block, an EfficientNet block), called ``name`` in the layer table."""

    name: str
    path: str

    def modules(self, net: nn.Module) -> Iterator[nn.Module]:
        for path, module in net.named_modules():
            if (path == self.path or path.startswith(self.path + ".")) and any(True for _ in module.parameters(recurse=False)):
                yield module


def blocks(model: HookedModel, image: Tensor) -> list[Block]:
    """The network's blocks with parameters in the order the forward pass runs them (from the input)."""
    order: list[str] = []

    def seen(path: str):
        def hook(*_args) -> None:
            key = ".".join(path.split(".")[:2])
            if key not in order:
                order.append(key)
        return hook

    handles = [module.register_forward_pre_hook(seen(path)) for path, module in model.net.named_modules()
               if any(True for _ in module.parameters(recurse=False))]
    try:
        with torch.no_grad():
            model(image, [LOGITS])
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise CnnvizError(f"{model.name} has no parameters to randomize")
    names = {layer.path: layer.name for layer in model.table}
    return [Block(names.get(path, path), path) for path in order]


def randomize(net: nn.Module, block: Block, seed: int) -> None:
    """Re-initialise every layer of ``block`` in ``net`` as its type does when built (``reset_parameters``;
    a layer without one gets normal noise of its weights' own scale), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in block.modules(net):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                continue
            with torch.no_grad():
                for param in module.parameters(recurse=False):
                    param.normal_(0.0, float(param.float().std()) if param.numel() > 1 else 1.0)


def randomized(model: HookedModel, order: Sequence[Block], randomization: str, seed: int) -> Iterator[tuple[str, HookedModel]]:
    """(block name, a copy of ``model`` with it randomized) for the blocks of ``order`` from the last (the
    logits) down: ``cascading`` keeps the blocks randomized before it, ``independent`` randomizes it alone.
    An unknown ``randomization`` is refused at the call, before any step runs."""
    if randomization not in RANDOMIZATIONS:
        raise unknown("randomization", randomization, RANDOMIZATIONS)
    return _steps(model, order, randomization == "cascading", seed)


def _steps(model: HookedModel, order: Sequence[Block], cascading: bool, seed: int) -> Iterator[tuple[str, HookedModel]]:
    cascade = model.clone() if cascading else None
    for k, block in enumerate(reversed(order)):
        twin = cascade if cascade is not None else model.clone()
        randomize(twin.net, block, seed + k)
        yield block.name, twin


def _ranks(values: Tensor) -> Tensor:
    """Ranks of ``values`` (1-D) from 0, ties given their mean rank."""
    ordered, order = values.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = (ends - (counts.double() + 1) / 2)[inverse]
    return ranks


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of the magnitudes of two maps (Adebayo et al.'s 'absolute value' variant)."""
    ra, rb = _ranks(magnitude(a).flatten().double().cpu()), _ranks(magnitude(b).flatten().double().cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def _unit(raw: Tensor) -> Tensor:
    size = magnitude(raw).double().cpu()
    return size / size.max().clamp_min(1e-300)


def ssim(a: Tensor, b: Tensor, sigma: float = 1.5) -> float:
    """The structural similarity (Wang et al. 2004; Gaussian window of σ 1.5, constants for a range of 1) of
    two maps' magnitudes, each scaled to [0, 1] by its maximum."""
    x, y = _unit(a), _unit(b)
    radius = min(5, (min(x.shape[-2:]) - 1) // 2)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    window = torch.outer(taps, taps) / taps.sum() ** 2

    def mean(z: Tensor) -> Tensor:
        return F.conv2d(z, window[None, None])

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


@dataclass
class SanityCheck:
    """Each method's map (raw, on the CPU) on the original model and after each randomization step, and
    their similarity to the original: ``steps[0]`` is ``original``; ``spearman[m][k]`` and ``ssim[m][k]``
    compare step k's map of method m with the original's."""

    input: Tensor
    methods: list[str]
    steps: list[str]
    maps: dict[str, list[Tensor]]
    spearman: dict[str, list[float]]
    ssim: dict[str, list[float]]
    record: Record

    def save(self, path: str | Path) -> Path:
        """Write the maps as .npz (``METHOD/STEP`` arrays) and the record (with the similarities) as its
        JSON sidecar, each atomically; returns the .npz path."""
        arrays = {f"{m}/{k:02d}_{step}": self.maps[m][k].numpy() for m in self.methods for k, step in enumerate(self.steps)}
        return save_arrays(path, arrays, self.record)


def sanity(
    model: HookedModel,
    image: ImageSource = "chelsea",
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    methods: Sequence[str] = SANITY_METHODS,
    randomization: str = "cascading",
    size: int | None = 224,
    gradcam_layer: str | None = None,
    occlusion_window: int | None = None,
    occlusion_stride: int | None = None,
    seed: int = 0,
) -> SanityCheck:
    """Adebayo et al.'s model-randomization check of ``methods`` for one image and target (as
    ``saliency`` takes them): the maps after each ``cascading`` or ``independent`` randomization step,
    compared with the original by rank correlation and SSIM. The target (``top`` included) is resolved
    on the original model and kept."""
    chosen = chosen_methods(methods)
    photo, resolved = prepare(model, image, size, target, layer, channel, y, x, chosen)
    options = {m.name: method_options(model, resolved, photo, m, gradcam_layer, occlusion_window, occlusion_stride, seed)
               for m in chosen}
    randomizations = randomized(model, blocks(model, photo), randomization, seed)
    start = time.perf_counter()
    steps, maps = [ORIGINAL], {m.name: [attribute(model, photo, resolved, m.name, options[m.name]).cpu()] for m in chosen}
    for name, twin in randomizations:
        steps.append(name)
        for m in chosen:
            maps[m.name].append(attribute(twin, photo, resolved, m.name, options[m.name]).cpu())
    spearman = {m: [rank_correlation(maps[m][0], step) for step in maps[m]] for m in maps}
    similar = {m: [ssim(maps[m][0], step) for step in maps[m]] for m in maps}
    params = {"image": source_name(image), "size": size, **resolved.params(), "methods": list(maps),
              "randomization": randomization, "steps": steps, "spearman": spearman, "ssim": similar, "seed": seed,
              **{k: v for m in chosen for k, v in option_params(options[m.name]).items()}}
    record = model_record("sanity", model, [resolved.layer], params, seconds=round(time.perf_counter() - start, 3))
    return SanityCheck(photo.cpu(), list(maps), steps, maps, spearman, similar, record)
