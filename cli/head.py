"""``cnnviz head train``: a classifier head on VGG features, for class scores with no ImageNet classifier."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnviz.cli.options import Run, run_options
from cnnviz.core.head import save_head
from cnnviz.training import HeadConfig, train_head

DEFAULTS = HeadConfig()
app = typer.Typer(help="Classifier heads: class scores for VGG convolutions (use with --model vgg16+head:FILE).",
                  no_args_is_help=True)


@app.command()
@run_options(model="vgg16")
def train(
    images: Annotated[list[str] | None, typer.Argument(help="One class per image, named by its stem (default: all bundled).")] = None,
    image_size: Annotated[int, typer.Option(help="Long side the images are loaded at (px).")] = DEFAULTS.image_size,
    crop: Annotated[int, typer.Option(help="Side of every crop fed to the network (px).")] = DEFAULTS.crop,
    train_crops: Annotated[int, typer.Option(help="Augmented training crops per image.")] = DEFAULTS.train_crops,
    test_crops: Annotated[int, typer.Option(help="Held-out crops per image.")] = DEFAULTS.test_crops,
    test_fraction: Annotated[float, typer.Option(help="Right part of each image held out for testing.")] = DEFAULTS.test_fraction,
    epochs: Annotated[int, typer.Option(help="Full-batch AdamW steps.")] = DEFAULTS.epochs,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = DEFAULTS.lr,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = DEFAULTS.weight_decay,
    dropout: Annotated[float, typer.Option(help="Dropout on the pooled features.")] = DEFAULTS.dropout,
    *,
    run: Run,
) -> None:
    """Train a head (pooled pool5 → linear) on crops of images; report its held-out accuracy. It is
    written to OUT/MODEL_head.safetensors with a .json sidecar; use it with --model MODEL+head:FILE.

    Example:

      cnnviz head train brick grass gravel --epochs 200
    """
    config = HeadConfig(image_size=image_size, crop=crop, train_crops=train_crops, test_crops=test_crops,
                        test_fraction=test_fraction, epochs=epochs, lr=lr, weight_decay=weight_decay, dropout=dropout,
                        seed=run.seed)
    config.check()
    hooked = run.load()
    run.tell(f"training a head on {hooked.name} ({hooked.weights.id}) features ...")
    head, record = train_head(hooked, images, config)
    path = run.wrote(save_head(head, run.out / f"{hooked.spec.name}_head.safetensors", record))
    p = record.params
    run.tell(f"held-out accuracy {p['accuracy']:.1%} on {len(p['classes']) * config.test_crops} crops "
             f"(chance {p['chance']:.1%}, training {p['train_accuracy']:.1%}), {record.seconds:.0f} s")
    run.tell(f"use it with --model {hooked.spec.name}+head:{path}")
