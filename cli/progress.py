"""Render the loop's per-evaluation ``Step`` records, and the images a scan has run, as Rich progress bars
(the core never prints)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cnnviz.core.images import save_png
from cnnviz.core.progress import Tick
from cnnviz.optim.settings import Step


@contextmanager
def _bar(label: str) -> Iterator[Callable[..., None]]:
    """An ``update(**fields)`` for one Rich bar on stderr, which appears at its first call (so errors found
    before the run stay on one line) and is stopped on exit."""
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False,
    )
    task = bar.add_task(label, total=None, info="")

    def update(**fields: Any) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, **fields)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


@contextmanager
def progress(
    label: str, quiet: bool, checkpoint: Path | Sequence[Path] | None = None, every: int = 0
) -> Iterator[Callable[[Step], None] | None]:
    """A callback that shows iteration, loss terms and speed, and saves the latest image to
    ``checkpoint`` (one path per image of a batch) every ``every`` evaluations (0 = never); ``None``
    when it has nothing to do."""
    paths = [checkpoint] if isinstance(checkpoint, Path) else list(checkpoint or [])

    def save(step: Step) -> None:
        if paths and every > 0 and step.evaluation % every == 0:
            for i, path in enumerate(paths):
                save_png(step.image[i:i + 1], path)

    if quiet:
        yield save if every > 0 else None
        return
    with _bar(label) as show:

        def update(step: Step) -> None:
            save(step)
            terms = " ".join(f"{k} {v:.3g}" for k, v in step.losses.items())
            rate = step.evaluation / step.seconds if step.seconds > 0 else 0.0
            show(total=step.total, completed=min(step.iteration, step.total),
                 info=f"{step.scale}px {terms} | {rate:.1f} eval/s")

        yield update


@contextmanager
def counting(label: str, quiet: bool) -> Iterator[Callable[[Tick], None] | None]:
    """A callback that shows images done of the total and images per second (``None`` when quiet); the
    bar appears after the first batch."""
    if quiet:
        yield None
        return
    with _bar(label) as show:

        def update(tick: Tick) -> None:
            rate = tick.images / tick.seconds if tick.seconds > 0 else 0.0
            show(total=tick.total, completed=tick.images, info=f"{rate:.1f} images/s")

        yield update


@contextmanager
def stages(quiet: bool) -> Iterator[Callable[[Any], None] | None]:
    """A callback for a run of stages (``cnnviz.microscope.run.Stage``): one bar per stage, items done of its
    total (counting up where the total is not known yet); ``None`` when quiet."""
    if quiet:
        yield None
        return
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True))
    tasks: dict[str, Any] = {}

    def update(stage: Any) -> None:
        if not bar.live.is_started:
            bar.start()
        if stage.stage not in tasks:
            tasks[stage.stage] = bar.add_task(stage.stage, total=stage.total)
        bar.update(tasks[stage.stage], completed=stage.done, total=stage.total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()
