"""Patches over a folder of generated images: images per second, and peak memory after 100 images and
after all of them (1,000 by default). The scan keeps only candidates, so the two peaks should agree.

    python benchmarks/patches_memory.py [--count 1000] [--layer relu4_3] [--scales 128] [--device cpu]

The images (random rectangles and ellipses, 128-256 px, square, 4:3 or 3:4, as JPEG in ten subfolders)
are made in a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from cnnviz.analyzers.patches import patches
from cnnviz.core.hooked import load_model
from cnnviz.core.progress import Tick

from machine import describe, peak_mib

CHECKPOINT = 100


def generate(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` pictures of random shapes in ten subfolders of ``folder``."""
    rng = random.Random(seed)
    for i in range(count):
        side = rng.randint(128, 256)
        width, height = rng.choice([(side, side), (side, side * 3 // 4), (side * 3 // 4, side)])
        image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 12)):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            box = (x0, y0, x0 + rng.randint(8, width // 2), y0 + rng.randint(8, height // 2))
            colour = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        path = folder / f"set{i % 10}" / f"shape{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        image.save(path, quality=90)


def rss_mib() -> float:
    """Resident memory now (Linux): loading the weights may set a peak that the scan never reaches."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--layer", default="relu4_3")
    parser.add_argument("--scales", default="128")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    scales = tuple(int(s) for s in args.scales.split(","))
    print(describe())
    model = load_model(args.model, device=args.device)
    with tempfile.TemporaryDirectory(prefix="cnnviz-patches-") as folder:
        start = time.perf_counter()
        generate(Path(folder), args.count)
        print(f"generated {args.count} images in {time.perf_counter() - start:.2f} s")
        print(f"with the model loaded: peak RSS {peak_mib(model.device):.0f} MiB, RSS now {rss_mib():.0f} MiB")
        marks: dict[int, tuple[float, float, float]] = {}

        def note(tick: Tick) -> None:
            if tick.images >= CHECKPOINT and CHECKPOINT not in marks:
                marks[CHECKPOINT] = (tick.seconds, peak_mib(model.device), rss_mib())

        start = time.perf_counter()
        result = patches(model, [folder], layer=args.layer, channels="top:16", top=9, scales=scales, batch=args.batch,
                         callback=note)
        seconds = time.perf_counter() - start
        marks[args.count] = (seconds, peak_mib(model.device), rss_mib())
    print(f"{args.model} {args.layer}, scales {list(scales)}, batch {args.batch}, device {model.device}:")
    for count, (elapsed, peak, now) in sorted(marks.items()):
        print(f"  after {count:5d} images: {count / elapsed:6.1f} images/s, peak RSS {peak:.0f} MiB, RSS now {now:.0f} MiB")
    print(f"  top channels {result.channels[:8]}..., best value {float(result.values[0, 0]):.3g}")


if __name__ == "__main__":
    main()
