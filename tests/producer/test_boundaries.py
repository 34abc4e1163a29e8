"""Where a replay may start (zaggd/producer/boundaries.py) against the tailer's
own cut: every block end the tailer makes, reading a file as it grows, is a
place a replay may start, and every other offset is inside a line."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zaggd.config import LongLinePolicy
from zaggd.producer.boundaries import is_block_end, next_line_start
from zaggd.producer.tailer import CutCounts, cut_block

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

contents = st.lists(st.sampled_from([b"\n", b"a", b"bb", b"c" * 7, b"d" * 13]), max_size=30).map(
    b"".join
)


def tailer_ends(
    data: bytes, max_line_bytes: int, policy: LongLinePolicy, growth: list[int], read_bytes: int
) -> set[int]:
    """Block ends of a tailer reading `data` as it grows by `growth` steps."""
    ends = set()
    pos, available, mid_line = 0, 0, False
    steps = iter([*growth, len(data)])
    while pos < len(data):
        chunk = data[pos : min(available, pos + read_bytes)]
        consumed, _, _ = cut_block(chunk, max_line_bytes, policy, mid_line, CutCounts())
        if consumed == 0 and len(chunk) == read_bytes and read_bytes <= max_line_bytes:
            chunk = data[pos : min(available, pos + max_line_bytes + 1)]
            consumed, _, _ = cut_block(chunk, max_line_bytes, policy, mid_line, CutCounts())
        if consumed == 0:
            step = next(steps, None)
            if step is None:
                break
            available = max(available, min(len(data), available + step))
            continue
        if policy is not LongLinePolicy.SPLIT:
            mid_line = chunk[consumed - 1] != 0x0A
        pos += consumed
        ends.add(pos)
    return ends


def model_ends(data: bytes, max_line_bytes: int, policy: LongLinePolicy) -> set[int]:
    """Every offset some reading of the final file could end a block at."""
    ends = {0}
    line_start = 0
    while line_start < len(data):
        newline = data.find(b"\n", line_start)
        length = (newline if newline >= 0 else len(data)) - line_start
        if newline >= 0:
            ends.add(newline + 1)
        if length > max_line_bytes:  # a long line (complete, or longer than M + 1 so far)
            complete = newline >= 0 or len(data) - line_start > max_line_bytes
            if policy is LongLinePolicy.SPLIT:
                ends |= {
                    line_start + k * max_line_bytes
                    for k in range(1, length)
                    if k * max_line_bytes < length
                }
            elif complete:
                ends |= set(range(line_start + max_line_bytes, line_start + length + 1))
        if newline < 0:
            break
        line_start = newline + 1
    return ends


def with_file(data: bytes) -> int:
    fd, path = tempfile.mkstemp()
    os.write(fd, data)
    os.unlink(path)
    return fd


@FAST
@given(
    contents,
    st.integers(1, 9),
    st.sampled_from(list(LongLinePolicy)),
    st.lists(st.integers(1, 20), max_size=20),
    st.integers(1, 40),
)
def test_every_block_end_of_the_tailer_is_a_place_to_start(
    data: bytes, max_line_bytes: int, policy: LongLinePolicy, growth: list[int], read_bytes: int
) -> None:
    fd = with_file(data)
    try:
        for end in tailer_ends(data, max_line_bytes, policy, growth, read_bytes):
            assert is_block_end(fd, end, max_line_bytes, policy, 0), end
    finally:
        os.close(fd)


@FAST
@given(contents, st.integers(1, 9), st.sampled_from(list(LongLinePolicy)))
def test_block_ends_are_exactly_the_models(
    data: bytes, max_line_bytes: int, policy: LongLinePolicy
) -> None:
    fd = with_file(data)
    try:
        model = model_ends(data, max_line_bytes, policy)
        found = {o for o in range(len(data) + 1) if is_block_end(fd, o, max_line_bytes, policy, 0)}
        assert found == model
        for offset in range(len(data) + 1):
            newline = data.find(b"\n", offset)
            assert next_line_start(fd, offset) == (newline + 1 if newline >= 0 else None)
    finally:
        os.close(fd)


def test_offsets_up_to_the_floor_are_places_to_start() -> None:
    data = b"aaaa\nbbbbbbbbbbbb\ncc\n"
    fd = with_file(data)
    try:
        assert all(is_block_end(fd, o, 4, LongLinePolicy.SPLIT, 7) for o in range(8))
        assert is_block_end(fd, 11, 4, LongLinePolicy.SPLIT, 7)  # a piece counted from the floor
        assert not is_block_end(fd, 9, 4, LongLinePolicy.SPLIT, 7)
    finally:
        os.close(fd)
