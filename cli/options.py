"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[str, typer.Option("--model", "-m", help="Network: vgg16 (bundled, offline), vgg19, or any torchvision CNN.")]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", "-w", help="bundled | imagenet (torch hub cache, downloads if allowed) | random | FILE."),
]
Device = Annotated[str, typer.Option(help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option(help="Random seed (noise init, jitter).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Optimizer = Annotated[str, typer.Option(help="lbfgs or adam.")]
Lr = Annotated[float | None, typer.Option(help="Step size (default: 1 for L-BFGS, 0.02 for Adam, in [0,1] pixel units).")]
Scales = Annotated[str, typer.Option(help="Coarse-to-fine long sides before --size, e.g. '128,256'.")]
Size = Annotated[int, typer.Option("--size", "-s", help="Long side of the output, in pixels.")]
SaveEvery = Annotated[int, typer.Option(help="Also save the latest image every N evaluations (0 = only at the end).")]
