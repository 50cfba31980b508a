"""Quality per second of style transfer: the loss reached after fixed wall-clock budgets by L-BFGS (with
a strong-Wolfe line search, a backtracking one, or none), Adam and coarse-to-fine L-BFGS, each in fp32 and
bf16.

Every loss reported here is the image's fp32 loss at the final size (a bf16 run's own losses carry bf16's
rounding), so fp32 and bf16 runs compare on one scale. A run stops when its callback sees the largest
budget pass; the image at each budget is the lowest-loss one evaluated within it at the scale it had
reached (a line search's rejected trials are evaluated too, but are not its result).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from cnnviz.analyzers.transfer import CONTENT_LAYERS, DEFAULT_STYLE_WEIGHT, STYLE_LAYERS, transfer, transfer_problem
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.core.images import as_image
from cnnviz.optim.settings import Settings, Step

CONTENT, STYLE = "astronaut", "starry_night"
BUDGETS = {"cpu": (20.0, 40.0, 80.0), "cuda": (2.0, 5.0, 10.0)}
# name: (optimizer, coarse scales, iterations per scale, line search)
METHODS = {
    "L-BFGS, strong Wolfe": ("lbfgs", (), 100_000, "strong_wolfe"),
    "L-BFGS, backtracking": ("lbfgs", (), 100_000, "backtracking"),
    "L-BFGS, no line search": ("lbfgs", (), 100_000, None),
    "Adam": ("adam", (), 100_000, "backtracking"),
    "coarse-to-fine L-BFGS": ("lbfgs", (256,), 60, "backtracking"),
}


class _Budget(Exception):
    """Raised by the callback once the largest budget has passed."""


@dataclass
class Trace:
    """One run: every evaluation's (seconds, scale, own loss) and the image at each budget."""

    method: str
    precision: str
    points: list[tuple[float, int, float]] = field(default_factory=list)
    images: dict[float, Step | None] = field(default_factory=dict)


def trace(model: HookedModel, method: str, precision: str, size: int, budgets: tuple[float, ...]) -> Trace:
    """Run the method until the largest budget passes (or its iterations end)."""
    optimizer, scales, iters, line_search = METHODS[method]
    run = Trace(method, precision)
    best: Step | None = None

    def note(step: Step) -> None:
        nonlocal best
        for budget in budgets:
            if budget not in run.images and step.seconds > budget:
                run.images[budget] = best
        if step.seconds > budgets[-1]:
            raise _Budget
        run.points.append((step.seconds, step.scale, step.loss))
        if best is None or step.scale != best.scale or step.loss <= best.loss:
            best = step

    try:
        transfer(model, CONTENT, [STYLE], size=size, callback=note,
                 settings=Settings(optimizer=optimizer, iters=iters, scales=scales, line_search=line_search))
    except _Budget:
        pass
    for budget in budgets:
        run.images.setdefault(budget, best)
    return run


def fp32_loss(evaluate, image: torch.Tensor, size: tuple[int, int]) -> float | None:
    """The fp32 transfer loss of ``image`` (None when the run was not yet at the final size)."""
    if tuple(image.shape[-2:]) != size:
        return None
    with torch.no_grad():
        return float(sum(evaluate(image).values()))


def time_to_reach(points: list[tuple[float, int, float]], loss: float, scale: int) -> float | None:
    """Seconds until a run's own loss at the final ``scale`` first reaches ``loss``."""
    return next((s for s, sc, value in points if sc == scale and value <= loss), None)


def run_all(device: str, size: int, budgets: tuple[float, ...], iters: int, out: Path) -> dict:
    """Every method × precision: fp32 losses at the budgets and coarse-to-fine's time to the single-scale
    loss; then L-BFGS for ``iters`` iterations in fp32 and in bf16 (same work, so the losses and pictures
    compare), with a side-by-side picture (fp32 | bf16 | 4 × difference) written to ``out``."""
    exact = load_model("vgg16", device=device, precision="fp32")
    photo = as_image(CONTENT, size, exact.device)
    shape = tuple(photo.shape[-2:])
    evaluate = transfer_problem(exact, photo, [as_image(STYLE, size, exact.device)], [1.0], content_weight=1.0,
                                style_weight=DEFAULT_STYLE_WEIGHT, content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS,
                                style_layer_weights=None, tv_weight=0.0)(shape)
    rows, finals = [], {}
    for precision in ("fp32", "bf16"):
        model = load_model("vgg16", device=device, precision=precision)
        traces = {method: trace(model, method, precision, size, budgets) for method in METHODS}
        for method, run in traces.items():
            losses = [fp32_loss(evaluate, step.image, shape) if step else None for step in run.images.values()]
            rows.append({"method": method, "precision": precision, "losses": losses, "evaluations": len(run.points)})
        end_seconds, _, end_loss = traces["L-BFGS, backtracking"].points[-1]
        reached = time_to_reach(traces["coarse-to-fine L-BFGS"].points, end_loss, max(shape))
        rows[-1]["c2f_ratio"] = None if reached is None else reached / end_seconds  # the coarse-to-fine row
        output = transfer(model, CONTENT, [STYLE], size=size, settings=Settings(iters=iters))
        finals[precision] = (output.image, fp32_loss(evaluate, output.image, shape), output.record.seconds)
    side_by_side(finals["fp32"][0], finals["bf16"][0], out)
    same_work = {p: {"fp32_loss": loss, "seconds": secs} for p, (_, loss, secs) in finals.items()}
    return {"size": size, "budgets": budgets, "rows": rows, "iters": iters, "same_work": same_work}


def side_by_side(a: torch.Tensor, b: torch.Tensor, path: Path, side: int = 256) -> Path:
    """``a | b | 4·|a − b|``, each ``side`` px on its long side, as a JPEG."""
    diff = ((a - b).abs() * 4).clamp(0, 1)
    h, w = a.shape[-2:]
    shape = (round(side * h / max(h, w)), round(side * w / max(h, w)))
    tiles = [torch.nn.functional.interpolate(t.float().cpu(), size=shape, mode="area") for t in (a, b, diff)]
    array = (torch.cat(tiles, dim=-1)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(array).save(path, quality=88)
    return path
