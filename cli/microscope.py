"""``cnnviz microscope``: every chosen unit of some layers over an image set, as a browsable static site."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli.options import Run, run_options
from cnnviz.cli.parse import parse_ints
from cnnviz.cli.progress import stages
from cnnviz.microscope.engines import ENGINES
from cnnviz.microscope.run import microscope


@run_options(model="vgg16", out=Path("microscope"))
def command(
    model_name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="The network (same as --model).")] = None,
    layers: Annotated[str, typer.Option("--layers", "-l", help="Layers, comma list.")] = "conv4_3",
    units: Annotated[str, typer.Option(help="Units of each layer: 'all', '0-63', '3,7,9', 'top:N' (highest mean "
                                            "activation over the set) or 'random:N'.")] = "0-15",
    images: Annotated[list[str] | None, typer.Option(
        "--images", "-i", help="Folders (searched recursively, listed lazily), image files or bundled names; repeat for "
                               "more. Default: every bundled image.")] = None,
    top: Annotated[int, typer.Option(help="Dataset examples per unit.")] = 8,
    sizes: Annotated[str, typer.Option(help="Long sides each image is scanned at, comma list.")] = "224",
    batch: Annotated[int, typer.Option(help="Images of one size per forward pass of the scan.")] = 8,
    guided: Annotated[bool, typer.Option("--guided/--no-guided", help="Each example's guided-backprop map beside it.")] = True,
    fv_size: Annotated[int, typer.Option(help="Side of each feature visualization, px.")] = 128,
    fv_iters: Annotated[int, typer.Option(help="Adam steps of each feature visualization.")] = 128,
    copies: Annotated[int, typer.Option(help="Feature visualizations per unit (pushed apart by a diversity term).")] = 1,
    engine: Annotated[str, typer.Option(help=f"Where the work runs: {' or '.join(ENGINES)} (needs pip install 'cnnviz[ray]').")]
    = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster to join: 'auto' or ray://HOST:PORT (default: start a "
                                                     "local Ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray actors (default: one per GPU, else one per CPU).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse the shards and units a killed run of the same command "
                                                          "finished.")] = False,
    *,
    run: Run,
) -> None:
    """The microscope: for every chosen unit of each layer, its feature visualization, the dataset examples that
    excite it most (exact receptive fields, with guided backprop), the distribution of its maximum activation over
    the image set and the classes it raises, as Parquet tables, WebP pictures and a static site (OUT/index.html).

    Examples:

      cnnviz microscope vgg16 --layers conv4_3 --units 0-15

      cnnviz microscope efficientnet_lite0 --layers head --units top:16 --images photos/

      cnnviz microscope vgg16 --layers conv5_3 --units all --images imagenet/val --engine ray --address auto --resume
    """
    sides = parse_ints(sizes, "--sizes")
    hooked = run.load(model_name)
    shown = "cnnviz " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with stages(run.quiet) as show:
        index = microscope(hooked, images, layers=layers, units=units, out=run.out, top=top, sizes=sides, batch=batch,
                           guided=guided, fv_size=fv_size, fv_iters=fv_iters, copies=copies, engine=engine, address=address,
                           workers=workers, resume=resume, seed=run.seed, command=shown, callback=show)
    run.wrote(index)
