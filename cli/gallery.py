"""``cnnviz gallery``: build every analyzer's comparable grids into one folder and write index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli import ascent, common, invert, saliency, texture, transfer
from cnnviz.cli.options import Device, Out, Threads
from cnnviz.errors import CnnvizError
from cnnviz.gallery.site import SECTIONS, build_site

DEFAULT_SECTIONS = ("saliency", "ascent", "invert", "texture", "transfer")


def command(
    out: Out = Path("gallery"),
    sections: Annotated[str, typer.Option(help="Comma list of sections to (re)build.")] = ",".join(DEFAULT_SECTIONS),
    size: Annotated[int, typer.Option(help="Long side of every picture.")] = 256,
    iters: Annotated[int, typer.Option(help="Iterations of each optimization.")] = 200,
    site_only: Annotated[bool, typer.Option(help="Only rewrite index.html from the grids already there.")] = False,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Build the gallery: the seed's and the papers' figures, one section per analyzer."""
    out = common.check_out(out)
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    for name in chosen:
        if name not in SECTIONS or name not in BUILDERS:
            raise CnnvizError(f"unknown section '{name}' (choices: {', '.join(BUILDERS)})")
    if not site_only:
        run = dict(out=out, device=device, threads=threads, quiet=quiet, iters=iters)
        for name in chosen:
            BUILDERS[name](size, run)
    index = build_site(out)
    common.console.print(f"wrote {index}", highlight=False)


def _saliency(size: int, run: dict) -> None:
    run = {k: v for k, v in run.items() if k in ("out", "device", "threads")}
    saliency.command(images=["astronaut", "chelsea", "coffee", "rocket"], size=size, **run)


def _ascent(size: int, run: dict) -> None:
    run = {k: v for k, v in run.items() if k != "iters"}
    ascent.command(cls="brick,starry_night,grass", grid="regularizers", size=size, **run)
    ascent.command(layer="relu4_3", channel="10,42,100", grid="regularizers", size=size, **run)


def _invert(size: int, run: dict) -> None:
    invert.command(image="astronaut", layers="all", size=size, **run)


def _texture(size: int, run: dict) -> None:
    texture.command(sources=["starry_night", "brick"], layer_sets="paper", size=size, **run)


def _transfer(size: int, run: dict) -> None:
    for sweep in ("alpha-beta", "content-layer", "style-size"):
        transfer.command(images=["astronaut", "starry_night"], sweep=sweep, size=size, **run)


BUILDERS = {"saliency": _saliency, "ascent": _ascent, "invert": _invert, "texture": _texture, "transfer": _transfer}
