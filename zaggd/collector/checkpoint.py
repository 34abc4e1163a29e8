"""Checkpoint: per stream the next expected offset, per open output file its size.

Written atomically, and only after the output files are flushed and fsynced
up to the sizes it records, so the two always agree. On start the collector
truncates each file back to its recorded size and asks for replays from the
recorded offsets: whatever was written after the last checkpoint is written
again, exactly once. Rotation records its intent here before it renames.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zaggd.errors import ZaggdError
from zaggd.service import Worker
from zaggd.statefile import read_state, write_state

KIND = "zaggd-collector-checkpoint"
VERSION = 1


@dataclass(slots=True)
class CheckpointState:
    # "node/stream" -> [expected, topic, source, path]
    streams: dict[str, list[Any]] = field(default_factory=dict)
    # output path -> {"size", "lines", "ranges"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)  # nodes heard from
    rotations: list[dict[str, Any]] = field(default_factory=list)  # intents, see rotation.py


class Checkpoint:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "checkpoint.json")

    def load(self) -> CheckpointState | None:
        state = read_state(self.path, KIND, VERSION)
        if state is None:
            return None
        try:
            return CheckpointState(
                streams={str(k): list(v) for k, v in state["streams"].items()},
                files={str(k): dict(v) for k, v in state["files"].items()},
                nodes=[str(n) for n in state["nodes"]],
                rotations=[dict(r) for r in state.get("rotations", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZaggdError(f"{self.path}: damaged checkpoint ({exc}); move it aside") from None

    def save(self, state: CheckpointState) -> None:
        write_state(
            self.path,
            KIND,
            VERSION,
            {
                "streams": state.streams,
                "files": state.files,
                "nodes": state.nodes,
                "rotations": state.rotations,
            },
        )


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
        self._pending: CheckpointState | None = None
        self._fds: list[int] = []
        self._submitted = 0
        self._saved = 0
        self._failed = 0

    def submit(self, state: CheckpointState, fds: list[int]) -> int:
        """Queue a snapshot and the (duplicated) descriptors to fsync first; its number."""
        with self._cond:
            self._submitted += 1
            self._pending = state
            self._fds += fds
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

    def save_now(self, state: CheckpointState, fds: list[int]) -> None:
        """fsync and save on the caller's thread: for when this thread is not running."""
        self._sync(fds)
        self.checkpoint.save(state)

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
                self._pending, self._fds = None, []
            try:
                self._sync(fds)
                self.checkpoint.save(state)
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
