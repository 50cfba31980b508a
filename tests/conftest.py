"""Shared fixtures: the bundled VGG-16 on the CPU, seeded, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnviz.core.hooked import load_model

torch.set_num_threads(os.cpu_count() or 1)
for folder in ("benchmarks", "scripts"):  # the benchmarks' quality metrics; the headless browser the screenshot script drives
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))


def skip_or_fail(reason: str) -> None:
    """Skip a test whose tool is missing here, saying why; under CI (``CI=true``, set by ``.ci/run``) fail
    instead, so that CI never passes with the browser or the weights' provenance unchecked."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def quick_gallery(tmp_path_factory):
    """``cnnviz gallery --quick --iters 5`` built once per session (about a minute): its folder and the CLI's
    result. Five iterations, not the preset's: the tests check the gallery's workings, not its pictures.
    One thread: on a shared 2-core machine, two threads per process fight the others and are far slower."""
    folder = tmp_path_factory.mktemp("quick-gallery")
    result = run_cli("gallery", "--quick", "--iters", "5", "--threads", "1", "--out", str(folder))
    return folder, result


@pytest.fixture(scope="session")
def small_microscope(vgg, tmp_path_factory):
    """A microscope of four units of VGG-16 conv3_3 over the bundled photos, tiny and quick: its folder."""
    from cnnviz.microscope.run import microscope

    out = tmp_path_factory.mktemp("microscope") / "vgg16"
    microscope(vgg, ["astronaut", "chelsea", "coffee", "rocket"], layers="conv3_3", units="0-3", out=out, top=3, sizes=(64,),
               fv_size=32, fv_iters=2, command="cnnviz microscope vgg16 --layers conv3_3 --units 0-3")
    return out
