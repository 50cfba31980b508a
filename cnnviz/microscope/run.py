"""``microscope``: every chosen unit of some layers, over an image set, as tables, pictures and a site.

The run goes in stages, each resumable: scan the set shard by shard (``scan``), merge the shards (means,
pools), choose the units, draw their feature visualizations (``visualize``), re-score the final candidates
in fp32 and crop the top-k patches with their guided-backprop maps (``results``), count the histograms,
write the tables (``store``) and the site (``site``). An engine (``engines``) runs the heavy items.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnviz import __version__
from cnnviz.analyzers.channels import Channels, parse_channels
from cnnviz.core.hooked import HookedModel
from cnnviz.core.images import check_size, resize
from cnnviz.core.progress import Stage
from cnnviz.errors import CnnvizError
from cnnviz.microscope import results, store
from cnnviz.microscope.classes import class_weights
from cnnviz.microscope.engines import engine as make_engine
from cnnviz.microscope.listing import SHARD, Shard, check_sources, default_sources, shards, walk
from cnnviz.microscope.scan import ScanSpec, ShardScan, read
from cnnviz.microscope.site import build_site
from cnnviz.microscope.visualize import VisSpec, visualize

CHUNK = 8
"""Units per feature-visualization or crop work item; images per re-scoring item."""
TOP_CLASSES = 5


@dataclass
class Plan:
    """A run's settings, checked, and what it found so far."""

    model: HookedModel
    sources: list[Path]
    named: list[str]
    layers: list[str]
    units: Channels
    scan: ScanSpec
    vis: VisSpec
    guided: bool
    out: Path
    command: str
    callback: Callable[[Stage], None] | None
    started: float = field(default_factory=time.perf_counter)

    def tell(self, stage: str, done: int, total: int | None) -> None:
        if self.callback is not None:
            self.callback(Stage(stage, done, total, time.perf_counter() - self.started))

    def params(self) -> dict:
        """Everything that changes the results (the key ``--resume`` checks)."""
        return {"version": __version__, "model": self.model.name, "weights": self.model.weights.id,
                "precision": self.model.precision, "images": self.named, "layers": self.layers,
                "units": self.units.text, "sizes": list(self.scan.sizes), "top": self.scan.top, "batch": self.scan.batch,
                "shard": SHARD, "guided": self.guided, "fv_size": self.vis.size, "fv_iters": self.vis.iters,
                "copies": self.vis.copies, "seed": self.vis.seed}


def microscope(
    model: HookedModel,
    images: Sequence[str | Path] | None = None,
    *,
    layers: str | Sequence[str] = "conv4_3",
    units: str | int | Sequence[int] = "0-15",
    out: str | Path = "microscope",
    top: int = 8,
    sizes: Sequence[int] = (224,),
    batch: int = 8,
    guided: bool = True,
    fv_size: int = 128,
    fv_iters: int = 128,
    copies: int = 1,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    seed: int = 0,
    command: str | None = None,
    callback: Callable[[Stage], None] | None = None,
) -> Path:
    """Scan ``images`` (folders, recursively; files; bundled names; None: every bundled image) through
    ``layers`` and write, for each unit chosen by ``units`` (``all``, ``0-63``, ``top:N``, ``random:N``), its
    feature visualization(s), its ``top`` dataset examples with their guided-backprop maps, the histogram of its
    per-image maxima, its mean and the classes it raises, as Parquet tables, WebP pictures and a static site
    in ``out``. ``engine`` ``ray`` runs the work on a Ray cluster (``address``; default: a local one). Returns
    the site's index.html."""
    plan = _plan(model, images, layers, units, out, top, sizes, batch, guided, fv_size, fv_iters, copies, seed, command,
                 callback)
    key = store.run_key(plan.params())
    store.check_resume(plan.out, key, resume)
    runner = make_engine(engine, model, plan.scan, address, workers)
    try:
        manifest = {"key": key, "version": __version__, "command": plan.command, "params": plan.params(), "finished": False}
        store.write_json(plan.out / store.MANIFEST, manifest)
        count, skipped = _scan(plan, runner, resume)
        totals = results.merge(_stored_scans(plan.out, count))
        if not totals:
            raise CnnvizError("no image of the set could be read: " + "; ".join(reason for _, reason in skipped[:3]))
        chosen = {layer: plan.units.choose(totals[layer].means, seed) for layer in plan.layers}
        _visualize(plan, runner, chosen, resume)
        picks = {layer: _examples(plan, runner, layer, totals[layer], chosen[layer]) for layer in plan.layers}
        counts = results.histograms(_stored_scans(plan.out, count), totals)
        for layer in plan.layers:
            _write_units(plan, layer, totals[layer], counts[layer], chosen[layer])
        manifest |= {"finished": True, "seconds": round(time.perf_counter() - plan.started, 1),
                     "images": totals[plan.layers[0]].images, "skipped": skipped, "shards": count,
                     "units": {layer: chosen[layer] for layer in plan.layers},
                     "examples": {layer: len(p) for layer, p in picks.items()}}
        store.write_json(plan.out / store.MANIFEST, manifest)
        return build_site(plan.out)
    finally:
        runner.close()


def _plan(model: HookedModel, images: Sequence[str | Path] | None, layers: str | Sequence[str], units: str | int | Sequence[int],
          out: str | Path, top: int, sizes: Sequence[int], batch: int, guided: bool, fv_size: int, fv_iters: int, copies: int,
          seed: int, command: str | None, callback: Callable[[Stage], None] | None) -> Plan:
    """Check every setting before any long work: the image set, the layers (each with a spatial map and the
    chosen units), the sizes and counts."""
    sources = check_sources([str(s) for s in images] if images is not None else default_sources())
    named = [str(s) for s in images] if images is not None else ["every bundled image"]
    names = model.table.parse(layers) if isinstance(layers, str) else [model.table.get(name).name for name in layers]
    choice = parse_channels(units, "--units")
    for what, value in (("--top", top), ("--batch", batch), ("--fv-iters", fv_iters), ("--copies", copies)):
        if value < 1:
            raise CnnvizError(f"{what} must be at least 1, got {value}")
    if not sizes:
        raise CnnvizError("--sizes needs at least one long side")
    for size in (*sizes, fv_size):
        check_size(size, "--sizes" if size in sizes else "--fv-size")
    _check_layers(model, names, choice, min(sizes), next(walk(sources)))
    scan = ScanSpec(tuple(names), tuple(sizes), top, batch)
    shown = command or f"cnnviz.microscope(model={model.name!r}, layers={','.join(names)!r}, units={choice.text!r})"
    return Plan(model, sources, named, names, choice, scan, VisSpec(fv_size, fv_iters, copies, seed), guided, Path(out), shown, callback)


def _check_layers(model: HookedModel, layers: list[str], choice: Channels, side: int, first: str) -> None:
    try:
        probe = resize(read(first, model.device), side)
    except CnnvizError:
        probe = torch.full((1, 3, side, side), 0.5, device=model.device)
    with torch.no_grad():
        acts = model(probe, layers)
    for layer in layers:
        if acts[layer].dim() != 4:
            raise CnnvizError(f"the microscope needs layers with channels and a spatial map; {layer} has shape "
                              f"{tuple(acts[layer].shape)}")
        choice.check(acts[layer].shape[1], layer)


def _stored_scans(out: Path, count: int) -> Iterator[ShardScan]:
    for index in range(count):
        yield ShardScan.from_bytes(store.shard_file(out, index).read_bytes())


def _scan(plan: Plan, runner, resume: bool) -> tuple[int, list[tuple[str, str]]]:
    """Scan every shard not already stored (with the same paths) and store it; returns the number of shards
    and the images skipped as unreadable."""
    count, done = 0, 0
    skipped: list[tuple[str, str]] = []

    def todo() -> Iterator[Shard]:
        nonlocal count, done
        for shard in shards(walk(plan.sources), SHARD):
            count += 1
            stored = _stored(plan.out, shard) if resume else None
            if stored is None:
                yield shard
            else:
                skipped.extend(stored)
                done += len(shard.paths)
                plan.tell("scan", done, None)

    for scan in runner.scan(todo()):
        store.write_bytes(store.shard_file(plan.out, scan.shard.index), scan.to_bytes())
        skipped.extend(scan.skipped)
        done += len(scan.shard.paths)
        plan.tell("scan", done, None)
    return count, sorted(skipped)


def _stored(out: Path, shard: Shard) -> list[tuple[str, str]] | None:
    """The images a stored scan of ``shard`` skipped, or None where no readable scan of the same paths is stored."""
    path = store.shard_file(out, shard.index)
    if not path.is_file():
        return None
    try:
        stored, skipped = ShardScan.header(path)
    except (OSError, ValueError, KeyError):
        return None
    return skipped if stored.key == shard.key else None


def _visualize(plan: Plan, runner, chosen: dict[str, list[int]], resume: bool) -> None:
    """Draw every chosen unit not drawn yet, ``CHUNK`` units per work item, storing each as it comes."""
    todo = [(layer, unit) for layer in plan.layers for unit in chosen[layer]
            if not (resume and store.unit_file(plan.out, layer, unit).is_file())]
    items = [(layer, [u for _, u in group], plan.vis) for layer in plan.layers
             for group in _chunks([t for t in todo if t[0] == layer], CHUNK)]
    total = sum(map(len, chosen.values()))
    done = total - len(todo)
    plan.tell("feature visualization", done, total)
    for (layer, _units, _vis), drawn in runner.map(_draw, items):
        for unit, pictures, scores in drawn:
            names = [store.save_webp(p, plan.out / layer / "img" / store.picture(unit, "fv", k)).name for k, p in enumerate(pictures)]
            store.write_json(store.unit_file(plan.out, layer, unit), {"pictures": names, "scores": scores})
            done += 1
            plan.tell("feature visualization", done, total)


def _draw(model: HookedModel, item: tuple[str, list[int], VisSpec]):
    layer, units, vis = item
    return visualize(model, layer, units, vis)


def _rescore(model: HookedModel, item: tuple[ScanSpec, dict[str, list[int]], list[tuple[int, str]]]):
    spec, units, images = item
    return results.rescore(model, spec, units, images)


def _crop(model: HookedModel, item: tuple[str, list[int], list, dict[int, str], ScanSpec, bool]):
    return results.crops(model, *item)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _examples(plan: Plan, runner, layer: str, totals: results.LayerTotals, units: list[int]) -> list[dict]:
    """Re-score a layer's final candidates in fp32, pick each unit's top-k, crop them, store the pictures
    and the examples table; returns its rows."""
    n = len(plan.scan.sizes)
    ids = sorted({int(item) // n for unit in units for item, value in zip(totals.pool.where[unit, :, 0].tolist(),
                                                                          totals.pool.values[unit].tolist()) if item >= 0 and value > 0})
    paths = _paths(plan.out, ids)
    wanted = {layer: units}
    items = [(plan.scan, wanted, [(i, paths[i]) for i in group]) for group in _chunks(ids, CHUNK)]
    found = []
    for done, (_, part) in enumerate(runner.map(_rescore, items), 1):
        found.extend(part)
        plan.tell(f"re-score {layer}", done, len(items))
    pools, shapes = results.exact_pools(found, wanted, plan.scan)
    picks = results.examples(plan.model, layer, pools[layer], units, shapes, plan.scan)
    rows = []
    crop_items = [(layer, [units[r] for r in group], [picks[r] for r in group], paths, plan.scan, plan.guided)
                  for group in _chunks(list(range(len(units))), CHUNK)]
    for done, (item, arrays) in enumerate(runner.map(_crop, crop_items), 1):
        rows += _save_crops(plan, layer, item[1], arrays, paths)
        plan.tell(f"patches {layer}", done, len(crop_items))
    order = {unit: i for i, unit in enumerate(units)}
    rows.sort(key=lambda r: (order[r["unit"]], r["rank"]))
    store.write_table(plan.out / layer / "examples.parquet", rows, store.EXAMPLES)
    return rows


def _paths(out: Path, ids: list[int]) -> dict[int, str]:
    """The paths of set-wide image ids, read from the shard files (a shard holds ``SHARD`` consecutive ids)."""
    paths: dict[int, str] = {}
    for index in sorted({i // SHARD for i in ids}):
        shard, _ = ShardScan.header(store.shard_file(out, index))
        paths |= {i: shard.paths[i - shard.first] for i in ids if i // SHARD == index}
    return paths


def _save_crops(plan: Plan, layer: str, units: list[int], arrays: dict, paths: dict[int, str]) -> list[dict]:
    rows = []
    folder = plan.out / layer / "img"
    for r, unit in enumerate(units):
        for k in range(arrays["values"].shape[1]):
            source = int(arrays["source"][r, k])
            if source < 0:
                continue
            store.save_webp(arrays["patches"][r, k], folder / store.picture(unit, "p", k + 1))
            if "guided" in arrays:
                store.save_webp(arrays["guided"][r, k], folder / store.picture(unit, "g", k + 1))
            rows.append({"unit": unit, "rank": k + 1, "image": paths[source], "size": int(arrays["size"][r, k]),
                         "y": int(arrays["y"][r, k]), "x": int(arrays["x"][r, k]),
                         "box": [int(v) for v in arrays["boxes"][r, k]], "value": float(arrays["values"][r, k])})
    return rows


def _write_units(plan: Plan, layer: str, totals: results.LayerTotals, counts: torch.Tensor, units: list[int]) -> None:
    weights = class_weights(plan.model, layer)
    bounds = results.edges(totals)
    rows = []
    for unit in units:
        drawn = store.unit_file(plan.out, layer, unit)
        vis = json.loads(drawn.read_text()) if drawn.is_file() else {"scores": []}
        classes, strengths = [], []
        if weights is not None:
            best = weights[:, unit].topk(TOP_CLASSES)
            classes = [plan.model.classes[i] for i in best.indices.tolist()]
            strengths = best.values.tolist()
        rows.append({"unit": unit, "mean": float(totals.means[unit]), "max": float(totals.high[unit]), "images": totals.images,
                     "histogram": counts[unit].tolist(), "edges": bounds[unit].tolist(), "classes": classes,
                     "class_weights": strengths, "fv_score": vis["scores"]})
    store.write_table(plan.out / layer / "units.parquet", rows, store.UNITS)
