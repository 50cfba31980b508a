"""The GPU check: replaying the CUDA graph computes what eager evaluation computes, for every optimizing
analyzer, optimizer and precision, and no capture falls back to eager evaluation (that warning fails it).

    python benchmarks/cuda_check.py [DEVICE [SIZE]]     (default: cuda 256; on the CPU it only exercises the code)
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

from cnnviz.analyzers.inversion import invert
from cnnviz.analyzers.texture import texture
from cnnviz.analyzers.transfer import transfer
from cnnviz.core.hooked import load_model
from cnnviz.optim.settings import Settings

RUNS = {
    "transfer": lambda model, size, settings: transfer(model, size=size, settings=settings),
    "texture": lambda model, size, settings: texture(model, size=size, settings=settings),
    "invert relu5_3": lambda model, size, settings: invert(model, layer="relu5_3", size=size, settings=settings),
}


def main(device: str = "cuda", size: int = 256) -> None:
    warnings.simplefilter("error")
    failures = []
    for precision in ("fp32", "bf16"):
        model = load_model("vgg16", device=device, precision=precision)
        for name, run in RUNS.items():
            for optimizer, iters in (("lbfgs", 10), ("adam", 20)):
                losses, times = [], []
                for graph in (True, False):
                    start = time.perf_counter()
                    output = run(model, size, Settings(optimizer=optimizer, iters=iters, cuda_graph=graph))
                    times.append(time.perf_counter() - start)
                    losses.append(sum(output.record.losses.values()))
                change = abs(losses[0] / losses[1] - 1)
                ok = change < 0.01
                failures += [] if ok else [f"{name} {optimizer} {precision}"]
                print(f"{'ok  ' if ok else 'FAIL'} {name:15} {optimizer:5} {precision:4}: loss graph {losses[0]:.5g} "
                      f"eager {losses[1]:.5g} ({change:.2%}); {times[0]:.2f} s vs {times[1]:.2f} s", flush=True)
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if failures:
        raise SystemExit(f"graph and eager differ: {', '.join(failures)}")


if __name__ == "__main__":
    main(*sys.argv[1:2], *map(int, sys.argv[2:3]))
