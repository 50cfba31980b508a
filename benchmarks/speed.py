"""Seconds per evaluation of one analyzer run, and its peak memory, measured in a fresh process.

Each case runs once to warm up (one-time kernel set-up would otherwise fall on the first timed run),
then once with ``long`` iterations. The seconds per evaluation are the slope of the times at which the
progress callback received the evaluations, after the first ``skip`` of them (set-up, CUDA-graph capture
and the first evaluations fall before): the difference of two runs' total times, used before, let fixed
costs that differ between runs swamp millisecond evaluations on a GPU. L-BFGS reads every evaluation's
loss, so the callback follows the device; Adam's readings arrive in batches, so its slope holds over many
evaluations only.

    python benchmarks/speed.py '{"analyzer": "transfer", "size": 512, "precision": "auto", "optimizer": "lbfgs"}'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    """One analyzer run to time: ``analyzer`` is transfer, texture or invert:LAYER; ``graph`` False
    evaluates eagerly on a GPU instead of replaying a CUDA graph; ``line_search`` is L-BFGS's
    (``strong_wolfe``, ``backtracking`` or None), or ``default`` for the analyzer's own; ``floor_layer``:
    also time the floor to that layer in the same process, right after the runs (this VM's speed drifts
    between minutes): its median, comparable with the analyzer's mean, and its fastest run."""

    analyzer: str
    size: int = 512
    precision: str | None = "auto"
    optimizer: str = "lbfgs"
    device: str = "cpu"
    long: int = 13
    skip: int = 2
    scales: tuple[int, ...] = ()
    threads: int | None = None
    graph: bool = True
    floor_layer: str | None = None
    line_search: str | None = "default"


def run_analyzer(case: Case, iters: int, callback=None):
    """The analyzer's ``Output`` for ``case`` with ``iters`` iterations per scale."""
    from cnnviz.analyzers.inversion import invert
    from cnnviz.analyzers.texture import texture
    from cnnviz.analyzers.transfer import transfer
    from cnnviz.core.hooked import load_model
    from cnnviz.optim.settings import Settings

    options = {} if case.precision is None else {"precision": case.precision}
    model = load_model("vgg16", device=case.device, **options)
    newer = {"cuda_graph": False} if not case.graph else {}  # an older checkout's Settings has neither
    newer |= {"line_search": case.line_search} if case.line_search != "default" else {}
    settings = Settings(optimizer=case.optimizer, iters=iters, scales=case.scales, **newer)
    name, _, layer = case.analyzer.partition(":")
    if name == "transfer":
        return transfer(model, size=case.size, settings=settings, callback=callback)
    if name == "texture":
        return texture(model, size=case.size, settings=settings, callback=callback)
    return invert(model, layer=layer, size=case.size, settings=settings, callback=callback)


def measure(case: Case) -> dict:
    """Seconds per evaluation, evaluations, the precision the run recorded, peak memory, the image's (H, W)
    and the floor's seconds."""
    import torch

    from machine import peak_mib

    if case.threads:
        torch.set_num_threads(case.threads)
    run_analyzer(case, 1)
    times: list[float] = []
    output = run_analyzer(case, case.long, callback=lambda _step: times.append(time.perf_counter()))
    skip = min(case.skip, len(times) - 2)
    seconds = (times[-1] - times[skip]) / (len(times) - 1 - skip)
    precision = output.record.params.get("precision", "fp32")
    floor_s = fastest_s = None
    if case.floor_layer:
        from floors import floor, variant_of

        from cnnviz.core.hooked import load_model

        exact = load_model("vgg16", device=case.device, precision="fp32")
        shape = tuple(output.image.shape[-2:])
        floor_s = floor(exact, case.floor_layer, shape, variant_of(precision), repeats=7, typical=True)
        fastest_s = floor(exact, case.floor_layer, shape, variant_of(precision), repeats=3)
    return {
        **asdict(case), "s_per_evaluation": seconds, "evaluations": len(times),
        "recorded_precision": precision, "loss": sum(output.record.losses.values()), "floor_s": floor_s, "fastest_floor_s": fastest_s,
        "peak_mib": peak_mib(torch.device(case.device)), "shape": list(output.image.shape[-2:]),
    }


def in_subprocess(case: Case, pythonpath: str | None = None, timeout: float = 3600) -> dict:
    """``measure(case)`` in a fresh Python (its own peak memory); ``pythonpath`` first on the path, e.g. an
    older checkout of cnnviz."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, str(HERE / "speed.py"), json.dumps(asdict(case))], capture_output=True,
                          text=True, env=env, cwd=pythonpath or None, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    fields = json.loads(sys.argv[1])
    print(json.dumps(measure(Case(**{**fields, "scales": tuple(fields.get("scales", ()))}))))
