"""Which channels of a layer to show: explicit lists and ranges, the most active, or a seeded sample.

``"0-15"``, ``"3,7,9"`` and ``"0-3,8"`` name channels; ``"top"`` / ``"top:N"`` are the N channels with
the highest mean activation over the image set (16 when N is left out); ``"random:N"`` is N channels
drawn with the run's seed; ``"all"`` is every channel of the layer. The text is checked before any work;
the channel count once the layer is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cnnviz.errors import CnnvizError

TOP, RANDOM, ALL = "top", "random", "all"
DEFAULT_COUNT = 16
FORMS = "a list and ranges like '0-15' or '3,7,9', 'top', 'top:N', 'random:N' or 'all'"


@dataclass(frozen=True)
class Channels:
    """A parsed channel choice: ``indices`` for a list, or ``count`` channels chosen by ``rule`` (top, random),
    or every channel (rule all); ``flag`` is the option it came from, for messages."""

    text: str
    indices: tuple[int, ...] = ()
    rule: str | None = None
    count: int = 0
    flag: str = "--channels"

    def check(self, channels: int, layer: str) -> None:
        """Refuse channels the layer does not have."""
        bad = [i for i in self.indices if i >= channels]
        if bad:
            raise CnnvizError(f"channel {bad[0]} is out of range for {layer}: 0 to {channels - 1}")
        if self.rule and self.count > channels:
            raise CnnvizError(f"{self.flag} {self.text} asks for {self.count} channels, but {layer} has {channels}")

    def choose(self, means: Tensor, seed: int) -> list[int]:
        """The channels, given every channel's mean activation over the set: the most active first for
        ``top``, in increasing order for a seeded ``random`` draw, as given for a list."""
        if self.rule == ALL:
            return list(range(len(means)))
        if self.rule == TOP:
            return means.argsort(descending=True, stable=True)[: self.count].tolist()
        if self.rule == RANDOM:
            draw = torch.randperm(len(means), generator=torch.Generator().manual_seed(seed))
            return sorted(draw[: self.count].tolist())
        return list(self.indices)


def _count(text: str, number: str, flag: str) -> int:
    if not number.strip().isdigit() or int(number) < 1:
        raise CnnvizError(f"{flag} '{text}': the count after ':' must be a whole number of at least 1")
    return int(number)


def parse_channels(spec: str | int | Sequence[int], flag: str = "--channels") -> Channels:
    """Parse a channel choice (see the module docstring); a list of ints is taken as it is. ``flag`` names the
    option in messages."""
    if isinstance(spec, int):
        spec = [spec]
    if not isinstance(spec, str):
        indices = tuple(int(i) for i in spec)
        if not indices or min(indices) < 0:
            raise CnnvizError(f"channels must be a non-empty list of indices of at least 0, got {list(spec)}")
        return Channels(",".join(map(str, indices)), indices, flag=flag)
    text = spec.strip()
    if text == ALL:
        return Channels(text, rule=ALL, flag=flag)
    rule, colon, number = text.partition(":")
    if rule in (TOP, RANDOM):
        if rule == RANDOM and not colon:
            raise CnnvizError(f"{flag} random needs a count, like random:{DEFAULT_COUNT}")
        return Channels(text, rule=rule, count=_count(text, number, flag) if colon else DEFAULT_COUNT, flag=flag)
    indices: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise CnnvizError(f"{flag} must be {FORMS}, got '{spec}'")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise CnnvizError(f"{flag} range '{part.strip()}' runs backwards")
        indices.extend(i for i in range(low, high + 1) if i not in indices)
    return Channels(text, tuple(indices), flag=flag)
