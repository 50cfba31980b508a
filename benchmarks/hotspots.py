"""Where an evaluation's time goes: one style transfer under torch's profiler, its busiest operators by
host time and, on a GPU, the share of the wall time the GPU spent in kernels.

    python benchmarks/hotspots.py [DEVICE [SIZE [OPTIMIZER]]]      (default: cuda 512 lbfgs)
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from cnnviz.analyzers.transfer import transfer
from cnnviz.core.hooked import load_model
from cnnviz.optimize import Settings


def main(device: str = "cuda", size: int = 512, optimizer: str = "lbfgs") -> None:
    model = load_model("vgg16", device=device)
    settings = Settings(optimizer=optimizer, iters=30)
    transfer(model, size=size, settings=settings)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        start = time.perf_counter()
        output = transfer(model, size=size, settings=settings)
        wall = time.perf_counter() - start
    events = trace.key_averages()
    evaluations = len(output.record.history)
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    if device == "cuda":
        kernels = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") / 1e6
        print(f"GPU busy {kernels:.3f} s of {wall:.3f} s ({kernels / wall:.0%}); {evaluations} evaluations, "
              f"{1000 * wall / evaluations:.2f} ms each, {1000 * kernels / evaluations:.2f} ms of kernels")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:1], *map(int, args[1:2]), *args[2:3])
