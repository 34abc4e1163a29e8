"""Reading a config file into YAML nodes, with bounded work whatever the file holds.

What this module promises, to the config readers and to `zaggd check-config`:

- Only a regular file is read. A FIFO, a folder, a device or a socket is
  refused without reading it (a FIFO would block the reader forever, a
  device may never end), and the file is opened non-blocking, so a path
  swapped for a FIFO after the check cannot block either.
- At most MAX_FILE_BYTES are read, and the text must be UTF-8.
- YAML is composed into nodes (nothing is constructed) and at most
  MAX_YAML_NODES values are accepted, counted with every alias and merge
  expanded as the readers will walk them. A merge-key bomb, the billion
  laughs or a node that holds itself is refused in one line, after work
  proportional to the limit, not to what the aliases would expand to.

Errors are ConfigError, one line: `FILE: problem` or `FILE:LINE: problem`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import NoReturn

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from zaggd.config.messages import fail_file

MAX_FILE_BYTES = 1 << 20
# Values (scalars, lists, mappings; keys included) in a config, aliases expanded.
# A config with a thousand sources holds about 10,000.
MAX_YAML_NODES = 50_000
_READ_CHUNK_BYTES = 65536

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a file of this mode is when it is not a regular file ("a FIFO"), else None."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a file"


def read_text(path: str) -> str:
    """The file's text: a regular file, at most MAX_FILE_BYTES, UTF-8 (a BOM dropped)."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        fail_file(path, line, f"invalid YAML: not UTF-8 text (byte 0x{data[e.start]:02x})")
    return text.removeprefix("\ufeff")


def _read_bytes(path: str) -> bytes:
    try:
        _refuse_special(path, os.stat(path).st_mode)  # before opening: opening a device may act
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        fail_file(path, None, f"cannot read: {e.strerror or e}")
    except ValueError as e:  # a NUL in the path
        fail_file(path, None, f"cannot read: {e}")
    try:
        _refuse_special(path, os.fstat(fd).st_mode)  # the file opened, whatever the path names now
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, _READ_CHUNK_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        fail_file(path, None, f"cannot read: {e.strerror or e}")
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        fail_file(path, None, "cannot read: over 1 MiB, too large for a config file")
    return b"".join(chunks)


def _refuse_special(path: str, mode: int) -> None:
    kind = special_kind(mode)
    if kind is not None:
        fail_file(path, None, f"not a regular file ({kind})")


class _TooManyNodes(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer, stopped once the document holds too many nodes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.nodes_seen = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self.nodes_seen += 1  # aliases too: each one is a use the readers will walk
        if self.nodes_seen > MAX_YAML_NODES:
            raise _TooManyNodes
        node: Node | None = super().compose_node(parent, index)
        return node


def compose(path: str) -> Node | None:
    """The file's YAML document as nodes; ConfigError for bad or oversized YAML."""
    text = read_text(path)
    try:
        node: Node | None = yaml.compose(text, Loader=_BoundedLoader)
    except _TooManyNodes:
        _too_many(path)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = e.problem or e.context or "unreadable"
        fail_file(path, line, f"invalid YAML: {problem}")
    except yaml.reader.ReaderError as e:
        line = text[: int(e.position)].count("\n") + 1
        fail_file(
            path, line, f"invalid YAML: special character U+{int(e.character):04X} is not allowed"
        )
    except yaml.YAMLError as e:
        fail_file(path, 1, f"invalid YAML: {e}")
    except RecursionError:
        fail_file(path, 1, "invalid YAML: nested too deeply")
    if node is not None and expanded_count(node, MAX_YAML_NODES) > MAX_YAML_NODES:
        _too_many(path)
    return node


def _too_many(path: str) -> NoReturn:
    fail_file(
        path,
        None,
        f"more than {MAX_YAML_NODES} values (YAML nodes, aliases expanded): "
        "too many for a config file",
    )


def expanded_count(root: Node, limit: int) -> int:
    """How many nodes `root` holds with every alias expanded, capped at limit + 1.

    Aliases share their node, so the graph is small while its expansion may be
    huge: count each node once, memoized, adding a shared node's count at each
    use. A node that holds itself expands without end: limit + 1.
    """
    over = limit + 1
    counted: dict[int, int] = {}
    open_ids = {id(root)}
    stack: list[tuple[Node, Iterator[Node]]] = [(root, _children(root))]
    totals = [1]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            open_ids.discard(id(node))
            total = totals.pop()
            counted[id(node)] = total
            if totals:
                totals[-1] = min(over, totals[-1] + total)
        elif id(child) in open_ids:
            return over
        elif id(child) in counted:
            totals[-1] = min(over, totals[-1] + counted[id(child)])
        else:
            open_ids.add(id(child))
            stack.append((child, _children(child)))
            totals.append(1)
        if totals and totals[-1] > limit:
            return over  # every node on the stack holds at least as many
    return counted[id(root)]


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, SequenceNode):
        yield from node.value
