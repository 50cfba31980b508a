"""``cnnviz ascent``: images that maximise a class score or a channel, with the pixel recipe (Simonyan et
al.; Yosinski et al.) or the Fourier one (Olah et al.), and the grids that compare them."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from cnnviz.analyzers.ascent import (
    DEFAULT_BLUR,
    DEFAULT_CLIP,
    DEFAULT_ITERS,
    DEFAULT_JITTER,
    DEFAULT_L2,
    DEFAULT_LR,
    Recipe,
    ascend_many,
    default_l2,
    target_for,
)
from cnnviz.analyzers.target import Target, check_target_given, is_class
from cnnviz.cli import common
from cnnviz.cli.options import Loop, Run, Size, loop_options, run_options
from cnnviz.cli.parse import check_finite, parse_names
from cnnviz.cli.progress import progress
from cnnviz.core.hooked import HookedModel, with_head
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_grid
from cnnviz.gallery.plan import GRIDS, PARAM_ROWS, ROWS, param_row, row
from cnnviz.optim.settings import Settings
from cnnviz.optvis.param import check_param, is_squashed
from cnnviz.optvis.regularizers import Blur, Clip, Decay
from cnnviz.optvis.transforms import Jitter, parse


def _check(target: str | None, layer: str | None, channel: str | None, grid: str | None, squashed: bool,
           pixel_options: bool) -> None:
    """Refuse a request that names no target, or options that do not go together, before any work."""
    check_target_given(target, layer)
    if layer is None and channel is not None:
        raise CnnvizError("--channel needs --layer")
    if grid is not None and grid not in GRIDS:
        raise CnnvizError(f"unknown grid '{grid}' (choices: {', '.join(GRIDS)})")
    if squashed and pixel_options:
        raise CnnvizError("--blur, --clip-norm, --clip-contribution and --decay work on pixels: leave them out with "
                          "--param fft or --decorrelate")
    if squashed and grid == "regularizers":
        raise CnnvizError("--grid regularizers compares pixel regularizers: leave out --param fft and --decorrelate")


def _blur_and_clip(blur: float | None, every: int, norm: float | None, contribution: float | None, decay: float) -> tuple[Blur, Clip]:
    """Yosinski et al.'s blur and clip from the options (their defaults where not given), checked with the decay."""
    blurring = Blur(DEFAULT_BLUR.sigma if blur is None else blur, every)
    clipping = Clip(DEFAULT_CLIP.norm_pct if norm is None else norm,
                    DEFAULT_CLIP.contribution_pct if contribution is None else contribution)
    check_finite(blur=blurring.sigma, clip_norm=clipping.norm_pct, clip_contribution=clipping.contribution_pct, decay=decay)
    if blurring.sigma < 0 or every < 1 or decay < 0 or not (0 <= clipping.norm_pct < 100 and 0 <= clipping.contribution_pct < 100):
        raise CnnvizError("--blur and --decay must be at least 0, --blur-every at least 1, clip percentiles in [0, 100)")
    return blurring, clipping


def _recipes(grid: str | None, base: Settings, recipe: Recipe, l2_weight: float | None, blur: Blur, clip: Clip, jitter: int,
             decay: float, transforms: str | None) -> dict[str, tuple[Recipe, Settings]]:
    """(recipe, settings) of each row: a grid's rows, or the one run the options ask for (``recipe`` with
    ``l2_weight``, its default where None)."""
    chosen = parse(transforms) if transforms is not None else ((Jitter(jitter),) if jitter else ())
    if grid == "param":
        weight = DEFAULT_L2 if l2_weight is None else l2_weight
        return {name: param_row(name, base, weight, blur, None if transforms is None else chosen) for name in PARAM_ROWS}
    weight = default_l2(recipe.param, recipe.decorrelate) if l2_weight is None else l2_weight
    runs = {}
    for name in ROWS if grid else (ROWS[-1],):
        l2, settings = row(name, base, weight, blur, clip, jitter, Decay(decay) if decay > 0 else None)
        if name == ROWS[-1]:
            settings = replace(settings, transforms=chosen, regularizers=() if recipe.squashed else settings.regularizers)
        runs[name] = (replace(recipe, l2_weight=l2), settings)
    return runs


def _row(hooked: HookedModel, name: str, recipe: Recipe, settings: Settings, targets: list[Target], size: int, copies: int,
         diversity: float, diversity_layer: str | None, grid: str | None, run: Run, loop: Loop) -> list[Cell]:
    """Run one row (every target, ``copies`` each, as few batches as fit), save its images and say their scores."""
    suffix = f"_{name.strip('+').replace('+', '-')}" if grid else ""
    paths = [run.out / f"ascent_{t.tag}{suffix}{f'_{k}' if copies > 1 else ''}.png" for t in targets for k in range(copies)]
    label = f"ascent {len(targets)} target{'s' if len(targets) > 1 else ''}" + (f" [{name}]" if grid else "")
    with progress(label, run.quiet, paths, loop.save_every) as callback:
        outputs = ascend_many(hooked, targets, size=size, recipe=recipe, copies=copies, diversity=diversity,
                              diversity_layer=diversity_layer, settings=settings, callback=callback)
    cells = []
    for output, path in zip(outputs, paths):
        p = output.record.params
        chance = f", p {p['probability']:.3f}" if "probability" in p else ""
        which = f" copy {p['copy']}" if copies > 1 else ""
        run.tell(f"{p['target']}{which}: S {p['score_start']:.3g} -> {p['score']:.3g}{chance}")
        cells.append(Cell(output.image, caption(output.record), common.save(output, path, run)))
    return cells


@run_options(model="efficientnet_lite0")
@loop_options(optimizer="adam", iters=DEFAULT_ITERS, lr=DEFAULT_LR)
def command(
    target: Annotated[str | None, typer.Option("--class", help="Class names or indices, comma-separated: one image each.")] = None,
    layer: Annotated[str | None, typer.Option(help="Maximise a channel of this layer (or of each of a comma list) instead of "
                                                   "a class (conv4_3 climbs the pre-activation, relu4_3 the ReLU's output).")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel(s) of each --layer, comma-separated: one image each.")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    grid: Annotated[str | None, typer.Option(help="'regularizers': rows none, L2, L2+blur, L2+blur+clip, +jitter; "
                                                  "'param': rows pixel+L2+blur, fft, fft+decorrelate, fft+decorrelate+transforms.")] = None,
    size: Size = 256,
    param: Annotated[str, typer.Option(help="'pixel' (the pixels, clamped) or 'fft' (a 1/f-scaled spectrum under a sigmoid, "
                                            "Olah et al. 2017).")] = "pixel",
    decorrelate: Annotated[bool, typer.Option(help="Optimise decorrelated colours under a sigmoid (Olah et al. 2017).")] = False,
    transforms: Annotated[str | None, typer.Option(help="Random transforms before each step, replacing --jitter: 'standard' "
                                                        "(pad 12, jitter 8, zoom 0.9-1.1, turn ±10°, jitter 4), 'none', or a list "
                                                        "such as 'pad=12,jitter=8,scale=0.9:1.1,rotate=10'.")] = None,
    l2_weight: Annotated[float | None, typer.Option(help="λ of the L2 penalty λ‖I‖² (Simonyan et al. 2014); default "
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
    diversity_layer: Annotated[str | None, typer.Option(help="Layer whose Gram matrices diversity compares (default: the "
                                                             "target's layer, or the last spatial ReLU for classes).")] = None,
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
    squashed = is_squashed(param, decorrelate)
    _check(target, layer, channel, grid, squashed, blur is not None or clip_norm is not None or clip_contribution is not None
           or decay > 0)
    check_param(param)
    blurring, clipping = _blur_and_clip(blur, blur_every, clip_norm, clip_contribution, decay)
    check_finite(l2_weight=l2_weight or 0.0, init_noise=init_noise, diversity=diversity)
    if (l2_weight or 0.0) < 0 or init_noise < 0 or jitter < 0 or diversity < 0:
        raise CnnvizError("--l2-weight, --init-noise, --jitter and --diversity must be at least 0")
    runs = _recipes(grid, loop.settings(run), Recipe(param, decorrelate, 0.0, init_noise), l2_weight, blurring, clipping,
                    jitter, decay, transforms)
    for chosen, settings in runs.values():
        chosen.check()
        settings.check()
    hooked = run.load(with_head(run.model, run.weights) if is_class(layer) else run.model)
    wanted = [(c, name, ch) for c in parse_names(target) or [None] for name in parse_names(layer) or [None]
              for ch in parse_names(channel) or [None]]
    targets = [target_for(hooked, size, c, name, ch, y, x) for c, name, ch in wanted]
    cells = [_row(hooked, name, chosen, settings, targets, size, copies, diversity, diversity_layer, grid, run, loop)
             for name, (chosen, settings) in runs.items()]
    if grid:
        titles = [t.label + (f" #{k}" if copies > 1 else "") for t in targets for k in range(copies)]
        run.wrote(draw_grid(cells, run.out / f"ascent_{'_'.join(t.tag for t in targets)}_{grid}_grid.png", col_titles=titles,
                            row_titles=list(runs), analyzer="ascent", title=f"Gradient ascent, {hooked.name}, {size}px"))
