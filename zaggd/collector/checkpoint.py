"""Checkpoint: per stream the next expected offset, per open output file its size.

Written atomically, and only after the output files are flushed and fsynced
up to the sizes it records, so the two always agree. On start the collector
truncates each file back to its recorded size and asks for replays from the
recorded offsets: whatever was written after the last checkpoint is written
again, exactly once. Rotation records its intent here before it renames.

Right after each checkpoint, the live index beside each output file is
brought up to the same sizes (liveindex.py): the checkpoint is the commit
point, an index may lag it but never lead it, and at a start with a
checkpoint the checkpoint wins. A state folder or checkpoint removed while
the collector runs is written again at the next checkpoint, with one warning.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zaggd.collector.liveindex import Indexer, IndexJob
from zaggd.errors import StateError
from zaggd.logs import shown
from zaggd.service import Worker
from zaggd.statefile import (
    Damaged,
    at,
    brief,
    dot,
    encode_state,
    load_state,
    member,
    want_count,
    want_list,
    want_object,
    want_ranges,
    want_str,
    want_time,
    write_in_state_dir,
)

log = logging.getLogger(__name__)

KIND = "zaggd-collector-checkpoint"
VERSION = 1
# What an operator gives up by moving a damaged checkpoint aside (see recovery.py: the
# output folder says where each stream stands).
ASIDE_COST = (
    "moving it aside costs no line written twice: the collector rebuilds its state from "
    "the output folder (archive manifests and live indexes), cuts each live file back to "
    "its index and asks its producers again only for what came after (and for all they "
    "still have of a stream whose every archive retention removed)"
)


@dataclass(slots=True)
class CheckpointState:
    # "node/stream" -> [expected, topic, source, path]
    streams: dict[str, list[Any]] = field(default_factory=dict)
    # output path -> {"size", "lines", "ranges"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)  # nodes heard from
    rotations: list[dict[str, Any]] = field(default_factory=list)  # intents, see rotation.py


class Checkpoint:
    def __init__(self, state_dir: str, on_remade: Callable[[str], None] | None = None) -> None:
        self.path = os.path.join(state_dir, "checkpoint.json")
        self.on_remade = on_remade  # the state folder was removed and made again
        self._saved_once = False

    def load(self) -> CheckpointState | None:
        """The checkpoint, None when there is none; StateError (one line) when damaged."""
        try:
            state = load_state(self.path, KIND, VERSION)
            return None if state is None else checked_state(state)
        except Damaged as exc:
            raise StateError(f"{self.path}: damaged checkpoint: {exc}; {ASIDE_COST}") from None

    def save(self, state: CheckpointState) -> None:
        body = {
            "streams": state.streams,
            "files": state.files,
            "nodes": state.nodes,
            "rotations": state.rotations,
        }
        folder = os.path.dirname(self.path)
        if self._saved_once and os.path.isdir(folder) and not os.path.exists(self.path):
            # Once per loss: the write below makes it again.
            log.warning(
                "checkpoint %s was removed while running; writing it again", shown(self.path)
            )
        write_in_state_dir(self.path, encode_state(KIND, VERSION, body), self.on_remade)
        self._saved_once = True


def checked_state(state: dict[str, Any]) -> CheckpointState:
    """The checkpoint's content, its whole shape checked; Damaged naming where it is not."""
    streams = want_object(member(state, "streams", ""), "streams")
    files = want_object(member(state, "files", ""), "files")
    nodes = want_list(member(state, "nodes", ""), "nodes")
    rotations = want_list(state.get("rotations", []), "rotations")
    return CheckpointState(
        streams={key: _stream_entry(key, value) for key, value in streams.items()},
        files={path: _file_entry(path, value) for path, value in files.items()},
        nodes=[want_str(node, at("nodes", i)) for i, node in enumerate(nodes)],
        rotations=[_intent(value, at("rotations", i)) for i, value in enumerate(rotations)],
    )


def _stream_entry(key: str, value: object) -> list[Any]:
    where = at("streams", key)
    node, _, stream = key.partition("/")
    if not node or not stream:
        raise Damaged(f"{where}: not a NODE/STREAM key")
    if not isinstance(value, list) or len(value) != 4:
        raise Damaged(f"{where}: not [offset, topic, source, path] ({brief(value)})")
    expected, topic, source, path = value
    return [
        want_count(expected, at(where, 0)),
        want_str(topic, at(where, 1)),
        want_str(source, at(where, 2)),
        want_str(path, at(where, 3)),
    ]


def _file_entry(path: str, value: object) -> dict[str, Any]:
    """An output file the collector had open: cut back to `size` at start."""
    where = at("files", path)
    if not os.path.isabs(path) or "\0" in path:
        raise Damaged(f"{where}: not an output file path")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # gone or unreadable: recovery says so, file by file
    if stat.S_ISDIR(mode):
        raise Damaged(f"{where}: a folder, not an output file")
    if not stat.S_ISREG(mode):
        raise Damaged(f"{where}: not a regular file, so not an output file")
    info = dict(want_object(value, where))
    info["size"] = want_count(member(info, "size", where), dot(where, "size"))
    if "lines" in info:
        info["lines"] = want_count(info["lines"], dot(where, "lines"))
    if "ranges" in info:
        info["ranges"] = want_ranges(info["ranges"], dot(where, "ranges"))
    return info


# Fields a rotation intent may carry (see rotation.py), each checked when present.
_INTENT_COUNTS = ("size",)
_INTENT_TIMES = ("since", "cut_at")
_INTENT_TEXTS = ("op", "live", "base", "path", "compress")


def _intent(value: object, where: str) -> dict[str, Any]:
    intent = dict(want_object(value, where))
    want_str(member(intent, "op", where), dot(where, "op"))
    for name in _INTENT_COUNTS:
        if name in intent:
            want_count(intent[name], dot(where, name))
    for name in _INTENT_TIMES:
        if name in intent:
            intent[name] = want_time(intent[name], dot(where, name))
    for name in _INTENT_TEXTS:
        if name in intent:
            want_str(intent[name], dot(where, name))
    if "ranges" in intent:
        intent["ranges"] = want_ranges(intent["ranges"], dot(where, "ranges"))
    if intent.get("previous") is not None:
        want_str(intent["previous"], dot(where, "previous"))
    return intent


class Checkpointer(Worker):
    """Writes checkpoints off the data path: fsyncs then saves, in submission order.

    fsync on a busy disk takes tens of milliseconds; done on the subscriber
    thread it would stall every block behind it. A submitted snapshot is
    consistent (offsets and sizes taken together); the files are fsynced
    after it was taken, which makes at least those sizes durable, and only
    then is it saved. One thread saves, in order, so an older snapshot never
    overwrites a newer one. Pending snapshots coalesce into the newest.
    """

    def __init__(self, checkpoint: Checkpoint, on_crash: Callable[[str], None]) -> None:
        super().__init__("zaggd-checkpoint", on_crash)
        self.checkpoint = checkpoint
        self.error: OSError | None = None
        self._cond = threading.Condition()
        self.indexer = Indexer()
        self._pending: CheckpointState | None = None
        self._fds: list[int] = []
        self._jobs: list[IndexJob] = []
        self._complete = False
        self._submitted = 0
        self._saved = 0
        self._failed = 0

    def submit(
        self,
        state: CheckpointState,
        fds: list[int],
        jobs: list[IndexJob] | None = None,
        complete: bool = False,
    ) -> int:
        """Queue a snapshot, the (duplicated) descriptors to fsync first and the live
        indexes to write after; its number. `complete`: hash every index up to date."""
        with self._cond:
            self._submitted += 1
            self._pending = state
            self._fds += fds
            self._jobs = list(jobs or [])
            self._complete = self._complete or complete
            self._cond.notify_all()
            return self._submitted

    def wait(self, seq: int, timeout_s: float = 60.0) -> None:
        """Block until snapshot `seq` (or a newer one) is saved; OSError if it failed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._saved < seq and self._failed < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError(
                        errno.ETIMEDOUT, "checkpoint write timed out", self.checkpoint.path
                    )
                self._cond.wait(min(left, 0.25))
            if self._saved < seq and self.error is not None:
                raise self.error

    def save_now(
        self, state: CheckpointState, fds: list[int], jobs: list[IndexJob] | None = None
    ) -> None:
        """fsync and save on the caller's thread: for when this thread is not running."""
        self._sync(fds)
        self.checkpoint.save(state)
        self.indexer.write(jobs or [], complete=True)

    def work(self) -> None:
        while True:
            self.tick()
            with self._cond:
                if self._pending is None:
                    if self.stop_event.is_set():
                        return
                    self._cond.wait(0.25)
                    continue
                state, fds, seq = self._pending, self._fds, self._submitted
                jobs, complete = self._jobs, self._complete
                self._pending, self._fds, self._jobs, self._complete = None, [], [], False
            try:
                self._sync(fds)
                self.checkpoint.save(state)
                self.indexer.write(jobs, complete)  # after: an index never leads the checkpoint
            except OSError as exc:
                with self._cond:
                    self.error, self._failed = exc, seq
                    self._cond.notify_all()
                continue
            with self._cond:
                self.error, self._saved = None, seq
                self._cond.notify_all()

    def _sync(self, fds: list[int]) -> None:
        try:
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
