"""Progress of a scan over an image set, or of a run in stages, as reported to a callback (the core never prints; the CLI and
notebooks render these records)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """``images`` of ``total`` run at every size after ``seconds``."""

    images: int
    total: int
    seconds: float


@dataclass(frozen=True)
class Stage:
    """``done`` of ``total`` (None: not known yet) items of a run's ``stage``, after ``seconds``."""

    stage: str
    done: int
    total: int | None
    seconds: float
