"""Versioned JSON state files: written atomically, read back with their shape checked.

A write goes to a temporary file in the same folder, is fsynced, renamed over
the old file, and the folder is fsynced: after a crash the file holds either
the old state or the new one, never a mix. A daemon's state folder removed
while it runs is made again at the next write (`write_in_state_dir`).

A state file that cannot be used is a StateError of one line: the file, where
in it the damage is, and what moving it aside costs; the daemons exit 78 on it
at start. Each state file's loader checks its whole shape in one place with the
`want_*` helpers (types, ranges, finite whole numbers) before anything uses it:
a damaged file never gets as far as a traceback or a silent resend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import reprlib
from collections.abc import Callable
from typing import Any

from zaggd.errors import StateError
from zaggd.logs import shown

log = logging.getLogger(__name__)

MAX_COUNT = 2**63 - 1  # offsets and sizes: what the wire and the file system can hold


def encode_state(kind: str, version: int, body: dict[str, Any]) -> bytes:
    return json.dumps({"kind": kind, "version": version, **body}, separators=(",", ":")).encode()


def write_state(path: str, kind: str, version: int, body: dict[str, Any]) -> None:
    write_atomically(path, encode_state(kind, version, body))


def write_atomically(path: str, data: bytes) -> None:
    """Replace `path` with `data`: a temporary file, fsynced, renamed, the folder fsynced."""
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        _take_folder_group(fd, folder)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _take_folder_group(fd: int, folder: str) -> None:
    """Give a new file its folder's group, as a setgid folder would: the collector's
    output folders belong to the group that may read them (output.group)."""
    gid = os.stat(folder).st_gid
    if os.fstat(fd).st_gid != gid:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, gid)


def write_in_state_dir(
    path: str, data: bytes, on_remade: Callable[[str], None] | None = None
) -> None:
    """write_atomically into a daemon's state folder, making the folder again (one
    warning, then `on_remade(folder)`) when it was removed while the daemon ran."""
    try:
        write_atomically(path, data)
    except FileNotFoundError:
        folder = os.path.dirname(path) or "."
        if os.path.isdir(folder):
            raise
        os.makedirs(folder, mode=0o750, exist_ok=True)
        log.warning("state folder %s was removed while running; made it again", shown(folder))
        if on_remade is not None:
            on_remade(folder)
        write_atomically(path, data)


class Damaged(ValueError):
    """What is wrong in a state file's content, and where: `streams["x"].offset: ...`."""


def load_state(path: str, kind: str, version: int) -> dict[str, Any] | None:
    """The state file's top object; None when none was ever written.

    Damaged for content that is not a `kind` state file; StateError when the
    file cannot be read or is of another version.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read state: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Damaged("not UTF-8 text") from None
    try:
        state = json.loads(text)
    except RecursionError:  # json's parser recurses once per level of nesting
        raise Damaged("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Damaged(f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except ValueError:
        raise Damaged("a number too long to read") from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise Damaged(f"not a {kind} state file")
    if state.get("version") != version:
        raise StateError(
            f"{path}: {kind} state version {brief(state.get('version'))} is not {version}; "
            "this zaggd cannot read it"
        )
    return state


def read_state(path: str, kind: str, version: int) -> dict[str, Any] | None:
    """load_state, with damage a StateError too."""
    try:
        return load_state(path, kind, version)
    except Damaged as exc:
        raise StateError(f"{path}: {exc}; move it aside to start afresh") from None


def ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{path}: cannot create folder: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"{path}: folder is not writable by this user")


# -- checking a state file's shape -------------------------------------------------

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = 40
_repr.maxother = 40


def brief(value: object) -> str:
    """A short, one-line, bounded picture of a value, for an error message."""
    return _repr.repr(value)


def at(where: str, key: str | int) -> str:
    """`where` followed by a key or index: `streams["a/b"]`, `nodes[0]`."""
    shown_key = str(key) if isinstance(key, int) else json.dumps(key)[:100]
    return f"{where}[{shown_key}]"


def dot(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def member(obj: dict[str, Any], name: str, where: str) -> Any:
    """obj[name]; Damaged when it is missing."""
    try:
        return obj[name]
    except KeyError:
        raise Damaged(f"{dot(where, name)}: missing") from None


def want_object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Damaged(f"{where}: not an object ({brief(value)})")
    return value


def want_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Damaged(f"{where}: not a list ({brief(value)})")
    return value


def want_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise Damaged(f"{where}: not a string ({brief(value)})")
    return value


def want_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise Damaged(f"{where}: not true or false ({brief(value)})")
    return value


def want_count(value: object, where: str) -> int:
    """A whole number >= 0 (an offset, a size, a count): never a float, bool or 1e999."""
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise Damaged(f"{where}: not a whole number >= 0 ({brief(value)})")
    return value


def want_time(value: object, where: str) -> float:
    """A finite number of seconds."""
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise Damaged(f"{where}: not a time ({brief(value)})")
    return float(value)  # type: ignore[arg-type]


def want_range(value: object, where: str) -> list[int]:
    """[start, end] byte offsets with start <= end."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(v) is int and 0 <= v <= MAX_COUNT for v in value)
        or value[0] > value[1]
    ):
        raise Damaged(f"{where}: not [start, end] with start <= end ({brief(value)})")
    return [value[0], value[1]]


def want_ranges(value: object, where: str) -> dict[str, list[int]]:
    """{"node/stream": [start, end], ...}."""
    ranges = want_object(value, where)
    return {key: want_range(span, at(where, key)) for key, span in ranges.items()}
