"""``cnnviz ascent``: images that maximise a class score or a channel, with the pixel recipe (Simonyan et
al.; Yosinski et al.) or the Fourier one (Olah et al.), and the grids that compare them."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from cnnviz.analyzers.ascent import (
    DEFAULT_BLUR, DEFAULT_CLIP, DEFAULT_ITERS, DEFAULT_JITTER, DEFAULT_L2, DEFAULT_LR, PARAM_ROWS, ROWS, Recipe,
    ascend_many, param_row, row, target_for,
)
from cnnviz.analyzers.target import is_class
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, optimizing, shared
from cnnviz.cli.progress import progress
from cnnviz.core.hooked import with_head
from cnnviz.errors import CnnvizError
from cnnviz.gallery.grid import Cell, caption, draw_grid
from cnnviz.optimize import Blur, Clip, Decay
from cnnviz.param import check_param
from cnnviz.transforms import Jitter, parse

GRIDS = {"regularizers": ROWS, "param": PARAM_ROWS}


def _names(text: str | None) -> list[str | None]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else [None]


@shared(model="efficientnet_lite0")
@optimizing(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR)
def command(
    cls: Annotated[str | None, typer.Option("--class", help="Class names or indices, comma-separated: one image each.")] = None,
    layer: Annotated[str | None, typer.Option(help="Maximise a channel of this layer (or of each of a comma list) instead of "
                                                   "a class (conv4_3 climbs the pre-activation, relu4_3 the ReLU's output).")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel(s) of each --layer, comma-separated: one image each.")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    grid: Annotated[str | None, typer.Option(help="'regularizers': rows none, L2, L2+blur, L2+blur+clip, +jitter; "
                                                  "'param': rows pixel+L2+blur, fft, fft+decorrelate, fft+decorrelate+transforms.")] = None,
    size: Size = 256,
    param: Annotated[str, typer.Option(help="'pixel' (the pixels, clamped) or 'fft' (a 1/f-scaled spectrum under a sigmoid, Olah et al. 2017).")] = "pixel",
    decorrelate: Annotated[bool, typer.Option(help="Optimise decorrelated colours under a sigmoid (Olah et al. 2017).")] = False,
    transforms: Annotated[str | None, typer.Option(help="Random transforms before each step, replacing --jitter: 'standard' "
                                                        "(pad 12, jitter 8, zoom 0.9-1.1, turn ±10°, jitter 4), 'none', or a list "
                                                        "such as 'pad=12,jitter=8,scale=0.9:1.1,rotate=10'.")] = None,
    l2: Annotated[float | None, typer.Option(help="λ of the L2 penalty λ‖I‖² (Simonyan et al. 2014); default "
                                                  f"{DEFAULT_L2} for pixels, 0 for --param fft or --decorrelate.")] = None,
    blur: Annotated[float | None, typer.Option(help="σ of the Gaussian blur in px (0 = off) (Yosinski et al. 2015); pixels "
                                                    f"only [default: {DEFAULT_BLUR.sigma}].")] = None,
    blur_every: Annotated[int, typer.Option(help="Blur every N steps.")] = DEFAULT_BLUR.every,
    clip_norm: Annotated[float | None, typer.Option(help="Reset pixels below this norm percentile; pixels only "
                                                         f"[default: {DEFAULT_CLIP.norm_pct:g}].")] = None,
    clip_contribution: Annotated[float | None, typer.Option(help="Reset pixels below this contribution percentile; pixels "
                                                                 f"only [default: {DEFAULT_CLIP.contribution_pct:g}].")] = None,
    decay: Annotated[float, typer.Option(help="Yosinski's L2 decay θ per step (0 = off), with the L2 penalty.")] = 0.0,
    jitter: Annotated[int, typer.Option(help="Random shift of up to N px per step (0 = off).")] = DEFAULT_JITTER,
    init_noise: Annotated[float, typer.Option(help="Std of seeded noise added to the zero image at the start.")] = 0.0,
    copies: Annotated[int, typer.Option(min=1, help="Images per target, optimised together.")] = 1,
    diversity: Annotated[float, typer.Option(help="λ of the diversity term pushing the copies apart (Olah et al. 2017).")] = 0.0,
    diversity_layer: Annotated[str | None, typer.Option(help="Layer whose Gram matrices diversity compares "
                                                             "(default: the target's layer, or the last spatial ReLU for classes).")] = None,
    *,
    run: Run,
    loop: Loop,
) -> None:
    """Gradient ascent: the image that maximises a class score or a channel (Simonyan et al. 2014).

    By default the pixels climb from the zero image under an L2 penalty, with Yosinski et al.'s blur,
    clip and jitter; --param fft --decorrelate --transforms standard is Olah et al.'s feature
    visualization. --grid regularizers and --grid param compare the recipes. Several targets run as
    one batch where memory allows.

    Examples:

      cnnviz ascent --class espresso                   # an ImageNet class of EfficientNet-Lite0

      cnnviz ascent --class espresso --param fft --decorrelate --transforms standard

      cnnviz ascent --class "tabby,goldfish" --grid param --size 224 --iters 256

      cnnviz ascent --model vgg16 --layer conv4_3 --channel 10,42 --param fft --decorrelate --transforms standard

      cnnviz ascent --model vgg16 --layer conv4_3 --channel 10 --copies 4 --diversity 100 --param fft --decorrelate --transforms standard
    """
    if cls is None and layer is None:
        raise CnnvizError("give a class (--class espresso) or a layer and channel (--layer relu4_3 --channel 10)")
    if layer is None and channel is not None:
        raise CnnvizError("--channel needs --layer")
    if grid is not None and grid not in GRIDS:
        raise CnnvizError(f"unknown grid '{grid}' (choices: {', '.join(GRIDS)})")
    check_param(param)
    squashed = param != "pixel" or decorrelate
    if squashed and (blur is not None or clip_norm is not None or clip_contribution is not None or decay > 0):
        raise CnnvizError("--blur, --clip-norm, --clip-contribution and --decay work on pixels: leave them out with "
                          "--param fft or --decorrelate")
    blur = DEFAULT_BLUR.sigma if blur is None else blur
    clip_norm = DEFAULT_CLIP.norm_pct if clip_norm is None else clip_norm
    clip_contribution = DEFAULT_CLIP.contribution_pct if clip_contribution is None else clip_contribution
    common.check_finite(l2=l2 or 0.0, blur=blur, clip_norm=clip_norm, clip_contribution=clip_contribution, decay=decay,
                        init_noise=init_noise, diversity=diversity)
    if blur < 0 or blur_every < 1 or decay < 0 or not 0 <= clip_norm < 100 or not 0 <= clip_contribution < 100:
        raise CnnvizError("--blur and --decay must be at least 0, --blur-every at least 1, clip percentiles in [0, 100)")
    if (l2 or 0.0) < 0 or init_noise < 0 or jitter < 0 or diversity < 0:
        raise CnnvizError("--l2, --init-noise, --jitter and --diversity must be at least 0")
    chosen = parse(transforms) if transforms is not None else ((Jitter(jitter),) if jitter else ())
    blurring, clipping = Blur(blur, blur_every), Clip(clip_norm, clip_contribution)
    base = loop.settings(run)
    if grid == "param":
        runs = {name: param_row(name, base, DEFAULT_L2 if l2 is None else l2, blurring,
                                None if transforms is None else chosen) for name in PARAM_ROWS}
    else:
        if squashed and grid:
            raise CnnvizError("--grid regularizers compares pixel regularizers: leave out --param fft and --decorrelate")
        runs = {}
        for name in ROWS if grid else (ROWS[-1],):
            l2_weight, settings = row(name, base, (0.0 if squashed else DEFAULT_L2) if l2 is None else l2, blurring, clipping,
                                      jitter, Decay(decay) if decay > 0 else None)
            if name == ROWS[-1]:
                settings = replace(settings, transforms=chosen, regularizers=() if squashed else settings.regularizers)
            runs[name] = (Recipe(param, decorrelate, l2_weight, init_noise), settings)
    for recipe, settings in runs.values():
        recipe.check()
        settings.check()
    hooked = run.load(with_head(run.model, run.weights) if is_class(layer) else run.model)
    wanted = [(c, name, ch) for c in _names(cls) for name in _names(layer) for ch in _names(channel)]
    targets = [target_for(hooked, size, c, name, ch, y, x) for c, name, ch in wanted]
    rows = list(runs)
    cells: list[list[Cell]] = [[] for _ in rows]
    for i, (name, (recipe, settings)) in enumerate(runs.items()):
        suffix = f"_{name.strip('+').replace('+', '-')}" if grid else ""
        paths = [run.out / f"ascent_{t.tag}{suffix}{f'_{k}' if copies > 1 else ''}.png" for t in targets for k in range(copies)]
        label = f"ascent {len(targets)} target{'s' if len(targets) > 1 else ''}" + (f" [{name}]" if grid else "")
        with progress(label, run.quiet, paths, loop.save_every) as callback:
            outputs = ascend_many(hooked, targets, size=size, recipe=recipe, copies=copies, diversity=diversity,
                                  diversity_layer=diversity_layer, settings=settings, callback=callback)
        for output, path in zip(outputs, paths):
            png = common.save(output, path, run)
            p = output.record.params
            chance = f", p {p['probability']:.3f}" if "probability" in p else ""
            which = f" copy {p['copy']}" if copies > 1 else ""
            run.tell(f"{p['target']}{which}: S {p['score_start']:.3g} -> {p['score']:.3g}{chance}")
            cells[i].append(Cell(output.image, caption(output.record), png))
    if grid:
        tags = "_".join(t.tag for t in targets)
        titles = [t.label + (f" #{k}" if copies > 1 else "") for t in targets for k in range(copies)]
        run.wrote(draw_grid(cells, run.out / f"ascent_{tags}_{grid}_grid.png", col_titles=titles,
                            row_titles=rows, analyzer="ascent", title=f"Gradient ascent, {hooked.name}, {size}px"))
