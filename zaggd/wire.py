"""Protocol v1: the frames zaggd daemons exchange, and their limits. No sockets.

Every message is three ZeroMQ frames: [topic, header, body]. The topic comes
first so that SUB prefix filtering selects sources; the header is a small JSON
object; the body is the file's bytes (data) or a JSON array (heartbeat).
docs/protocol.md is the normative description; this module is its code.

`decode()` treats its input as hostile: sizes and JSON nesting are checked
before anything is parsed, every field's type and range is checked after, and
any violation is a ProtocolError that the caller counts and drops. JSON is
held to what every common parser reads alike: integers within 64 bits, finite
numbers, no lone surrogates, no key twice, at most MAX_JSON_DEPTH levels.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zaggd.errors import ProtocolError

VERSION = 1
CONTROL_TOPIC = b"\x00zaggd"

MAX_TOPIC_BYTES = 255
MAX_HEADER_BYTES = 4096
MAX_BLOCK_BYTES = 64 * 1024 * 1024
MAX_HEARTBEAT_BYTES = 4 * 1024 * 1024
MAX_PATH_CHARS = 4096
MAX_REASON_CHARS = 200
MAX_REPLAY_CHARS = 1024
MAX_OFFSET = 2**63 - 1
MIN_INTEGER = -(2**63)  # any JSON integer, in any key, lies in [MIN_INTEGER, MAX_OFFSET]
MAX_JSON_DEPTH = 16  # arrays and objects inside one another, in a header or a heartbeat body
MAX_HEARTBEAT_STREAMS = 2000  # entries in one heartbeat body
# An empty block (lines skipped, or bytes before a stream's floor) covers at most
# this many bytes: a block never moves a stream further than this past what it carries.
MAX_EMPTY_SPAN_BYTES = 64 * 1024 * 1024
# Largest frame any message may carry: SUB sockets refuse bigger ones (ZMQ_MAXMSGSIZE).
MAX_FRAME_BYTES = MAX_BLOCK_BYTES

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
STREAM_RE = re.compile(r"[0-9a-f]{16}\Z")
REPLAY_SCHEMES = ("tcp://", "ipc://")
_CONTROL_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")
# Not allowed in text fields: C0 controls, DEL, C1 controls, and lone surrogates
# (which JSON can spell as \ud800 escapes, and which have no UTF-8 form).
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class DataHeader:
    """A block: file bytes [start, end) of one stream, `lines` complete lines.

    `prev` and `prev_end`: the stream this one succeeds at its path (the file
    that was there before a rotation), and the offset that stream had reached
    when this one's first block was read; "" and 0 when there is none. A
    collector writes no block of this stream before it has `prev` up to
    `prev_end`, so lines keep their order across rotation.
    """

    node: str
    stream: str
    source: str
    path: str
    start: int
    end: int
    lines: int
    # Received: the path's exact bytes when `path` could not show them (`path_b64`).
    path_bytes: bytes | None = None
    prev: str = ""
    prev_end: int = 0


@dataclass(frozen=True, slots=True)
class Data:
    topic: bytes
    header: DataHeader
    block: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream as a heartbeat announces it."""

    stream: str
    topic: bytes
    source: str
    path: str
    end: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    instance: str
    replay: str  # where to ask for replays; "" when the collector binds the replay channel
    streams: tuple[StreamInfo, ...]


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A collector asks `node` for bytes [start, end) of `stream`."""

    node: str
    stream: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Gone:
    """The producer's answer for a range that no longer exists anywhere."""

    node: str
    stream: str
    start: int
    end: int
    reason: str


@dataclass(frozen=True, slots=True)
class Hello:
    """A producer announcing itself on a replay channel the collector binds."""

    node: str
    instance: str


Message = Data | Heartbeat | ReplayRequest | Gone | Hello


def is_valid_topic(topic: bytes) -> bool:
    if not 0 < len(topic) <= MAX_TOPIC_BYTES:
        return False
    try:
        text = topic.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTROL_CHARS.search(text) is None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def wire_path(path: str) -> str:
    """A file's path as the wire carries it: control characters and undecodable
    bytes (surrogate escapes from os.fsdecode) become U+FFFD. The path is for
    people and output formats only; no daemon finds a file by it."""
    return _UNSAFE_TEXT.sub("\ufffd", path) or "\ufffd"


def exact_path_b64(path: str) -> str | None:
    """Base64 of a path's own bytes when wire_path() would change it, else None."""
    if wire_path(path) == path:
        return None
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return None
    return base64.b64encode(raw).decode("ascii")


def _fit_path(path: str, room: int) -> str:
    """`path`, cut from the front and marked with '…', so its JSON takes at most `room` bytes."""
    if len(_dumps(path)) <= room:
        return path
    low, high = 0, len(path)  # the most trailing characters that fit
    while low < high:
        mid = (low + high + 1) // 2
        if len(_dumps("…" + path[len(path) - mid :])) <= room:
            low = mid
        else:
            high = mid - 1
    return "…" + path[len(path) - low :]


def _cap_chars(path: str) -> str:
    """`path`, cut from the front and marked with '…', to MAX_PATH_CHARS characters."""
    return path if len(path) <= MAX_PATH_CHARS else "…" + path[-(MAX_PATH_CHARS - 1) :]


def encode_data(topic: bytes, header: DataHeader, block: bytes | memoryview) -> list[Any]:
    fields: dict[str, object] = {
        "v": VERSION,
        "k": "data",
        "node": header.node,
        "stream": header.stream,
        "source": header.source,
        "path": wire_path(header.path),
        "start": header.start,
        "end": header.end,
        "lines": header.lines,
    }
    path_b64 = exact_path_b64(header.path)
    if path_b64 is not None:
        fields["path_b64"] = path_b64
    if header.prev:
        fields["prev"] = header.prev
        fields["prev_end"] = header.prev_end
    head = _dumps(fields)
    if len(head) > MAX_HEADER_BYTES and "path_b64" in fields:
        del fields["path_b64"]  # the readable form, exact or not, matters more
        head = _dumps(fields)
    if len(head) > MAX_HEADER_BYTES:
        # A very deep path: shorten it rather than send a header every collector drops.
        path = str(fields["path"])
        room = MAX_HEADER_BYTES - (len(head) - len(_dumps(path)))
        fields["path"] = _fit_path(path, room)
        head = _dumps(fields)
    return [topic, head, block]


def encode_heartbeat(hb: Heartbeat) -> list[bytes]:
    head = _dumps(
        {"v": VERSION, "k": "hb", "node": hb.node, "instance": hb.instance, "replay": hb.replay}
    )
    body = _dumps(
        [
            [s.stream, s.topic.decode("utf-8"), s.source, _cap_chars(wire_path(s.path)), s.end]
            for s in hb.streams
        ]
    )
    return [CONTROL_TOPIC, head, body]


def encode_replay_request(req: ReplayRequest) -> list[bytes]:
    head = _dumps(
        {
            "v": VERSION,
            "k": "replay",
            "node": req.node,
            "stream": req.stream,
            "start": req.start,
            "end": req.end,
        }
    )
    return [CONTROL_TOPIC, head, b""]


def encode_gone(topic: bytes, gone: Gone) -> list[bytes]:
    head = _dumps(
        {
            "v": VERSION,
            "k": "gone",
            "node": gone.node,
            "stream": gone.stream,
            "start": gone.start,
            "end": gone.end,
            "reason": gone.reason,
        }
    )
    return [topic, head, b""]


def encode_hello(hello: Hello) -> list[bytes]:
    head = _dumps({"v": VERSION, "k": "hello", "node": hello.node, "instance": hello.instance})
    return [CONTROL_TOPIC, head, b""]


# Over multicast each message is one frame: libzmq's PGM receiver queues the
# frames of every sender on a group together, so two senders' multipart
# messages interleave (a header of one with the block of another). The topic
# leads, so SUB prefix filtering still works; the lengths trail.
PACKED_TRAILER = struct.Struct(">HH")  # topic length, header length


def pack(frames: Sequence[Any]) -> bytes:
    """[topic, header, body] as one frame: topic, header, body, then their lengths."""
    topic, head, body = frames
    return b"".join((topic, head, body, PACKED_TRAILER.pack(len(topic), len(head))))


def unpack(frame: bytes | memoryview) -> list[bytes | memoryview]:
    """The three frames of a packed message, for decode(); ProtocolError if malformed."""
    view = memoryview(frame)
    if len(view) < PACKED_TRAILER.size:
        raise ProtocolError(f"one-frame message of {len(view)} bytes has no length trailer")
    topic_len, head_len = PACKED_TRAILER.unpack(view[-PACKED_TRAILER.size :])
    body_start = topic_len + head_len
    if body_start > len(view) - PACKED_TRAILER.size:
        raise ProtocolError("one-frame message shorter than its topic and header lengths")
    return [
        bytes(view[:topic_len]),
        bytes(view[topic_len:body_start]),
        view[body_start : len(view) - PACKED_TRAILER.size],
    ]


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """Check and decode one message; raise ProtocolError for anything off-spec."""
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames, got {len(frames)}")
    topic_frame, head_frame, body = frames
    if len(topic_frame) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"topic of {len(topic_frame)} bytes exceeds {MAX_TOPIC_BYTES}")
    if len(head_frame) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(head_frame)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(body) > MAX_BLOCK_BYTES:
        raise ProtocolError(f"body of {len(body)} bytes exceeds {MAX_BLOCK_BYTES}")
    topic = bytes(topic_frame)
    head = _load_header(bytes(head_frame))
    kind = head.get("k")
    if kind == "data":
        return _decode_data(topic, head, body)
    if kind == "hb":
        return _decode_heartbeat(topic, head, body)
    if kind == "replay":
        _expect_control(topic, body)
        return ReplayRequest(
            node=_name(head, "node"),
            stream=_stream(head),
            start=_offset(head, "start"),
            end=_end(head),
        )
    if kind == "gone":
        _expect_data_topic(topic)
        if len(body):
            raise ProtocolError("gone message with a body")
        return Gone(
            node=_name(head, "node"),
            stream=_stream(head),
            start=_offset(head, "start"),
            end=_end(head),
            reason=_text(head, "reason", MAX_REASON_CHARS),
        )
    if kind == "hello":
        _expect_control(topic, body)
        return Hello(node=_name(head, "node"), instance=_instance(head))
    raise ProtocolError(f"unknown message kind {kind!r:.40}")


def _load_json(raw: bytes, what: str, max_containers: int) -> Any:
    """Strict JSON: UTF-8 only, nesting bounded before parsing, integers within
    64 bits, finite numbers, no NaN or Infinity, no key twice in an object."""
    _check_nesting(raw, what, max_containers)
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_int=_integer,
            parse_float=_finite,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc!s:.100}") from None


_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _check_nesting(raw: bytes, what: str, max_containers: int) -> None:
    """At most `max_containers` arrays and objects, MAX_JSON_DEPTH deep: checked on
    the bytes, outside strings, before any parser recurses into them."""
    # Escaped backslashes, then escaped quotes, go first: every '"' left opens or closes a string.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    if len(brackets) > 2 * max_containers:
        raise ProtocolError(f"{what} holds more than {max_containers} arrays and objects")
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ProtocolError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        else:
            depth -= 1


def _integer(text: str) -> int:
    value = int(text)
    if not MIN_INTEGER <= value <= MAX_OFFSET:
        raise ValueError(f"integer {text:.30} is beyond 64 bits")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text:.30} is beyond a double")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys too) holds half of a surrogate pair."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice in an object")
    return obj


def _load_header(raw: bytes) -> dict[str, Any]:
    head = _load_json(raw, "header", MAX_HEADER_BYTES)
    if not isinstance(head, dict):
        raise ProtocolError("header is not a JSON object")
    if _has_lone_surrogate(head):
        raise ProtocolError("header holds a lone surrogate (half of a UTF-16 pair)")
    version = head.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r:.20}")
    return head


def _decode_data(topic: bytes, head: dict[str, Any], block: bytes | memoryview) -> Data:
    _expect_data_topic(topic)
    start = _offset(head, "start")
    end = _end(head)
    lines = head.get("lines")
    if type(lines) is not int or lines < 0:
        raise ProtocolError("lines: expected a non-negative integer")
    _check_block(block, start, end, lines)
    stream = _stream(head)
    prev, prev_end = "", 0
    if "prev" in head or "prev_end" in head:
        prev = _id(head, "prev")
        prev_end = _offset(head, "prev_end")
        if prev == stream:
            raise ProtocolError("prev: a stream cannot succeed itself")
    header = DataHeader(
        node=_name(head, "node"),
        stream=stream,
        source=_name(head, "source"),
        path=_path(head),
        start=start,
        end=end,
        lines=lines,
        path_bytes=_path_bytes(head),
        prev=prev,
        prev_end=prev_end,
    )
    return Data(topic=topic, header=header, block=block)


def _check_block(block: bytes | memoryview, start: int, end: int, lines: int) -> None:
    """A block carries exactly its range, or one piece of a long line plus the
    newline added to it, or nothing (an empty block, over at most
    MAX_EMPTY_SPAN_BYTES): it never claims bytes it does not account for."""
    size = len(block)
    span = end - start
    if not size:
        if lines:
            raise ProtocolError("empty block with lines")
        if span > MAX_EMPTY_SPAN_BYTES:
            raise ProtocolError(
                f"empty block covers {span} bytes, more than {MAX_EMPTY_SPAN_BYTES}"
            )
        return
    if block[-1] != 0x0A:
        raise ProtocolError("block does not end with a newline")
    if size > span + lines:
        raise ProtocolError(f"block of {size} bytes is larger than its range {start}-{end}")
    if size != span and not (size == span + 1 and lines == 1):
        raise ProtocolError(
            f"block of {size} bytes does not cover its range {start}-{end}: "
            "only an exact block or one piece of a long line may be sent"
        )
    counted = bytes(block).count(b"\n") if isinstance(block, memoryview) else block.count(b"\n")
    if counted != lines:
        raise ProtocolError(f"header says {lines} lines, block holds {counted}")


def _decode_heartbeat(topic: bytes, head: dict[str, Any], body: bytes | memoryview) -> Heartbeat:
    if topic != CONTROL_TOPIC:
        raise ProtocolError("heartbeat off the control topic")
    if len(body) > MAX_HEARTBEAT_BYTES:
        raise ProtocolError(f"heartbeat body of {len(body)} bytes exceeds {MAX_HEARTBEAT_BYTES}")
    replay = _replay_endpoint(head)
    rows = _load_json(bytes(body), "heartbeat body", MAX_HEARTBEAT_STREAMS + 1)
    if not isinstance(rows, list):
        raise ProtocolError("heartbeat body is not a JSON array")
    if len(rows) > MAX_HEARTBEAT_STREAMS:
        raise ProtocolError(f"heartbeat of {len(rows)} streams, more than {MAX_HEARTBEAT_STREAMS}")
    streams = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 5:
            raise ProtocolError("heartbeat stream entry is not a 5-element array")
        sid, topic_text, source, path, end = row
        fields = {"stream": sid, "source": source, "path": path, "end": end}
        if (
            not isinstance(topic_text, str)
            or _UNSAFE_TEXT.search(topic_text)
            or not is_valid_topic(topic_text.encode("utf-8"))
        ):
            raise ProtocolError("heartbeat stream entry has an invalid topic")
        streams.append(
            StreamInfo(
                stream=_stream(fields),
                topic=topic_text.encode("utf-8"),
                source=_name(fields, "source"),
                path=_path(fields),
                end=_offset(fields, "end"),
            )
        )
    return Heartbeat(
        node=_name(head, "node"), instance=_instance(head), replay=replay, streams=tuple(streams)
    )


def _expect_control(topic: bytes, body: bytes | memoryview) -> None:
    if topic != CONTROL_TOPIC:
        raise ProtocolError("control message off the control topic")
    if len(body):
        raise ProtocolError("control message with a body")


def _expect_data_topic(topic: bytes) -> None:
    if not is_valid_topic(topic):
        raise ProtocolError("invalid topic: empty, too long, not UTF-8 or with control characters")


def _name(head: dict[str, Any], key: str) -> str:
    value = head.get(key)
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ProtocolError(f"{key}: expected a name of letters, digits, '.', '_' or '-'")
    return value


def _instance(head: dict[str, Any]) -> str:
    return _id(head, "instance")


def _stream(head: dict[str, Any]) -> str:
    return _id(head, "stream")


def _id(head: dict[str, Any], key: str) -> str:
    value = head.get(key)
    if not isinstance(value, str) or not STREAM_RE.match(value):
        raise ProtocolError(f"{key}: expected 16 lowercase hex digits")
    return value


def _path(head: dict[str, Any]) -> str:
    value = head.get("path")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PATH_CHARS:
        raise ProtocolError(f"path: expected a string of 1 to {MAX_PATH_CHARS} characters")
    if _UNSAFE_TEXT.search(value):
        raise ProtocolError("path: control characters or lone surrogates")
    return value


def _path_bytes(head: dict[str, Any]) -> bytes | None:
    """`path_b64`, when present: the bytes `path` shows, exactly."""
    value = head.get("path_b64")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_HEADER_BYTES:
        raise ProtocolError("path_b64: expected a base64 string")
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("path_b64: not base64") from None
    if not raw or wire_path(raw.decode("utf-8", "surrogateescape")) != head["path"]:
        raise ProtocolError("path_b64: not the bytes path shows")
    return raw


def _text(head: dict[str, Any], key: str, max_chars: int) -> str:
    value = head.get(key)
    if not isinstance(value, str) or len(value) > max_chars:
        raise ProtocolError(f"{key}: expected a string of at most {max_chars} characters")
    if _UNSAFE_TEXT.search(value):
        raise ProtocolError(f"{key}: control characters or lone surrogates")
    return value


def _replay_endpoint(head: dict[str, Any]) -> str:
    value = _text(head, "replay", MAX_REPLAY_CHARS)
    if value and (not value.startswith(REPLAY_SCHEMES) or _CONTROL_CHARS.search(value)):
        raise ProtocolError('replay: expected "" or a tcp:// or ipc:// endpoint without spaces')
    return value


def _offset(head: dict[str, Any], key: str) -> int:
    value = head.get(key)
    if type(value) is not int or not 0 <= value <= MAX_OFFSET:
        raise ProtocolError(f"{key}: expected an offset between 0 and 2^63-1")
    return value


def _end(head: dict[str, Any]) -> int:
    end = _offset(head, "end")
    if end < _offset(head, "start"):
        raise ProtocolError("end is before start")
    return end
