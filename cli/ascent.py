"""``cnnviz ascent``: images that maximise a class score or a channel, or the regularizer grid."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.ascent import (
    DEFAULT_BLUR, DEFAULT_CLIP, DEFAULT_ITERS, DEFAULT_JITTER, DEFAULT_L2, DEFAULT_LR, ROWS, ascend, row, target_for,
)
from cnnviz.analyzers.target import is_class
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, optimizing, shared
from cnnviz.cli.progress import progress
from cnnviz.core.hooked import with_head
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, caption, draw_grid
from cnnviz.optimize import Blur, Clip, Decay

GRIDS = ("regularizers",)


def _names(text: str | None) -> list[str | None]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else [None]


@shared(model="efficientnet_lite0")
@optimizing(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR)
def command(
    cls: Annotated[str | None, typer.Option("--class", help="Class names or indices, comma-separated: one image each.")] = None,
    layer: Annotated[str | None, typer.Option(help="Maximise a channel of this layer instead of a class.")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel(s) of --layer, comma-separated: one image each.")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    grid: Annotated[str | None, typer.Option(help="'regularizers': rows none, L2, L2+blur, L2+blur+clip, +jitter.")] = None,
    size: Size = 256,
    l2: Annotated[float, typer.Option(help="λ of the L2 penalty λ‖I‖² (Simonyan et al. 2014).")] = DEFAULT_L2,
    blur: Annotated[float, typer.Option(help="σ of the Gaussian blur in px (0 = off) (Yosinski et al. 2015).")] = DEFAULT_BLUR.sigma,
    blur_every: Annotated[int, typer.Option(help="Blur every N steps.")] = DEFAULT_BLUR.every,
    clip_norm: Annotated[float, typer.Option(help="Reset pixels below this norm percentile.")] = DEFAULT_CLIP.norm_pct,
    clip_contribution: Annotated[float, typer.Option(help="Reset pixels below this contribution percentile.")] = DEFAULT_CLIP.contribution_pct,
    decay: Annotated[float, typer.Option(help="Yosinski's L2 decay θ per step (0 = off), with the L2 penalty.")] = 0.0,
    jitter: Annotated[int, typer.Option(help="Random shift of up to N px per step (0 = off).")] = DEFAULT_JITTER,
    init_noise: Annotated[float, typer.Option(help="Std of seeded noise added to the zero image at the start.")] = 0.0,
    *,
    run: Run,
    loop: Loop,
) -> None:
    """Gradient ascent: the image that maximises a class score or a channel (Simonyan et al. 2014).

    Yosinski et al.'s blur, clip and jitter are all on by default; --grid regularizers compares them.

    Examples:

      cnnviz ascent --class espresso                   # an ImageNet class of EfficientNet-Lite0

      cnnviz ascent --class "tabby,goldfish" --grid regularizers

      cnnviz ascent --model vgg16 --layer relu4_3 --channel 10,42
    """
    if cls is None and layer is None:
        raise CnnvizError("give a class (--class espresso) or a layer and channel (--layer relu4_3 --channel 10)")
    if layer is None and channel is not None:
        raise CnnvizError("--channel needs --layer")
    if grid is not None and grid not in GRIDS:
        raise CnnvizError(f"unknown grid '{grid}' (choices: {', '.join(GRIDS)})")
    common.check_finite(l2=l2, blur=blur, clip_norm=clip_norm, clip_contribution=clip_contribution, decay=decay,
                        init_noise=init_noise)
    if blur < 0 or blur_every < 1 or decay < 0 or not 0 <= clip_norm < 100 or not 0 <= clip_contribution < 100:
        raise CnnvizError("--blur and --decay must be at least 0, --blur-every at least 1, clip percentiles in [0, 100)")
    if l2 < 0 or init_noise < 0 or jitter < 0:
        raise CnnvizError("--l2, --init-noise and --jitter must be at least 0")
    blurring, clipping = Blur(blur, blur_every), Clip(clip_norm, clip_contribution)
    decaying = Decay(decay) if decay > 0 else None
    base = loop.settings(run)
    rows = ROWS if grid else (ROWS[-1],)
    runs = {name: row(name, base, l2, blurring, clipping, jitter, decaying) for name in rows}
    for _, settings in runs.values():
        settings.check()
    hooked = run.load(with_head(run.model, run.weights) if is_class(layer) else run.model)
    wanted = [dict(target=c, layer=layer, channel=ch, y=y, x=x) for c in _names(cls) for ch in _names(channel)]
    targets = [target_for(hooked, size, kwargs["target"], layer, kwargs["channel"], y, x) for kwargs in wanted]
    cells: list[list[Cell]] = [[] for _ in rows]
    for target, kwargs in zip(targets, wanted):
        for i, (name, (l2_weight, settings)) in enumerate(runs.items()):
            suffix = f"_{name.strip('+').replace('+', '-')}" if grid else ""
            path = run.out / f"ascent_{target.tag}{suffix}.png"
            label = f"ascent {target.label}" + (f" [{name}]" if grid else "")
            with progress(label, run.quiet, path, loop.save_every) as callback:
                output = ascend(hooked, **kwargs, size=size, l2_weight=l2_weight, init_noise=init_noise, settings=settings,
                                callback=callback)
            png = common.save(output, path, run)
            p = output.record.params
            run.tell(f"{target.label}: S {p['score_start']:.3g} -> {p['score']:.3g}")
            cells[i].append(Cell(output.image, caption(output.record), png))
    if grid:
        tags = "_".join(t.tag for t in targets)
        run.wrote(draw_grid(cells, run.out / f"ascent_{tags}_{grid}_grid.png", col_titles=[t.label for t in targets],
                            row_titles=list(rows), analyzer="ascent", title=f"Gradient ascent, {hooked.name}, {size}px"))
