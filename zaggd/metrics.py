"""Counters of a daemon, and the one-line STATUS summary built from them.

Each counter is written by the thread that owns the event; `add` is guarded
so that a reader (STATUS, `zaggd status`) sees whole values.
"""

from __future__ import annotations

import threading
import time


class Counters:
    def __init__(self, names: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class Rate:
    """Lines per second between two looks at a counter."""

    def __init__(self) -> None:
        self._last_value = 0
        self._last_time = time.monotonic()
        self.per_second = 0.0

    def update(self, value: int, now: float) -> float:
        elapsed = now - self._last_time
        if elapsed > 0:
            self.per_second = (value - self._last_value) / elapsed
        self._last_value, self._last_time = value, now
        return self.per_second


PRODUCER_COUNTERS = (
    "lines_out",
    "bytes_out",
    "blocks_out",
    "heartbeats_out",
    "replays_served",
    "replay_bytes_out",
    "replay_gone",
    "bytes_lost",
    "lines_split",
    "lines_truncated",
    "lines_skipped",
    "streams_opened",
    "streams_rotated",
    "streams_truncated",
    "streams_closed",
    "send_waits",
    "send_held_ms",
    "laggards_left_behind",
    "laggard_messages_dropped",
    "replays_deferred",
    "replays_dropped",
    "bad_requests",
)

COLLECTOR_COUNTERS = (
    "lines_in",
    "bytes_in",
    "blocks_in",
    "lines_written",
    "bytes_written",
    "duplicates_dropped",
    "overlaps_trimmed",
    "gaps_found",
    "replays_asked",
    "bytes_repaired",
    "bytes_lost",
    "messages_dropped",
    "heartbeats_in",
    "streams_forgotten",
    "checkpoints",
    "rotations",
    "write_errors",
    "left_behind",
    "caught_up",
)
