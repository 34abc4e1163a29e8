"""The YAML document as the readers see it: nodes that know their file, line and key path.

Nothing of the YAML is constructed: a reader looks at a node's tag and text,
so `yes`, `1.0` or `2024-01-01` where a string belongs is refused with a hint
to quote it, and every refusal names where it stands (`Val.fail`). Merge keys
(`<<`) are spliced in here, bounded in depth.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import NoReturn

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from zaggd.config import yamlfile
from zaggd.config.messages import fail_file, one_line, quote, short
from zaggd.config.units import MAX_NUMBER_TEXT
from zaggd.errors import ConfigError

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_KINDS = {
    STR: "a string",
    INT: "an integer",
    FLOAT: "a decimal number",
    BOOL: "a boolean",
    _NULL: "an empty value",
    _TIMESTAMP: "a date",
}
# Plain scalars YAML reads as something else than the string they look like.
_QUOTABLE = (BOOL, INT, FLOAT, _TIMESTAMP)
_MAX_MERGE_DEPTH = 16
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class Val:
    """A YAML node with what an error about it needs: file, line and key path."""

    file: str  # as given, for messages
    folder: str  # absolute; relative paths in the config are taken from here
    node: Node
    path: str
    line: int

    def at(self, node: Node, path: str) -> Val:
        return Val(self.file, self.folder, node, path, line_of(node))

    def item(self, index: int, node: Node) -> Val:
        return self.at(node, f"{self.path}[{index}]")

    def fail(self, problem: str, line: int | None = None) -> NoReturn:
        where = f"{self.file}:{self.line if line is None else line}"
        text = f"{where}: {self.path}: {problem}" if self.path else f"{where}: {problem}"
        raise ConfigError(one_line(text))

    @property
    def shown(self) -> str:
        """The value as a message quotes it: strings quoted, numbers bare."""
        node = self.node
        if not isinstance(node, ScalarNode):
            return kind(node)
        return quote(node.value) if node.tag == STR else short(str(node.value))

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.folder, path))


def line_of(node: Node) -> int:
    mark = node.start_mark
    return mark.line + 1 if mark is not None else 1


def kind(node: Node) -> str:
    """What a node is, as a message says it: 'a list', 'a string', 'an integer'."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
    return _KINDS.get(node.tag, f"a value tagged {quote(tag)}")


def join(path: str, key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        return f"{path}[{quote(key)}]"
    return f"{path}.{key}" if path else key


def read_root(path: str) -> Val:
    """The file's top-level mapping; ConfigError for a file or document that is not one."""
    node = yamlfile.compose(path)
    if not isinstance(node, MappingNode):
        fail_file(path, 1, "expected a mapping of settings at the top level")
    folder = os.path.dirname(os.path.abspath(path))
    return Val(path, folder, node, "", 1)


def top_keys(root: Val) -> set[str]:
    return {str(key.value) for key, _ in root.node.value if isinstance(key, ScalarNode)}


def mapping_pairs(val: Val) -> list[tuple[Node, Node]]:
    """The mapping's key/value pairs in document order, with `<<` merges spliced in."""
    pairs: list[tuple[Node, Node]] = val.node.value
    explicit = {k.value for k, _ in pairs if isinstance(k, ScalarNode) and k.tag != _MERGE}
    result: list[tuple[Node, Node]] = []
    merged: set[str] = set()
    for key, value in pairs:
        if isinstance(key, ScalarNode) and key.tag == _MERGE:
            for mkey, mvalue in _merge_source(val.at(value, join(val.path, "<<")), 0):
                if mkey.value not in explicit and mkey.value not in merged:
                    merged.add(mkey.value)
                    result.append((mkey, mvalue))
        else:
            result.append((key, value))
    return result


def _merge_source(val: Val, depth: int) -> list[tuple[Node, Node]]:
    if depth > _MAX_MERGE_DEPTH:
        val.fail("merges nested too deeply")
    nodes = val.node.value if isinstance(val.node, SequenceNode) else [val.node]
    pairs: list[tuple[Node, Node]] = []
    for node in nodes:
        if not isinstance(node, MappingNode):
            val.fail(f"expected a mapping (or a list of mappings) to merge, got {kind(node)}")
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                val.at(key, val.path).fail(f"expected a key name, got {kind(key)}")
            if key.tag == _MERGE:
                pairs.extend(_merge_source(val.at(value, val.path), depth + 1))
            else:
                pairs.append((key, value))
    return pairs


# --- scalars and lists ---------------------------------------------------------


def expected(val: Val, what: str, hint: bool = False) -> NoReturn:
    """Refuse a value of the wrong type; `hint` suggests quotes for a bare yes, 1.0 or 2024-01-01."""
    node = val.node
    problem = f"expected {what}, got {kind(node)}"
    if hint and isinstance(node, ScalarNode) and node.style is None and node.tag in _QUOTABLE:
        problem += f" (quote it: {quote(node.value)})"
    val.fail(problem)


def text(val: Val, what: str = "a string", hint: bool = True) -> str:
    node = val.node
    if not (isinstance(node, ScalarNode) and node.tag == STR):
        expected(val, what, hint)
    return str(node.value)


def items(val: Val, what: str) -> list[Val]:
    node = val.node
    if not isinstance(node, SequenceNode):
        expected(val, what)
    return [val.item(i, child) for i, child in enumerate(node.value)]


def text_or_items(val: Val, what: str) -> list[Val]:
    """A single string, or a list of them, as a list of items."""
    if isinstance(val.node, ScalarNode) and val.node.tag == STR:
        return [val]
    return items(val, what)


def scalar_tag(val: Val) -> str | None:
    """The tag of a scalar (STR, INT, ...), None for a list or mapping."""
    return val.node.tag if isinstance(val.node, ScalarNode) else None


def _yaml_int(text: str) -> int:
    """YAML 1.1 integers as PyYAML reads them (0x, 0b, 0 octal, 1:30 base 60)."""
    value = text.replace("_", "")
    sign = -1 if value.startswith("-") else 1
    value = value[1:] if value[:1] in ("+", "-") else value
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value.startswith("0") and value != "0":
        return sign * int(value, 8)
    if ":" in value:
        total = 0
        for part in value.split(":"):
            total = total * 60 + int(part)
        return sign * total
    return sign * int(value)


def _yaml_float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value[1:] if value[:1] in ("+", "-") else value
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    if ":" in value:
        total = 0.0
        for part in value.split(":"):
            total = total * 60 + float(part)
        return sign * total
    return sign * float(value)


def number(val: Val, what: str) -> int | float:
    node = val.node
    if not isinstance(node, ScalarNode) or node.tag not in (INT, FLOAT):
        expected(val, what)
    if len(node.value) > MAX_NUMBER_TEXT:
        val.fail(f"{quote(node.value)} is too long for a number")
    try:
        return _yaml_int(node.value) if node.tag == INT else _yaml_float(node.value)
    except (ValueError, OverflowError):
        val.fail(f"cannot read {quote(node.value)} as a number")
