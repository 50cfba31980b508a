"""Early exit: seconds per inversion evaluation (forward + backward) at relu2_2 vs relu5_3, 256 px.

    python benchmarks/early_exit.py
"""

from __future__ import annotations

import time

import torch

from cpu import describe

from cnnviz.analyzers.inversion import invert
from cnnviz.core.hooked import load_model
from cnnviz.optimize import Settings


def seconds_per_evaluation(model, layer: str, size: int = 256, iters: int = 10) -> float:
    invert(model, "astronaut", layer, size=size, settings=Settings(optimizer="adam", iters=2))
    start = time.perf_counter()
    out = invert(model, "astronaut", layer, size=size, settings=Settings(optimizer="adam", iters=iters))
    return (time.perf_counter() - start) / len(out.record.history)


if __name__ == "__main__":
    print(describe())
    torch.manual_seed(0)
    model = load_model("vgg16", device="cpu")
    times = {layer: seconds_per_evaluation(model, layer) for layer in ("relu2_2", "relu3_3", "relu4_3", "relu5_3")}
    for layer, t in times.items():
        print(f"invert {layer:8s} 256px: {t:.3f} s/evaluation")
    print(f"ratio relu5_3 / relu2_2: {times['relu5_3'] / times['relu2_2']:.1f}x")
