"""``cnnviz gallery``: build every analyzer's comparable grids into one folder and write index.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli import ascent, invert, patches, saliency, texture, transfer
from cnnviz.cli.options import Run, shared
from cnnviz.core.device import set_threads
from cnnviz.errors import CnnvizError
from cnnviz.gallery import estimate
from cnnviz.gallery.calls import Call
from cnnviz.gallery.lean import publish
from cnnviz.gallery.sections import SECTIONS
from cnnviz.gallery.site import build_site

DEFAULT_SECTIONS = ("saliency", "ascent", "patches", "invert", "texture", "transfer")
PAPERS = "papers"
CLASSES = "espresso,tabby,goldfish,volcano"


@dataclass(frozen=True)
class Preset:
    """A section's long side in pixels and iterations per optimization."""

    size: int
    iters: int


FULL = {"saliency": Preset(224, 0), "ascent": Preset(192, 160), "patches": Preset(224, 0), "invert": Preset(192, 150),
        "texture": Preset(192, 200), "transfer": Preset(192, 100)}
"""The papers' pictures at the sizes a 2-core CPU makes in about 30 minutes in all (the papers: 224-512 px)."""
QUICK = {**{name: Preset(64, 30) for name in DEFAULT_SECTIONS}, "ascent": Preset(64, 20), "transfer": Preset(96, 30)}
"""A first look and the tests: every figure, tiny and rough, in about two minutes on 2 cores; enough
iterations that textures, inversions and transfers show their source (at 5 they were still noise), fewer
for ascent, whose many cells run EfficientNet-Lite0 (transfer reads the painting at a quarter of the size,
which VGG-16 needs at least 16 px of)."""


@shared(model=PAPERS, out=Path("cnnviz-gallery"))
def command(
    sections: Annotated[str, typer.Option(help="Comma list of sections to (re)build.")] = ",".join(DEFAULT_SECTIONS),
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
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    for name in chosen:
        if name not in SECTIONS or name not in BUILDERS:
            raise CnnvizError(f"unknown section '{name}' (choices: {', '.join(BUILDERS)})")
    presets = QUICK if quick else FULL
    plan = [] if site_only else [call for name in chosen for call in BUILDERS[name](
        size or presets[name].size, iters or presets[name].iters, run)]
    todo = [call for call in plan if not (resume and call.finished(run.out))]
    if len(todo) < len(plan):
        run.tell(f"--resume: {len(plan) - len(todo)} of {len(plan)} figure(s) already made")
    if todo:
        set_threads(run.threads)
        minutes = estimate.seconds(todo, run.device) / 60
        run.tell(f"{len(todo)} figure(s) to make: about {max(1, round(minutes))} minute(s) on this machine")
    failed = []
    try:
        for call in todo:
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


def _options(run: Run, model: str) -> dict:
    """The shared options of a section's command: the run's, with the section's paper network."""
    chosen = model if run.model == PAPERS else run.model
    return dict(model=chosen, weights=run.weights if run.model != PAPERS else None, device=run.device,
                precision=run.precision, threads=run.threads, out=run.out, seed=run.seed, quiet=run.quiet)


def _saliency(size: int, iters: int, run: Run) -> list[Call]:
    return [Call(saliency.command, images=["chelsea", "coffee", "astronaut", "rocket"], size=size,
                 **_options(run, "efficientnet_lite0"))]


def _ascent(size: int, iters: int, run: Run) -> list[Call]:
    return [
        Call(ascent.command, cls=CLASSES, grid="regularizers", size=size, iters=iters, **_options(run, "efficientnet_lite0")),
        Call(ascent.command, cls=CLASSES, grid="param", size=size, iters=iters, **_options(run, "efficientnet_lite0")),
        Call(ascent.command, layer="conv4_3", channel="10,42,100", grid="regularizers", size=size, iters=iters,
             **_options(run, "vgg16")),
        Call(ascent.command, layer="conv3_3,conv4_3,conv5_3", channel="42", grid="param", size=size, iters=iters,
             **_options(run, "vgg16")),
    ]


def _patches(size: int, iters: int, run: Run) -> list[Call]:
    scales = f"{size},{size * 3 // 2}"
    layers = (("relu2_2", "0,1,10,11,14", "vgg16"), ("relu4_3", "2,4,8,11,13", "vgg16"),
              ("block3_2", "7,9,11,12", "efficientnet_lite0"))
    return [Call(patches.command, layer=layer, channels=channels, top=4, scales=scales, guided=True, **_options(run, model))
            for layer, channels, model in layers]


def _invert(size: int, iters: int, run: Run) -> list[Call]:
    return [Call(invert.command, image="astronaut", layers="all", size=size, iters=iters, **_options(run, "vgg16"))]


def _texture(size: int, iters: int, run: Run) -> list[Call]:
    return [Call(texture.command, sources=["starry_night", "brick"], layer_sets="paper", size=size, iters=iters,
                 **_options(run, "vgg16"))]


def _transfer(size: int, iters: int, run: Run) -> list[Call]:
    return [Call(transfer.command, images=["astronaut", "starry_night"], sweep=sweep, size=size, iters=iters,
                 **_options(run, "vgg16")) for sweep in ("alpha-beta", "content-layer", "style-size")]


BUILDERS = {"saliency": _saliency, "ascent": _ascent, "patches": _patches, "invert": _invert, "texture": _texture,
            "transfer": _transfer}
