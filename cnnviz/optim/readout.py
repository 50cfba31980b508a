"""Loss readings without a host-device synchronization per evaluation.

Reading a CUDA tensor on the host (``.item()``, ``float()``) waits until the GPU has run every kernel
queued before it, so the CPU stops queueing the next evaluation's kernels: at a few milliseconds per
evaluation the GPU then idles for part of each one. A ``Readout`` keeps each evaluation's loss terms on
the device and reads all pending ones in one transfer every ``every`` evaluations or ``seconds``,
whichever comes first (on the CPU, where reading costs nothing, the time limit keeps progress live).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

READ_EVERY = 8
READ_SECONDS = 0.5


@dataclass(frozen=True)
class Reading:
    """One evaluation's losses as host floats, with the image evaluated and when it was queued."""

    evaluation: int
    iteration: int
    scale: int
    losses: dict[str, float]
    loss: float
    seconds: float
    image: Tensor


class Readout:
    """Evaluations' loss terms kept on the device until ``read`` moves them to the host at once."""

    def __init__(self, every: int = READ_EVERY, seconds: float = READ_SECONDS) -> None:
        self.every = every
        self.seconds = seconds
        self._pending: list[tuple[dict, list[str], Tensor]] = []
        self._last = time.perf_counter()

    def add(self, terms: dict[str, Tensor], loss: Tensor, **fields) -> None:
        """Keep ``loss`` and its ``terms`` (detached, on the device) with the fields of their ``Reading``."""
        values = torch.stack([loss.detach(), *(v.detach() for v in terms.values())])
        self._pending.append((fields, list(terms), values))

    @property
    def due(self) -> bool:
        """Whether ``every`` evaluations or ``seconds`` have passed since the last read."""
        return len(self._pending) >= self.every or time.perf_counter() - self._last >= self.seconds

    def read(self) -> list[Reading]:
        """Every pending evaluation's losses, in order, from one device-to-host transfer."""
        if not self._pending:
            return []
        flat = torch.cat([values for _, _, values in self._pending]).tolist()
        readings, offset = [], 0
        for fields, names, values in self._pending:
            row = flat[offset:offset + len(values)]
            offset += len(values)
            readings.append(Reading(losses=dict(zip(names, row[1:])), loss=row[0], **fields))
        self._pending = []
        self._last = time.perf_counter()
        return readings
