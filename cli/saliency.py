"""``cnnviz saliency``: saliency maps of images under every method, as one grid (rows: images)."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.analyzers.saliency import METHODS, get_method, saliency
from cnnviz.analyzers.target import TOP, is_class
from cnnviz.cli import common
from cnnviz.cli.options import Run, Size, run_options
from cnnviz.cli.parse import parse_names
from cnnviz.core.hooked import with_head
from cnnviz.core.images import image_stem
from cnnviz.errors import CnnvizError
from cnnviz.figures import Cell, caption, draw_grid


def _methods(text: str) -> list[str]:
    names = list(METHODS) if text == "all" else [get_method(name).name for name in parse_names(text)]
    if not names:
        raise CnnvizError("--methods needs at least one method")
    return names


@run_options(model="efficientnet_lite0")
def command(
    images: Annotated[list[str] | None, typer.Argument(
        help="Image files or bundled names (see `cnnviz images`): one grid row each. Default: chelsea.")] = None,
    target: Annotated[str | None, typer.Option("--class", help=f"Class name or index (default '{TOP}': each image's most "
                                                                "probable class).")] = None,
    layer: Annotated[str | None, typer.Option(help="Explain a channel of this layer instead of a class.")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel of --layer, or 'max' (each image's most activated).")] = None,
    y: Annotated[int | None, typer.Option(help="Row of one neuron of the channel (default: the channel's mean).")] = None,
    x: Annotated[int | None, typer.Option(help="Column of one neuron of the channel.")] = None,
    methods: Annotated[str, typer.Option(help=f"Comma list or 'all': {', '.join(METHODS)}.")] = "all",
    gradcam_layer: Annotated[str | None, typer.Option(
        help="Grad-CAM's layer (default: the last spatial ReLU up to the target).")] = None,
    size: Size = 256,
    *,
    run: Run,
) -> None:
    """Saliency maps: what in each image a class (or a channel) responds to (8 methods).

    Columns: the input, then backprop (the signed gradient), simonyan (max over colours of its magnitude,
    Simonyan et al. 2014), deconvnet and guided backprop (Springenberg et al. 2015), smoothgrad,
    integrated gradients, Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017). The model's top-5
    classes are printed for each image.

    Examples:

      cnnviz saliency                                  # chelsea, its top class, on EfficientNet-Lite0

      cnnviz saliency chelsea coffee --class "tiger cat"

      cnnviz saliency coffee --model vgg16 --layer relu4_3 --channel max
    """
    images = images or ["chelsea"]
    chosen = _methods(methods)
    stems = [image_stem(image) for image in images]
    hooked = run.load(with_head(run.model, run.weights) if is_class(layer) else run.model)
    rows, titles = [], []
    for image, stem in zip(images, stems):
        outputs = {}
        for method in chosen:
            output = saliency(hooked, image, target, layer=layer, channel=channel, y=y, x=x, method=method, size=size,
                              gradcam_layer=gradcam_layer, seed=run.seed)
            outputs[method] = output
        params = next(iter(outputs.values())).record.params
        if "top5" in params:
            run.tell(f"{stem}: top-5 " + ", ".join(f"{name} {p:.2f}" for name, p in params["top5"]))
        run.tell(f"{stem}: explaining {params['target']} (score {params['score']:.3g})")
        pngs = {method: common.save(output, run.out / f"saliency_{stem}_{params['target_tag']}_{method}.png", run)
                for method, output in outputs.items()}
        first = next(iter(outputs.values()))
        rows.append([Cell(first.input, caption(first.record))]
                    + [Cell(output.image, path=pngs[method]) for method, output in outputs.items()])
        titles.append(f"{stem}\n{params['target']}")
    name = "_".join(dict.fromkeys(stems))
    run.wrote(draw_grid(rows, run.out / f"saliency_{name}_grid.png", col_titles=["input", *chosen], row_titles=titles,
                        analyzer="saliency", title=f"Saliency, {hooked.name} ({hooked.weights.id}), {size}px"))
