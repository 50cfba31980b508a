"""Train a classifier head (``cnnviz.core.head``) on labelled crops of images: offline class scores.

Each image is one class, named by its file stem. Each image is split at a vertical line: training
crops come from the left part (random resized crops, flips and colour jitter, torchvision's
transforms.v2); held-out crops are squares spread evenly over the right part (``test_fraction`` of
the width), not augmented, so the held-out accuracy measures recognition of unseen regions. The
trunk's features (pool5, averaged over positions) are computed once, without grad; fitting the
linear layer on them then takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from cnnviz.analyzers.common import model_record
from cnnviz.core.head import FEATURES, Head
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import bundled_images, image_path, load_image, resize
from cnnviz.core.records import Record
from cnnviz.errors import CnnvizError


@dataclass(frozen=True)
class HeadConfig:
    """How to train a head: image and crop sizes (px), crops per image, the held-out split, the optimizer."""

    image_size: int = 384
    crop: int = 128
    crop_area: tuple[float, float] = (0.1, 1.0)
    train_crops: int = 32
    test_crops: int = 8
    test_fraction: float = 0.25
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1.0
    dropout: float = 0.0
    batch: int = 16
    seed: int = 0

    def check(self) -> None:
        if self.crop < 32 or self.image_size < self.crop:
            raise CnnvizError(f"--crop must be at least 32 and at most --image-size, got {self.crop} and {self.image_size}")
        if min(self.train_crops, self.test_crops, self.epochs, self.batch) < 1:
            raise CnnvizError("--train-crops, --test-crops, --epochs and --batch must be at least 1")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise CnnvizError(f"--test-fraction must be between 0.05 and 0.5, got {self.test_fraction}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.dropout < 1):
            raise CnnvizError("--lr must be positive, --weight-decay at least 0, --dropout in [0, 1)")


def split(image: Tensor, test_fraction: float) -> tuple[Tensor, Tensor]:
    """The training (left) and held-out (right) parts of an image (1, 3, H, W)."""
    cut = round(image.shape[-1] * (1 - test_fraction))
    return image[..., :cut], image[..., cut:]


def training_crops(part: Tensor, n: int, crop: int, area: tuple[float, float]) -> Tensor:
    """``n`` augmented crops (n, 3, crop, crop) of ``part`` covering ``area`` (a range of fractions) of
    it, drawn from torch's global generator."""
    augment = v2.Compose([
        v2.RandomResizedCrop(crop, scale=area, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    ])
    return torch.cat([augment(part) for _ in range(n)]).clamp(0, 1)


def held_out_crops(part: Tensor, n: int, crop: int) -> Tensor:
    """``n`` squares as large as ``part``'s short side, spread evenly along its long side, resized to ``crop``."""
    h, w = part.shape[-2:]
    side = min(h, w)
    offsets = torch.linspace(0, max(h, w) - side, n).round().int().tolist()
    squares = [part[..., o:o + side, :side] if h > w else part[..., :side, o:o + side] for o in offsets]
    return torch.cat([resize(square, (crop, crop)) for square in squares])


def pooled_features(model: HookedModel, crops: Tensor, batch: int) -> Tensor:
    """The head's input for each crop: ``FEATURES`` averaged over positions, (N, C), without grad."""
    with torch.no_grad():
        return torch.cat([
            model(crops[i:i + batch], [FEATURES])[FEATURES].mean(dim=(-2, -1)) for i in range(0, len(crops), batch)
        ])


def accuracy(head: Head, features: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((head.eval()(features).argmax(dim=1) == labels).float().mean())


def fit(features: Tensor, labels: Tensor, classes: int, config: HeadConfig) -> tuple[Head, float]:
    """A head fitted to pooled features by full-batch AdamW on the cross-entropy; returns it and the last loss.

    Channels that hardly vary are standardised by a tenth of the average std, not by their own.
    """
    head = Head(features.shape[1], classes, config.dropout).to(features.device)
    std = features.std(dim=0)
    head.mean.copy_(features.mean(dim=0))
    head.std.copy_(std.clamp_min(0.1 * float(std.mean())))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head.train()(features), labels)
        loss.backward()
        optimizer.step()
    return head.eval(), float(loss.detach())


def _image_paths(images: Sequence[str | Path] | None) -> dict[str, Path]:
    if not images:
        return bundled_images()
    paths = {}
    for image in images:
        path = image_path(image)
        if path.stem in paths:
            raise CnnvizError(f"two images are named {path.stem}: each image is one class, named by its file stem")
        paths[path.stem] = path
    if len(paths) < 2:
        raise CnnvizError("a head needs at least two images (classes)")
    return paths


def train_head(
    model: HookedModel, images: Sequence[str | Path] | None = None, config: HeadConfig = HeadConfig(),
) -> tuple[Head, Record]:
    """Train a head on crops of ``images`` (default: every bundled image); returns it and its record."""
    config.check()
    if model.spec.head is not None or not model.spec.is_vgg:
        raise CnnvizError(f"train a head on plain VGG convolutions (--model vgg16), not on {model.name}")
    paths = _image_paths(images)
    start = time.perf_counter()
    train, test = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for path in paths.values():
            left, right = split(load_image(path, config.image_size, model.device), config.test_fraction)
            crops = training_crops(left, config.train_crops, config.crop, config.crop_area)
            train.append(pooled_features(model, crops, config.batch))
            test.append(pooled_features(model, held_out_crops(right, config.test_crops, config.crop), config.batch))
        train_labels = torch.arange(len(paths), device=model.device).repeat_interleave(config.train_crops)
        test_labels = torch.arange(len(paths), device=model.device).repeat_interleave(config.test_crops)
        head, loss = fit(torch.cat(train), train_labels, len(paths), config)
    params = {
        "classes": list(paths), "accuracy": accuracy(head, torch.cat(test), test_labels),
        "train_accuracy": accuracy(head, torch.cat(train), train_labels), "chance": 1 / len(paths),
        "images": [str(image) for image in images] if images else "bundled", **asdict(config),
    }
    record = model_record("head", model, [FEATURES], params, seed=config.seed, iterations=config.epochs,
                          losses={"cross_entropy": loss}, seconds=round(time.perf_counter() - start, 3))
    return head.cpu(), record
