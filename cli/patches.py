"""``cnnviz patches``: the image patches that activate each channel most, over an image set, one grid per layer."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.channels import parse_channels
from cnnviz.analyzers.patches import SIZES, patches
from cnnviz.cli.options import Run, run_options
from cnnviz.cli.parse import parse_ints
from cnnviz.cli.progress import counting
from cnnviz.figures import draw_patches

DEFAULT_LAYER = "relu4_3"


@run_options(model="vgg16")
def command(
    layer: Annotated[str, typer.Option(help="Layer, or a comma list of layers (one grid each).")] = DEFAULT_LAYER,
    channels: Annotated[str, typer.Option(
        help="Rows: '0-15', '3,7,9', 'top' or 'top:N' (highest mean activation over the set), 'random:N' (seeded).")] = "0-15",
    images: Annotated[list[str] | None, typer.Option(
        "--images", "-i", help="Image files, folders (searched recursively) or bundled names; repeat for more. "
                               "Default: every bundled image.")] = None,
    top: Annotated[int, typer.Option(help="Patches per channel (columns).")] = 9,
    sizes: Annotated[str, typer.Option(help="Long sides each image is resized to, comma list.")] = ",".join(map(str, SIZES)),
    guided: Annotated[bool, typer.Option("--guided", help="Show each patch's guided-backprop map of its neuron beside it.")] = False,
    batch: Annotated[int, typer.Option(help="Images of one size run together.")] = 8,
    *,
    run: Run,
) -> None:
    """Maximally activating patches: for each channel, the receptive fields in an image set where it
    fires most (Zeiler & Fergus 2014), distinct spots only, optionally with guided backprop beside them.

    Examples:

      cnnviz patches                                       # relu4_3 channels 0-15 over the bundled images

      cnnviz patches --layer relu2_2,relu4_3 --channels top:8 --guided

      cnnviz patches --images photos/ --channels random:16 --sizes 256

      cnnviz patches --model efficientnet_lite0 --layer block3_2 --channels 0-7
    """
    parse_channels(channels)
    sides = parse_ints(sizes, "--sizes")
    hooked = run.load()
    for name in hooked.table.parse(layer):
        with counting(f"patches {name}", run.quiet) as callback:
            result = patches(hooked, images, layer=name, channels=channels, top=top, sizes=sides, batch=batch,
                             guided=guided, seed=run.seed, callback=callback)
        png = run.wrote(draw_patches(result, run.out / f"patches_{hooked.spec.name}_{result.layer}_grid.png"))
        result.save_arrays(png)
