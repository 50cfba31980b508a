"""Feature inversion's start: the astronaut at 256 px inverted from five layers of VGG-16 with the defaults,
starting from ±0.2 noise (texture synthesis's, the inversion start before) and from ±0.1 (``START_NOISE``),
alternated in one process. Reported: wall seconds, the objective reached, and the relative feature error
‖Φ(x) − Φ0‖/‖Φ0‖ scored in fp32 by an independent VGG-16 on the same weights; and, for relu2_2, the loss
against time of both starts as a plot. Writes benchmarks/INVERSION.md and benchmarks/inversion_curves.png.

    python benchmarks/inversion.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnnviz.analyzers import inversion  # noqa: E402
from cnnviz.core.hooked import load_model  # noqa: E402
from cnnviz.core.images import as_image  # noqa: E402
from cnnviz.optim.settings import Settings  # noqa: E402

from machine import describe  # noqa: E402

HERE = Path(__file__).parent
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
STARTS = {"±0.2 (before)": 0.2, f"±{inversion.START_NOISE:g} (default)": inversion.START_NOISE}
SIZE = 256


def run(model, judge, layer: str, amplitude: float, seed: int) -> dict:
    """One default inversion from noise of half-width ``amplitude``: its wall time, objective, error and curve."""
    curve: list[tuple[float, float]] = []
    inversion.START_NOISE = amplitude  # the module constant the analyzer reads at each call
    start = time.perf_counter()
    out = inversion.invert(model, "astronaut", layer, size=SIZE, settings=Settings(seed=seed),
                           callback=lambda step: curve.append((time.perf_counter() - start, step.loss)))
    wall = time.perf_counter() - start
    reference = as_image("astronaut", SIZE, judge.device)
    error = inversion.relative_error(judge, out.image.to(judge.device), reference, layer)
    return {"wall": wall, "objective": sum(out.record.losses.values()), "error": error, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="seeds for relu2_2 (the other layers use seed 0)")
    seeds = [int(s) for s in parser.parse_args().seeds.split(",")]
    model, judge = load_model("vgg16"), load_model("vgg16", precision="fp32", seed=1)
    inversion.invert(model, "astronaut", "relu1_1", size=64, settings=Settings(iters=5))  # warm-up
    rows, curves = [], {}
    for layer in LAYERS:
        for seed in seeds if layer == "relu2_2" else [0]:
            results = {name: run(model, judge, layer, amplitude, seed) for name, amplitude in STARTS.items()}
            for name, r in results.items():
                rows.append(f"| {layer} | {seed} | {name} | {r['wall']:.1f} s | {r['objective']:.5f} | {r['error']:.4f} |")
                print(rows[-1], flush=True)
                if layer == "relu2_2" and seed == seeds[0]:
                    curves[name] = r["curve"]
    inversion.START_NOISE = STARTS[list(STARTS)[1]]
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name, curve in curves.items():
        axes.plot(*zip(*curve), label=f"start {name}")
    axes.set(yscale="log", xlabel="seconds", ylabel="objective", title=f"Inverting relu2_2 ({SIZE} px), seed {seeds[0]}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(HERE / "inversion_curves.png")
    (HERE / "INVERSION.md").write_text(
        "# Feature inversion: the start\n\n" + __doc__.split("\n\n")[0] + "\n\n"
        + f"Machine: {describe()}\n\n"
        + "| layer | seed | start | wall | objective | feature error |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n![loss against time at relu2_2](inversion_curves.png)\n"
    )


if __name__ == "__main__":
    main()
