"""Shared fixtures: the bundled VGG-16 on the CPU, seeded, offline."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cnnviz.core.hooked import load_model

torch.set_num_threads(os.cpu_count() or 1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def vgg():
    return load_model("vgg16", device="cpu")


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m cnnviz ARGS`` in a subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "cnnviz", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
