"""``cnnviz gallery``: build every analyzer's comparable grids into one folder and write index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli import ascent, invert, patches, saliency, texture, transfer
from cnnviz.cli.calls import Call
from cnnviz.cli.options import Run, run_options
from cnnviz.cli.parse import parse_names
from cnnviz.core.device import set_threads
from cnnviz.errors import CnnvizError
from cnnviz.gallery import estimate
from cnnviz.gallery.lean import publish
from cnnviz.gallery.plan import (
    FULL,
    PAPERS,
    QUICK,
    SECTIONS,
    AscentFigure,
    Figure,
    InvertFigure,
    PatchesFigure,
    SaliencyFigure,
    TextureFigure,
    TransferFigure,
    figures,
)
from cnnviz.gallery.site import build_site


@run_options(model=PAPERS, out=Path("cnnviz-gallery"))
def command(
    sections: Annotated[str, typer.Option(help="Comma list of sections to (re)build.")] = ",".join(SECTIONS),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny pictures, few iterations: every figure in a few minutes.")] = False,
    size: Annotated[int | None, typer.Option(min=16, help="Long side of every picture (default: each section's).")] = None,
    iters: Annotated[int | None, typer.Option(min=1, help="Iterations of each optimization (default: each section's).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip figures whose grids were made with the same command and version.")] = False,
    site_only: Annotated[bool, typer.Option(help="Only rewrite index.html from the grids already there.")] = False,
    publish_to: Annotated[Path | None, typer.Option("--publish", help="Also write a lean copy here: the page and "
                                                    "the grids (WebP) with their sidecars, no cells, plots or arrays.")] = None,
    *,
    run: Run,
) -> None:
    """Build the gallery: the papers' figures, one section per analyzer, and index.html.

    --model papers (the default) uses EfficientNet-Lite0 for saliency and class ascent and VGG-16 for
    channel ascent, inversion, texture and transfer; any other --model is used for every section.
    Every figure's cells, sidecars, grid and loss plot go to --out; the page links them. An interrupted
    build keeps the figures it finished: run it again with --resume.

    Examples:

      cnnviz gallery --quick                           # a first look: open cnnviz-gallery/index.html

      cnnviz gallery --resume --publish gallery        # the repository's gallery/

      cnnviz gallery --sections invert,texture --size 128 --iters 50
    """
    chosen = parse_names(sections)
    for name in chosen:
        if name not in SECTIONS:
            raise CnnvizError(f"unknown section '{name}' (choices: {', '.join(SECTIONS)})")
    presets = QUICK if quick else FULL
    planned = [] if site_only else [figure for name in chosen for figure in figures(
        name, size or presets[name].size, iters or presets[name].iters, run.model, run.weights)]
    todo = [figure for figure in planned if not (resume and _call(figure, run).finished(run.out))]
    if len(todo) < len(planned):
        run.tell(f"--resume: {len(planned) - len(todo)} of {len(planned)} figure(s) already made")
    if todo:
        set_threads(run.threads)
        minutes = estimate.seconds(todo, run.device, run.seed, run.precision) / 60
        run.tell(f"{len(todo)} figure(s) to make: about {max(1, round(minutes))} minute(s) on this machine")
    failed = []
    try:
        for call in (_call(figure, run) for figure in todo):
            run.tell(f"$ {call.line()}")
            try:
                call.run()
                run.written.extend(call.finished(run.out))
            except CnnvizError as err:
                run.tell(f"error: {err} (going on with the next figure)")
                failed.append(call.line())
    finally:
        run.wrote(build_site(run.out))
        if publish_to is not None:
            run.wrote(publish(run.out, publish_to))
    if failed:
        raise CnnvizError(f"{len(failed)} figure(s) failed: " + "; ".join(failed))


def _call(figure: Figure, run: Run) -> Call:
    """The command that makes ``figure``, with the run's shared options."""
    options = dict(model=figure.model, weights=figure.weights, device=run.device, precision=run.precision,
                   threads=run.threads, out=run.out, seed=run.seed, quiet=run.quiet)
    joined = ",".join
    if isinstance(figure, SaliencyFigure):
        checks = {"sanity_check": figure.sanity, "faithfulness_check": figure.faithfulness}
        return Call(saliency.command, images=list(figure.images), methods=joined(figure.methods) or "all", size=figure.size,
                    **checks, **options)
    if isinstance(figure, AscentFigure):
        which = ({"target": joined(figure.classes)} if figure.classes else
                 {"layer": joined(figure.layers), "channel": joined(map(str, figure.channels))})
        return Call(ascent.command, **which, grid=figure.grid, size=figure.size, iters=figure.iters, **options)
    if isinstance(figure, PatchesFigure):
        return Call(patches.command, layer=figure.layer, channels=joined(map(str, figure.channels)), top=figure.top,
                    sizes=joined(map(str, figure.sizes)), guided=figure.guided, **options)
    if isinstance(figure, InvertFigure):
        return Call(invert.command, image=figure.image, layers=figure.layers, size=figure.size, iters=figure.iters, **options)
    if isinstance(figure, TextureFigure):
        return Call(texture.command, images=list(figure.images), layer_sets="paper", size=figure.size, iters=figure.iters,
                    **options)
    if isinstance(figure, TransferFigure):
        return Call(transfer.command, images=list(figure.images), sweep=figure.sweep, size=figure.size, iters=figure.iters,
                    **options)
    raise TypeError(f"no command makes a {type(figure).__name__}")
