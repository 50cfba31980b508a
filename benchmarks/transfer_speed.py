"""Style transfer speed and memory: seconds per L-BFGS evaluation at 256 and 512 px, peak RSS,
and a bare VGG-16 forward to relu5_3 at 512 px. Each size runs in its own process so the
peak memory is its own.

    python benchmarks/transfer_speed.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch

from cpu import describe


def measure(size: int, iters: int) -> dict:
    from cnnviz.analyzers.transfer import transfer
    from cnnviz.core.hooked import load_model
    from cnnviz.optimize import Settings

    model = load_model("vgg16", device="cpu")
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        model(x, ["relu5_3"])
        start = time.perf_counter()
        model(x, ["relu5_3"])
        forward = time.perf_counter() - start
    start = time.perf_counter()
    out = transfer(model, size=size, settings=Settings(iters=iters))
    seconds = time.perf_counter() - start
    return {
        "size": size, "forward_relu5_3_s": forward, "evaluations": len(out.record.history),
        "s_per_evaluation": seconds / len(out.record.history),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
        sys.exit(0)
    print(describe())
    rows = []
    for size, iters in ((256, 10), (512, 5)):
        done = subprocess.run([sys.executable, __file__, str(size), str(iters)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"transfer {r['size']}px: {r['s_per_evaluation']:.2f} s/evaluation ({r['evaluations']} evals), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB; bare forward to relu5_3: {r['forward_relu5_3_s']:.2f} s")
    print(f"ratio 512/256 per evaluation: {rows[1]['s_per_evaluation'] / rows[0]['s_per_evaluation']:.1f}x")
