"""The microscope at scale: the scan's images per second and feature visualization's units per minute, each
beside its floor measured in the same run, and the resident memory of a whole local run over 1,000 and
10,000 generated images (flat when the scan streams).

    python benchmarks/microscope.py [--what scan,fv,memory] [--device cpu] [--count 10000]

Floors: the scan's is the network's forward pass to the layer (no gradients) over the same images, already
read, resized and batched, in the same precision; feature visualization's is one forward + input-gradient backward of a ready batch of
the same units at the size the transforms make, in the same precision. Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from patches_memory import generate, rss_mib

from cnnviz.analyzers.candidates import batches
from cnnviz.core.hooked import load_model
from cnnviz.core.images import load_image, resize
from cnnviz.core.progress import Stage
from cnnviz.microscope.listing import shards, walk
from cnnviz.microscope.run import microscope
from cnnviz.microscope.scan import ScanSpec, scan_shard
from cnnviz.microscope.visualize import VisSpec, visualize

from machine import describe, sync

SCAN_CASES = (("vgg16", "conv4_3", 224, 8), ("vgg16", "conv5_3", 224, 8), ("efficientnet_lite0", "head", 224, 8))
FV_CASES = (("vgg16", "conv4_3", 128, 8), ("efficientnet_lite0", "head", 128, 8))
FV_ITERS = 128  # the CLI default: the redirected gradient of the first steps weighs as in a real run


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scan_rows(device: str, folder: Path, count: int) -> list[str]:
    rows = ["| model, layer | size | batch | precision | scan, images/s | floor: forward to the layer, images/s | ratio |",
            "|---|---|---|---|---|---|---|"]
    for name, layer, size, batch in SCAN_CASES:
        model = load_model(name, device=device)
        fast = model.for_optimization()
        spec = ScanSpec((layer,), (size,), 8, batch)
        cut = list(shards(walk([folder]), batch * 8))[: max(1, count // (batch * 8))]
        scan_shard(model, spec, cut[0])
        start = time.perf_counter()
        for shard in cut:
            scan_shard(model, spec, shard)
        sync(model.device)
        images = sum(len(s.paths) for s in cut)
        rate = images / (time.perf_counter() - start)
        ready = [x for shard in cut for _, x in batches(((i, resize(load_image(p, None, model.device), size))
                                                          for i, p in enumerate(shard.paths)), batch)]

        def forward(ready=ready, fast=fast, layer=layer):
            with torch.no_grad():
                for x in ready:
                    fast(x, [layer])

        floor = images / _timed(forward, 2, model.device)
        rows.append(f"| {name} {layer} | {size} | {batch} | {fast.compute_precision} | {rate:.1f} | {floor:.1f} | "
                    f"{floor / rate:.2f}× |")
    return rows


def fv_rows(device: str) -> list[str]:
    rows = ["| model, layer | size | units per batch | precision | s/step | floor: forward + input-gradient backward | ratio "
            "| units/minute at 128 steps |", "|---|---|---|---|---|---|---|---|"]
    for name, layer, size, units in FV_CASES:
        model = load_model(name, device=device)
        fast = model.for_optimization()
        chosen = list(range(units))
        visualize(model, layer, chosen, VisSpec(size, 2, 1, 0))
        start = time.perf_counter()
        visualize(model, layer, chosen, VisSpec(size, FV_ITERS, 1, 0))
        sync(model.device)
        step = (time.perf_counter() - start) / FV_ITERS
        viewed = size + 2 * 12  # standard(): Pad(12), then shifts, a zoom of 0.9-1.1 and a turn keep about this size
        x = torch.rand(units, 3, viewed, viewed, device=model.device, requires_grad=True)

        def evaluation(x=x, fast=fast, layer=layer):
            out = fast(x, [layer])[layer]
            (grad,) = torch.autograd.grad(out.mean(dim=(2, 3)).sum(), x)

        floor = _timed(evaluation, 5, model.device)
        per_minute = 60 / (step * 128) * units
        rows.append(f"| {name} {layer} | {size} | {units} | {fast.compute_precision} | {step:.3f} s | {floor:.3f} s | "
                    f"{step / floor:.2f}× | {per_minute:.1f} |")
    return rows


def memory_rows(device: str, folder: Path, count: int) -> list[str]:
    model = load_model("vgg16", device=device)
    marks = {1000: None, count: None}

    def watch(stage: Stage) -> None:
        if stage.stage == "scan":
            for mark in marks:
                if marks[mark] is None and stage.done >= mark:
                    marks[mark] = (rss_mib(), stage.seconds)

    with tempfile.TemporaryDirectory(prefix="cnnviz-microscope-") as out:
        microscope(model, [folder], layers="conv3_3", units="0-3", out=out, top=4, sizes=(64,), batch=16, guided=False,
                   fv_size=32, fv_iters=1, callback=watch)
    rows = ["| images scanned | resident memory | seconds |", "|---|---|---|"]
    rows += [f"| {mark:,} | {rss:.0f} MiB | {seconds:.0f} |" for mark, (rss, seconds) in marks.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="scan,fv,memory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", type=int, default=10_000, help="images of the memory run")
    parser.add_argument("--scan-count", type=int, default=256, help="images of each scan case")
    args = parser.parse_args()
    print(f"_{describe(args.device)}; `python benchmarks/microscope.py {' '.join(sys.argv[1:])}`_\n")
    what = args.what.split(",")
    with tempfile.TemporaryDirectory(prefix="cnnviz-set-") as folder:
        needed = max(args.count if "memory" in what else 0, args.scan_count if "scan" in what else 0)
        generate(Path(folder), needed)
        if "scan" in what:
            print("\n".join(scan_rows(args.device, Path(folder), args.scan_count)) + "\n")
        if "fv" in what:
            print("\n".join(fv_rows(args.device)) + "\n")
        if "memory" in what:
            print("\n".join(memory_rows(args.device, Path(folder), args.count)) + "\n")


if __name__ == "__main__":
    main()
