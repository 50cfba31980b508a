"""Where an evaluation's time goes: one style transfer (after a warm-up run) under torch's profiler, and its
busiest operators by host time; on a GPU the table also shows each operator's device time.

    python benchmarks/hotspots.py [DEVICE [SIZE [OPTIMIZER]]]      (default: cuda 512 lbfgs)
"""

from __future__ import annotations

import sys
import time

from torch.profiler import ProfilerActivity, profile

from cnnviz.analyzers.transfer import transfer
from cnnviz.core.hooked import load_model
from cnnviz.optim.settings import Settings


def main(device: str = "cuda", size: int = 512, optimizer: str = "lbfgs") -> None:
    model = load_model("vgg16", device=device)
    settings = Settings(optimizer=optimizer, iters=30)
    transfer(model, size=size, settings=settings)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        start = time.perf_counter()
        output = transfer(model, size=size, settings=settings)
        wall = time.perf_counter() - start
    evaluations = len(output.record.history)
    print(trace.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    print(f"{evaluations} evaluations in {wall:.3f} s under the profiler (set-up included)")

if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:1], *map(int, args[1:2]), *args[2:3])
