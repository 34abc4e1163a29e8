"""Output files changed by hand under a running collector: found, reported, repaired.

A live output file may be deleted, moved away, replaced or truncated by an
operator while the collector holds it open. Appending on regardless would
write into an unlinked file (lost for good) or double lines after a restart.
So at each checkpoint the collector compares every open file with its path
(device and inode) and its expected size:

- deleted (no name left) or truncated: its bytes are gone. The file is cut
  to zero (or a new one started), and each stream it held is rewound to the
  start of its range there, so replay asks the producers for those bytes
  again. A stream that went on into other output since cannot be rewound
  without doubling what follows: that range is counted as lost.
- moved away (it still has a name) or replaced at its path: its bytes live
  on where the operator put them; a new live file starts at the path and
  nothing is replayed.

Each case is logged once at warning level naming the file. No sockets or
threads here: `repair_open_files` runs on the subscriber's thread (it owns the
writer), `rewind` decides per stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from zaggd.collector.liveindex import empty_index, write_index
from zaggd.collector.rotation import merge_ranges
from zaggd.collector.sequencer import StreamState
from zaggd.collector.writer import OutFile, Writer
from zaggd.logs import shown

log = logging.getLogger(__name__)


class Change(Enum):
    DELETED = "deleted"
    MOVED = "moved away"
    REPLACED = "replaced"
    TRUNCATED = "truncated"

    @property
    def loses_bytes(self) -> bool:
        return self in (Change.DELETED, Change.TRUNCATED)


@dataclass(frozen=True, slots=True)
class Damage:
    path: str
    change: Change
    expected_size: int
    found_size: int
    ranges: dict[str, list[int]]  # what the file held: "node/stream" -> [start, end]


def check_file(path: str, fd: int, dev: int, ino: int, size: int) -> tuple[Change | None, int]:
    """How the open file `fd`, expected at `path` with `size` bytes, was changed (None if
    not), and the size it has."""
    mine = os.fstat(fd)
    if mine.st_nlink == 0:
        return Change.DELETED, 0  # no name left: none of its bytes can be found
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return Change.MOVED, mine.st_size
    if (there.st_dev, there.st_ino) != (dev, ino):
        return Change.REPLACED, mine.st_size
    if mine.st_size < size:
        return Change.TRUNCATED, mine.st_size
    return None, mine.st_size


@dataclass(frozen=True, slots=True)
class Rewind:
    key: str
    start: int
    end: int
    lost: bool  # True: the stream went on elsewhere, the range cannot be asked again


def rewind(
    ranges: dict[str, list[int]],
    streams: dict[str, StreamState],
    floors: dict[str, int],
) -> list[Rewind]:
    """Move each stream of a damaged file back to where its range there began.

    `streams` are the live ones by key, `floors` the next offsets of streams not
    live yet (found in the output at start). Only a stream whose next offset is
    the range's end can go back: its bytes after it went nowhere else.
    """
    done = []
    for key, (start, end) in sorted(ranges.items()):
        if end <= start:
            continue
        st = streams.get(key)
        expected = st.expected if st is not None else floors.get(key)
        if expected is None:
            continue  # forgotten: nothing will write it again
        if expected > end:
            done.append(Rewind(key, start, end, True))
            continue
        if st is not None:
            st.known_end = max(st.known_end, st.expected)
            st.expected = min(st.expected, start)
            st.replay_until = 0
        else:
            floors[key] = min(expected, start)
        done.append(Rewind(key, start, end, False))
    return done


def repair_open_files(writer: Writer, rotation: Any) -> list[Damage]:
    """Find the open output files changed by hand and start each afresh; the damage
    that lost bytes, for the caller to rewind its streams."""
    lost = []
    for out in list(writer.files.values()):
        try:
            change, found = check_file(out.path, out.fh.fileno(), out.dev, out.ino, out.size)
        except OSError:
            continue  # the write path meets it too
        if change is not None:
            damage = _start_afresh(writer, rotation, out, change, found)
            if change.loses_bytes:
                lost.append(damage)
    return lost


def _start_afresh(
    writer: Writer, rotation: Any, out: OutFile, change: Change, found: int
) -> Damage:
    path, expected = out.path, out.size
    ranges = {key: list(span) for key, span in out.ranges.items()}
    if rotation is not None:
        ranges = merge_ranges(rotation.carried_of(path), ranges)
        rotation.forget_live(path, time.time())
    if change is Change.TRUNCATED:
        writer.empty(path)
    else:
        writer.drop(path)
    log.warning(
        "output %s by hand: %s (%d bytes expected, %d found); %s",
        change.value,
        shown(path),
        expected,
        found,
        "its streams are asked for again"
        if change.loses_bytes
        else "its bytes live on elsewhere, a new live file starts",
    )
    previous = rotation.previous_of(path) if rotation is not None else None
    with contextlib.suppress(OSError):  # its folder went too: the next write makes both
        write_index(path, empty_index(path, previous))
    return Damage(path, change, expected, found, ranges)
