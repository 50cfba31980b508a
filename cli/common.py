"""Helpers that every analyzer command uses: settings from options, loading, saving, exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from cnnviz.analyzers.common import Output
from cnnviz.core.device import set_threads
from cnnviz.core.hooked import HookedModel, load_model
from cnnviz.errors import CnnvizError
from cnnviz.optimize import Settings

console = Console(stderr=True)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'128,256' -> (128, 256), with a clear error."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated whole numbers, got '{text}'") from None


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated numbers, got '{text}'") from None


def settings(optimizer: str, iters: int, lr: float | None, scales: str, seed: int, **extra) -> Settings:
    result = Settings(optimizer=optimizer, iters=iters, lr=lr, scales=parse_ints(scales, "--scales"), seed=seed, **extra)
    result.check()
    return result


def model(name: str, weights: str | None, device: str, threads: int | None) -> HookedModel:
    set_threads(threads)
    return load_model(name, weights, device)


def check_out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise CnnvizError(f"--out must be a folder, but {out} is a file")
    return out


def save(output: Output, path: Path) -> Path:
    """Save image + sidecar and say where; a NaN stop is an error, an interrupt exits 130 after saving."""
    png = output.save(path)
    console.print(f"wrote {png} (+ .json)", highlight=False)
    if output.record.error:
        raise CnnvizError(f"{output.record.error}; kept the last finite image in {png}")
    if output.record.interrupted:
        console.print("interrupted: the latest image was saved", highlight=False)
        sys.exit(130)
    return png
