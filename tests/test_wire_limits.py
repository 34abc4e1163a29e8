"""The limits docs/protocol.md states, enforced by wire.decode: JSON nesting
(checked before parsing), integers within 64 bits, finite numbers, no lone
surrogates even in ignored keys, heartbeat entries, what a block may claim
beyond the bytes it carries, and the optional `prev` keys of a data header."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_wire import GOOD_BLOCK, GOOD_DATA, SID
from zaggd import wire
from zaggd.errors import ProtocolError

PREV = "fedcba9876543210"
INSTANCE = "00112233aabbccdd"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DATA = GOOD_DATA
BLOCK = GOOD_BLOCK


def data_with(extra: str, block: bytes = BLOCK, **changes: Any) -> list[bytes]:
    """A valid data message whose header gets `extra` (raw JSON text) as key "x"."""
    head = json.dumps({**DATA, **changes})
    return [b"app", f'{head[:-1]},"x":{extra}}}'.encode(), block]


def heartbeat(body: bytes) -> list[bytes]:
    head = {"v": 1, "k": "hb", "node": "web-01", "instance": INSTANCE, "replay": ""}
    return [wire.CONTROL_TOPIC, json.dumps(head).encode(), body]


def refused(frames: list[bytes], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        wire.decode(frames)


# -- nesting -----------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_of_the_limit_is_accepted_one_more_is_refused() -> None:
    # The header object itself is one level.
    assert isinstance(wire.decode(data_with(nested(wire.MAX_JSON_DEPTH - 1))), wire.Data)
    refused(data_with(nested(wire.MAX_JSON_DEPTH)), "nested deeper than 16")
    refused(data_with('{"a":' * 20 + "1" + "}" * 20), "nested deeper")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps("[" * 500 + '\\"{' * 100 + "\\")
    msg = wire.decode(data_with(text, path="/a/[[[[[[[[[[[[[[[[[[[[[[[[/x.log"))
    assert isinstance(msg, wire.Data)


def test_deep_nesting_is_refused_before_parsing() -> None:
    """What makes a recursive parser fail (or, in C, overflow) never reaches it."""
    refused(data_with(nested(1800)), "nested deeper")
    started = time.perf_counter()
    refused(heartbeat(b"[" * wire.MAX_HEARTBEAT_BYTES), "more than 2001 arrays")
    assert time.perf_counter() - started < 2.0


def test_heartbeat_of_more_streams_than_the_limit_is_refused() -> None:
    row = [SID, "app", "app", "/p", 1]
    body = json.dumps([row] * wire.MAX_HEARTBEAT_STREAMS).encode()
    hb = wire.decode(heartbeat(body))
    assert isinstance(hb, wire.Heartbeat) and len(hb.streams) == wire.MAX_HEARTBEAT_STREAMS
    refused(heartbeat(json.dumps([row] * (wire.MAX_HEARTBEAT_STREAMS + 1)).encode()), "more than")


def test_the_producer_splits_heartbeats_within_the_limit() -> None:
    from zaggd.producer import publisher

    infos = [wire.StreamInfo(f"{i:016x}", b"t", "s", "/p", i) for i in range(4500)]
    pages = publisher._pages(infos)
    assert [len(p) for p in pages] == [2000, 2000, 500]
    for page in pages:
        frames = wire.encode_heartbeat(wire.Heartbeat("n", INSTANCE, "", tuple(page)))
        assert isinstance(wire.decode(frames), wire.Heartbeat)


def test_heartbeat_of_long_paths_is_split_by_size() -> None:
    from zaggd.producer import publisher

    path = "/" + "é" * (wire.MAX_PATH_CHARS - 1)
    infos = [wire.StreamInfo(f"{i:016x}", b"t", "s", path, i) for i in range(600)]
    pages = publisher._pages(infos)
    assert len(pages) > 1
    for page in pages:
        body = wire.encode_heartbeat(wire.Heartbeat("n", INSTANCE, "", tuple(page)))[2]
        assert len(body) <= wire.MAX_HEARTBEAT_BYTES // 2


# -- numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["9223372036854775808", "-9223372036854775809", "18446744073709551616", "1" + "0" * 400],
)
def test_integer_beyond_64_bits_in_any_key_is_refused(number: str) -> None:
    refused(data_with(number), "beyond 64 bits")
    refused(data_with(f"[{number}]"), "beyond 64 bits")
    row = f'[["{SID}","app","app","/p",1,{number}]]'
    refused(heartbeat(row.encode()), "beyond 64 bits")


@pytest.mark.parametrize("number", ["1e999", "-1e400", "1.5e309"])
def test_number_beyond_a_double_is_refused(number: str) -> None:
    refused(data_with(number), "beyond a double")


@pytest.mark.parametrize(
    "number", ["9223372036854775807", "-9223372036854775808", "1.5", "1e308", "-0.0", "0"]
)
def test_numbers_every_parser_reads_alike_are_accepted_in_ignored_keys(number: str) -> None:
    assert isinstance(wire.decode(data_with(number)), wire.Data)


# -- lone surrogates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        r'"\ud800"',
        r'"\udc00x"',
        r'"a\ud83d"',
        r'["\udfff"]',
        r'{"\ud800":1}',
        r'{"a":[{"b":"\ud800"}]}',
        r'"\ude00\ud83d"',  # a pair in the wrong order is two lone halves
    ],
)
def test_lone_surrogate_anywhere_in_a_header_is_refused(extra: str) -> None:
    refused(data_with(extra), "lone surrogate")


def test_surrogate_pair_is_one_character_and_accepted() -> None:
    assert isinstance(wire.decode(data_with(r'"\ud83d\ude00"')), wire.Data)
    assert isinstance(wire.decode(data_with(r'"\\ud800"')), wire.Data)  # an escaped backslash


# -- a model of the JSON rules, for any value in an ignored key ------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\udc00"]), max_size=6)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def acceptable(value: Any) -> bool:
    """The rules of docs/protocol.md section 2.1, as a plain model."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(acceptable(v) for v in value)
    return all(acceptable(k) and acceptable(v) for k, v in value.items())


@FAST
@given(json_values)
def test_ignored_key_is_accepted_exactly_when_the_rules_allow(value: Any) -> None:
    frames = data_with(json.dumps(value))
    fits = len(frames[1]) <= wire.MAX_HEADER_BYTES
    # As the peer reads it: two halves side by side are one character in JSON.
    read = json.loads(json.dumps(value))
    expected = fits and acceptable(read) and depth_of(value) < wire.MAX_JSON_DEPTH
    try:
        msg = wire.decode(frames)
    except ProtocolError:
        assert not expected, value
        return
    assert expected, value
    assert isinstance(msg, wire.Data)


@FAST
@given(st.integers(1, 40), st.sampled_from("[{"))
def test_any_depth_is_refused_or_accepted_without_a_parser_error(depth: int, kind: str) -> None:
    text = ("[" * depth + "]" * depth) if kind == "[" else ('{"a":' * depth + "0" + "}" * depth)
    try:
        wire.decode(data_with(text))
    except ProtocolError as exc:
        assert depth >= wire.MAX_JSON_DEPTH and "nested" in str(exc)
    else:
        assert depth < wire.MAX_JSON_DEPTH


# -- what a block may claim --------------------------------------------------------------


def block(start: int, end: int, body: bytes, lines: int | None = None) -> list[bytes]:
    lines = body.count(b"\n") if lines is None else lines
    return [b"app", json.dumps({**DATA, "start": start, "end": end, "lines": lines}).encode(), body]


def test_a_block_carries_exactly_its_range() -> None:
    assert isinstance(wire.decode(block(0, 9, b"forged!!\n")), wire.Data)
    refused(block(0, wire.MAX_OFFSET, b"forged!!\n"), "does not cover its range")
    refused(block(0, 10, b"forged!!\n"), "does not cover its range")
    refused(block(0, 5000, b"abc\n"), "does not cover its range")


def test_a_long_line_piece_is_its_range_plus_the_added_newline() -> None:
    assert isinstance(wire.decode(block(1000, 1004, b"abcd\n")), wire.Data)
    refused(block(1000, 1003, b"a\nb\n"), "does not cover its range")  # two lines, one byte over


def test_an_empty_block_covers_at_most_its_limit() -> None:
    top = wire.MAX_EMPTY_SPAN_BYTES
    assert isinstance(wire.decode(block(0, top, b"")), wire.Data)
    assert isinstance(wire.decode(block(7, 7, b"")), wire.Data)
    refused(block(0, top + 1, b""), "empty block covers")
    refused(block(0, wire.MAX_OFFSET, b""), "empty block covers")


# -- prev: the stream a stream succeeds ------------------------------------------------------


def test_prev_round_trips_and_is_left_out_when_there_is_none() -> None:
    header = wire.DataHeader("web-01", SID, "app", "/p", 0, 6, 1, prev=PREV, prev_end=1234)
    frames = wire.encode_data(b"app", header, b"hello\n")
    assert b'"prev":"fedcba9876543210","prev_end":1234' in frames[1]
    assert wire.decode(frames) == wire.Data(b"app", header, b"hello\n")
    plain = wire.encode_data(b"app", wire.DataHeader("web-01", SID, "app", "/p", 0, 6, 1), b"a\n")
    assert b"prev" not in plain[1]


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"prev": PREV}, "prev_end"),
        ({"prev_end": 5}, "prev"),
        ({"prev": "x", "prev_end": 5}, "prev"),
        ({"prev": PREV, "prev_end": -1}, "prev_end"),
        ({"prev": PREV, "prev_end": "5"}, "prev_end"),
        ({"prev": SID, "prev_end": 5}, "succeed itself"),
        ({"prev": None, "prev_end": 5}, "prev"),
    ],
)
def test_bad_prev_is_refused(changes: dict[str, Any], match: str) -> None:
    refused([b"app", json.dumps({**DATA, **changes}).encode(), BLOCK], match)
