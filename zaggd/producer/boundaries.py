"""Where a replay may start: the offsets at which the tailer's cut ends a block.

A block ends after a newline, at the stream's floor, or inside a line longer
than max_line_bytes (M): with `split` at each piece, M, 2M, ... bytes into the
line while more of it follows; with `truncate` and `skip` anywhere from M
bytes into the line (the discarded rest goes as empty blocks of any size).
Any other offset lies inside a line: a replay from there would send a partial
line, so the replay server answers "gone" up to the next line start instead.
No threads, no sockets: files are read with pread on a caller's handle.
"""

from __future__ import annotations

import os

from zaggd.config import LongLinePolicy

SCAN_BYTES = 1048576


def is_block_end(
    fd: int, offset: int, max_line_bytes: int, policy: LongLinePolicy, floor: int
) -> bool:
    """Whether a block of the stream can end at `offset` (so a replay may start there)."""
    if offset <= floor or os.pread(fd, 1, offset - 1) in (b"\n", b""):
        return True
    if policy is LongLinePolicy.SPLIT:
        return _is_piece_end(fd, offset, max_line_bytes, floor)
    # truncate or skip: the head (or the first skip) covers M bytes, the rest any amount.
    low = offset - max_line_bytes
    if low < floor or b"\n" in os.pread(fd, max_line_bytes, low):
        return False
    if low == floor or os.pread(fd, 1, low - 1) == b"\n":
        # Exactly M bytes in: a head ends here only if the line goes on past it.
        return os.pread(fd, 1, offset) not in (b"\n", b"")
    return True


def _is_piece_end(fd: int, offset: int, max_line_bytes: int, floor: int) -> bool:
    """`offset` is k * M bytes into a line that goes on past it (k >= 1)."""
    if os.pread(fd, 1, offset) in (b"\n", b""):
        return False  # a line of exactly k * M bytes ends there: its last piece is not cut
    high = offset
    while high - max_line_bytes >= floor:
        low = high - max_line_bytes
        if b"\n" in os.pread(fd, max_line_bytes, low):
            return False
        if low == floor or os.pread(fd, 1, low - 1) == b"\n":
            return True
        high = low
    return False


def next_line_start(fd: int, offset: int) -> int | None:
    """The offset just after the first newline at or past `offset`; None if none yet."""
    pos = offset
    while True:
        data = os.pread(fd, SCAN_BYTES, pos)
        if not data:
            return None
        newline = data.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(data)
