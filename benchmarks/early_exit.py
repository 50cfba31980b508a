"""Early exit: seconds per inversion evaluation (forward to the layer + backward to the image), 256 px.

    python benchmarks/early_exit.py
"""

from __future__ import annotations

import time

import torch

from cpu import describe

from cnnviz.core.hooked import load_model
from cnnviz.core.images import load_image
from cnnviz.objectives import Objective, Term, feature_loss, targets


def seconds_per_evaluation(model, image: torch.Tensor, layer: str, repeats: int = 5) -> float:
    phi0 = targets(model, image, [layer])[layer]
    objective = Objective(model, [Term("feature", 1.0, (layer,), lambda acts, x: feature_loss(acts[layer], phi0))])
    x = torch.rand_like(image).requires_grad_(True)
    for i in range(repeats + 1):
        if i == 1:
            start = time.perf_counter()
        sum(objective(x).values()).backward()
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    print(describe())
    model = load_model("vgg16", device="cpu")
    image = load_image("astronaut", 256)
    times = {layer: seconds_per_evaluation(model, image, layer) for layer in ("relu2_2", "relu3_3", "relu4_3", "relu5_3")}
    for layer, t in times.items():
        print(f"invert {layer:8s} 256px: {t:.3f} s/evaluation")
    print(f"ratio relu5_3 / relu2_2: {times['relu5_3'] / times['relu2_2']:.1f}x")
