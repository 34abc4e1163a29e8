"""Writer: routes blocks to output files by the path template, formats, appends.

Values that came off the wire (topic, node, source) are made safe before
they reach a path: anything but letters, digits, '.', '_' and '-' becomes
'_', and '.' or '..' alone cannot stand as a folder name, so no message can
make the collector write outside its output folder.

The writer tracks each open file's size, line count and the stream ranges it
holds (across runs: a file reopened after a restart starts from what recovery
found it to hold, `known`), for the checkpoint, the live indexes and the
rotation manifests. Files are flushed and fsynced only when the checkpoint
asks (`sync`). Every folder it writes output into gets a `.zaggd-output`
marker, which tells producers never to tail what is there.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import re
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from zaggd.collector.access import OutputAccess
from zaggd.collector.liveindex import IndexJob
from zaggd.config import OutputConfig, OutputFormat
from zaggd.errors import ZaggdError
from zaggd.statefile import write_state

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

MARKER_NAME = ".zaggd-output"
MARKER_KIND = "zaggd-output"
MARKER_VERSION = 1


def mark_output_folder(folder: str) -> None:
    """Leave the marker that says zaggd writes output here (producers skip such folders)."""
    marker = os.path.join(folder, MARKER_NAME)
    if not os.path.exists(marker):
        write_state(marker, MARKER_KIND, MARKER_VERSION, {"written_by": "zaggd collector"})


def safe_component(value: str) -> str:
    """`value` as one harmless path component."""
    cleaned = _UNSAFE.sub("_", value)[:200]
    if cleaned in ("", ".", ".."):
        cleaned = "_" + cleaned
    return cleaned


def output_root(template: str) -> str:
    """The fixed folder above every file the template can name."""
    fixed = template.split("{", 1)[0]
    return os.path.dirname(fixed) if "{" in template else os.path.dirname(template)


def format_prefixed(payload: bytes, node: str, path: str) -> bytes:
    """Each line as `NODE<TAB>PATH<TAB>LINE`."""
    if not payload:
        return b""
    prefix = f"{node}\t{path}\t".encode()
    return prefix + payload[:-1].replace(b"\n", b"\n" + prefix) + b"\n"


def format_jsonl(
    payload: bytes,
    node: str,
    path: str,
    topic: str,
    start: int,
    exact: bool,
    path_bytes: bytes | None = None,
) -> bytes:
    """One JSON object per line; a line that is not UTF-8 goes as base64 in `line_b64`.

    `path` shows bytes that are not UTF-8 and control characters as U+FFFD; where
    it does, `path_b64` holds the path's exact bytes, so two files never share a name.
    """
    if not payload:
        return b""
    exact_path = ""
    if path_bytes is not None:
        exact_path = ',"path_b64":"' + base64.b64encode(path_bytes).decode("ascii") + '"'
    head = f'{{"node":{encode_basestring(node)},"path":{encode_basestring(path)}{exact_path},"topic":{encode_basestring(topic)},"offset":'
    parts = []
    offset = start
    for line in payload[:-1].split(b"\n"):
        try:
            field_text = ',"line":' + encode_basestring(line.decode("utf-8"))
        except UnicodeDecodeError:
            field_text = ',"line_b64":"' + base64.b64encode(line).decode("ascii") + '"'
        parts.append(f"{head}{offset}{field_text}}}\n")
        if exact:
            offset += len(line) + 1
    return "".join(parts).encode("utf-8")


@dataclass(slots=True)
class KnownFile:
    """A live file found at start: the size recovery vouches for, the ranges it holds."""

    size: int
    ranges: dict[str, list[int]] = field(default_factory=dict)
    dev: int = 0
    ino: int = 0
    index_stale: bool = False  # its live index is to be hashed up to `size`


@dataclass(slots=True)
class OutFile:
    path: str
    fh: Any  # a buffered binary file
    size: int
    lines: int = 0
    ranges: dict[str, list[int]] = field(default_factory=dict)  # "node/stream" -> [start, end]
    dirty: bool = False
    dev: int = 0  # which file it is: a path that names another one was replaced by hand
    ino: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "lines": self.lines,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
        }


class Writer:
    def __init__(self, output: OutputConfig) -> None:
        self.output = output
        self.root = output_root(output.path)
        self.access = OutputAccess(output, self.root)
        self.files: dict[str, OutFile] = {}
        self.known: dict[str, KnownFile] = {}  # live files found at start, not open yet
        self._routes: dict[tuple[bytes, str, str, str], str] = {}
        self._marked: set[str] = set()

    def check_writable(self) -> None:
        """Refuse at start (or reload) an output folder this user may not write."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise ZaggdError(
                f"{self.root}: cannot create the output folder: {exc.strerror}"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ZaggdError(f"{self.root}: the output folder is not writable by this user")
        self.access.check()

    def route(self, topic: bytes, node: str, source: str, now: float) -> str:
        date = time.strftime("%Y-%m-%d", time.gmtime(now))
        key = (topic, node, source, date)
        path = self._routes.get(key)
        if path is None:
            path = self.output.path.format(
                topic=safe_component(topic.decode("utf-8", "replace")),
                node=safe_component(node),
                source=safe_component(source),
                date=date,
            )
            path = os.path.normpath(path)
            if os.path.commonpath([path, self.root]) != self.root:
                raise ZaggdError(f"output path {path} falls outside {self.root}")
            if len(self._routes) > 100000:
                self._routes.clear()
            self._routes[key] = path
        return path

    def format(
        self,
        payload: bytes,
        node: str,
        path: str,
        topic: bytes,
        start: int,
        exact: bool,
        path_bytes: bytes | None = None,
    ) -> bytes:
        fmt = self.output.format
        if fmt is OutputFormat.RAW:
            return payload
        if fmt is OutputFormat.PREFIXED:
            return format_prefixed(payload, node, path)
        topic_text = topic.decode("utf-8", "replace")
        return format_jsonl(payload, node, path, topic_text, start, exact, path_bytes)

    def is_open(self, path: str) -> bool:
        return path in self.files

    def open(self, path: str, known_size: int | None = None) -> OutFile:
        out = self.files.get(path)
        if out is not None:
            return out
        folder = os.path.dirname(path)
        self.access.make_folders(folder)
        if folder not in self._marked:
            mark_output_folder(folder)
            self._marked.add(folder)
        is_new = not os.path.exists(path)
        # Unbuffered: each block is one write(2), visible to readers at once (latency).
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across writes
        self.access.set_file(fh.fileno())
        if is_new:
            _fsync_dir(folder)  # the checkpoint will name this file: it must survive a power loss
        st = os.fstat(fh.fileno())
        known = self.known.pop(path, None)
        if known_size is None and known is not None:
            # Shorter than recovery found it: cut by hand since; the writer's check sees that.
            known_size = max(known.size, st.st_size)
        out = OutFile(path, fh, st.st_size if known_size is None else known_size)
        out.dev, out.ino = st.st_dev, st.st_ino
        if known is not None:
            out.ranges = {key: list(span) for key, span in known.ranges.items()}
        self.files[path] = out
        return out

    def ranges_of(self, path: str) -> dict[str, list[int]]:
        """The stream ranges the live file at `path` holds, open or not."""
        out = self.files.get(path)
        if out is not None:
            return out.ranges
        known = self.known.get(path)
        return known.ranges if known is not None else {}

    def index_jobs(self, previous_of: Any = None) -> list[IndexJob]:
        """What the live index of each open file (and of each file found at start whose
        index is behind) must say once the coming checkpoint is saved."""
        held: list[OutFile | KnownFile] = list(self.files.values())
        paths = list(self.files)
        for path, known in self.known.items():
            if known.index_stale:
                held.append(known)
                paths.append(path)
        return [
            IndexJob(
                path,
                one.dev,
                one.ino,
                one.size,
                {key: list(span) for key, span in one.ranges.items()},
                previous_of(path) if previous_of is not None else None,
            )
            for path, one in zip(paths, held, strict=True)
        ]

    def append(self, out: OutFile, data: bytes, lines: int, key: str, start: int, end: int) -> None:
        if data:
            try:
                view = memoryview(data)
                while view:
                    view = view[out.fh.write(view) :]
            except OSError:
                self._undo(out)
                raise
            out.size += len(data)
            out.lines += lines
        span = out.ranges.get(key)
        if span is None:
            out.ranges[key] = [start, end]
        else:
            span[1] = end
        out.dirty = True

    def _undo(self, out: OutFile) -> None:
        """After a failed write: drop the buffer and cut the file back to its known size."""
        with contextlib.suppress(OSError):
            out.fh.close()
        fd = os.open(out.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, out.size)
        finally:
            os.close(fd)
        out.fh = open(out.path, "ab", buffering=0)  # noqa: SIM115

    def sync(self, fsync: bool) -> None:
        """Flush every written file to the OS, and to disk when `fsync`."""
        for out in self.files.values():
            if not out.dirty:
                continue
            try:
                out.fh.flush()
            except OSError:
                self._undo(out)
                raise
            if fsync:
                os.fsync(out.fh.fileno())
            out.dirty = False

    def take_dirty(self) -> list[int]:
        """Duplicated descriptors of the files written since the last call, to fsync elsewhere."""
        fds = []
        for out in self.files.values():
            if out.dirty:
                fds.append(os.dup(out.fh.fileno()))
                out.dirty = False
        return fds

    def unopen(self, path: str) -> None:
        """Close a file just opened, as if never opened: its checkpoint failed."""
        out = self.files.pop(path)
        out.fh.close()
        self.known[path] = KnownFile(out.size, out.ranges)

    def empty(self, path: str) -> None:
        """Cut an open file to zero: what it held is asked for again (damage.py)."""
        out = self.files[path]
        os.ftruncate(out.fh.fileno(), 0)
        out.size = out.lines = 0
        out.ranges = {}
        out.dirty = True

    def drop(self, path: str) -> None:
        """Let go of a file no longer at its path: the next write starts a new one there."""
        self.close(path)
        self._marked.discard(os.path.dirname(path))

    def close(self, path: str) -> None:
        self.known.pop(path, None)
        out = self.files.pop(path, None)
        if out is not None:
            out.fh.close()

    def close_all(self) -> None:
        for path in list(self.files):
            self.close(path)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def describe_files(writer: Writer) -> dict[str, Any]:
    return {path: out.describe() for path, out in writer.files.items()}
