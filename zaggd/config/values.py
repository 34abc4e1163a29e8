"""The types of plain values a key may hold: numbers in bounds, sizes, durations, choices, names, paths, globs, topics, rates.

Each reads one YAML node (refusing it in one line with its file, line and key
path), says its range in words for the key tables, and gives its JSON Schema.
A JSON Schema cannot check a size written as "100MiB" against its bounds:
editors check its form, zaggd checks the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any, ClassVar

from zaggd.config.nodes import FLOAT, INT, STR, Val, expected, items, number, scalar_tag, text
from zaggd.config.schema import Key, ValueType
from zaggd.config.units import parse_duration, parse_size, show_duration, show_size

_NUMBER = r"^\s*(\d+(\.\d+)?|\.\d+)\s*"
MAX_INT32 = 2**31 - 1
SIZE_PATTERN = _NUMBER + r"([bB]|[kKmMgGtT][iI]?[bB])?\s*$"
DURATION_PATTERN = _NUMBER + r"(ms|s|m|h|d)?\s*$"


def check_range(val: Val, value: float, lo: float, hi: float, show: Callable[[Any], str]) -> None:
    """lo == 0 means more than 0."""
    if lo == 0 and value <= 0:
        val.fail(f"must be more than 0, got {val.shown}")
    if value < lo:
        val.fail(f"must be at least {show(lo)}, got {val.shown}")
    if value > hi:
        val.fail(f"must be at most {show(hi)}, got {val.shown}")


def range_json(lo: float, hi: float) -> dict[str, Any]:
    low = {"exclusiveMinimum": 0} if lo == 0 else {"minimum": lo}
    return {**low, "maximum": hi}


def range_words(lo: float, hi: float, show: Callable[[Any], str]) -> str:
    return f"more than 0, at most {show(hi)}" if lo == 0 else f"{show(lo)} to {show(hi)}"


@dataclass(frozen=True, slots=True)
class Integer(ValueType):
    lo: int
    hi: int

    def read(self, val: Val) -> int:
        if scalar_tag(val) != INT:
            expected(val, "an integer")
        value = number(val, "an integer")
        check_range(val, value, self.lo, self.hi, str)
        return int(value)

    def json(self) -> dict[str, Any]:
        return {"type": "integer", **range_json(self.lo, self.hi)}

    def describe(self) -> str:
        return "integer, " + range_words(self.lo, self.hi, str)


@dataclass(frozen=True, slots=True)
class Size(ValueType):
    """Bytes: a plain integer, or a number and unit (KB MB GB TB, KiB MiB GiB TiB)."""

    lo: int
    hi: int

    def read(self, val: Val) -> int:
        tag = scalar_tag(val)
        if tag not in (INT, FLOAT, STR):
            expected(val, "a size such as 100MiB")
        raw = int(number(val, "an integer")) if tag == INT else str(val.node.value)
        try:
            size = parse_size(raw)
        except ValueError as e:
            val.fail(str(e))
        check_range(val, size, self.lo, self.hi, show_size)
        return size

    def json(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "integer", **range_json(self.lo, self.hi)},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }

    def describe(self) -> str:
        return "size, " + range_words(self.lo, self.hi, show_size)

    def show(self, value: Any) -> Any:
        return show_size(value)


@dataclass(frozen=True, slots=True)
class Duration(ValueType):
    """Seconds: a plain number, or a number and unit (ms s m h d); `whole`: whole seconds only."""

    lo: float
    hi: float
    whole: bool = False
    suffix: ClassVar[str] = "_s"

    def read(self, val: Val) -> float:
        tag = scalar_tag(val)
        if tag not in (INT, FLOAT, STR):
            expected(val, "a duration such as 10s")
        raw = str(val.node.value) if tag == STR else number(val, "a duration such as 10s")
        try:
            seconds = parse_duration(raw)
        except ValueError as e:
            val.fail(str(e))
        check_range(val, seconds, self.lo, self.hi, show_duration)
        if self.whole and seconds != int(seconds):
            val.fail(f"expected a whole number of seconds, got {val.shown}")
        return int(seconds) if self.whole else seconds

    def json(self) -> dict[str, Any]:
        plain = "integer" if self.whole else "number"
        return {
            "anyOf": [
                {"type": plain, **range_json(self.lo, self.hi)},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }

    def describe(self) -> str:
        whole = ", whole seconds" if self.whole else ""
        return "duration, " + range_words(self.lo, self.hi, show_duration) + whole

    def show(self, value: Any) -> Any:
        return show_duration(value)


@dataclass(frozen=True, slots=True)
class Choice(ValueType):
    """One of a few words; read as the Enum member when `enum` is given, else the word."""

    names: tuple[str, ...]
    enum: type[Enum] | None = None

    @classmethod
    def of(cls, enum: type[Enum]) -> Choice:
        return cls(tuple(str(member.value) for member in enum), enum)

    def read(self, val: Val) -> Any:
        what = "one of " + ", ".join(self.names)
        word = text(val, what, hint=False)
        if word not in self.names:
            val.fail(f"expected {what}, got {val.shown}")
        return self.enum(word) if self.enum is not None else word

    def json(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.names)}

    def describe(self) -> str:
        words = [f"`{name}`" for name in self.names]
        return ", ".join(words[:-1]) + " or " + words[-1]

    def show(self, value: Any) -> Any:
        return value.value if isinstance(value, Enum) else value


LOG_LEVEL_KEY = Key(
    "log_level",
    Choice(("debug", "info", "warning", "error")),
    "least severe messages logged",
    default="info",
)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_name(word: str) -> bool:
    return _NAME_RE.fullmatch(word) is not None


@dataclass(frozen=True, slots=True)
class Name(ValueType):
    what: str  # "a node name"

    def read(self, val: Val) -> str:
        word = text(val, self.what)
        if not is_name(word):
            val.fail(f"expected {self.what} of {_NAME_RULE}, got {val.shown}")
        return word

    def json(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^" + _NAME_RE.pattern + "$"}

    def describe(self) -> str:
        return "name: 1 to 64 letters, digits, `.`, `_`, `-`"


def check_path_text(val: Val, path: str, what: str) -> None:
    if not path:
        val.fail(f"expected {what}, got an empty string")
    if "\0" in path:
        val.fail("a path cannot contain a NUL character")


@dataclass(frozen=True, slots=True)
class Path(ValueType):
    """A file or folder path, taken from the config file's folder when relative."""

    what: str  # "a folder path"

    def read(self, val: Val) -> str:
        path = text(val, self.what)
        check_path_text(val, path, self.what)
        return val.resolve(path)

    def json(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}

    def describe(self) -> str:
        return "path"


_GLOB_JSON = {"type": "string", "minLength": 1, "pattern": "[^/]$"}


@dataclass(frozen=True, slots=True)
class Globs(ValueType):
    """A list of globs of files; `resolve`: taken from the config's folder (else name patterns)."""

    resolve: bool
    at_least_one: bool = False

    def read(self, val: Val) -> list[str]:
        globs = [self._glob(item) for item in items(val, "a list of globs")]
        if self.at_least_one and not globs:
            val.fail("expected at least one glob, got an empty list")
        return globs

    def _glob(self, val: Val) -> str:
        glob = text(val, "a glob (a string)")
        check_path_text(val, glob, "a glob")
        if glob.endswith("/"):
            val.fail(f"a glob must match files, not a folder: {val.shown}")
        return val.resolve(glob) if self.resolve else glob

    def json(self) -> dict[str, Any]:
        least = {"minItems": 1} if self.at_least_one else {}
        return {"type": "array", **least, "items": _GLOB_JSON}

    def describe(self) -> str:
        return "list of globs"

    def show(self, value: Any) -> Any:
        return list(value)


MAX_TOPIC_BYTES = 255


def _topic_problem(word: str) -> str | None:
    if not word.isprintable() or any(c.isspace() for c in word):
        return "a topic cannot contain spaces or control characters"
    if len(word.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"a topic is at most {MAX_TOPIC_BYTES} bytes of UTF-8"
    return None


def _topic_json(least: int) -> dict[str, Any]:
    # maxLength counts characters: looser than the bytes zaggd counts, never stricter.
    return {"type": "string", "minLength": least, "maxLength": MAX_TOPIC_BYTES, "pattern": r"^\S*$"}


@dataclass(frozen=True, slots=True)
class Topic(ValueType):
    def read(self, val: Val) -> str:
        word = text(val, "a topic")
        if not word:
            val.fail("expected a topic, got an empty string")
        problem = _topic_problem(word)
        if problem:
            val.fail(f"{problem}, got {val.shown}")
        return word

    def json(self) -> dict[str, Any]:
        return _topic_json(1)

    def describe(self) -> str:
        return "topic: no spaces, at most 255 bytes"


@dataclass(frozen=True, slots=True)
class TopicPrefixes(ValueType):
    def read(self, val: Val) -> tuple[str, ...]:
        given = items(val, 'a list of topic prefixes ("" for all)')
        if not given:
            val.fail('expected at least one topic prefix ("" for all), got an empty list')
        return tuple(self._prefix(item) for item in given)

    def _prefix(self, val: Val) -> str:
        word = text(val, 'a topic prefix ("" for all)')
        problem = _topic_problem(word)
        if problem:
            val.fail(f"{problem}, got {val.shown}")
        return word

    def json(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": _topic_json(0)}

    def describe(self) -> str:
        return "list of topic prefixes"

    def show(self, value: Any) -> Any:
        return list(value)


_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMG])bit(?:/s)?", re.ASCII)
_RATE_UNITS = {"k": 1, "K": 1, "M": 1000, "G": 1000**2}
_MAX_RATE_KBPS = 100 * 1000**2


@dataclass(frozen=True, slots=True)
class Rate(ValueType):
    """A network rate in kbit/s: an integer, or a number and unit (100Mbit, 1Gbit/s)."""

    suffix: ClassVar[str] = "_kbps"

    def read(self, val: Val) -> int:
        what = "a rate such as 100Mbit, or an integer of kbit/s"
        tag = scalar_tag(val)
        if tag == INT:
            kbps = int(number(val, what))
        elif tag == STR:
            written = str(val.node.value)
            match = _RATE_RE.fullmatch(written.strip()) if len(written) <= 40 else None
            if match is None:
                val.fail(f"expected {what}, got {val.shown}")
            rate = Fraction(match[1]) * _RATE_UNITS[match[2]]
            if rate.denominator != 1:
                val.fail(f"expected a whole number of kbit/s, got {val.shown}")
            kbps = int(rate)
        else:
            expected(val, what)
        if not 1 <= kbps <= _MAX_RATE_KBPS:
            val.fail(f"must be from 1kbit to 100Gbit, got {val.shown}")
        return kbps

    def json(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": _MAX_RATE_KBPS},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[kKMG]bit(/s)?\s*$"},
            ]
        }

    def describe(self) -> str:
        return "rate, 1kbit to 100Gbit (an integer is kbit/s)"

    def show(self, value: Any) -> Any:
        for unit, name in ((1000**2, "Gbit"), (1000, "Mbit")):
            if value % unit == 0:
                return f"{value // unit}{name}"
        return f"{value}kbit"
