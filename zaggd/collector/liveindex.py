"""Live indexes: what each live output file holds, written beside it.

Beside each live output file `PATH` lies `PATH.index.json` (kind
"zaggd-live-index"): its name, a size N, the line count and SHA-256 of its
first N bytes, the stream ranges those bytes hold, and the archive cut before
it. It describes exactly the first N bytes; bytes past N are not yet indexed
(normal while a collector runs; a restart cuts them back). With the manifests
of the archives, the indexes make an output folder describe itself, so a lost
checkpoint can be rebuilt from it (recovery.py).

An index is written at each checkpoint, after the checkpoint itself, and only
once the bytes it covers are flushed and fsynced: the checkpoint is the commit
point and the index a copy that may lag it, never lead it. The hashing reads
the new bytes back (from the page cache) on the checkpoint thread, off the
write path; a file first seen with many bytes is caught up a bounded amount at
a time, its old index standing meanwhile.

When a live file is cut, its index goes with it: `NAME.<stamp>.index.json`
describes the rotated file until its manifest is written, so an unsealed
archive's ranges are on disk too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from zaggd.errors import ZaggdError
from zaggd.logs import shown
from zaggd.statefile import read_state, write_state

log = logging.getLogger(__name__)

KIND = "zaggd-live-index"
VERSION = 1
INDEX_SUFFIX = ".index.json"
READ_CHUNK_BYTES = 1048576
CATCH_UP_BYTES = 256 * 1048576  # per checkpoint, over all files: a bound on its delay
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Ranges = dict[str, list[int]]


def index_path(path: str) -> str:
    return path + INDEX_SUFFIX


def is_index_name(name: str) -> bool:
    return name.endswith(INDEX_SUFFIX)


@dataclass(frozen=True, slots=True)
class LiveIndex:
    file: str  # base name of the file it describes
    size: int
    lines: int
    sha256: str  # of the first `size` bytes
    ranges: Ranges = field(default_factory=dict)
    previous: str | None = None  # base name of the last archive cut from the live file
    extra: dict[str, Any] = field(default_factory=dict)  # a rotated file's: live, times

    def body(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "size": self.size,
            "lines": self.lines,
            "sha256": self.sha256,
            "ranges": {k: [int(v[0]), int(v[1])] for k, v in self.ranges.items()},
            "previous": self.previous,
            **self.extra,
        }


def empty_index(path: str, previous: str | None) -> LiveIndex:
    return LiveIndex(os.path.basename(path), 0, 0, EMPTY_SHA256, {}, previous)


def write_index(path: str, index: LiveIndex) -> None:
    """Atomically, beside `path` (the file it describes)."""
    write_state(index_path(path), KIND, VERSION, index.body())


def read_index(path: str) -> LiveIndex | None:
    """The index of the file at `path`; None when there is none; ZaggdError when damaged."""
    where = index_path(path)
    state = read_state(where, KIND, VERSION)
    if state is None:
        return None
    try:
        ranges = {str(k): [int(v[0]), int(v[1])] for k, v in dict(state["ranges"]).items()}
        previous = state.get("previous")
        size, lines = int(state["size"]), int(state["lines"])
        if size < 0 or lines < 0 or any(s < 0 or e < s for s, e in ranges.values()):
            raise ValueError("negative size or range")
        extra = {k: v for k, v in state.items() if k not in _FIELDS}
        return LiveIndex(
            file=str(state["file"]),
            size=size,
            lines=lines,
            sha256=str(state["sha256"]),
            ranges=ranges,
            previous=None if previous is None else str(previous),
            extra=extra,
        )
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ZaggdError(f"{where}: damaged live index ({exc})") from None


_FIELDS = {"kind", "version", "file", "size", "lines", "sha256", "ranges", "previous"}


def remove_index(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(index_path(path))


def hash_prefix(path: str, size: int) -> tuple[int, str] | None:
    """Lines and SHA-256 of the first `size` bytes of `path`; None if it is shorter."""
    digest = hashlib.sha256()
    lines = done = 0
    with open(path, "rb") as fh:
        while done < size:
            chunk = fh.read(min(READ_CHUNK_BYTES, size - done))
            if not chunk:
                return None
            digest.update(chunk)
            lines += chunk.count(b"\n")
            done += len(chunk)
    return lines, digest.hexdigest()


def index_of_prefix(path: str, size: int, ranges: Ranges, previous: str | None) -> LiveIndex | None:
    """An index for the first `size` bytes of `path`, hashed now; None if it is shorter."""
    hashed = hash_prefix(path, size)
    if hashed is None:
        return None
    return LiveIndex(os.path.basename(path), size, hashed[0], hashed[1], dict(ranges), previous)


@dataclass(frozen=True, slots=True)
class IndexJob:
    """What one live file's index must say after this checkpoint."""

    path: str
    dev: int
    ino: int
    size: int
    ranges: Ranges
    previous: str | None


@dataclass(slots=True)
class _Hashed:
    dev: int
    ino: int
    size: int = 0  # bytes hashed so far
    lines: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    written: tuple[int, Ranges, str | None] | None = None  # what the index on disk says


class Indexer:
    """Keeps each live file's index in step with the checkpoints: used by one thread at a time."""

    def __init__(self) -> None:
        self._files: dict[str, _Hashed] = {}
        self._error_logged = False

    def write(self, jobs: list[IndexJob], complete: bool = False) -> None:
        """Bring the indexes of `jobs` up to their sizes (all of them when `complete`)."""
        budget = None if complete else CATCH_UP_BYTES
        alive = set()
        for job in jobs:
            alive.add(job.path)
            try:
                budget = self._write_one(job, budget)
            except OSError as exc:
                self._note_error(job.path, exc)
                self._files.pop(job.path, None)
            else:
                self._error_logged = False
        for gone in set(self._files) - alive:
            del self._files[gone]

    def forget(self, path: str) -> None:
        self._files.pop(path, None)

    def _write_one(self, job: IndexJob, budget: int | None) -> int | None:
        known = self._files.get(job.path)
        if known is None or (known.dev, known.ino) != (job.dev, job.ino) or known.size > job.size:
            known = self._files[job.path] = _Hashed(job.dev, job.ino)
        if known.written == (job.size, job.ranges, job.previous):
            return budget
        if known.size < job.size:
            budget = self._catch_up(job, known, budget)
            if known.size < job.size:
                return budget  # the old index stands until this one is hashed
        index = LiveIndex(
            os.path.basename(job.path),
            job.size,
            known.lines,
            known.digest.hexdigest(),
            job.ranges,
            job.previous,
        )
        write_index(job.path, index)
        known.written = (job.size, job.ranges, job.previous)
        return budget

    def _catch_up(self, job: IndexJob, known: _Hashed, budget: int | None) -> int | None:
        """Hash the bytes from where it stopped towards `job.size`, within `budget`."""
        try:
            fd = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return budget  # gone by hand: the writer's check sees it
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (job.dev, job.ino) or st.st_size < job.size:
                return budget  # replaced or cut by hand: the writer's check sees it
            while known.size < job.size and (budget is None or budget > 0):
                want = min(READ_CHUNK_BYTES, job.size - known.size)
                chunk = os.pread(fd, want, known.size)
                if not chunk:
                    break
                known.digest.update(chunk)
                known.lines += chunk.count(b"\n")
                known.size += len(chunk)
                if budget is not None:
                    budget -= len(chunk)
        finally:
            os.close(fd)
        return budget

    def _note_error(self, path: str, exc: OSError) -> None:
        if not self._error_logged:
            log.warning(
                "cannot write the live index of %s: %s; retrying at the next checkpoint",
                shown(path),
                exc.strerror or exc,
            )
            self._error_logged = True


def hand_over(
    live_path: str,
    base: str,
    size: int,
    ranges: Ranges,
    previous: str | None,
    extra: dict[str, Any],
) -> None:
    """After `live_path` was renamed to `base`: its index goes with it, the live path's
    starts empty. Each write is atomic; a crash between them is undone at start."""
    try:
        old = read_index(live_path)
    except ZaggdError:
        old = None
    if old is not None and old.size == size and old.file == os.path.basename(live_path):
        moved: LiveIndex | None = LiveIndex(
            os.path.basename(base), size, old.lines, old.sha256, dict(ranges), previous, extra
        )
    else:
        moved = index_of_prefix(base, size, ranges, previous)
        if moved is not None:
            moved = LiveIndex(
                moved.file, size, moved.lines, moved.sha256, dict(ranges), previous, extra
            )
    if moved is not None:
        write_index(base, moved)
    write_index(live_path, empty_index(live_path, os.path.basename(base)))
