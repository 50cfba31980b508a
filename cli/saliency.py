"""``cnnviz saliency``: backprop, deconvnet and guided-backprop maps of images, as one grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.analyzers.saliency import METHODS, saliency
from cnnviz.analyzers.target import TOP, is_class
from cnnviz.cli import common
from cnnviz.cli.options import Device, Model, Out, Size, Threads, WeightsOpt
from cnnviz.core.hooked import with_head
from cnnviz.core.images import image_path
from cnnviz.gallery.grid import Cell, caption, draw_grid


def command(
    images: Annotated[list[str], typer.Argument(help="Image files or bundled image names: one grid row each.")],
    cls: Annotated[str | None, typer.Option("--class", help=f"Class name or index (default '{TOP}': each image's best).")] = None,
    layer: Annotated[str | None, typer.Option(help="Explain a channel of this layer instead of a class.")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel of --layer, or 'max' (each image's most activated).")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    gradcam_layer: Annotated[str | None, typer.Option(
        help="Grad-CAM's layer for guided-gradcam (default: the last ReLU up to the target, relu5_3 for a class).")] = None,
    size: Size = 224,
    out: Out = Path("cnnviz-out"),
    model: Model = "vgg16",
    weights: WeightsOpt = None,
    device: Device = "auto",
    threads: Threads = None,
) -> None:
    """Saliency maps (Simonyan et al. 2014) under three ReLU rules, backprop, deconvnet, guided, and guided Grad-CAM."""
    out = common.check_out(out)
    stems = [Path(image_path(image)).stem for image in images]
    hooked = common.model(with_head(model, weights) if is_class(layer) else model, weights, device, threads)
    results = [saliency(hooked, image, cls=cls, layer=layer, channel=channel, y=y, x=x, size=size,
                        gradcam_layer=gradcam_layer) for image in images]
    rows, titles = [], []
    for stem, maps in zip(stems, results):
        pngs = {rule: common.save(output, out / f"saliency_{stem}_{maps.target.tag}_{rule}.png")
                for rule, output in maps.outputs.items()}
        rows.append([Cell(maps.image, caption(maps.outputs[METHODS[0]].record))]
                    + [Cell(output.image, path=pngs[rule]) for rule, output in maps.outputs.items()])
        titles.append(f"{stem}\n{maps.target.label}")
    grid = draw_grid(rows, out / f"saliency_{'_'.join(stems)}_grid.png", col_titles=["input", *METHODS], row_titles=titles,
                     analyzer="saliency", title=f"Saliency, {hooked.name} ({hooked.weights.id}), {size}px")
    common.console.print(f"wrote {grid}", highlight=False)
