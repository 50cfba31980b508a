"""Options shared by the commands, defined once: ``@run_options`` adds --model --weights --device --precision
--threads --out --seed --quiet to a command and hands them over as one ``Run``; ``@loop_options`` adds the
loop's --optimizer --iters --lr --scales --save-every --line-search as one ``Loop``, which makes the
engine's ``Settings``."""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cnnviz.cli.parse import parse_floats
from cnnviz.core.device import check_precision, check_threads, resolve_device, set_threads
from cnnviz.errors import CnnvizError
from cnnviz.optim.settings import LINE_SEARCH_NAMES, Settings

LINE_SEARCH = next(name for name, search in LINE_SEARCH_NAMES.items() if search == Settings.line_search)
"""``--line-search``'s default: ``Settings``' own, by its option name."""

Size = Annotated[int, typer.Option("--size", "-s", min=16, help="Long side of the output, in pixels (at least 16).")]

_MODEL = typer.Option("--model", "-m", help="Network: vgg16 (bundled), efficientnet_lite0 (bundled, 1000 ImageNet classes), "
                      "vgg19, any torchvision CNN, or vgg16+head[:FILE].")
_WEIGHTS = typer.Option("--weights", "-w", help="bundled | imagenet (torch hub cache; downloads only when asked) | random | FILE.")
_DEVICE = typer.Option(help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps.")
_PRECISION = typer.Option(help="The network's compute precision: auto (bf16 for invert, texture and transfer on CPUs with "
                          "native BF16 and on GPUs with bf16 tensor cores, else fp32), fp32, bf16, fp16 (CUDA only). "
                          "Images and losses stay fp32.")
_THREADS = typer.Option(help="CPU threads for torch (default: all cores).")
_OUT = typer.Option("--out", "-o", help="Output folder.")
_SEED = typer.Option(help="Random seed (noise start, jitter, random weights).")
_QUIET = typer.Option("--quiet", "-q", help="No progress bar and no summary.")
_console = Console(stderr=True)


@dataclass(frozen=True)
class Run:
    """What every command shares: the network, where it runs, where outputs go, the seed, verbosity."""

    model: str
    weights: str | None
    device: str
    precision: str
    threads: int | None
    out: Path
    seed: int
    quiet: bool
    written: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def check(self) -> None:
        """Find bad options before any work: threads, device, precision, and an output folder that can be written."""
        check_threads(self.threads)
        check_precision(self.precision, resolve_device(self.device))
        check_out(self.out)

    def tell(self, message: str) -> None:
        """One line on stderr unless --quiet."""
        if not self.quiet:
            _console.print(message, highlight=False, markup=False, soft_wrap=True)

    def wrote(self, path: Path) -> Path:
        """Note a file written (for the closing summary) and say so."""
        self.written.append(path)
        self.tell(f"wrote {path}")
        return path

    def finish(self) -> None:
        """The closing line: how many images were written where, and how long it took."""
        if self.written:
            pngs = sum(p.suffix == ".png" for p in self.written)
            what = f"{pngs} image(s) with .json sidecars" if pngs else ", ".join(p.name for p in self.written)
            self.tell(f"done in {time.perf_counter() - self.started:.1f} s: {what} in {self.out}")

    def load(self, model: str | None = None):
        """The run's network (or ``model`` instead), with its weights, on its device."""
        from cnnviz.core.hooked import load_model

        set_threads(self.threads)
        return load_model(model or self.model, self.weights, self.device, self.seed, self.precision)


CREATED: list[Path] = []
"""Output folders this process created, outermost first (``remove_created`` takes back the empty ones)."""


def check_out(out: Path) -> Path:
    """The output folder, created, and proved writable by writing and removing a file in it."""
    if out.exists() and not out.is_dir():
        raise CnnvizError(f"--out must be a folder, but {out} is a file")
    try:
        CREATED.extend(reversed([folder for folder in (out, *out.parents) if not folder.exists()]))
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cnnviz-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CnnvizError(f"cannot write to the output folder {out}: {err.strerror or err}") from None
    return out


def remove_created() -> None:
    """Remove the output folders this process created that are still empty (after a user error, so that
    a bad option leaves nothing behind); a folder with anything in it stays."""
    for folder in reversed(CREATED):
        try:
            folder.rmdir()
        except OSError:
            pass
    CREATED.clear()


@dataclass(frozen=True)
class Loop:
    """The one optimization loop's options, as the user gave them."""

    optimizer: str
    iters: int
    lr: float | None
    scales: str
    save_every: int
    line_search: str

    def check(self) -> None:
        if self.save_every < 0:
            raise CnnvizError(f"--save-every must be at least 0, got {self.save_every}")

    def settings(self, run: Run, **extra: Any) -> Settings:
        """Checked ``Settings`` for the loop, seeded by the run."""
        line_search = LINE_SEARCH_NAMES.get(self.line_search, self.line_search)
        result = Settings(optimizer=self.optimizer, iters=self.iters, lr=self.lr, line_search=line_search,
                          scales=() if self.scales == "none" else parse_floats(self.scales, "--scales"),
                          seed=run.seed, **extra)
        result.check()
        return result


def _option(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _extend(
    fn: Callable[..., Any], key: str, group: type, params: list[inspect.Parameter],
) -> Callable[..., Any]:
    """``fn`` with ``params`` added to its signature (for Typer), passed to it as one ``group`` object
    (checked before the call; a ``Run`` also says how the command went after it)."""
    signature = inspect.signature(fn, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != key]
    defaults = {p.name: p.default for p in params}

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, default) for name, default in defaults.items()}
        options = group(**values)
        options.check()
        result = fn(*args, **kwargs, **{key: options})
        if isinstance(options, Run):
            options.finish()
        return result

    command.__signature__ = signature.replace(parameters=[*own, *params])
    command.__annotations__ = {}
    return command


def run_options(model: str = "vgg16", out: Path = Path("cnnviz-out")) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared options (with its own default model and output folder) as ``run: Run``."""
    params = [
        _option("model", model, Annotated[str, _MODEL]),
        _option("weights", None, Annotated[str | None, _WEIGHTS]),
        _option("device", "auto", Annotated[str, _DEVICE]),
        _option("precision", "auto", Annotated[str, _PRECISION]),
        _option("threads", None, Annotated[int | None, _THREADS]),
        _option("out", out, Annotated[Path, _OUT]),
        _option("seed", 0, Annotated[int, _SEED]),
        _option("quiet", False, Annotated[bool, _QUIET]),
    ]
    return lambda fn: _extend(fn, "run", Run, params)


def loop_options(optimizer: str = "lbfgs", iters: int = 200, lr: float | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the loop's options (with its own defaults) as ``loop: Loop``."""
    params = [
        _option("optimizer", optimizer, Annotated[str, typer.Option(help="lbfgs or adam.")]),
        _option("iters", iters, Annotated[int, typer.Option(help="Iterations per scale.")]),
        _option("lr", lr, Annotated[float | None, typer.Option(
            help="Step size in [0,1] pixel units (default: 1 for L-BFGS, 0.02 for Adam).")]),
        _option("scales", "none", Annotated[str, typer.Option(
            help="Coarse-to-fine sizes run before --size: long sides in pixels or fractions of --size, e.g. '128,256' "
                 "or '0.25,0.5'; 'none' for --size alone.")]),
        _option("save_every", 0, Annotated[int, typer.Option(
            help="Also save the latest image every N evaluations (0 = only at the end).")]),
        _option("line_search", LINE_SEARCH, Annotated[str, typer.Option(
            help="L-BFGS: backtracking (Armijo, decided on the device: one evaluation per iteration, nothing waits "
                 "for a GPU), strong-wolfe (decided on the host after each evaluation), or none (steps of --lr, at "
                 "most 0.1 per pixel).")]),
    ]
    return lambda fn: _extend(fn, "loop", Loop, params)
