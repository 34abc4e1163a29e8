"""Protocol v1 (zaggd/wire.py) against docs/protocol.md: round trips, and every
validation rule rejecting what it must, with nothing but ProtocolError escaping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zaggd import wire
from zaggd.config import LongLinePolicy
from zaggd.errors import ProtocolError
from zaggd.producer.tailer import CutCounts, cut_block

SID = "0123456789abcdef"
INSTANCE = "fedcba9876543210"
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ----------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
stream_ids = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)
offsets = st.integers(0, wire.MAX_OFFSET)
_no_controls = st.characters(
    codec="utf-8", exclude_characters=[chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
)
topics = (
    st.text(_no_controls.filter(lambda c: c != " "), min_size=1, max_size=80)
    .map(lambda t: t.encode("utf-8"))
    .filter(lambda b: len(b) <= wire.MAX_TOPIC_BYTES)
)
paths = st.text(_no_controls, min_size=1, max_size=300)
reasons = st.text(_no_controls, max_size=wire.MAX_REASON_CHARS)
replay_endpoints = st.one_of(
    st.just(""),
    st.builds(lambda h, p: f"tcp://{h}:{p}", names, st.integers(1, 65535)),
    st.builds(lambda p: f"ipc:///run/zaggd/{p}", names),
)
line_bodies = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
blocks = st.lists(line_bodies, max_size=20).map(lambda ls: b"".join(x + b"\n" for x in ls))


@st.composite
def data_messages(draw: st.DrawFn) -> wire.Data:
    block = draw(blocks)
    lines = block.count(b"\n")
    start = draw(st.integers(0, wire.MAX_OFFSET - len(block) - 1))
    shape = draw(st.sampled_from(["exact", "piece", "short"]))
    if shape == "exact" or not block:
        end = start + len(block)
    elif shape == "piece":  # split or truncate: a line's head plus the "\n" the producer adds
        block = block.replace(b"\n", b"") + b"\n"
        lines = 1
        end = start + len(block) - 1
    else:  # an empty block over a range (truncate's dropped rest, skip's long line, a floor)
        block, lines = b"", 0
        end = draw(st.integers(start, min(wire.MAX_OFFSET, start + wire.MAX_EMPTY_SPAN_BYTES)))
    header = wire.DataHeader(
        draw(names), draw(stream_ids), draw(names), draw(paths), start, end, lines
    )
    return wire.Data(draw(topics), header, block)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int]:
    start = draw(offsets)
    return start, draw(st.integers(start, wire.MAX_OFFSET))


stream_infos = st.builds(wire.StreamInfo, stream_ids, topics, names, paths, offsets)
heartbeats = st.builds(
    wire.Heartbeat,
    names,
    stream_ids,
    replay_endpoints,
    st.lists(stream_infos, max_size=8).map(tuple),
)
replay_requests = st.builds(
    lambda n, s, r: wire.ReplayRequest(n, s, r[0], r[1]), names, stream_ids, ranges()
)
gones = st.builds(
    lambda n, s, r, why: wire.Gone(n, s, r[0], r[1], why), names, stream_ids, ranges(), reasons
)
hellos = st.builds(wire.Hello, names, stream_ids)


# -- round trips ---------------------------------------------------------------


@FAST
@given(data_messages())
def test_data_round_trips(msg: wire.Data) -> None:
    assert wire.decode(wire.encode_data(msg.topic, msg.header, msg.block)) == msg


@FAST
@given(heartbeats)
def test_heartbeat_round_trips(hb: wire.Heartbeat) -> None:
    assert wire.decode(wire.encode_heartbeat(hb)) == hb


@FAST
@given(replay_requests)
def test_replay_request_round_trips(req: wire.ReplayRequest) -> None:
    assert wire.decode(wire.encode_replay_request(req)) == req


@FAST
@given(topics, gones)
def test_gone_round_trips(topic: bytes, gone: wire.Gone) -> None:
    assert wire.decode(wire.encode_gone(topic, gone)) == gone


@FAST
@given(hellos)
def test_hello_round_trips(hello: wire.Hello) -> None:
    assert wire.decode(wire.encode_hello(hello)) == hello


def test_encoded_header_is_compact_utf8_json() -> None:
    header = wire.DataHeader("web-01", SID, "app", "/var/log/é.log", 0, 6, 1)
    frames = wire.encode_data(b"app.web", header, b"hello\n")
    assert (
        frames[1]
        == (
            '{"v":1,"k":"data","node":"web-01","stream":"0123456789abcdef","source":"app",'
            '"path":"/var/log/é.log","start":0,"end":6,"lines":1}'
        ).encode()
    )


def test_undecodable_file_name_is_sent_with_replacement_characters() -> None:
    # os.fsdecode() of a non-UTF-8 name gives surrogate escapes, which UTF-8 cannot carry.
    header = wire.DataHeader("web-01", SID, "app", "/var/log/\udcff\n.log", 0, 2, 1)
    msg = wire.decode(wire.encode_data(b"app", header, b"a\n"))
    assert isinstance(msg, wire.Data)
    assert msg.header.path == "/var/log/\ufffd\ufffd.log"
    info = wire.StreamInfo(SID, b"app", "app", "/x/\udc80", 5)
    hb = wire.decode(wire.encode_heartbeat(wire.Heartbeat("n", INSTANCE, "", (info,))))
    assert isinstance(hb, wire.Heartbeat)
    assert hb.streams[0].path == "/x/\ufffd"


@pytest.mark.parametrize("char", ["a", "\\", '"', "é", "\U0001f600"])
def test_deep_path_is_shortened_to_fit_the_header(char: str) -> None:
    path = "/" + char * 4000 + "/end.log"
    header = wire.DataHeader("n" * 64, SID, "s" * 64, path, wire.MAX_OFFSET - 1, wire.MAX_OFFSET, 0)
    frames = wire.encode_data(b"t", header, b"")
    assert len(frames[1]) <= wire.MAX_HEADER_BYTES
    msg = wire.decode(frames)
    assert isinstance(msg, wire.Data)
    assert msg.header.path.startswith("…") and msg.header.path.endswith("/end.log")
    assert len(frames[1]) > wire.MAX_HEADER_BYTES - 8  # kept as much of the path as fits


# -- hostile input never raises anything but ProtocolError ------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", SID, "web-01", "../x", "a/b", "\ud800", "data", "hb"]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
header_keys = st.sampled_from(
    [
        "v",
        "k",
        "node",
        "stream",
        "source",
        "path",
        "start",
        "end",
        "lines",
        "instance",
        "replay",
        "reason",
    ]
)


def _decodes_or_refuses(frames: list[bytes]) -> None:
    try:
        msg = wire.decode(frames)
    except ProtocolError:
        return
    assert isinstance(msg, wire.Data | wire.Heartbeat | wire.ReplayRequest | wire.Gone | wire.Hello)


@FAST
@given(st.binary(max_size=6000))
def test_random_bytes_only_raise_protocol_error(raw: bytes) -> None:
    _decodes_or_refuses([raw])
    _decodes_or_refuses([b"t", raw, b""])
    _decodes_or_refuses([wire.CONTROL_TOPIC, raw, raw])


@FAST
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_random_frame_lists_only_raise_protocol_error(frames: list[bytes]) -> None:
    _decodes_or_refuses(frames)


@FAST
@given(
    st.sampled_from([b"t", wire.CONTROL_TOPIC, b"", b"a b"]),
    st.dictionaries(header_keys, json_values, max_size=12),
    st.sampled_from(["data", "hb", "replay", "gone", "hello", 7, None]),
    st.one_of(st.binary(max_size=50), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_random_headers_only_raise_protocol_error(
    topic: bytes, head: dict[str, Any], kind: Any, body: bytes
) -> None:
    head = {"v": 1, "k": kind, **head}
    _decodes_or_refuses([topic, json.dumps(head).encode(), body])
    _decodes_or_refuses(
        [topic, json.dumps(head, ensure_ascii=False).encode("utf-8", "replace"), body]
    )


@FAST
@given(st.lists(st.lists(json_values, min_size=5, max_size=5) | json_values, max_size=6))
def test_random_heartbeat_bodies_only_raise_protocol_error(rows: list[Any]) -> None:
    head = json.dumps({"v": 1, "k": "hb", "node": "n", "instance": INSTANCE, "replay": ""})
    _decodes_or_refuses([wire.CONTROL_TOPIC, head.encode(), json.dumps(rows).encode()])


@FAST
@given(
    st.binary(min_size=1, max_size=3000),
    st.integers(1, 200),
    st.sampled_from(list(LongLinePolicy)),
    st.booleans(),
)
def test_blocks_the_producer_cuts_pass_validation(
    data: bytes, max_line_bytes: int, policy: LongLinePolicy, mid_line: bool
) -> None:
    """Every block cut_block makes, under every long-line policy, is a valid data message."""
    pos = 0
    for _ in range(len(data) + 1):
        consumed, payload, lines = cut_block(
            data[pos:], max_line_bytes, policy, mid_line, CutCounts()
        )
        if consumed == 0:
            break
        header = wire.DataHeader("n", SID, "s", "/p", pos, pos + consumed, lines)
        msg = wire.decode(wire.encode_data(b"t", header, payload))
        assert isinstance(msg, wire.Data)
        exact = len(payload) == consumed
        assert exact or not payload or len(payload) == consumed + 1
        mid_line = policy is not LongLinePolicy.SPLIT and data[pos + consumed - 1] != 0x0A
        pos += consumed


# -- each validation rule rejects ------------------------------------------------

GOOD_DATA: dict[str, Any] = {
    "v": 1,
    "k": "data",
    "node": "web-01",
    "stream": SID,
    "source": "app",
    "path": "/var/log/app.log",
    "start": 100,
    "end": 112,
    "lines": 2,
}
GOOD_BLOCK = b"hello\nworld\n"


_MISSING = object()


def _header(base: dict[str, Any], changes: dict[str, Any]) -> bytes:
    """`base` with `changes`, where a change to _MISSING leaves the key out."""
    return json.dumps({k: v for k, v in {**base, **changes}.items() if v is not _MISSING}).encode()


def data_frames(
    topic: bytes = b"app.web", block: bytes = GOOD_BLOCK, **changes: Any
) -> list[bytes]:
    return [topic, _header(GOOD_DATA, changes), block]


def hb_frames(rows: Any = None, body: bytes | None = None, **changes: Any) -> list[bytes]:
    head = {
        "v": 1,
        "k": "hb",
        "node": "web-01",
        "instance": INSTANCE,
        "replay": "tcp://web-01:7451",
    }
    if body is None:
        body = json.dumps(
            [[SID, "app.web", "app", "/var/log/app.log", 12]] if rows is None else rows
        ).encode()
    return [wire.CONTROL_TOPIC, _header(head, changes), body]


def control_frames(
    kind: str, body: bytes = b"", topic: bytes = wire.CONTROL_TOPIC, **changes: Any
) -> list[bytes]:
    head: dict[str, Any] = {"v": 1, "k": kind, "node": "web-01"}
    if kind == "hello":
        head["instance"] = INSTANCE
    else:
        head.update(stream=SID, start=0, end=10)
    if kind == "gone":
        head["reason"] = "stream no longer exists"
    return [topic, _header(head, changes), body]


def rejects(frames: Sequence[bytes | memoryview], match: str | None = None) -> None:
    with pytest.raises(ProtocolError, match=match):
        wire.decode(frames)


def test_the_good_messages_here_are_valid() -> None:
    assert isinstance(wire.decode(data_frames()), wire.Data)
    assert isinstance(wire.decode(hb_frames()), wire.Heartbeat)
    assert isinstance(wire.decode(control_frames("replay")), wire.ReplayRequest)
    assert isinstance(wire.decode(control_frames("gone", topic=b"app.web")), wire.Gone)
    assert isinstance(wire.decode(control_frames("hello")), wire.Hello)


@pytest.mark.parametrize("count", [0, 1, 2, 4, 5])
def test_message_of_other_than_three_frames_is_rejected(count: int) -> None:
    rejects(data_frames()[:count] + [b""] * max(0, count - 3), "expected 3 frames")


@pytest.mark.parametrize("version", [0, 2, -1, "1", 1.0, True, None, [1], _MISSING])
def test_unknown_version_is_rejected(version: Any) -> None:
    rejects(data_frames(v=version), "version")


def test_header_over_the_limit_is_rejected_before_parsing() -> None:
    valid = json.dumps(GOOD_DATA).encode()
    padded = valid[:-1] + b" " * (wire.MAX_HEADER_BYTES - len(valid)) + b"}"
    assert len(padded) == wire.MAX_HEADER_BYTES
    assert isinstance(wire.decode([b"t", padded, GOOD_BLOCK]), wire.Data)
    rejects([b"t", padded[:-1] + b" }", GOOD_BLOCK], "header of 4097 bytes exceeds")
    # Not JSON at all, yet the size is what is reported: it is checked first.
    rejects([b"t", b"[" * 100_000, GOOD_BLOCK], "header of 100000 bytes exceeds")


def test_body_over_the_block_limit_is_rejected_before_parsing() -> None:
    body = memoryview(bytearray(wire.MAX_BLOCK_BYTES + 1))
    rejects([b"t", b"not json", body], "body of")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"\xef\xbb\xbf" + json.dumps(GOOD_DATA).encode(),  # a BOM
        json.dumps(GOOD_DATA).encode("utf-16"),
        json.dumps(GOOD_DATA).encode("utf-32"),
        json.dumps(GOOD_DATA).encode()[:-1] + b',"start":0}',  # a key twice
        json.dumps(GOOD_DATA).encode()[:-1] + b',"x":NaN}',
        json.dumps(GOOD_DATA).encode()[:-1] + b',"x":Infinity}',
        json.dumps(GOOD_DATA).encode()[:-1] + b',"x":"\xff"}',
        b"[" * 3000 + b"]" * 3000,
    ],
    ids=[
        "empty",
        "text",
        "array",
        "string",
        "bom",
        "utf-16",
        "utf-32",
        "key-twice",
        "nan",
        "infinity",
        "bad-utf-8",
        "deep",
    ],
)
def test_header_that_is_not_a_strict_utf8_json_object_is_rejected(raw: bytes) -> None:
    rejects([b"app.web", raw, GOOD_BLOCK])


def test_unknown_header_keys_are_ignored() -> None:
    assert wire.decode(data_frames(extra={"future": [1, 2]})) == wire.decode(data_frames())


@pytest.mark.parametrize("kind", ["", "DATA", "heartbeat", 1, None, _MISSING])
def test_unknown_kind_is_rejected(kind: Any) -> None:
    rejects(data_frames(k=kind), "unknown message kind")


@pytest.mark.parametrize(
    "topic",
    [
        b"",
        b"x" * 256,
        b"a b",
        b"a\tb",
        b"a\x00b",
        b"a\x7f",
        "a\x85".encode(),
        b"\xff\xfe",
        b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
        wire.CONTROL_TOPIC,
    ],
)
def test_data_with_a_bad_topic_is_rejected(topic: bytes) -> None:
    rejects(data_frames(topic=topic), "topic")


def test_topic_of_255_bytes_is_the_limit() -> None:
    assert isinstance(wire.decode(data_frames(topic="é".encode() * 127 + b"x")), wire.Data)
    rejects(data_frames(topic="é".encode() * 128), "topic")


def test_printable_hostile_topic_passes_the_wire() -> None:
    # The wire allows it; the collector's writer must make it a harmless file name.
    assert isinstance(wire.decode(data_frames(topic=b"/../../etc/x")), wire.Data)


@pytest.mark.parametrize(
    "stream",
    ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "g123456789abcdef", "", 1, None],
)
def test_stream_not_16_lowercase_hex_digits_is_rejected(stream: Any) -> None:
    rejects(data_frames(stream=stream), "stream")
    rejects(control_frames("replay", stream=stream), "stream")
    rejects(control_frames("gone", topic=b"t", stream=stream), "stream")
    rejects(hb_frames(rows=[[stream, "t", "s", "/p", 1]]), "stream")


BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/",
    "/etc",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x1b[31m",
    "a b",
    "-a",
    ".a",
    "_a",
    "é",
    "a" * 65,
    "a\u2028",
    1,
    None,
    ["a"],
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_node_name_is_rejected(name: Any) -> None:
    rejects(data_frames(node=name), "node")
    rejects(hb_frames(node=name), "node")
    rejects(control_frames("replay", node=name), "node")
    rejects(control_frames("gone", topic=b"t", node=name), "node")
    rejects(control_frames("hello", node=name), "node")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_source_name_is_rejected(name: Any) -> None:
    rejects(data_frames(source=name), "source")
    rejects(hb_frames(rows=[[SID, "t", name, "/p", 1]]), "source")


def test_name_of_64_characters_is_the_limit() -> None:
    assert isinstance(wire.decode(data_frames(node="a" * 64, source="b.c_d-E9")), wire.Data)


@pytest.mark.parametrize("path", ["", "a\x00b", "a\nb", "a\tb", "\x7f", "\x9b", "\ud800", 1, None])
def test_bad_path_is_rejected(path: Any) -> None:
    rejects(data_frames(path=path), "path|lone surrogate")  # a header's strings are checked first
    rejects(hb_frames(rows=[[SID, "t", "s", path, 1]]), "path")


def test_path_over_its_limit_is_rejected() -> None:
    # In a data header the header limit comes first; a heartbeat entry has room for more.
    rejects(hb_frames(rows=[[SID, "t", "s", "x" * (wire.MAX_PATH_CHARS + 1), 1]]), "path")
    assert isinstance(
        wire.decode(hb_frames(rows=[[SID, "t", "s", "x" * wire.MAX_PATH_CHARS, 1]])), wire.Heartbeat
    )


def test_path_may_name_anything_printable() -> None:
    msg = wire.decode(data_frames(path="../../etc/passwd and spaces/ü"))
    assert isinstance(msg, wire.Data)


@pytest.mark.parametrize(
    "value", [-1, 2**63, 10**30, True, False, 1.0, 1e3, "1", None, [], _MISSING]
)
@pytest.mark.parametrize("key", ["start", "end"])
def test_offset_that_is_not_an_integer_in_range_is_rejected(key: str, value: Any) -> None:
    match = f"{key}|beyond 64 bits"  # an integer no 64-bit parser reads is refused as it is parsed
    rejects(data_frames(**{key: value}), match)
    rejects(control_frames("replay", **{key: value}), match)
    rejects(control_frames("gone", topic=b"t", **{key: value}), match)


def test_largest_offset_is_accepted() -> None:
    top = wire.MAX_OFFSET
    assert isinstance(wire.decode(data_frames(start=top - 12, end=top)), wire.Data)


def test_end_before_start_is_rejected() -> None:
    rejects(data_frames(start=112, end=100), "end is before start")
    rejects(control_frames("replay", start=11, end=10), "end is before start")
    rejects(control_frames("gone", topic=b"t", start=11, end=10), "end is before start")


def test_block_not_ending_in_a_newline_is_rejected() -> None:
    rejects(data_frames(block=b"hello\nworld", end=111, lines=1), "newline")


@pytest.mark.parametrize("lines", [0, 1, 3, -1, True, 2.0, "2", None])
def test_line_count_mismatch_is_rejected(lines: Any) -> None:
    rejects(data_frames(lines=lines), "lines")


def test_empty_block_with_lines_is_rejected() -> None:
    rejects(data_frames(block=b"", lines=1), "empty block")


def test_block_larger_than_its_range_plus_its_lines_is_rejected() -> None:
    # A split piece is one byte longer than its range (the "\n" added): allowed.
    assert isinstance(wire.decode(data_frames(block=b"abcd\n", start=0, end=4, lines=1)), wire.Data)
    rejects(data_frames(block=b"abcde\n", start=0, end=4, lines=1), "larger than its range")
    rejects(data_frames(block=b"a\nb\nc\n", start=0, end=2, lines=3), "larger than its range")


def test_empty_blocks_over_a_range_are_allowed() -> None:
    # truncate's dropped rest and skip's long line: the block only advances the offset.
    assert isinstance(wire.decode(data_frames(block=b"", start=0, end=5000, lines=0)), wire.Data)


@pytest.mark.parametrize(
    "rows",
    [
        {"a": 1},
        "x",
        [None],
        [[SID, "t", "s", "/p"]],
        [[SID, "t", "s", "/p", 1, 2]],
        [{"stream": SID}],
        [[SID, "", "s", "/p", 1]],
        [[SID, "a b", "s", "/p", 1]],
        [[SID, "a\x00", "s", "/p", 1]],
        [[SID, "\ud800", "s", "/p", 1]],
        [[SID, "x" * 256, "s", "/p", 1]],
        [[SID, 5, "s", "/p", 1]],
        [[SID, "t", "s", "/p", -1]],
        [[SID, "t", "s", "/p", True]],
        [[SID, "t", "s", "/p", 2**63]],
        [[SID, "t", "s", "/p", 1.5]],
        [[SID, "t", "s", "/p", 1], [SID, "t", "../s", "/p", 1]],
    ],
)
def test_malformed_heartbeat_entry_is_rejected(rows: Any) -> None:
    rejects(hb_frames(rows=rows))


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[[", json.dumps([]).encode("utf-16"), b"[NaN]", b"[" * 5000 + b"]" * 5000],
)
def test_heartbeat_body_that_is_not_a_json_array_is_rejected(body: bytes) -> None:
    rejects(hb_frames(body=body), "heartbeat body")


def test_heartbeat_body_over_its_limit_is_rejected() -> None:
    rejects(hb_frames(body=b"[" + b" " * wire.MAX_HEARTBEAT_BYTES + b"]"), "exceeds")


def test_heartbeat_off_the_control_topic_is_rejected() -> None:
    frames = hb_frames()
    rejects([b"app.web", *frames[1:]], "control topic")


def test_empty_heartbeat_is_valid() -> None:
    hb = wire.decode(hb_frames(rows=[], replay=""))
    assert hb == wire.Heartbeat("web-01", INSTANCE, "", ())


@pytest.mark.parametrize(
    "replay",
    ["web-01:7451", "inproc://x", "tcp://a b:1", "tcp://a\n:1", "tcp://" + "x" * 2000, 7451, None],
    ids=["no-scheme", "inproc", "space", "newline", "too-long", "int", "null"],
)
def test_heartbeat_with_a_bad_replay_endpoint_is_rejected(replay: Any) -> None:
    rejects(hb_frames(replay=replay), "replay")


@pytest.mark.parametrize("instance", ["", "0123456789ABCDEF", "0123", 1, None])
def test_bad_instance_is_rejected(instance: Any) -> None:
    rejects(hb_frames(instance=instance), "instance")
    rejects(control_frames("hello", instance=instance), "instance")


@pytest.mark.parametrize("kind", ["replay", "hello"])
def test_control_message_off_the_control_topic_or_with_a_body_is_rejected(kind: str) -> None:
    rejects(control_frames(kind, topic=b"app.web"), "control topic")
    rejects(control_frames(kind, body=b"x"), "body")


def test_gone_on_the_control_topic_or_with_a_body_is_rejected() -> None:
    rejects(control_frames("gone"), "topic")
    rejects(control_frames("gone", topic=b"t", body=b"x"), "body")


@pytest.mark.parametrize("reason", ["x" * 201, "a\nb", "\x1b[2J", "\ud800", 5, None])
def test_gone_with_a_bad_reason_is_rejected(reason: Any) -> None:
    rejects(control_frames("gone", topic=b"t", reason=reason), "reason|lone surrogate")


@FAST
@given(data_messages(), st.data())
def test_any_change_to_a_valid_block_breaks_or_keeps_validity_without_crashing(
    msg: wire.Data, data: st.DataObject
) -> None:
    frames = wire.encode_data(msg.topic, msg.header, msg.block)
    raw = bytearray(b"".join(frames))
    assume(raw)
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut1 = len(frames[0])
    cut2 = cut1 + len(frames[1])
    _decodes_or_refuses([bytes(raw[:cut1]), bytes(raw[cut1:cut2]), bytes(raw[cut2:])])
