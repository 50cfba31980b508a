"""Reading option values: comma lists of names and numbers, each with one clear error."""

from __future__ import annotations

import math

from cnnviz.errors import CnnvizError


def parse_names(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the one reading of a comma list (None and '' are empty)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'128,256' -> (128, 256), with a clear error."""
    try:
        return tuple(int(part) for part in parse_names(text))
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated whole numbers, got '{text}'") from None


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """'0.7,0.3' -> (0.7, 0.3); NaN and infinities are refused."""
    try:
        values = tuple(float(part) for part in parse_names(text))
    except ValueError:
        raise CnnvizError(f"{what} must be comma-separated numbers, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise CnnvizError(f"{what} must be finite numbers, got '{text}'")
    return values


def check_finite(**values: float) -> None:
    """Refuse NaN or infinite option values, naming the option."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise CnnvizError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
