"""From shard scans to each unit's numbers: merged candidate pools, mean activations and histograms of
per-image maxima, then the exact top-k of each chosen unit (re-scored in fp32) and its patches.

Everything here streams over the shard scans (read back from their files one at a time), so memory does
not grow with the number of images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cnnviz.analyzers.candidates import Pool, gather, select
from cnnviz.core.device import one_thread
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import resize
from cnnviz.errors import CnnvizError
from cnnviz.microscope.scan import BINS, ScanSpec, ShardScan, read, unit_peaks


@dataclass
class LayerTotals:
    """A layer over the whole set: the merged pool, the sum and count of mean activations, the number of
    images scanned and the range of their per-unit maxima (``low``, ``high``)."""

    pool: Pool
    total: Tensor
    count: int
    images: int
    low: Tensor
    high: Tensor

    @property
    def means(self) -> Tensor:
        """Every unit's mean activation over the set (all images, sizes and positions)."""
        return (self.total / max(self.count, 1)).float()


def merge(scans: Iterable[ShardScan]) -> dict[str, LayerTotals]:
    """Merge shard scans (in shard order, so the result does not depend on where they ran)."""
    totals: dict[str, LayerTotals] = {}
    for scan in scans:
        for layer, part in scan.layers.items():
            if layer not in totals:
                channels = part.pool.values.shape[0]
                totals[layer] = LayerTotals(Pool(channels, part.pool.size, torch.float32), torch.zeros(channels, dtype=torch.float64),
                                            0, 0, torch.full((channels,), torch.inf), torch.full((channels,), -torch.inf))
            into = totals[layer]
            into.pool.add(part.pool.values, part.pool.where)
            into.total += part.total
            into.count += part.count
            into.images += part.maxima.shape[0]
            into.low = torch.minimum(into.low, part.maxima.amin(dim=0))
            into.high = torch.maximum(into.high, part.maxima.amax(dim=0))
    return totals


def edges(totals: LayerTotals) -> Tensor:
    """Each unit's histogram edges, (units, BINS + 1), over the range of its per-image maxima."""
    low, high = totals.low, torch.maximum(totals.high, totals.low + 1e-6)
    steps = torch.linspace(0, 1, BINS + 1)
    return low[:, None] + (high - low)[:, None] * steps[None, :]


def histograms(scans: Iterable[ShardScan], totals: dict[str, LayerTotals]) -> dict[str, Tensor]:
    """Per layer, every unit's counts of per-image maxima in ``BINS`` bars (a second pass over the scans)."""
    bounds = {layer: edges(t) for layer, t in totals.items()}
    counts = {layer: torch.zeros(b.shape[0], BINS, dtype=torch.long) for layer, b in bounds.items()}
    for scan in scans:
        for layer, part in scan.layers.items():
            maxima = part.maxima.T.contiguous()  # (units, images)
            inner = bounds[layer][:, 1:-1].contiguous()
            bins = torch.searchsorted(inner, maxima, right=True)
            counts[layer].scatter_add_(1, bins, torch.ones_like(bins))
    return counts


def rescore(model: HookedModel, spec: ScanSpec, units: dict[str, list[int]], images: Sequence[tuple[int, str]]) -> list[dict]:
    """The images of the final pools again, in fp32, one at a time and on one CPU thread (so that a value
    depends neither on its batch nor on the machine's core count: every engine stores the same bits): per
    image, size and layer, the local maxima of the chosen ``units`` (values, rows, columns) and the resized
    shape. Unreadable images (changed since the scan) are left out."""
    with one_thread():
        return [entry for number, path in images for entry in _rescore_image(model, spec, units, number, path)]


def _rescore_image(model: HookedModel, spec: ScanSpec, units: dict[str, list[int]], number: int, path: str) -> list[dict]:
    out = []
    try:
        image = read(path, model.device)
    except CnnvizError:  # changed since its scan: left out, as the scan skips it
        return out
    for s, size in enumerate(spec.sizes):
        x = resize(image, size)
        with torch.no_grad():
            acts = model(x, list(units))
        shape = tuple(x.shape[-2:])
        found = {}
        for layer, act in acts.items():
            chosen = act[:, units[layer]]
            values, ys, xs = unit_peaks(model, layer, chosen, shape, spec)
            found[layer] = (values[0].cpu(), ys[0].cpu(), xs[0].cpu())
        out.append({"item": number * len(spec.sizes) + s, "shape": shape, "found": found})
    return out


def exact_pools(found: Iterable[dict], units: dict[str, list[int]], spec: ScanSpec) -> tuple[dict[str, Pool], dict[int, tuple[int, int]]]:
    """The fp32 pools of the chosen units (rows follow ``units[layer]``) and every re-scored item's shape."""
    pools = {layer: Pool(len(chosen), spec.pool, torch.float32) for layer, chosen in units.items()}
    shapes: dict[int, tuple[int, int]] = {}
    for entry in sorted(found, key=lambda e: e["item"]):
        shapes[entry["item"]] = tuple(entry["shape"])
        for layer, (values, ys, xs) in entry["found"].items():
            where = torch.stack([torch.full_like(ys, entry["item"]), ys, xs], dim=-1)
            pools[layer].add(values.float(), where)
    return pools, shapes


def examples(model: HookedModel, layer: str, pool: Pool, units: list[int], shapes: dict[int, tuple[int, int]],
             spec: ScanSpec) -> list[list[tuple[float, int, int, int]]]:
    """Each unit's top-k (value, item, y, x): distinct spots, positive activations, one spot per image across sizes."""
    return [select(pool, row, spec.top, shapes, model, layer, len(spec.sizes)) for row in range(len(units))]


def crops(model: HookedModel, layer: str, units: list[int], picks: list[list[tuple[float, int, int, int]]],
          paths: dict[int, str], spec: ScanSpec, guided: bool) -> dict[str, np.ndarray]:
    """The patches (and guided maps) of some units' picks, as arrays; ``source`` holds set-wide image ids. A patch
    shows the part of the receptive field inside the image (``candidates.square``)."""
    ids = sorted({pick[1] // len(spec.sizes) for chosen in picks for pick in chosen})
    local = {number: i for i, number in enumerate(ids)}
    n = len(spec.sizes)
    moved = [[(v, local[item // n] * n + item % n, y, x) for v, item, y, x in chosen] for chosen in picks]
    out = gather(model, layer, [paths[i] for i in ids], spec.sizes, units, moved, spec.top, guided, torch.float32, framed=True)
    source = out["source"]
    out["source"] = torch.where(source >= 0, torch.tensor(ids + [-1])[source.clamp(min=0)], source) if ids else source
    return {key: value.numpy() for key, value in out.items() if value is not None}

