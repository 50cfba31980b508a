"""Feature visualization against lucent 0.1.8 (Lucid's PyTorch port): our Lucid recipe (Fourier spectrum,
decorrelated colours, standard transforms) on EfficientNet-Lite0 at 224 px, one change at a time from the
previous recipe to today's default, beside lucent's standard recipe (256 Adam steps at lr 0.05).

Per row and class: the target-class probability of the final image averaged over 16 random views the
optimization never saw (zoom 0.9-1.1, turn ±10°, shift ±16 px), the share of spectral energy above half
the Nyquist frequency (speckle), and seconds per class. The four classes the recipe was tuned on come
first; the default recipe and lucent are then run on four classes it was not tuned on. Prints the rows,
writes benchmarks/FEATUREVIS.md and the pictures (benchmarks/featurevis.jpg, featurevis_unseen.jpg).

    python benchmarks/featurevis.py [--size 224] [--device cpu]

lucent runs in a subprocess from LUCENT_PATH (default ~/.cache/cnnviz/lucent-0.1.8), installed apart
from the project because it pins old packages:

    pip install --target ~/.cache/cnnviz/lucent-0.1.8 --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator
    pip install --target ~/.cache/cnnviz/lucent-0.1.8 ipython
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import torch

from cnnviz.analyzers.ascent import DEFAULT_ITERS, Recipe, ascend_many, default_settings, target_for
from cnnviz.core.hooked import HookedModel, load_model, with_head
from cnnviz.core.images import load_image, save_png, to_pil
from cnnviz.optim.settings import Transform
from cnnviz.optvis import color
from cnnviz.optvis.transforms import Jitter, Pad, RandomRotate, RandomScale, standard

from machine import describe
from metrics import high_frequency_share, robust_probability

HERE = Path(__file__).resolve().parent
TUNED = ("espresso", "tabby", "goldfish", "volcano")
UNSEEN = ("pineapple", "jellyfish", "cup", "beacon")
LUCENT = Path(os.environ.get("LUCENT_PATH", Path.home() / ".cache" / "cnnviz" / "lucent-0.1.8"))
LUCENT_ROW = "lucent 0.1.8, 256 steps"
LUCENT_STEPS = 256


def symmetric_root() -> torch.Tensor:
    """The previous colour matrix: the symmetric square root of the same covariance, scaled alike."""
    values, vectors = torch.linalg.eigh(color.COLOR_SQRT @ color.COLOR_SQRT.T)
    root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    return root / root.norm(dim=0).max()


PREVIOUS_TRANSFORMS = (Pad(12), Jitter(8), RandomScale(0.9, 1.1), RandomRotate(10.0), Jitter(4))
"""The previous standard transforms: wrapping jitter, grey corners."""


@dataclass(frozen=True)
class Variant:
    """One row: the colour matrix (None: today's), the transforms, the precision and the steps."""

    name: str
    colour: torch.Tensor | None
    transforms: tuple[Transform, ...]
    precision: str
    iters: int


def variants() -> list[Variant]:
    """From the previous recipe to today's default, one change per row."""
    previous = Variant("previous: symmetric colour root, wrapping jitter, grey turns, fp32, 256 steps", symmetric_root(),
                       PREVIOUS_TRANSFORMS, "fp32", 256)
    colour = replace(previous, name="+ colour: one parameter per principal axis (U·√S)", colour=None)
    shifts = replace(colour, name="+ transforms: Lucid's shifts and black turns", transforms=standard())
    fast = replace(shifts, name="+ bf16 where native", precision="auto")
    steps = replace(fast, name=f"+ {DEFAULT_ITERS} steps: today's default", iters=DEFAULT_ITERS)
    return [previous, colour, shifts, fast, steps]


def run(variant: Variant, classes: tuple[str, ...], size: int, device: str, scorer: HookedModel) -> dict:
    """The four classes as one batch under ``variant``: probabilities, high-frequency shares, seconds, images."""
    model = load_model(with_head("efficientnet_lite0", None), device=device, precision=variant.precision)
    goals = [target_for(model, size, name) for name in classes]
    settings = default_settings(iters=variant.iters, regularizers=(), transforms=variant.transforms)
    colours = mock.patch.object(color, "COLOR_SQRT", variant.colour) if variant.colour is not None else contextlib.nullcontext()
    with colours:
        start = time.perf_counter()
        outputs = ascend_many(model, goals, size=size, recipe=Recipe("fft", True, 0.0), settings=settings)
        seconds = time.perf_counter() - start
    return _scored(scorer, [target_for(scorer, size, name) for name in classes], [o.image for o in outputs], seconds / len(goals))


def _scored(model: HookedModel, goals: list, images: list[torch.Tensor], seconds: float) -> dict:
    return {"probability": [robust_probability(model, g, image) for g, image in zip(goals, images)],
            "high_frequency": [high_frequency_share(image) for image in images], "seconds_per_class": seconds, "images": images}


def lucent_images(classes: tuple[str, ...], size: int, device: str, folder: Path) -> float | None:
    """Run lucent's standard recipe on each class in a subprocess; its images go to ``folder``; the
    mean seconds per class, or None where lucent is not installed."""
    if not (LUCENT / "lucent").is_dir():
        print(f"lucent not found in {LUCENT}: its row is left out (see this script's docstring to install it)")
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LUCENT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, __file__, "--lucent-worker", str(folder), "--classes", ",".join(classes), "--size", str(size),
            "--device", device]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"lucent failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_class"]


def lucent_worker(folder: Path, classes: list[str], size: int, device: str) -> None:
    """(In lucent's subprocess.) lucent's render_vis with fft + decorrelate + standard transforms on our
    network, normalised inside the module since lucent's preprocessing assumes ImageNet statistics."""
    from lucent.optvis import objectives, param, render, transform

    hooked = load_model(with_head("efficientnet_lite0", None), device=device)

    class Normalised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = hooked.net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(hooked.normalize(x))

    model = Normalised().to(device).eval()
    seconds = []
    for name in classes:
        index = hooked.classes.index(name)
        torch.manual_seed(0)
        start = time.perf_counter()
        images = render.render_vis(model, objectives.channel("labels", index), lambda: param.image(size, fft=True, decorrelate=True),
                                   transforms=transform.standard_transforms, thresholds=(LUCENT_STEPS,), show_image=False,
                                   progress=False, preprocess=False)
        seconds.append(time.perf_counter() - start)
        save_png(torch.from_numpy(images[-1]).permute(0, 3, 1, 2), folder / f"{name}.png")
    print(json.dumps({"seconds_per_class": sum(seconds) / len(seconds)}))


def _line(name: str, row: dict) -> str:
    probs = " ".join(f"{p:.3f}" for p in row["probability"])
    hf = " ".join(f"{h:.3f}" for h in row["high_frequency"])
    n = len(row["probability"])
    return f"{name[:60]:60s} p {probs} | mean {sum(row['probability']) / n:.3f} | hf {hf} | {row['seconds_per_class']:.1f} s/class"


def _table(rows: dict[str, dict], classes: tuple[str, ...]) -> list[str]:
    lucent = rows.get(LUCENT_ROW)
    head = "| row | " + " | ".join(f"p({c})" for c in classes) + " | mean p | high-freq share (mean) | s per class | × lucent's time |"
    lines = [head, "|" + "---|" * (len(classes) + 5)]
    for name, row in rows.items():
        probs = " | ".join(f"{p:.3f}" for p in row["probability"])
        hf = sum(row["high_frequency"]) / len(row["high_frequency"])
        ratio = f"{row['seconds_per_class'] / lucent['seconds_per_class']:.2f}" if lucent else "–"
        lines.append(f"| {name} | {probs} | {sum(row['probability']) / len(classes):.3f} | {hf:.3f} | "
                     f"{row['seconds_per_class']:.1f} | {ratio} |")
    return lines


def report(tuned: dict[str, dict], unseen: dict[str, dict], size: int, device: str) -> str:
    return "\n".join([
        "# Feature visualization: as clean as lucent's, and faster", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {describe(device)}", "",
        f"EfficientNet-Lite0 (bundled, ImageNet), {size} px, Adam at lr 0.05 on a 1/f-scaled spectrum with decorrelated "
        "colours under the standard transforms. p: the class's softmax probability averaged over 16 random views not seen "
        "in the optimization (zoom 0.9–1.1, turn ±10°, shift ±16 px). High-frequency share: spectral energy above half "
        "the Nyquist frequency (photographs: 0.02–0.05). Our rows run the four classes as one batch (seconds per class = "
        "the batch's time / 4), as `cnnviz ascent --class a,b,c,d` does; lucent runs one class at a time. Each row of "
        "the first table changes one thing from the row above it.", "",
        "    python benchmarks/featurevis.py", "",
        "## The classes the recipe was tuned on", "", *_table(tuned, TUNED), "",
        f"Rows of the picture, top to bottom: {', '.join(tuned)}; columns: {', '.join(TUNED)}.", "",
        "![every row's images](featurevis.jpg)", "",
        "## Classes it was not tuned on", "", *_table(unseen, UNSEEN), "",
        f"Top row lucent, bottom row ours; columns: {', '.join(UNSEEN)}.", "",
        "![lucent above ours](featurevis_unseen.jpg)", "",
    ])


def _lucent_row(classes: tuple[str, ...], size: int, device: str, scorer: HookedModel) -> dict[str, dict]:
    folder = HERE / ".featurevis-lucent"
    folder.mkdir(exist_ok=True)
    seconds = lucent_images(classes, size, device, folder)
    if seconds is None:
        return {}
    images = [load_image(folder / f"{name}.png").to(scorer.device) for name in classes]
    row = _scored(scorer, [target_for(scorer, size, name) for name in classes], images, seconds)
    print(_line(LUCENT_ROW, row), flush=True)
    return {LUCENT_ROW: row}


def _picture(rows: dict[str, dict], path: Path) -> None:
    picture = torch.cat([torch.cat(row["images"], dim=3) for row in rows.values()], dim=2)
    to_pil(picture.cpu()).save(path, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", help=argparse.SUPPRESS)
    parser.add_argument("--lucent-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lucent_worker:
        lucent_worker(args.lucent_worker, args.classes.split(","), args.size, args.device)
        return
    print(describe(args.device))
    scorer = load_model(with_head("efficientnet_lite0", None), device=args.device, precision="fp32")
    tuned = _lucent_row(TUNED, args.size, args.device, scorer)
    for variant in variants():
        tuned[variant.name] = run(variant, TUNED, args.size, args.device, scorer)
        print(_line(variant.name, tuned[variant.name]), flush=True)
    unseen = _lucent_row(UNSEEN, args.size, args.device, scorer)
    default = variants()[-1]
    unseen[default.name] = run(default, UNSEEN, args.size, args.device, scorer)
    print(_line(default.name, unseen[default.name]), flush=True)
    _picture(tuned, HERE / "featurevis.jpg")
    _picture(unseen, HERE / "featurevis_unseen.jpg")
    (HERE / "FEATUREVIS.md").write_text(report(tuned, unseen, args.size, args.device))
    print(f"wrote {HERE / 'FEATUREVIS.md'} and the pictures")


if __name__ == "__main__":
    main()
