"""Sizes and durations as a config writes them (100MiB, 1.5GB, 250ms, 1d), and back.

Code holds ints in bytes and floats in seconds. Parsing is exact (fractions,
not floats) and bounded: a text longer than MAX_NUMBER_TEXT is refused before
any arithmetic, so no input is slow or huge. Errors are ValueError with a
message ready to follow `key: `.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from zaggd.config.messages import quote

SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
DURATION_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
KIB = SIZE_UNITS["kib"]
MIB = SIZE_UNITS["mib"]
DAY_S = 86400.0
_NUMBER_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)", re.ASCII)
MAX_NUMBER_TEXT = 40


def parse_size(text: str | int) -> int:
    """Bytes from a plain integer or a number and unit: 512, 4KiB, 1.5GB, 100MiB."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"expected a size such as 100MiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    match = _split_number_unit(text)
    unit = match[1].lower() if match else ""
    if match is None or (match[1] and unit not in SIZE_UNITS):
        raise ValueError(f"expected a size such as 100MiB, got {quote(text)}")
    size = Fraction(match[0]) * SIZE_UNITS.get(unit, 1)
    if size.denominator != 1:
        raise ValueError(f"{quote(text)} is not a whole number of bytes")
    return int(size)


def parse_duration(text: str | int | float) -> float:
    """Seconds from a plain number of seconds or a number and unit: 250ms, 10s, 5m, 1h, 1d."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a duration such as 10s, got {text!r}")
    if isinstance(text, str):
        return _parse_duration_text(text)
    try:
        seconds = float(text)
    except OverflowError:
        raise ValueError(f"a duration of {text} seconds is too long") from None
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {text}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {text}")
    return seconds


def _parse_duration_text(text: str) -> float:
    match = _split_number_unit(text)
    if match is None or (match[1] and match[1] not in DURATION_UNITS):
        raise ValueError(f"expected a duration such as 10s, got {quote(text)}")
    return float(Fraction(match[0]) * DURATION_UNITS.get(match[1], Fraction(1)))


def _split_number_unit(text: str) -> tuple[str, str] | None:
    if len(text) > MAX_NUMBER_TEXT:
        return None
    match = _NUMBER_UNIT_RE.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


def show_size(size: int) -> str:
    """A size as a config would write it, shortest first: 262144 -> 256KiB, 10**15 -> 1000TB."""
    shown = []
    for name in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
        unit = SIZE_UNITS[name.lower()]
        if size >= unit and size % unit == 0:
            shown.append(f"{size // unit}{name}")
    return min([*shown, str(size)], key=len)  # a unit wins a tie


def show_duration(seconds: float) -> str:
    """A duration as a config would write it: 300.0 -> 5m."""
    for name in ("d", "h", "m", "s", "ms"):
        count = Fraction(seconds) / DURATION_UNITS[name]
        if count >= 1 and count.denominator == 1:
            return f"{count}{name}"
    return f"{seconds:g}s"
