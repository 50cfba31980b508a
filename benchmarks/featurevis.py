"""Feature visualization robustness: for four ImageNet classes on EfficientNet-Lite0, each row of the
parameterization grid (pixel+L2+blur, fft, fft+decorrelate, fft+decorrelate+transforms) against lucent
0.1.8 (Lucid's PyTorch port) with its standard recipe, at 224 px and 256 Adam steps.

Per row and class: the target-class probability of the final image averaged over 16 random views the
optimization never saw (zoom 0.9-1.1, turn ±10°, shift ±16 px), the share of spectral energy above half
the Nyquist frequency, and seconds per class. Prints a table, writes benchmarks/FEATUREVIS.md and a
picture of every row (benchmarks/featurevis.jpg).

    python benchmarks/featurevis.py [--size 224] [--iters 256] [--device cpu]

lucent runs in a subprocess from LUCENT_PATH (default ~/.cache/cnnviz/lucent-0.1.8), installed apart
from the project because it pins old packages:

    pip install --target ~/.cache/cnnviz/lucent-0.1.8 --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator
    pip install --target ~/.cache/cnnviz/lucent-0.1.8 ipython
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cnnviz.analyzers.ascent import ascend_many, default_settings, target_for
from cnnviz.core.hooked import HookedModel, load_model, with_head
from cnnviz.core.images import load_image, save_png, to_pil
from cnnviz.gallery.plan import PARAM_ROWS, param_row

from machine import describe
from metrics import high_frequency_share, robust_probability

HERE = Path(__file__).resolve().parent
CLASSES = ("espresso", "tabby", "goldfish", "volcano")
LUCENT = Path(os.environ.get("LUCENT_PATH", Path.home() / ".cache" / "cnnviz" / "lucent-0.1.8"))
LUCENT_ROW = "lucent 0.1.8"


def ours(model: HookedModel, size: int, iters: int) -> dict[str, dict]:
    """Each grid row, the four classes as one batch: probabilities, high-frequency shares, seconds, images."""
    goals = [target_for(model, size, name) for name in CLASSES]
    rows = {}
    for name in PARAM_ROWS:
        recipe, settings = param_row(name, default_settings(iters=iters))
        start = time.perf_counter()
        outputs = ascend_many(model, goals, size=size, recipe=recipe, settings=settings)
        seconds = time.perf_counter() - start
        rows[name] = _scored(model, goals, [o.image for o in outputs], seconds / len(goals))
        print(_line(name, rows[name]), flush=True)
    return rows


def _scored(model: HookedModel, goals: list, images: list[torch.Tensor], seconds: float) -> dict:
    return {"probability": [robust_probability(model, g, image) for g, image in zip(goals, images)],
            "high_frequency": [high_frequency_share(image) for image in images], "seconds_per_class": seconds, "images": images}


def lucent_images(size: int, iters: int, device: str, folder: Path) -> float | None:
    """Run lucent's standard recipe on each class in a subprocess; its images go to ``folder``; the
    mean seconds per class, or None where lucent is not installed."""
    if not (LUCENT / "lucent").is_dir():
        print(f"lucent not found in {LUCENT}: its row is left out (see this script's docstring to install it)")
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LUCENT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, __file__, "--lucent-worker", str(folder), "--size", str(size), "--iters", str(iters), "--device", device]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"lucent failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_class"]


def lucent_worker(folder: Path, size: int, iters: int, device: str) -> None:
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
    for name in CLASSES:
        index = hooked.classes.index(name)
        torch.manual_seed(0)
        start = time.perf_counter()
        images = render.render_vis(model, objectives.channel("labels", index), lambda: param.image(size, fft=True, decorrelate=True),
                                   transforms=transform.standard_transforms, thresholds=(iters,), show_image=False,
                                   progress=False, preprocess=False)
        seconds.append(time.perf_counter() - start)
        save_png(torch.from_numpy(images[-1]).permute(0, 3, 1, 2), folder / f"{name}.png")
    print(json.dumps({"seconds_per_class": sum(seconds) / len(seconds)}))


def _line(name: str, row: dict) -> str:
    probs = " ".join(f"{p:.3f}" for p in row["probability"])
    hf = " ".join(f"{h:.3f}" for h in row["high_frequency"])
    return f"{name:28s} p {probs} | mean {sum(row['probability']) / 4:.3f} | hf {hf} | {row['seconds_per_class']:.1f} s/class"


def report(rows: dict[str, dict], size: int, iters: int, device: str) -> str:
    head = "| row | " + " | ".join(f"p({c})" for c in CLASSES) + " | mean p | high-freq share (mean) | s per class |"
    lines = [head, "|" + "---|" * (len(CLASSES) + 4)]
    for name, row in rows.items():
        probs = " | ".join(f"{p:.3f}" for p in row["probability"])
        hf = sum(row["high_frequency"]) / len(row["high_frequency"])
        lines.append(f"| {name} | {probs} | {sum(row['probability']) / 4:.3f} | {hf:.3f} | {row['seconds_per_class']:.1f} |")
    return "\n".join([
        "# Feature visualization: robustness and speed", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {describe(device)}", "",
        f"EfficientNet-Lite0 (bundled, ImageNet), {size} px, {iters} Adam steps at lr 0.05. p: the class's softmax "
        "probability averaged over 16 random views not seen in the optimization (zoom 0.9–1.1, turn ±10°, shift ±16 px). "
        "High-frequency share: spectral energy above half the Nyquist frequency (photographs: 0.02–0.03). Our rows "
        "run the four classes as one batch (seconds per class = the batch's time / 4); lucent runs one class at a time.",
        "", "    python benchmarks/featurevis.py", "", *lines, "",
        f"Rows of the picture, top to bottom: {', '.join(rows)}; columns: {', '.join(CLASSES)}.", "",
        "![every row's images](featurevis.jpg)", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lucent-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lucent_worker:
        lucent_worker(args.lucent_worker, args.size, args.iters, args.device)
        return
    print(describe(args.device))
    model = load_model(with_head("efficientnet_lite0", None), device=args.device)
    folder = HERE / ".featurevis-lucent"
    folder.mkdir(exist_ok=True)
    seconds = lucent_images(args.size, args.iters, args.device, folder)
    rows = {}
    if seconds is not None:
        goals = [target_for(model, args.size, name) for name in CLASSES]
        images = [load_image(folder / f"{name}.png").to(model.device) for name in CLASSES]
        rows[LUCENT_ROW] = _scored(model, goals, images, seconds)
        print(_line(LUCENT_ROW, rows[LUCENT_ROW]), flush=True)
    rows.update(ours(model, args.size, args.iters))
    picture = torch.cat([torch.cat(row["images"], dim=3) for row in rows.values()], dim=2)
    to_pil(picture.cpu()).save(HERE / "featurevis.jpg", quality=88)
    (HERE / "FEATUREVIS.md").write_text(report(rows, args.size, args.iters, args.device))
    print(f"wrote {HERE / 'FEATUREVIS.md'} and {HERE / 'featurevis.jpg'}")


if __name__ == "__main__":
    main()
