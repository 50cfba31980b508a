"""Helpers that every analyzer command uses: parsing lists and numbers, saving with a report."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console

from cnnviz.analyzers.common import Output
from cnnviz.cli.options import Run
from cnnviz.errors import CnnvizError

console = Console(stderr=True)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'128,256' -> (128, 256), with a clear error."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated whole numbers, got '{text}'") from None


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """'0.7,0.3' -> (0.7, 0.3); NaN and infinities are refused."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated numbers, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise CnnvizError(f"{what} must be finite numbers, got '{text}'")
    return values


def check_finite(**values: float) -> None:
    """Refuse NaN or infinite option values, naming the option."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise CnnvizError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def save(output: Output, path: Path, run: Run) -> Path:
    """Save image + sidecar and say where; a NaN stop is an error, an interrupt exits 130 after saving."""
    png = run.wrote(output.save(path))
    if output.record.error:
        raise CnnvizError(f"{output.record.error}; kept the last finite image in {png}")
    if output.record.interrupted:
        console.print("interrupted: the latest image was saved", highlight=False)
        sys.exit(130)
    return png
