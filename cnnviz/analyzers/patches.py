"""Maximally activating patches over an image set (Zeiler & Fergus 2014), each optionally beside its
guided-backprop map (Springenberg et al. 2015).

The set is streamed: each image is read once, resized to every size, batched with others of the same
size and run to the layer without gradients; per channel only a pool of the best candidates is kept,
so memory stays flat however many images there are. Candidates are local maxima of a channel's map
(non-maximum suppression by max-pooling over half a receptive field), so the top patches are different
spots, not shifted copies of one; at the end, the same spot found at two sizes of one image is kept
once. A patch is its unit's exact receptive field (``cnnviz.core.receptive``) cropped from the resized
image, mid-grey where it crosses the border (or covers pixels the network never sees), and shown at most
``candidates.MAX_PATCH`` px wide (``cnnviz.analyzers.candidates`` holds this machinery).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cnnviz.analyzers import candidates
from cnnviz.analyzers.candidates import POOL_PER_SIZE
from cnnviz.analyzers.channels import Channels, parse_channels
from cnnviz.analyzers.common import model_record, save_arrays
from cnnviz.core.display import Picture
from cnnviz.core.files import atomic_write
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import ImageSource, as_image, check_size, image_set, resize, save_png, source_name
from cnnviz.core.progress import Tick
from cnnviz.core.receptive import field
from cnnviz.core.records import Record, sidecar_path
from cnnviz.errors import CnnvizError

SIZES = (224, 384)


@dataclass(repr=False)
class Patches(Picture):
    """The top patches of each chosen channel: row r is channel ``channels[r]``, column k its k-th best.

    Arrays have shape (channels, top); a channel with fewer than ``top`` distinct spots of positive
    activation in the set has NaN ``values`` and ``source`` -1 there (an empty cell). ``source`` indexes
    ``sources``; ``size`` is the long side the image was resized to and ``shapes`` its (H, W) then; ``y``,
    ``x`` the unit in the layer's map; ``boxes`` its receptive field (top, left, bottom, right) in the
    resized image's pixels, beyond them where it crosses the border, and ``supports`` the part of it that
    can change the unit (in the image, seen by the network). ``patches`` (and ``guided``, the
    guided-backprop maps, if asked for) are (channels, top, 3, P, P). ``means`` is every channel's mean
    activation over the set. Like an analyzer's ``Output`` it has an ``image`` (every patch tiled, rows:
    channels), a ``record`` and ``save``, and shows itself in a notebook (or with ``show()``);
    ``cnnviz.figures.draw_patches`` draws the captioned grid.
    """

    layer: str
    channels: list[int]
    values: Tensor
    source: Tensor
    size: Tensor
    y: Tensor
    x: Tensor
    boxes: Tensor
    supports: Tensor
    shapes: Tensor
    patches: Tensor
    guided: Tensor | None
    means: Tensor
    sources: list[str]
    record: Record

    def listing(self) -> list[dict]:
        """Every patch: channel, rank, image, size, image shape, unit (y, x), box, support and value."""
        rows = []
        for r, channel in enumerate(self.channels):
            for k in range(self.values.shape[1]):
                if self.source[r, k] < 0:
                    continue
                rows.append({"channel": channel, "rank": k + 1, "image": self.sources[int(self.source[r, k])],
                             "size": int(self.size[r, k]), "image_size": self.shapes[r, k].tolist(),
                             "y": int(self.y[r, k]), "x": int(self.x[r, k]), "box": self.boxes[r, k].tolist(),
                             "support": self.supports[r, k].tolist(), "value": round(float(self.values[r, k]), 6)})
        return rows

    @property
    def image(self) -> Tensor:
        """Every patch (each followed by its guided map, if any) tiled into one (1, 3, H, W) picture, a row per
        channel; empty cells are mid-grey."""
        tiles = self.patches if self.guided is None else torch.stack([self.patches, self.guided], dim=2).flatten(1, 2)
        rows, cols, _, p, q = tiles.shape
        return tiles.permute(2, 0, 3, 1, 4).reshape(1, 3, rows * p, cols * q)

    def save_arrays(self, path: str | Path) -> Path:
        """Every array (and the channel list) as one compressed .npz, atomically."""
        arrays = {"channels": np.array(self.channels), "values": self.values.numpy(), "source": self.source.numpy(),
                  "size": self.size.numpy(), "y": self.y.numpy(), "x": self.x.numpy(), "boxes": self.boxes.numpy(),
                  "supports": self.supports.numpy(), "patches": self.patches.numpy(), "means": self.means.numpy()}
        if self.guided is not None:
            arrays["guided"] = self.guided.numpy()
        return save_arrays(path, arrays)

    def save(self, path: str | Path) -> Path:
        """Write the tiled ``image`` as PNG, its JSON sidecar (the record and every patch's listing) and the
        arrays as .npz beside it, each atomically; returns the PNG path."""
        png = save_png(self.image, Path(path).with_suffix(".png"))
        text = json.dumps({**json.loads(self.record.to_json()), "patches": self.listing()}, indent=2)
        atomic_write(sidecar_path(png), lambda tmp: tmp.write_text(text + "\n"))
        self.save_arrays(png)
        return png


def patches(
    model: HookedModel,
    images: Sequence[ImageSource] | None = None,
    *,
    layer: str = "relu4_3",
    channels: str | int | Sequence[int] = "0-15",
    top: int = 9,
    sizes: Sequence[int] = SIZES,
    batch: int = 8,
    guided: bool = False,
    seed: int = 0,
    callback: Callable[[Tick], None] | None = None,
) -> Patches:
    """The ``top`` image patches that activate each chosen channel of ``layer`` most, over ``images``
    (bundled names, files, folders searched recursively, PIL images or tensors; None: every bundled
    image), each resized to every long side in ``sizes``. ``channels``: see ``cnnviz.analyzers.channels``.
    ``guided`` adds each patch's guided-backprop map of its neuron. ``callback`` gets a ``Tick`` per batch run."""
    start = time.perf_counter()
    sources = image_set(images)
    choice = parse_channels(channels)
    _check(top, sizes, batch)
    name = model.table.get(layer).name
    channels_in, dtype = _check_layer(model, name, sources[0], min(sizes), choice)
    pool, means, shapes = _scan(model, name, sources, sizes, top, batch, channels_in, dtype, callback, start)
    chosen = choice.choose(means, seed)
    picks = [candidates.select(pool, c, top, shapes, model, name, len(sizes)) for c in chosen]
    result = candidates.gather(model, name, sources, sizes, chosen, picks, top, guided, dtype)
    rf = field(model, name, (min(sizes), min(sizes)))
    names = [source_name(s) for s in sources]
    params = {"images": len(sources), "sources": names[:20] + (["..."] if len(names) > 20 else []),
              "sizes": list(sizes), "top": top, "channels_spec": choice.text, "channels": chosen, "batch": batch,
              "guided": guided, "receptive_field": rf.size[0] if rf.size[0] == rf.size[1] else list(rf.size),
              "stride": rf.stride[0] if rf.stride[0] == rf.stride[1] else list(rf.stride),
              "nms": "local maxima within half a receptive field; one spot per image across sizes",
              "border": f"grey {candidates.BORDER}"}
    record = model_record("patches", model, [name], params, seed=seed, seconds=round(time.perf_counter() - start, 3))
    return Patches(layer=name, channels=chosen, means=means, sources=names, record=record, **result)


def _check(top: int, sizes: Sequence[int], batch: int) -> None:
    if top < 1:
        raise CnnvizError(f"--top must be at least 1, got {top}")
    if batch < 1:
        raise CnnvizError(f"--batch must be at least 1, got {batch}")
    if not sizes:
        raise CnnvizError("--sizes needs at least one long side")
    for size in sizes:
        check_size(size, "--sizes")


def _check_layer(model: HookedModel, layer: str, source: ImageSource, side: int, choice: Channels) -> tuple[int, torch.dtype]:
    """The layer's channel count and dtype, from the first image at the smallest size (before any long
    work): the layer must keep a spatial map and have the chosen channels."""
    with torch.no_grad():
        act = model(resize(as_image(source, None, model.device), side), [layer])[layer]
    if act.dim() != 4:
        raise CnnvizError(f"patches need a layer with a spatial map; {layer} has shape {tuple(act.shape)}")
    choice.check(act.shape[1], layer)
    return act.shape[1], act.dtype


def _scan(
    model: HookedModel, layer: str, sources: list[ImageSource], sizes: Sequence[int], top: int, batch: int,
    channels: int, dtype: torch.dtype, callback: Callable[[Tick], None] | None, start: float,
) -> tuple[candidates.Pool, Tensor, dict[int, tuple[int, int]]]:
    """Stream the set through the network once: the candidate pool, every channel's mean activation and
    each item's (image x size) shape."""
    pool = candidates.Pool(channels, top * len(sizes) * POOL_PER_SIZE, dtype)
    total = torch.zeros(channels, dtype=dtype)
    shapes: dict[int, tuple[int, int]] = {}
    waiting: dict[int, int] = {}  # images read but not yet run at every size: their sizes to go
    done = 0

    def read() -> Iterator[tuple[int, Tensor]]:
        for index, source in enumerate(sources):
            image = as_image(source, None, model.device)
            waiting[index] = len(sizes)
            for s, size in enumerate(sizes):
                item = index * len(sizes) + s
                scaled = resize(image, size)
                shapes[item] = tuple(scaled.shape[-2:])
                yield item, scaled

    for items, x in candidates.batches(read(), batch):
        with torch.no_grad():
            act = model(x, [layer])[layer]
        total += act.mean(dim=(2, 3)).sum(dim=0).cpu()
        values, ys, xs = candidates.peaks(act, candidates.nms_radius(field(model, layer, tuple(x.shape[-2:]))), top * POOL_PER_SIZE)
        item = torch.tensor(items, device=act.device).view(-1, 1, 1).expand_as(ys)
        where = torch.stack([item, ys, xs], dim=-1)
        pool.add(values.transpose(0, 1).flatten(1).cpu(), where.transpose(0, 1).flatten(1, 2).cpu())
        for index in (i // len(sizes) for i in items):
            waiting[index] -= 1
            if not waiting[index]:
                del waiting[index]
                done += 1
        if callback is not None:
            callback(Tick(done, len(sources), time.perf_counter() - start))
    return pool, total / (len(sources) * len(sizes)), shapes


