"""Live progress of an API call in a Jupyter notebook: one HTML progress bar, updated in place.

The core reports each evaluation as a ``Step`` (and each batch of a scan as a ``Tick``) to a callback; this
renders those records as a display that a kernel updates by its display id (``update_display_data``), so a
run leaves one line in the cell, not one per evaluation. Updates are throttled to ``EVERY`` seconds and the
final state is always shown. Outside a notebook there is no bar (the command line has its own, Rich's).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cnnviz.core.display import in_notebook
from cnnviz.core.progress import Stage, Tick
from cnnviz.optim.settings import Step

EVERY = 0.25  # seconds between updates of the bar


def describe(record: Step | Tick | Stage) -> tuple[int, int | None, str]:
    """(done, total, text) of a progress record: iterations with scale, loss terms and evaluations per
    second; or images with images per second; or a stage's items."""
    if isinstance(record, Stage):
        return record.done, record.total, f"{record.stage}: {record.done}/{record.total or '?'} · {record.seconds:.0f} s"
    if isinstance(record, Tick):
        rate = record.images / record.seconds if record.seconds > 0 else 0.0
        return record.images, record.total, f"{record.images}/{record.total} images · {rate:.1f} images/s"
    terms = " ".join(f"{name} {value:.3g}" for name, value in record.losses.items())
    rate = record.evaluation / record.seconds if record.seconds > 0 else 0.0
    done = min(record.iteration, record.total)
    return done, record.total, f"{done}/{record.total} · {record.scale} px · {terms} · {rate:.1f} eval/s"


def bundle(label: str, record: Step | Tick | Stage) -> dict[str, str]:
    """The bar as a display bundle: an HTML ``<progress>`` with its text, and the text alone."""
    done, total, text = describe(record)
    bar = f'<progress value="{done}" max="{total}" style="width:16em"></progress>' if total else ""
    return {"text/html": f"<div><b>{html.escape(label)}</b> {bar} {html.escape(text)}</div>",
            "text/plain": f"{label} {text}"}


@contextmanager
def progress(label: str, quiet: bool = False) -> Iterator[Callable[[Any], None] | None]:
    """A callback that shows ``Step`` or ``Tick`` records as one notebook bar titled ``label``; ``None``
    when quiet or outside a notebook. The bar appears at the first record and shows the last one on exit."""
    if quiet or not in_notebook():
        yield None
        return
    from IPython.display import display  # loaded already: this is a kernel

    handle: Any = None
    last: list[Step | Tick] = []
    shown = 0.0

    def update(record: Step | Tick) -> None:
        nonlocal handle, shown
        last[:] = [record]
        if handle is None:
            handle = display(bundle(label, record), raw=True, display_id=True)
            shown = time.perf_counter()
        elif time.perf_counter() - shown >= EVERY:
            handle.update(bundle(label, record), raw=True)
            shown = time.perf_counter()

    try:
        yield update
    finally:
        if handle is not None:
            handle.update(bundle(label, last[0]), raw=True)


def chain(*callbacks: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """One callback that calls each given one in order (``None`` if none is given)."""
    given = [callback for callback in callbacks if callback is not None]
    if not given:
        return None
    if len(given) == 1:
        return given[0]

    def call(record: Any) -> None:
        for callback in given:
            callback(record)

    return call
