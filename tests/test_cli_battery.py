"""The CLI's surface, end to end in subprocesses: every command's help shows the shared options, and a
battery of bad inputs each ends in one ``error: ...`` line, exit code 2, no traceback and no files written.

The battery runs in one subprocess that calls the CLI's entry point once per case (fresh arguments,
its own captured stderr and stdout), so that fifty cases cost one start-up of torch, not fifty."""

from __future__ import annotations

import fractions
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnviz import __version__

from conftest import run_cli

SHARED = ("--model", "--weights", "--device", "--precision", "--threads", "--out", "--seed", "--quiet")
LOOP = ("--optimizer", "--iters", "--lr", "--scales", "--save-every")
COMMANDS = {
    "saliency": False, "ascent": True, "invert": True, "texture": True, "transfer": True,
    "gallery": False, "layers": False, "head train": False, "patches": False, "microscope": False,
}
# Stable, plain help text: wide, no colours, no cursor tricks.
ENV = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
# Fast on a CPU if a case wrongly runs: a small picture, two steps.
FAST = ("--device", "cpu", "--size", "32", "--iters", "2", "--threads", "1")


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command line with plain help text (``ENV``)."""
    return run_cli(*args, timeout=300, env=ENV)


def help_options(text: str) -> set[str]:
    """The long options listed in the options panel of a help text (one per row, first on the row)."""
    found = set()
    for line in text.splitlines():
        row = line.strip().strip("│|").strip()
        match = re.match(r"(--[a-z][a-z0-9-]*)", row)
        if match:
            found.add(match.group(1))
    return found


# ---------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_the_shared_options(command):
    result = cli(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    shown = help_options(result.stdout)
    assert "--help" in shown, result.stdout
    missing = [o for o in SHARED if o not in shown]
    assert not missing, f"{command} --help lacks {missing}:\n{result.stdout}"
    if COMMANDS[command]:
        missing = [o for o in LOOP if o not in shown]
        assert not missing, f"{command} --help lacks {missing}:\n{result.stdout}"
    else:
        assert "--optimizer" not in shown, result.stdout


def test_short_help_is_help():
    short, long = cli("invert", "-h"), cli("invert", "--help")
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert set(SHARED) <= help_options(short.stdout)


def test_version():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cnnviz {__version__}"


# ------------------------------------------------------------------------------------ bad inputs


def _png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    Image.radial_gradient("L").convert("RGB").resize(size).save(path)
    return path


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        Image.effect_noise((128, 96), 64).convert("RGB").save(path)
        return _cut(path)
    return make


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path
    return make


def _torch_save(obj: object) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "w.pth"
        torch.save(obj, path)
        return path
    return make


def _vgg16_conv_state(drop: str) -> dict[str, torch.Tensor]:
    """A VGG-16 convolutions state_dict (torchvision features.N keys) of the right shapes, tiny on disk
    (each tensor is an expanded scalar), less one key."""
    channels = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    state = {}
    for i, index in enumerate(indices):
        c_in, c_out = channels[i], channels[i + 1]
        state[f"{index}.weight"] = torch.zeros(1).expand(c_out, c_in, 3, 3)
        state[f"{index}.bias"] = torch.zeros(1).expand(c_out)
    del state[drop]
    return state


def _resnet18_state(folder: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    path = folder / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb(folder: Path) -> Path:
    """A PNG whose header claims 20000 x 10000 px (over Pillow's decompression-bomb limit); no pixels."""
    path = folder / "bomb.png"
    header = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    return path


def _nan_tiff(folder: Path) -> Path:
    import numpy as np

    path = folder / "nan.tiff"
    Image.fromarray(np.full((32, 32), np.nan, dtype=np.float32), "F").save(path)
    return path


def _truncated_safetensors(folder: Path) -> Path:
    from safetensors.torch import save_file

    path = folder / "w.safetensors"
    save_file({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, str(path))
    return _cut(path)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # "{f}" is replaced by the made file's path, "{out}" by the --out folder
    make: Callable[[Path], Path] | None = None
    must: tuple[str, ...] = ()  # text the error line must contain (case-insensitive)
    out: str | None = None  # an --out other than a fresh folder: "file", "readonly" or a fixed path
    env: dict[str, str] | None = None


def _inv(*args: str) -> tuple[str, ...]:
    return ("invert", *args, *FAST)


def _micro(*args: str) -> tuple[str, ...]:
    return ("microscope", *args, "--device", "cpu", "--threads", "1", "--sizes", "32", "--fv-iters", "1", "--fv-size", "32")


def _folder(name: str) -> Callable[[Path], Path]:
    def make(inputs: Path) -> Path:
        (inputs / name).mkdir()
        (inputs / name / "notes.txt").write_text("no pictures here\n")
        return inputs / name
    return make


CASES = {
    # images
    "image-missing": Case(_inv("{f}"), lambda d: d / "nope.png", ("nope.png",)),
    "image-empty": Case(_inv("{f}"), _bytes("empty.png", b""), ("empty.png",)),
    "image-truncated-png": Case(_inv("{f}"), _truncated("cut.png"), ("cut.png",)),
    "image-truncated-jpeg": Case(_inv("{f}"), _truncated("cut.jpg"), ("cut.jpg",)),
    "image-text-as-png": Case(_inv("{f}"), _bytes("x.png", b"this is not a picture\n"), ("x.png",)),
    "image-1x1": Case(_inv("{f}"), lambda d: _png(d / "dot.png", (1, 1)), ("16",)),
    "image-decompression-bomb": Case(_inv("{f}"), _bomb, ("bomb.png",)),
    "image-float-nan": Case(_inv("{f}"), _nan_tiff, ("nan.tiff",)),
    "image-unknown-home": Case(_inv("~cnnviz-no-such-user/x.png"), must=("~cnnviz-no-such-user",)),
    "texture-source-empty": Case(("texture", "{f}", *FAST), _bytes("empty.jpg", b""), ("empty.jpg",)),
    "saliency-image-text": Case(("saliency", "{f}", "--methods", "backprop", "--device", "cpu", "--size", "32"),
                                _bytes("x.png", b"not a png"), ("x.png",)),
    # names
    "unknown-model": Case(_inv("--model", "vgg17"), must=("vgg17",)),
    "unknown-model-layers": Case(("layers", "--model", "vgg17", "--device", "cpu"), must=("vgg17",)),
    "unknown-layer": Case(_inv("--layer", "relu9_9"), must=("relu9_9",)),
    "unknown-class-saliency": Case(("saliency", "--class", "tabbby", "--methods", "backprop", "--device", "cpu",
                                    "--size", "32"), must=("tabbby", "did you mean", "tabby")),
    "unknown-class-ascent": Case(("ascent", "--class", "tabbby", *FAST), must=("tabbby", "did you mean", "tabby")),
    # numbers
    "size-0": Case(("invert", "--size", "0", "--iters", "2", "--device", "cpu"), must=("--size",)),
    "size-negative": Case(("invert", "--size", "-5", "--iters", "2", "--device", "cpu"), must=("--size",)),
    "iters-0": Case(("invert", "--iters", "0", "--size", "32", "--device", "cpu"), must=("--iters",)),
    "iters-negative": Case(("invert", "--iters", "-1", "--size", "32", "--device", "cpu"), must=("--iters",)),
    "lr-nan": Case(_inv("--lr", "nan"), must=("--lr",)),
    "tv-weight-nan": Case(_inv("--tv-weight", "nan"), must=("--tv-weight",)),
    "transfer-beta-nan": Case(("transfer", "--beta", "nan", *FAST), must=("--beta",)),
    "ascent-l2-nan": Case(("ascent", "--class", "tabby", "--l2-weight", "nan", *FAST), must=("--l2-weight",)),
    "threads-0": Case(("invert", "--threads", "0", "--size", "32", "--iters", "2", "--device", "cpu"),
                      must=("--threads",)),
    # weights
    "weights-random-bytes": Case(_inv("--weights", "{f}"), _bytes("w.pth", os.urandom(4096)), ("w.pth",)),
    "weights-pickled-object": Case(_inv("--weights", "{f}"),
                                   _torch_save({"0.weight": torch.zeros(2), "note": fractions.Fraction(1, 3)}),
                                   ("w.pth", "state_dict")),
    "weights-pickled-set": Case(_inv("--weights", "{f}"), _torch_save({"layers": {"conv1", "conv2"}}),
                                ("w.pth", "state_dict")),
    "weights-resnet18-for-vgg16": Case(_inv("--weights", "{f}"), _resnet18_state, ("resnet18.pth", "vgg16")),
    "weights-vgg16-key-missing": Case(_inv("--weights", "{f}"), _torch_save(_vgg16_conv_state("28.bias")),
                                      ("w.pth", "28.bias")),
    "weights-safetensors-random": Case(_inv("--weights", "{f}"), _bytes("w.safetensors", os.urandom(4096)),
                                       ("w.safetensors",)),
    "weights-safetensors-truncated": Case(_inv("--weights", "{f}"), _truncated_safetensors, ("w.safetensors",)),
    "weights-empty-file": Case(_inv("--weights", "{f}"), _bytes("w.pth", b""), ("w.pth",)),
    "weights-text-file": Case(_inv("--weights", "{f}"), _bytes("w.pth", b"hello, these are not weights\n"), ("w.pth",)),
    "weights-plain-pickle": Case(_inv("--weights", "{f}"), _bytes("w.pth", pickle.dumps({"0.weight": [0.0] * 4})),
                                 ("w.pth", "state_dict")),
    "weights-non-tensor-value": Case(_inv("--weights", "{f}"),
                                     _torch_save({**_vgg16_conv_state("28.bias"), "28.bias": 0.5, "epoch": 3}),
                                     ("w.pth", "state_dict")),
    "weights-bare-tensor": Case(_inv("--weights", "{f}"), _torch_save(torch.zeros(3)), ("w.pth", "state_dict")),
    "weights-safetensors-empty": Case(_inv("--weights", "{f}"), _bytes("w.safetensors", b""), ("w.safetensors",)),
    "weights-folder": Case(_inv("--weights", "{f}"), lambda d: d, ("{f}", "folder")),
    "weights-unknown-home": Case(_inv("--weights", "~cnnviz-no-such-user/w.pth"), must=("~cnnviz-no-such-user",)),
    "weights-missing": Case(_inv("--weights", "{f}"), lambda d: d / "none.pth", ("none.pth",)),
    # transfer
    "transfer-blend-mismatch": Case(("transfer", "astronaut", "starry_night", "--style-blend", "0.5,0.5", *FAST),
                                    must=("--style-blend",)),
    "transfer-one-image": Case(("transfer", "astronaut", *FAST), must=("style",)),
    # output folder
    "out-is-a-file": Case(_inv(), out="file", must=("--out",)),
    "out-read-only": Case(_inv(), out="readonly", must=("{out}", "cannot write")),
    "out-under-proc": Case(_inv(), out="/proc/cnnviz-out", must=("/proc/cnnviz-out",)),
    # device and option combinations
    "device-cuda": Case(("invert", "--device", "cuda", "--size", "32", "--iters", "2"),
                        env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, must=("cuda", "--device cpu")),
    "invert-layer-and-layers": Case(_inv("--layer", "relu1_1", "--layers", "all"), must=("--layer", "--layers")),
    "ascent-lbfgs-with-jitter": Case(("ascent", "--class", "tabby", "--optimizer", "lbfgs", *FAST),
                                     must=("l-bfgs", "--optimizer adam", "--jitter 0")),
    "ascent-unknown-param": Case(("ascent", "--class", "tabby", "--param", "wavelet", *FAST), must=("wavelet", "fft")),
    "ascent-unknown-transform": Case(("ascent", "--class", "tabby", "--transforms", "blur=3", *FAST), must=("blur", "--transforms")),
    "ascent-bad-zoom": Case(("ascent", "--class", "tabby", "--transforms", "scale=1.2:0.8", *FAST), must=("--transforms",)),
    "ascent-regularizer-grid-fft": Case(("ascent", "--class", "tabby", "--grid", "regularizers", "--param", "fft", *FAST),
                                        must=("--grid regularizers",)),
    "ascent-blur-on-fft": Case(("ascent", "--class", "tabby", "--param", "fft", "--blur", "1", *FAST), must=("pixels",)),
    "ascent-copies-zero": Case(("ascent", "--class", "tabby", "--copies", "0", *FAST), must=("--copies",)),
    "ascent-negative-diversity": Case(("ascent", "--class", "tabby", "--diversity", "-1", *FAST), must=("--diversity",)),
    "ascent-misspelt-second-class": Case(("ascent", "--class", "espresso,espreso", *FAST), must=("did you mean espresso",)),
    "saliency-misspelt-image": Case(("saliency", "coffe", "--device", "cpu", "--size", "32"), must=("did you mean coffee",)),
    "saliency-unknown-method": Case(("saliency", "coffee", "--methods", "guidd", "--device", "cpu", "--size", "32"),
                                    must=("did you mean guided",)),
    "saliency-sanity-unknown-method": Case(("saliency", "coffee", "--methods", "backprp", "--sanity", "--device", "cpu",
                                            "--size", "32"), must=("did you mean backprop",)),
    "saliency-occlusion-window-too-large": Case(("saliency", "coffee", "--methods", "occlusion", "--occlusion-window", "500",
                                                 "--faithfulness", "--device", "cpu", "--size", "32"),
                                                must=("occlusion window (500 px)",)),
    "saliency-occlusion-stride-zero": Case(("saliency", "coffee", "--methods", "occlusion", "--occlusion-stride", "0",
                                            "--device", "cpu", "--size", "32"), must=("occlusion stride",)),
    "saliency-unknown-randomization": Case(("saliency", "coffee", "--sanity", "--randomization", "sideways", "--device",
                                            "cpu", "--size", "32"), must=("--randomization", "cascading")),
    "saliency-head-class": Case(("saliency", "brick", "--model", "vgg16", "--class", "starry_nite", "--device", "cpu",
                                 "--size", "32"), must=("did you mean starry_night",)),
    "texture-unknown-layer": Case(("texture", "--layers", "relu1_1,pool9", *FAST), must=("pool9",)),
    "texture-unknown-image": Case(("texture", "nosuchtexture", *FAST), must=("nosuchtexture",)),
    "transfer-preserve-sepia": Case(("transfer", "coffee", "starry_night", "--preserve-color", "sepia", *FAST),
                                    must=("sepia",)),
    "transfer-unknown-sweep": Case(("transfer", "coffee", "starry_night", "--sweep", "everything", *FAST),
                                   must=("everything",)),
    "optimizer-sgd": Case(_inv("--optimizer", "sgd"), must=("sgd",)),
    "scales-not-numbers": Case(_inv("--scales", "a,b"), must=("--scales",)),
    "scales-too-small": Case(_inv("--scales", "8"), must=("--scales", "8")),
    "scales-whole-size": Case(_inv("--scales", "1"), must=("--scales", "fraction")),
    "unknown-command": Case(("nosuchcommand",), must=("nosuchcommand",)),
    "gallery-unknown-section": Case(("gallery", "--sections", "everything", "--device", "cpu"), must=("everything",)),
    # microscope
    "microscope-images-missing": Case(_micro("--images", "{f}"), lambda d: d / "nope", ("nope",)),
    "microscope-images-empty-folder": Case(_micro("--images", "{f}"), _folder("empty"), ("no images", "empty")),
    "microscope-units-out-of-range": Case(_micro("--units", "500-999"), must=("512", "conv4_3")),
    "microscope-units-text": Case(_micro("--units", "everything"), must=("--units", "everything")),
    "microscope-layer-without-map": Case(_micro("efficientnet_lite0", "--layers", "logits"), must=("logits", "spatial map")),
    "microscope-unknown-engine": Case(_micro("--engine", "spark"), must=("--engine", "spark")),
    "microscope-address-without-ray": Case(_micro("--address", "auto"), must=("--address", "--engine ray")),
    "microscope-top-zero": Case(_micro("--top", "0"), must=("--top",)),
}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


DRIVER = r"""
import contextlib, io, json, sys, traceback
from cnnviz.cli.app import run

results = []
for args in json.load(sys.stdin):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        sys.argv = ["cnnviz", *args]
        try:
            run()
            code = 0
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            code = "crash"
            err.write(traceback.format_exc())
    results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
json.dump(results, sys.__stdout__)
"""


@dataclass
class Prepared:
    """One case ready to run: its arguments with files made and its --out folder."""

    out: Path
    args: list[str]
    skip: str | None = None
    made: str = ""


def _prepare(name: str, folder: Path) -> Prepared:
    case = CASES[name]
    inputs = folder / "in"
    inputs.mkdir(parents=True)
    made = case.make(inputs) if case.make else None
    out = folder / "out"
    skip = None
    if case.out == "file":
        out.write_text("keep me\n")
    elif case.out == "readonly":
        parent = folder / "locked"
        parent.mkdir()
        parent.chmod(0o500)
        out = parent / "out"
        if os.access(parent, os.W_OK) and not _immutable(parent, True):  # root writes anywhere but an immutable folder
            skip = "a read-only folder is writable here (running as root, no chattr); see out-under-proc"
    elif case.out is not None:
        out = Path(case.out)
    args = [a.replace("{f}", str(made)) for a in case.args]
    return Prepared(out, [*args, "--out", str(out)] if name != "unknown-command" else args, skip, str(made))


def _immutable(folder: Path, on: bool) -> bool:
    """Set or clear a folder's immutable attribute (``chattr``: Linux, root, a file system that has it)."""
    try:
        return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """Every case prepared and run through the CLI's entry point in one subprocess."""
    prepared = {name: _prepare(name, tmp_path_factory.mktemp(name)) for name in CASES}
    env = {**ENV, "CUDA_VISIBLE_DEVICES": ""}
    try:
        result = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps([p.args for p in prepared.values()]),
                                capture_output=True, text=True, timeout=900, env=env)
    finally:
        for p in prepared.values():
            if p.out.parent.name == "locked":
                _immutable(p.out.parent, False)
                p.out.parent.chmod(0o700)
    assert result.returncode == 0, result.stderr
    return prepared, dict(zip(prepared, json.loads(result.stdout)))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line(name, battery):
    prepared, outcomes = battery
    case, outcome, out = CASES[name], outcomes[name], prepared[name].out
    if prepared[name].skip:
        pytest.skip(prepared[name].skip)
    print(f"[{name}] exit {outcome['code']}: {outcome['stderr'].strip()}")  # shown with pytest -s or -rA
    everything = outcome["stdout"] + outcome["stderr"]
    assert "Traceback" not in everything, everything
    assert outcome["code"] == 2, f"exit {outcome['code']}\n{everything}"
    lines = outcome["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome["stderr"]
    for text in case.must:
        text = text.replace("{f}", prepared[name].made).replace("{out}", str(out))
        assert text.lower() in lines[0].lower(), f"{text!r} not in: {lines[0]}"
    if case.out == "file":
        assert out.read_text() == "keep me\n"
    elif case.out is None or case.out == "readonly":
        assert _files(out) == [], _files(out)
    else:
        assert not out.exists()
