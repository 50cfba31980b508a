"""The microscope's scan: every unit of some layers over an image set, one shard at a time.

A shard's pass reads each image, resizes it to every size, runs batches of one shape to all the layers
at once without gradients, in the fast precision the machine has (bf16 where native), and keeps per unit
a pool of candidates (local maxima, ``cnnviz.analyzers.candidates``), every image's maximum activation
and the sum of its mean activations. Pools merge associatively (keep the best), so shards can run
anywhere and in any order; ``rescore`` then runs the images of the final pools again in fp32, one image
at a time, and finds their local maxima afresh, so the stored values and the chosen top-k are those an
fp32 scan gives.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cnnviz.analyzers.candidates import POOL_PER_SIZE, Pool, batches, nms_radius, peaks
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import load_image, resize
from cnnviz.core.receptive import field as receptive_field
from cnnviz.errors import CnnvizError
from cnnviz.microscope.listing import Shard

BINS = 20
"""Bars of each unit's histogram of per-image maxima."""


@dataclass(frozen=True)
class ScanSpec:
    """What a scan computes: ``layers`` at every long side in ``sizes``, ``top`` examples per unit, ``batch``
    images of one shape per forward pass."""

    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    top: int
    batch: int

    @property
    def pool(self) -> int:
        """Candidates kept per unit: enough that cross-size suppression and fp32 re-scoring leave ``top``."""
        return self.top * len(self.sizes) * POOL_PER_SIZE


@dataclass
class LayerScan:
    """One layer over some images: the candidate pool (items are image id × sizes + size index), each
    scanned image's maximum per unit ((images, units), rows following ``ids``), and the sum and count of mean
    activations."""

    pool: Pool
    total: Tensor
    ids: list[int] = field(default_factory=list)
    maxima: Tensor | None = None
    count: int = 0


@dataclass
class ShardScan:
    """A shard's scan: per layer its ``LayerScan``, and the images that could not be read, with why."""

    shard: Shard
    layers: dict[str, LayerScan]
    skipped: list[tuple[str, str]]

    def to_bytes(self) -> bytes:
        """The scan as one .npz (what a shard file holds and what a remote worker sends back)."""
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({
            "index": self.shard.index, "first": self.shard.first, "paths": self.shard.paths, "key": self.shard.key,
            "layers": list(self.layers), "skipped": self.skipped,
            "counts": [scan.count for scan in self.layers.values()]}))}
        for i, scan in enumerate(self.layers.values()):
            arrays |= {f"{i}_values": scan.pool.values.numpy(), f"{i}_where": scan.pool.where.numpy(),
                       f"{i}_ids": np.array(scan.ids, dtype=np.int64), f"{i}_total": scan.total.numpy(),
                       f"{i}_maxima": scan.maxima.numpy()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @staticmethod
    def header(source: bytes | Path) -> tuple[Shard, list[tuple[str, str]]]:
        """The shard a scan covers and the images it skipped, from its metadata alone (a .npz member is read
        only when asked for, so a file's arrays stay unread)."""
        with np.load(io.BytesIO(source) if isinstance(source, bytes) else source) as arrays:
            return _header(json.loads(str(arrays["meta"])))

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardScan:
        with np.load(io.BytesIO(data)) as arrays:
            meta = json.loads(str(arrays["meta"]))
            layers = {}
            for i, name in enumerate(meta["layers"]):
                values = torch.from_numpy(arrays[f"{i}_values"])
                pool = Pool(values.shape[0], values.shape[1], values.dtype)
                pool.values, pool.where = values, torch.from_numpy(arrays[f"{i}_where"])
                layers[name] = LayerScan(pool, torch.from_numpy(arrays[f"{i}_total"]), arrays[f"{i}_ids"].tolist(),
                                         torch.from_numpy(arrays[f"{i}_maxima"]), meta["counts"][i])
        shard, skipped = _header(meta)
        return cls(shard, layers, skipped)


def _header(meta: dict) -> tuple[Shard, list[tuple[str, str]]]:
    return Shard(meta["index"], meta["first"], tuple(meta["paths"])), [tuple(s) for s in meta["skipped"]]


def read(path: str, device: torch.device) -> Tensor:
    """One image of the set; an unreadable one raises ``CnnvizError`` (the scan skips and counts it)."""
    return load_image(path, None, device)


def scan_shard(model: HookedModel, spec: ScanSpec, shard: Shard) -> ShardScan:
    """Run one shard through ``model`` (in its fast precision) to every layer of ``spec``."""
    fast = model.for_optimization()
    skipped: list[tuple[str, str]] = []
    scans: dict[str, LayerScan] = {}
    n = len(spec.sizes)

    def items() -> Iterator[tuple[int, Tensor]]:
        for i, path in enumerate(shard.paths):
            try:
                image = read(path, model.device)
            except CnnvizError as err:
                skipped.append((path, str(err)))
                continue
            for s, size in enumerate(spec.sizes):
                yield (shard.first + i) * n + s, resize(image, size)

    maxima: dict[str, dict[int, Tensor]] = {layer: {} for layer in spec.layers}
    for numbers, x in batches(items(), spec.batch):
        with torch.no_grad():
            acts = fast(x, list(spec.layers))
        for layer, act in acts.items():
            scan = scans.get(layer) or scans.setdefault(layer, LayerScan(Pool(act.shape[1], spec.pool, torch.float32),
                                                                         total=torch.zeros(act.shape[1], dtype=torch.float64)))
            _add(scan, model, layer, act, tuple(x.shape[-2:]), numbers, spec, maxima[layer])
    for layer, scan in scans.items():
        scan.ids = sorted(maxima[layer])
        scan.maxima = torch.stack([maxima[layer][i] for i in scan.ids])  # a layer's scan exists once an image ran
    return ShardScan(shard, scans, skipped)


def unit_peaks(model: HookedModel, layer: str, act: Tensor, shape: tuple[int, int], spec: ScanSpec) -> tuple[Tensor, Tensor, Tensor]:
    """The candidates of a layer's maps for inputs of ``shape``: each image's and unit's highest local maxima
    (within half a receptive field), as values, rows and columns (B, C, top × POOL_PER_SIZE)."""
    return peaks(act, nms_radius(receptive_field(model, layer, shape)), spec.top * POOL_PER_SIZE)


def _add(scan: LayerScan, model: HookedModel, layer: str, act: Tensor, shape: tuple[int, int], numbers: list[int],
         spec: ScanSpec, maxima: dict[int, Tensor]) -> None:
    """One batch's activations of one layer (for inputs of ``shape``) into its scan."""
    values, ys, xs = unit_peaks(model, layer, act, shape, spec)
    item = torch.tensor(numbers, device=act.device).view(-1, 1, 1).expand_as(ys)
    where = torch.stack([item, ys, xs], dim=-1)
    scan.pool.add(values.transpose(0, 1).flatten(1).float().cpu(), where.transpose(0, 1).flatten(1, 2).cpu())
    scan.total += act.mean(dim=(2, 3)).sum(dim=0).double().cpu()
    scan.count += act.shape[0]
    peak = act.amax(dim=(2, 3)).float().cpu()
    for number, row in zip(numbers, peak):
        image = number // len(spec.sizes)
        maxima[image] = row if image not in maxima else torch.maximum(maxima[image], row)
