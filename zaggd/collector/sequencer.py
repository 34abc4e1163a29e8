"""Sequencer: per stream, the next expected offset, and what each block is to it.

Offsets are the sequence numbers. A block that starts at the expected offset
comes next; one that ends at or before it is a duplicate; one that straddles
it overlaps and is trimmed (when its bytes are the file's bytes, so the cut
point is known); one that starts later follows a gap, which a replay fills.
Across rotation, a stream that succeeds another (`prev`) waits: nothing of it
is written before its predecessor reached `prev_end` (see is_waiting).
No threads, no sockets: tests call this directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    NEXT = "next"
    DUPLICATE = "duplicate"
    OVERLAP = "overlap"
    GAP = "gap"


def judge(expected: int, start: int, end: int, exact: bool) -> Verdict:
    """What the block [start, end) is to a stream expecting `expected`.

    `exact` says the block holds the file's own bytes (len == end - start),
    so an overlap can be trimmed; an inexact overlap is treated as a gap and
    repaired by replay from `expected`.
    """
    if start == expected and end > start:
        return Verdict.NEXT
    if end <= expected:
        return Verdict.DUPLICATE
    if start < expected:
        return Verdict.OVERLAP if exact else Verdict.GAP
    return Verdict.GAP


def trim(payload: bytes, start: int, expected: int) -> tuple[bytes, int]:
    """The part of an exact overlapping block from `expected` on, and its line count."""
    rest = payload[expected - start :]
    return rest, rest.count(b"\n")


@dataclass(slots=True)
class StreamState:
    node: str
    stream: str
    topic: bytes
    source: str
    path: str
    expected: int
    known_end: int = 0  # the furthest end a block or heartbeat told of
    replay_until: int = 0  # end of the range last asked for
    replay_asked_at: float = 0.0
    replay_peer: bytes = b""  # where that request went: only a "gone" from there counts
    last_mentioned: float = 0.0  # monotonic: its last block or heartbeat mention
    path_bytes: bytes | None = None  # the path's exact bytes, when `path` cannot show them
    instance: str = ""  # the producer instance whose heartbeat announced it
    prev: str = ""  # the stream it succeeds at its path: none of it is written
    prev_end: int = 0  # before that one reached this offset

    def has_gap(self) -> bool:
        return self.known_end > self.expected

    def key(self) -> str:
        return f"{self.node}/{self.stream}"


def is_waiting(successor: StreamState, prev: StreamState | None) -> bool:
    """Whether `successor` must wait for `prev`, the stream it succeeds, to reach `prev_end`."""
    return prev is not None and prev.expected < successor.prev_end
