"""One stream: read blocks of a file instance from a byte offset, cut at the last '\n'.

A block covers file bytes [start, end) and carries complete lines only; a
partial last line waits for its newline. Lines longer than max_line_bytes are
split, truncated or skipped by policy. The cut is a pure function of the
file's bytes, the offset it starts at (a long line's tail is recognised by
the byte before the offset) and the stream's floor (what `start_at: end`
skipped goes as empty blocks), so the replay server, reading the same
range later, produces the same lines as the tailer did.

A Tailer also tells whether its file is still the content it read: cut back
below what it saw, or other first bytes (truncated and regrown past our
offset between two looks), checked before a read and again after it, so a
truncation racing a read never passes new bytes off as old ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from zaggd.config import LongLinePolicy
from zaggd.identity import FINGERPRINT_BYTES, FileId, fingerprint_of, has_prefix
from zaggd.wire import MAX_EMPTY_SPAN_BYTES


@dataclass(frozen=True, slots=True)
class Block:
    """File bytes [start, end) of a stream, as `payload` with `lines` lines."""

    stream: str
    start: int
    end: int
    payload: bytes
    lines: int


@dataclass(slots=True)
class CutCounts:
    split: int = 0
    truncated: int = 0
    skipped: int = 0


def cut_block(
    data: bytes,
    max_line_bytes: int,
    policy: LongLinePolicy,
    mid_line: bool,
    counts: CutCounts,
) -> tuple[int, bytes, int]:
    """Cut `data`, read at some offset, into (bytes consumed, payload, lines).

    Returns consumed 0 when nothing can be cut yet (a partial line waits).
    `mid_line` says the data starts inside a long line whose head was already
    truncated or skipped: its rest is discarded up to the newline.
    """
    size = len(data)
    if mid_line and policy is not LongLinePolicy.SPLIT:
        nl = data.find(b"\n")
        return (size if nl < 0 else nl + 1), b"", 0
    limit = max_line_bytes + 1  # a line and its newline
    pos = 0
    while True:
        window_end = pos + limit
        if window_end >= size:
            nl = data.rfind(b"\n", pos)
            if nl >= 0:
                pos = nl + 1
            if pos > 0 or size - pos < limit:
                break
        else:
            nl = data.rfind(b"\n", pos, window_end)
            if nl >= 0:
                pos = nl + 1
                continue
            if pos > 0:
                break
        # A line of more than max_line_bytes starts at offset 0 of data.
        return _cut_long_line(data, max_line_bytes, policy, counts)
    if pos == 0:
        return 0, b"", 0
    payload = data[:pos] if pos < size else data
    return pos, payload, payload.count(b"\n")


def _cut_long_line(
    data: bytes, max_line_bytes: int, policy: LongLinePolicy, counts: CutCounts
) -> tuple[int, bytes, int]:
    head = data[:max_line_bytes]
    if policy is LongLinePolicy.SPLIT:
        counts.split += 1
        return max_line_bytes, head + b"\n", 1
    if policy is LongLinePolicy.TRUNCATE:
        counts.truncated += 1
        return max_line_bytes, head + b"\n", 1
    counts.skipped += 1
    return max_line_bytes, b"", 0


def is_mid_long_line(fd: int, offset: int, policy: LongLinePolicy, max_line_bytes: int) -> bool:
    """Whether `offset` lies inside a long line whose rest is to be discarded."""
    if offset == 0 or policy is LongLinePolicy.SPLIT:
        return False
    before = os.pread(fd, 1, offset - 1)
    return before not in (b"\n", b"")


def skip_block(stream: str, start: int, floor: int) -> Block:
    """The empty block from `start` towards `floor`: at most wire.MAX_EMPTY_SPAN_BYTES,
    so a skip of any size goes as several blocks that every collector accepts."""
    return Block(stream, start, min(floor, start + MAX_EMPTY_SPAN_BYTES), b"", 0)


def read_range(
    fd: int,
    stream: str,
    start: int,
    max_bytes: int,
    max_line_bytes: int,
    policy: LongLinePolicy,
    floor: int = 0,
) -> Block | None:
    """The block at `start` of an open file, cut as the tailer cuts it.

    Bytes before `floor` (a file found at the first start with `start_at:
    end`) are never sent: empty blocks move the stream's offset past them.
    """
    if start < floor:
        return skip_block(stream, start, floor)
    mid = is_mid_long_line(fd, start, policy, max_line_bytes)
    _, consumed, payload, lines = read_and_cut(
        fd, start, max_bytes, max_line_bytes, policy, mid, CutCounts()
    )
    if consumed == 0:
        return None
    return Block(stream, start, start + consumed, payload, lines)


def read_and_cut(
    fd: int,
    offset: int,
    max_bytes: int,
    max_line_bytes: int,
    policy: LongLinePolicy,
    mid_line: bool,
    counts: CutCounts,
) -> tuple[bytes, int, bytes, int]:
    """Read at `offset` and cut; reads up to one long line more when no line fits."""
    data = os.pread(fd, max_bytes, offset)
    consumed, payload, lines = cut_block(data, max_line_bytes, policy, mid_line, counts)
    if consumed == 0 and len(data) == max_bytes and max_bytes <= max_line_bytes:
        data = os.pread(fd, max_line_bytes + 1, offset)
        consumed, payload, lines = cut_block(data, max_line_bytes, policy, mid_line, counts)
    return data, consumed, payload, lines


@dataclass(slots=True)
class Tailer:
    """A stream being tailed: one file instance, its handle when open, and its offset."""

    stream: str
    source: str
    topic: bytes
    path: str
    file_id: FileId
    offset: int
    max_line_bytes: int
    policy: LongLinePolicy
    floor: int = 0  # bytes before it are skipped (start_at: end), sent as empty blocks
    fd: int | None = None
    rotated: bool = False  # the path no longer names this file instance
    decompressed: bool = False  # fd reads a decompressed copy; it cannot be reopened
    finished: bool = False  # read to its end and gone; kept only to announce its end
    discarding: bool = False  # inside a long line whose rest is dropped
    replaced: bool = False  # the first bytes changed under a read: truncated and regrown
    last_size: int = 0  # the largest size the file was seen at, with our first bytes
    saved_fingerprint_size: int = -1  # in the offset store; -1: not in it yet
    head: bytes | None = None  # a short file's fingerprinted bytes, when known
    stalled_size: int = -1  # the size at which only a partial line was left to read
    # The stream that was at this path before (rotation), and its offset when this
    # one's first block was read (-1: not settled yet); see StreamManager.read_round.
    prev: str = ""
    prev_end: int = -1
    prev_until: int = -1  # the predecessor's size when this stream first had a block to read
    intact_at: float = field(default_factory=time.time)  # wall time it was last seen unchanged
    last_active: float = field(default_factory=time.monotonic)
    counts: CutCounts = field(default_factory=CutCounts)

    def open(self) -> bool:
        """Reopen the file instance at `path`; False when `path` is not it any more."""
        if self.fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            same = self.file_id.is_same_inode(os.fstat(fd)) and has_prefix(
                fd, self.file_id.fingerprint
            )
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return False
        self.attach(fd)
        return True

    def attach(self, fd: int) -> None:
        """Take `fd`, an open handle on this file instance."""
        self.fd = fd
        self.discarding = is_mid_long_line(fd, self.offset, self.policy, self.max_line_bytes)
        self.last_active = time.monotonic()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def is_truncated(self) -> bool:
        """Whether the file was cut back (copytruncate), even if it regrew past our offset."""
        assert self.fd is not None
        size = self.size()
        # Shorter than our own content was, or other first bytes: a regrown file.
        if (
            self.replaced
            or size < max(self.offset, self.last_size)
            or not has_prefix(self.fd, self.file_id.fingerprint)
        ):
            return True
        # Only sizes of our own content count: they bound what a truncation loses.
        self.last_size = size
        self.intact_at = time.time()
        return False

    def grow_fingerprint(self) -> bool:
        """Extend a short file's fingerprint over the bytes added since; True if it grew.

        A short fingerprint is all that tells this content from a later one at
        the same inode, so it covers every byte a block is read from.
        """
        assert self.fd is not None
        fp = self.file_id.fingerprint
        if fp.size >= FINGERPRINT_BYTES:
            return False
        head = os.pread(self.fd, FINGERPRINT_BYTES, 0)
        if not fp.matches(head):
            return False
        self.head = head if len(head) < FINGERPRINT_BYTES else None
        if len(head) == fp.size:
            return False
        self.file_id = FileId(self.file_id.device, self.file_id.inode, fingerprint_of(head))
        return True

    def is_deleted(self) -> bool:
        assert self.fd is not None
        return self.decompressed or os.fstat(self.fd).st_nlink == 0

    def pending_bytes(self) -> int:
        return self.size() - self.offset

    def is_stalled(self) -> bool:
        """Whether only a partial line is left, and nothing was added since we looked."""
        return self.stalled_size >= 0 and self.size() == self.stalled_size

    def read_block(self, max_bytes: int) -> Block | None:
        """The next block from the offset, or None when no complete line is there yet.

        A file shorter than FINGERPRINT_BYTES is read only as far as its
        fingerprint reaches (see grow_fingerprint). None with `replaced` set:
        the first bytes changed during the read, so what was read may be
        another content's bytes and is not used.
        """
        assert self.fd is not None
        if self.offset < self.floor:
            skipped = skip_block(self.stream, self.offset, self.floor)
            self.offset = skipped.end
            if self.offset == self.floor:
                self.discarding = is_mid_long_line(
                    self.fd, self.offset, self.policy, self.max_line_bytes
                )
            return skipped
        fp = self.file_id.fingerprint
        capped = fp.size < FINGERPRINT_BYTES
        if capped:
            max_bytes = min(max_bytes, fp.size - self.offset)
            if max_bytes <= 0:
                self.stalled_size = self.offset
                return None
        data, consumed, payload, lines = read_and_cut(
            self.fd,
            self.offset,
            max_bytes,
            self.max_line_bytes,
            self.policy,
            self.discarding,
            self.counts,
        )
        if consumed == 0:
            self.stalled_size = self.offset + len(data) if capped or len(data) < max_bytes else -1
            return None
        # Checked after the read: a truncation racing it must not pass off new bytes as ours.
        if not has_prefix(self.fd, fp):
            self.replaced = True
            return None
        self.stalled_size = -1
        block = Block(self.stream, self.offset, self.offset + consumed, payload, lines)
        self._advance(data, consumed)
        return block

    def _advance(self, data: bytes, consumed: int) -> None:
        if self.policy is not LongLinePolicy.SPLIT:
            # Ending off a newline means a long line's head was cut: drop its rest.
            self.discarding = data[consumed - 1] != 0x0A
        self.offset += consumed
        self.last_size = max(self.last_size, self.offset)
        self.last_active = time.monotonic()
