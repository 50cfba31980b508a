"""Saving an analyzer's output from a command: the files, what the run says, and how it ends."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from cnnviz.analyzers.common import Output
from cnnviz.cli.options import Run
from cnnviz.errors import CnnvizError

console = Console(stderr=True)


def save(output: Output, path: Path, run: Run) -> Path:
    """Save image + sidecar and say where; a NaN stop is an error, an interrupt exits 130 after saving."""
    png = run.wrote(output.save(path))
    if output.record.error:
        raise CnnvizError(f"{output.record.error}; kept the last finite image in {png}")
    if output.record.interrupted:
        console.print("interrupted: the latest image was saved", highlight=False)
        sys.exit(130)
    return png
