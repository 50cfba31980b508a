"""``cnnviz gallery``: build every analyzer's comparable grids into one folder and write index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli import ascent, invert, patches, saliency, texture, transfer
from cnnviz.cli.options import Run, shared
from cnnviz.errors import CnnvizError
from cnnviz.gallery.site import SECTIONS, build_site

DEFAULT_SECTIONS = ("saliency", "ascent", "patches", "invert", "texture", "transfer")
PAPERS = "papers"
CLASSES = "espresso,tabby,goldfish,volcano"


@shared(model=PAPERS, out=Path("gallery"))
def command(
    sections: Annotated[str, typer.Option(help="Comma list of sections to (re)build.")] = ",".join(DEFAULT_SECTIONS),
    size: Annotated[int, typer.Option(min=16, help="Long side of every picture.")] = 256,
    iters: Annotated[int, typer.Option(min=1, help="Iterations of each optimization.")] = 200,
    site_only: Annotated[bool, typer.Option(help="Only rewrite index.html from the grids already there.")] = False,
    *,
    run: Run,
) -> None:
    """Build the gallery: the papers' figures, one section per analyzer, and index.html.

    --model papers (the default) uses EfficientNet-Lite0 for saliency and class ascent and VGG-16 for
    channel ascent, inversion, texture and transfer; any other --model is used for every section.

    Examples:

      cnnviz gallery --size 128 --iters 50 --out my-gallery

      cnnviz gallery --sections invert,texture --site-only
    """
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    for name in chosen:
        if name not in SECTIONS or name not in BUILDERS:
            raise CnnvizError(f"unknown section '{name}' (choices: {', '.join(BUILDERS)})")
    if not site_only:
        for name in chosen:
            BUILDERS[name](size, iters, run)
    run.wrote(build_site(run.out))


def _options(run: Run, model: str) -> dict:
    """The shared options of a section's command: the run's, with the section's paper network."""
    chosen = model if run.model == PAPERS else run.model
    return dict(model=chosen, weights=run.weights if run.model != PAPERS else None, device=run.device,
                threads=run.threads, out=run.out, seed=run.seed, quiet=run.quiet)


def _saliency(size: int, iters: int, run: Run) -> None:
    saliency.command(images=["chelsea", "coffee", "astronaut", "rocket"], size=size, **_options(run, "efficientnet_lite0"))


def _ascent(size: int, iters: int, run: Run) -> None:
    ascent.command(cls=CLASSES, grid="regularizers", size=size, iters=iters, **_options(run, "efficientnet_lite0"))
    ascent.command(layer="relu4_3", channel="10,42,100", grid="regularizers", size=size, iters=iters,
                   **_options(run, "vgg16"))


def _patches(size: int, iters: int, run: Run) -> None:
    scales = f"{size},{size * 3 // 2}"
    for layer, channels in (("relu2_2", "0,1,10,11,14"), ("relu4_3", "2,4,8,11,13")):
        patches.command(layer=layer, channels=channels, top=6, scales=scales, guided=True, **_options(run, "vgg16"))
    patches.command(layer="block3_2", channels="7,9,11,12", top=6, scales=scales, guided=True,
                    **_options(run, "efficientnet_lite0"))


def _invert(size: int, iters: int, run: Run) -> None:
    invert.command(image="astronaut", layers="all", size=size, iters=iters, **_options(run, "vgg16"))


def _texture(size: int, iters: int, run: Run) -> None:
    texture.command(sources=["starry_night", "brick"], layer_sets="paper", size=size, iters=iters, **_options(run, "vgg16"))


def _transfer(size: int, iters: int, run: Run) -> None:
    for sweep in ("alpha-beta", "content-layer", "style-size"):
        transfer.command(images=["astronaut", "starry_night"], sweep=sweep, size=size, iters=iters, **_options(run, "vgg16"))


BUILDERS = {"saliency": _saliency, "ascent": _ascent, "patches": _patches, "invert": _invert, "texture": _texture,
            "transfer": _transfer}
