"""Petsiuk et al. 2018's deletion and insertion scores: does the map rank the pixels the model needs first?

Deletion replaces the pixels, most important first, with a blurred copy of the image and follows the
class probability down; insertion puts them, in the same order, into the blurred image and follows it up.
A faithful map gives a low area under the deletion curve and a high one under the insertion curve; a
random order of the pixels is the baseline every map should beat. The perturbed images of all steps
run as batches of forward passes only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from cnnviz.analyzers.common import model_record, save_arrays
from cnnviz.analyzers.saliency.methods import attribute, magnitude
from cnnviz.analyzers.saliency.request import chosen_methods, method_options, option_params, prepare
from cnnviz.analyzers.target import Target, class_probabilities
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, source_name
from cnnviz.core.layers import LOGITS
from cnnviz.core.records import Record
from cnnviz.errors import CnnvizError

RANDOM = "random"
STEPS = 25
"""Curve points after the start: 4 % of the pixels per step."""
BATCH = 16
BLUR_SIGMA = 1 / 45
"""The blurred copy's σ as a share of the image's long side (Petsiuk et al.: σ 5 at 224 px)."""


def blurred(photo: Tensor) -> Tensor:
    """The image with its detail removed: what deleted pixels become and insertion starts from."""
    sigma = max(photo.shape[-2:]) * BLUR_SIGMA
    kernel = 2 * round(3 * sigma) + 1
    return TF.gaussian_blur(photo, [kernel, kernel], [sigma, sigma])


def ranks(importance: Tensor) -> Tensor:
    """Each pixel's place (0: most important) when ordered by ``importance`` (H, W), ties by position."""
    order = importance.flatten().argsort(descending=True, stable=True)
    place = torch.empty_like(order)
    place[order] = torch.arange(order.numel(), device=order.device)
    return place.view(importance.shape)


def _scores(model: HookedModel, images: Tensor, target: Target) -> Tensor:
    """The class probability of the target (its score for a channel or neuron) per image, in batches."""
    out = []
    with torch.no_grad():
        for chunk in images.split(BATCH):
            out.append(class_probabilities(model, chunk)[:, target.channel] if target.layer == LOGITS
                       else target.score(model(chunk, [target.layer])))
    return torch.cat(out).cpu()


def curves(model: HookedModel, photo: Tensor, place: Tensor, target: Target, steps: int = STEPS) -> tuple[Tensor, Tensor]:
    """The deletion and insertion curves (``steps`` + 1 scores each) of the pixel order ``place`` (H, W)."""
    fill = blurred(photo)
    counts = torch.linspace(0, place.numel(), steps + 1, device=photo.device).round()
    masks = (place.to(photo.device)[None] < counts[:, None, None])[:, None]
    deleted = torch.where(masks, fill, photo)
    inserted = torch.where(masks, photo, fill)
    scores = _scores(model, torch.cat([deleted, inserted]), target)
    return scores[: steps + 1], scores[steps + 1:]


def area(curve: Tensor) -> float:
    """The area under a curve sampled evenly on [0, 1] (trapezoids)."""
    return float(torch.trapezoid(curve.double(), dx=1 / (len(curve) - 1)))


@dataclass
class Faithfulness:
    """Deletion and insertion curves per method and for a random order (``random``), sampled at
    ``fractions`` of the pixels, their areas (``auc[name]["deletion" | "insertion"]``), each method's raw
    map and what the curves measure (``score``: the class probability, or a channel's activation)."""

    input: Tensor
    methods: list[str]
    fractions: list[float]
    deletion: dict[str, list[float]]
    insertion: dict[str, list[float]]
    auc: dict[str, dict[str, float]]
    maps: dict[str, Tensor]
    score: str
    record: Record

    def save(self, path: str | Path) -> Path:
        """Write the maps as .npz and the record (curves and areas) as its JSON sidecar; returns the .npz path."""
        return save_arrays(path, {name: raw.numpy() for name, raw in self.maps.items()}, self.record)


def faithfulness(
    model: HookedModel,
    image: ImageSource = "chelsea",
    target: str | int | None = None,
    *,
    layer: str | None = None,
    channel: str | int | None = None,
    y: int | None = None,
    x: int | None = None,
    methods: Sequence[str] = ("backprop", "simonyan", "guided", "smoothgrad", "integrated-gradients", "gradcam", "occlusion"),
    steps: int = STEPS,
    size: int | None = 224,
    gradcam_layer: str | None = None,
    occlusion_window: int | None = None,
    occlusion_stride: int | None = None,
    seed: int = 0,
) -> Faithfulness:
    """Deletion and insertion curves of ``methods``' maps for one image and target (as ``saliency`` takes
    them), in ``steps`` steps, beside those of a random pixel order (seeded)."""
    if not 2 <= steps <= 1000:
        raise CnnvizError(f"--steps must be between 2 and 1000, got {steps}")
    chosen = chosen_methods(methods)
    photo, resolved = prepare(model, image, size, target, layer, channel, y, x, chosen)
    start = time.perf_counter()
    maps, options = {}, {}
    for method in chosen:
        used = method_options(model, resolved, photo, method, gradcam_layer, occlusion_window, occlusion_stride, seed)
        options.update(option_params(used))
        maps[method.name] = attribute(model, photo, resolved, method.name, used).cpu()
    generator = torch.Generator().manual_seed(seed)
    places = {name: ranks(magnitude(raw)[0, 0]) for name, raw in maps.items()}
    places[RANDOM] = torch.randperm(photo.shape[-2] * photo.shape[-1], generator=generator).view(photo.shape[-2:])
    deletion, insertion = {}, {}
    for name, place in places.items():
        down, up = curves(model, photo, place, resolved, steps)
        deletion[name], insertion[name] = [round(float(v), 6) for v in down], [round(float(v), 6) for v in up]
    auc = {name: {"deletion": area(torch.tensor(deletion[name])), "insertion": area(torch.tensor(insertion[name]))}
           for name in places}
    score = "probability" if resolved.layer == LOGITS else "activation"
    fractions = [k / steps for k in range(steps + 1)]
    params = {"image": source_name(image), "size": size, **resolved.params(), "methods": list(maps), "steps": steps,
              "score_kind": score, "blur_sigma": round(max(photo.shape[-2:]) * BLUR_SIGMA, 3), "seed": seed,
              "auc": auc, "deletion": deletion, "insertion": insertion, **options}
    record = model_record("faithfulness", model, [resolved.layer], params, seconds=round(time.perf_counter() - start, 3))
    return Faithfulness(photo.cpu(), list(maps), fractions, deletion, insertion, auc, maps, score, record)
