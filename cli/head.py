"""``cnnviz head train``: a classifier head on VGG features, for class scores with no ImageNet classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnviz.cli import common
from cnnviz.cli.options import Device, Model, Threads, WeightsOpt
from cnnviz.core.head import save_head
from cnnviz.errors import CnnvizError
from cnnviz.training import HeadConfig, train_head

DEFAULTS = HeadConfig()
OUT = Path("cnnviz-out/vgg16_head.safetensors")
app = typer.Typer(help="Classifier heads: class scores for VGG convolutions (use with --model vgg16+head:FILE).",
                  no_args_is_help=True)


@app.command()
def train(
    images: Annotated[list[str] | None, typer.Argument(help="One class per image, named by its stem (default: all bundled).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The head's .safetensors file (its .json sidecar goes beside it).")] = OUT,
    image_size: Annotated[int, typer.Option(help="Long side the images are loaded at (px).")] = DEFAULTS.image_size,
    crop: Annotated[int, typer.Option(help="Side of every crop fed to the network (px).")] = DEFAULTS.crop,
    train_crops: Annotated[int, typer.Option(help="Augmented training crops per image.")] = DEFAULTS.train_crops,
    test_crops: Annotated[int, typer.Option(help="Held-out crops per image.")] = DEFAULTS.test_crops,
    test_fraction: Annotated[float, typer.Option(help="Right part of each image held out for testing.")] = DEFAULTS.test_fraction,
    epochs: Annotated[int, typer.Option(help="Full-batch AdamW steps.")] = DEFAULTS.epochs,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = DEFAULTS.lr,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = DEFAULTS.weight_decay,
    dropout: Annotated[float, typer.Option(help="Dropout on the pooled features.")] = DEFAULTS.dropout,
    seed: Annotated[int, typer.Option(help="Random seed (crops, augmentation, initialisation).")] = DEFAULTS.seed,
    model: Model = "vgg16",
    weights: WeightsOpt = None,
    device: Device = "auto",
    threads: Threads = None,
) -> None:
    """Train a head (pooled pool5 → linear) on crops of images; report its held-out accuracy."""
    if out.suffix != ".safetensors":
        raise CnnvizError(f"--out must be a .safetensors file, got {out}")
    config = HeadConfig(image_size=image_size, crop=crop, train_crops=train_crops, test_crops=test_crops,
                        test_fraction=test_fraction, epochs=epochs, lr=lr, weight_decay=weight_decay, dropout=dropout,
                        seed=seed)
    config.check()
    hooked = common.model(model, weights, device, threads)
    common.console.print(f"training a head on {hooked.name} ({hooked.weights.id}) features ...", highlight=False)
    head, record = train_head(hooked, images, config)
    path = save_head(head, out, record)
    p = record.params
    common.console.print(
        f"held-out accuracy {p['accuracy']:.1%} on {len(p['classes']) * config.test_crops} crops "
        f"(chance {p['chance']:.1%}, training {p['train_accuracy']:.1%}), {record.seconds:.0f} s", highlight=False,
    )
    common.console.print(f"wrote {path} (+ .json); use it with --model {hooked.spec.name}+head:{path}", highlight=False)
