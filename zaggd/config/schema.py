"""The declarative description of a config: keys, their types, defaults and meanings.

A `Section` lists its `Key`s; each key names its type (a `ValueType`: how to
read it from YAML, describe it to people, and to editors as JSON Schema), its
default and what it means. From that one table come:

- validation: `Values` reads a mapping in document order, each value by its
  type, and refuses unknown, duplicate and missing keys (one line, FILE:LINE:
  key.path: problem, the first problem in document order);
- the README's key tables and the JSON Schema editors read (documents.py).

What a table cannot say (bind or connect decides which keys are needed; one
public key file per endpoint) is said by each section's `build`, in code.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from yaml.nodes import MappingNode, Node, ScalarNode

from zaggd.config.nodes import Val, join, kind, line_of, mapping_pairs


class ValueType:
    """What a key holds. Subclasses read it, and describe it to people and to editors."""

    __slots__ = ()
    # The unit the config's number is turned into, ending the dataclass field's name.
    suffix: ClassVar[str] = ""

    def read(self, val: Val) -> Any:
        raise NotImplementedError

    def json(self) -> dict[str, Any]:
        """This type as a JSON Schema (draft 7) fragment."""
        raise NotImplementedError

    def describe(self) -> str:
        """This type in a few words of Markdown, for the key tables."""
        raise NotImplementedError

    def show(self, value: Any) -> Any:
        """A default in code units as the YAML would write it (256KiB, 5m); None: nothing to show."""
        return value

    def children(self) -> tuple[str, Section] | None:
        """Keys nested under this one, and how their paths join ('.' or '[].')."""
        return None


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: ValueType
    meaning: str  # one sentence of Markdown, as the README and editors show it
    default: Any = None  # in code units; None when the key has none
    required: bool = False
    hint: str = ""  # for a missing required key: what to give
    shown: str = ""  # the default in words when code works it out ("host name")

    @property
    def field(self) -> str:
        """The dataclass field this key fills: every → every_s, rate → rate_kbps."""
        return self.name + self.type.suffix

    def shown_default(self) -> Any:
        return None if self.default is None else self.type.show(self.default)


@dataclass(frozen=True, slots=True)
class Section(ValueType):
    """A mapping of settings: its keys, and what to build from their values."""

    keys: tuple[Key, ...]
    # The built value (a config dataclass); without it, reading gives the Values.
    build: Callable[[Values], Any] | None = None
    # Exactly one of these two keys, and what they are ("the endpoints to use").
    one_of: tuple[str, str] | None = None
    one_of_what: str = ""

    def read(self, val: Val) -> Any:
        values = Values(val, self)
        return self.build(values) if self.build is not None else values

    def key(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def json(self) -> dict[str, Any]:
        properties = {key.name: key_json(key) for key in self.keys}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = [key.name for key in self.keys if key.required]
        if required:
            schema["required"] = required
        if self.one_of is not None:
            schema["oneOf"] = [{"required": [name]} for name in self.one_of]
        return schema

    def describe(self) -> str:
        return "mapping"

    def show(self, value: Any) -> Any:
        return None

    def children(self) -> tuple[str, Section] | None:
        return ".", self


_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def key_json(key: Key) -> dict[str, Any]:
    # Editors show descriptions as plain text: a Markdown link keeps only its text.
    schema = {**key.type.json(), "description": _LINK_RE.sub(r"\1", key.meaning)}
    shown = key.shown_default()
    if shown is not None:
        schema["default"] = shown
    return schema


class Values:
    """One mapping of settings, each value read by its key's type, in document order."""

    def __init__(self, val: Val, section: Section) -> None:
        if not isinstance(val.node, MappingNode):
            val.fail(f"expected a mapping of settings, got {kind(val.node)}")
        self.val = val
        self.section = section
        self.values: dict[str, Any] = {}
        self.vals: dict[str, Val] = {}
        keys = {key.name: key for key in section.keys}
        for key_node, value_node in mapping_pairs(val):
            name = self._name(key_node)
            sub = val.at(value_node, join(val.path, name))
            if name in self.vals:
                sub.fail(
                    f"duplicate key (first given on line {self.vals[name].line})",
                    line_of(key_node),
                )
            key = keys.get(name)
            if key is None:
                sub.fail(_unknown_key(name, keys), line_of(key_node))
            self.vals[name] = sub
            self.values[name] = key.type.read(sub)
        for key in section.keys:
            if key.required and key.name not in self.values:
                self.missing(key.name, key.hint)
        self._check_one_of()

    def _name(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            self.val.at(node, self.val.path).fail(f"expected a key name, got {kind(node)}")
        return str(node.value)

    def _check_one_of(self) -> None:
        if self.section.one_of is None:
            return
        first, second = self.section.one_of
        if self.has(first) and self.has(second):
            self.vals[second].fail(f"give either {first} or {second}, not both")
        if not self.has(first) and not self.has(second):
            self.val.fail(f"missing {first!r} or {second!r} ({self.section.one_of_what})")

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> Any:
        """The value given, else the key's default."""
        if name in self.values:
            return self.values[name]
        return self.section.key(name).default

    def fields(self) -> dict[str, Any]:
        """Every key's value (or default) by the dataclass field it fills."""
        return {key.field: self.get(key.name) for key in self.section.keys}

    def require(self, name: str, what: str = "") -> Any:
        if name not in self.values:
            self.missing(name, what)
        return self.values[name]

    def missing(self, name: str, what: str = "") -> NoReturn:
        problem = f"missing required key ({what})" if what else "missing required key"
        self.val.at(self.val.node, join(self.val.path, name)).fail(problem, self.val.line)


def _unknown_key(name: str, known: dict[str, Key]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
