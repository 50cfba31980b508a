"""The benchmark: floors, seconds per evaluation of the optimizing analyzers, memory and the largest
transfer, and quality per second. Prints each table and writes them to benchmarks/RESULTS.md.

    python benchmarks/run.py [--device cpu|cuda] [--quick] [--before DIR] [--sections floors,speed,memory,quality]

``--before DIR`` also times the analyzers of an older checkout (e.g. ``git archive COMMIT | tar -x -C DIR``)
at its defaults. ``--quick`` is a smoke run at small sizes and short budgets, not for quoting.
Not part of the tests: it takes about half an hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from floors import VARIANTS, floor, variant_of
from quality import BUDGETS, run_all
from speed import Case, in_subprocess

from cnnviz.analyzers.texture import DEFAULT_LAYERS as TEXTURE_LAYERS
from cnnviz.analyzers.transfer import CONTENT_LAYERS, STYLE_LAYERS
from cnnviz.core import memory
from cnnviz.core.hooked import load_model

from machine import Others, describe

HERE = Path(__file__).resolve().parent
SECTIONS = ("floors", "speed", "memory", "quality")
ANALYZERS = {  # analyzer: the layer its floor goes to (its deepest)
    "transfer": "relu5_1", "texture": TEXTURE_LAYERS[-1], "invert:relu2_2": "relu2_2", "invert:relu5_3": "relu5_3",
}
GIB = 2**30
NOTES = "## Notes"
HEADER = ["# Benchmark results", "", "Regenerate with `python benchmarks/run.py [--device cuda] [--before DIR]` (see its "
          "docstring). Each section says when, where and how it was measured, and how much of the CPUs other "
          "processes took meanwhile (figures taken while that is well above zero are not the machine's).", ""]
CONTENT_NOTE = "astronaut × starry_night"


def table(head: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (also what the terminal shows)."""
    cells = [[c if isinstance(c, str) else _fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


def seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 0.1 else f"{value:.2f} s"


def floors_section(model, sizes: tuple[int, ...]) -> str:
    rows = [[f"{size} px", *(seconds(floor(model, "relu5_1", size, v)) for v in VARIANTS)] for size in sizes]
    return table(["VGG-16 to relu5_1, s/evaluation", *VARIANTS], rows)


LINE_SEARCH_LABELS = {"default": "", "strong_wolfe": ", strong Wolfe", None: ", no line search"}


def speed_section(model, args, size: int, before: str | None) -> str:
    cases = [(name, optimizer) for name in ANALYZERS for optimizer in ("lbfgs", "adam") if optimizer == "lbfgs" or name == "transfer"]
    gpu = model.device.type == "cuda"
    # fp32 (TF32 on a GPU) beside auto; on a GPU more iterations per timed run (an evaluation takes
    # milliseconds) and the default transfer evaluated eagerly too, to show what the CUDA graph gains;
    # everywhere the L-BFGS transfer with the other line searches too (``--line-search strong-wolfe|none``).
    precisions = ("fp32", "auto")  # the first also times the before checkout
    iterations = {"long": 80, "skip": 10} if gpu else {"long": 13, "skip": 2}
    rows = []
    for name, optimizer in cases:
        base = Case(name, size=size, optimizer=optimizer, device=args.device, threads=args.threads, **iterations)
        old = in_subprocess(Case(**{**base.__dict__, "precision": None}), before) if before else None
        extra = [("auto", False, "default")] if gpu and name == "transfer" else []
        extra += [("auto", True, "strong_wolfe"), ("auto", True, None)] if optimizer == "lbfgs" and name == "transfer" else []
        for precision, graph, line_search in [(p, True, "default") for p in precisions] + extra:
            result = in_subprocess(Case(**{**base.__dict__, "precision": precision, "graph": graph, "line_search": line_search,
                                           "floor_layer": ANALYZERS[name]}))
            variant = variant_of(result["recorded_precision"])
            floor_s = result["floor_s"]
            rows.append([
                f"{name} ({optimizer}{LINE_SEARCH_LABELS[line_search]}), {'×'.join(map(str, result['shape']))}"
                f"{'' if graph or not gpu else ', no CUDA graph'}",
                f"{precision} → {result['recorded_precision']}",
                seconds(old["s_per_evaluation"]) if old and (precision, graph, line_search) == (precisions[0], True, "default") else "",
                seconds(result["s_per_evaluation"]),
                f"{variant} to {ANALYZERS[name]}: {seconds(floor_s)} (fastest {seconds(result['fastest_floor_s'])})",
                f"{result['s_per_evaluation'] / floor_s:.2f}× ({result['s_per_evaluation'] / result['fastest_floor_s']:.2f}×)",
                f"{result['peak_mib']:.0f}",
            ])
            print(rows[-1], flush=True)
    head = ["analyzer", "precision", "before", "s/evaluation", "matching floor: median (fastest)", "ratio to it (to the fastest)",
            "peak MiB"]
    note = f"before: the same cases in {before}, at its defaults (fp32)" if before else "no before run"
    evaluations = f"the mean over the evaluations of {iterations['long']} iterations after the first {iterations['skip']}"
    return (f"Long side {size} px; s/evaluation is {evaluations} (slope of their arrival times); each floor is timed in "
            f"the analyzer's own process right after it, at the image's own shape: median of 7 runs (fastest of 3 "
            f"more); {note}.\n\n" + table(head, rows))


def memory_section(args, size: int) -> str:
    """The estimate against the measured peak at ``size`` and the largest side a 24 GiB machine allows."""
    layers = [*CONTENT_LAYERS, *STYLE_LAYERS]
    rows = []
    for precision in ("fp32", "auto"):
        model = load_model("vgg16", device=args.device, precision=precision).optimizing()
        need = memory.needed_bytes(model, layers, (size, size), "lbfgs")
        largest = max(s for s in range(256, 8193, 64) if memory.needed_bytes(model, layers, (s, s), "lbfgs") <= 24 * GIB)
        fits = need <= (memory.available_bytes(model.device) or math.inf)
        try:
            result = in_subprocess(Case("transfer", size=size, precision=precision, device=args.device, long=3, skip=1,
                                        threads=args.threads)) if fits else None
            peak = f"{result['peak_mib'] / 1024:.1f}" if result else "refused: does not fit"
        except RuntimeError as failure:
            result, peak = None, f"failed: {str(failure).strip().splitlines()[-1]}"
        rows.append([precision, model.compute_precision, f"{need / GIB:.1f}", peak,
                     seconds(result["s_per_evaluation"]) if result else "—", f"{largest} px"])
        print(rows[-1], flush=True)
    head = [f"transfer {size} px, L-BFGS", "runs in", "estimate GiB", "peak GiB (RSS / GPU)", "s/evaluation",
            "largest side the estimate allows in 24 GiB"]
    return table(head, rows)


def quality_section(args, size: int, budgets: tuple[float, ...], iters: int) -> str:
    kind = torch.device(args.device).type
    picture = args.out.parent / f"quality_bf16_vs_fp32{'' if kind == 'cpu' else '_' + kind}.jpg"
    result = run_all(args.device, size, budgets, iters, picture)
    rows = [[r["method"], r["precision"], r["evaluations"], *r["losses"], _fmt(r.get("c2f_ratio"))] for r in result["rows"]]
    head = ["method", "precision", "evaluations", *(f"fp32 loss after {b:g} s" for b in budgets),
            "coarse-to-fine: time to the single-scale loss / its time"]
    same = result["same_work"]
    change = same["bf16"]["fp32_loss"] / same["fp32"]["fp32_loss"] - 1
    return (f"Transfer {CONTENT_NOTE} at {size} px; every loss is the image's fp32 loss.\n\n" + table(head, rows)
            + f"\n\nSame work, L-BFGS {iters} iterations: fp32 loss {same['fp32']['fp32_loss']:.4g} in "
            f"{same['fp32']['seconds']:.0f} s (fp32), {same['bf16']['fp32_loss']:.4g} in {same['bf16']['seconds']:.0f} s "
            f"(bf16): bf16 changes the final loss by {change:+.1%}.\n\n"
            f"![L-BFGS, {iters} iterations: fp32 | bf16 | 4 × difference]({picture.name})")


def merge(path: Path, header: list[str], parts: dict[str, str]) -> str:
    """RESULTS.md with ``parts`` replacing the sections of the same title; other sections measured earlier,
    and the hand-written notes after ``NOTES``, are kept."""
    kept: dict[str, str] = {}
    notes = ""
    if path.is_file():
        text = path.read_text()
        text, mark, tail = text.partition(NOTES)
        notes = mark + tail
        for chunk in text.split("\n## ")[1:]:
            title, _, body = chunk.partition("\n")
            kept[title.strip()] = body.strip()
    kept.update(parts)
    return "\n".join(header + [f"## {title}\n\n{body}\n" for title, body in kept.items()]) + ("\n" + notes if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and budgets: a smoke run, not for quoting")
    parser.add_argument("--before", help="an older checkout whose analyzers to time too")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model("vgg16", device=args.device, precision="fp32")
    machine = describe(device)
    print(machine, flush=True)
    quick = args.quick
    budgets = (2.0, 4.0, 8.0) if quick else BUDGETS[device.type]
    runs = {
        "floors": ("Floors: one forward + input-gradient backward",
                   lambda: floors_section(model, (128, 256) if quick else (256, 512, 1024))),
        "speed": ("Seconds per evaluation and ratio to the floor",
                  lambda: speed_section(model, args, 128 if quick else 512, args.before)),
        "memory": ("Memory and the largest transfer", lambda: memory_section(args, 512 if quick else 2048)),
        "quality": ("Quality per second", lambda: quality_section(args, 128 if quick else 512, budgets, 5 if quick else 50)),
    }
    command = f"`python {' '.join(['benchmarks/run.py', *sys.argv[1:]])}`"
    parts = {}
    for name in args.sections.split(","):
        title, measure = runs[name]
        title = f"{title} ({device.type})"
        started = time.perf_counter()
        with Others() as others:
            text = measure()
        parts[title] = (f"_{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine}; {command}; "
                        f"{time.perf_counter() - started:.0f} s; other processes used {others.share:.0%} of the CPUs_\n\n{text}")
        print(f"## {title}\n\n{parts[title]}\n", flush=True)
        if not quick:  # after each section, so that a later failure keeps what was measured
            args.out.write_text(merge(args.out, HEADER, {title: parts[title]}))
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
