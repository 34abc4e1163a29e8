"""Protocol v1: the frames zaggd daemons exchange, and their limits. No sockets.

Every message is three ZeroMQ frames: [topic, header, body]. The topic comes
first so that SUB prefix filtering selects sources; the header is a small JSON
object; the body is the file's bytes (data) or a JSON array (heartbeat).
docs/protocol.md is the normative description; this module is its code.

`decode()` treats its input as hostile: sizes are checked before anything is
parsed, every field's type and range is checked after, and any violation is
a ProtocolError that the caller counts and drops.
"""

from __future__ import annotations

import base64
import binascii
import json
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
# Largest frame any message may carry: SUB sockets refuse bigger ones (ZMQ_MAXMSGSIZE).
MAX_FRAME_BYTES = MAX_BLOCK_BYTES

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
STREAM_RE = re.compile(r"[0-9a-f]{16}\Z")
REPLAY_SCHEMES = ("tcp://", "ipc://")
_CONTROL_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")
# Not allowed in text fields: C0 controls, DEL, C1 controls, and lone surrogates
# (which JSON can spell as \ud800 escapes, and which have no UTF-8 form).
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class DataHeader:
    """A block: file bytes [start, end) of one stream, `lines` complete lines."""

    node: str
    stream: str
    source: str
    path: str
    start: int
    end: int
    lines: int
    # Received: the path's exact bytes when `path` could not show them (`path_b64`).
    path_bytes: bytes | None = None


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


def _load_json(raw: bytes, what: str) -> Any:
    """Strict JSON: UTF-8 only, no NaN or Infinity, no key twice in an object."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc!s:.100}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice in an object")
    return obj


def _load_header(raw: bytes) -> dict[str, Any]:
    head = _load_json(raw, "header")
    if not isinstance(head, dict):
        raise ProtocolError("header is not a JSON object")
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
    size = len(block)
    if size:
        if block[-1] != 0x0A:
            raise ProtocolError("block does not end with a newline")
        if size > end - start + lines:
            raise ProtocolError(f"block of {size} bytes is larger than its range {start}-{end}")
        counted = bytes(block).count(b"\n") if isinstance(block, memoryview) else block.count(b"\n")
        if counted != lines:
            raise ProtocolError(f"header says {lines} lines, block holds {counted}")
    elif lines:
        raise ProtocolError("empty block with lines")
    header = DataHeader(
        node=_name(head, "node"),
        stream=_stream(head),
        source=_name(head, "source"),
        path=_path(head),
        start=start,
        end=end,
        lines=lines,
        path_bytes=_path_bytes(head),
    )
    return Data(topic=topic, header=header, block=block)


def _decode_heartbeat(topic: bytes, head: dict[str, Any], body: bytes | memoryview) -> Heartbeat:
    if topic != CONTROL_TOPIC:
        raise ProtocolError("heartbeat off the control topic")
    if len(body) > MAX_HEARTBEAT_BYTES:
        raise ProtocolError(f"heartbeat body of {len(body)} bytes exceeds {MAX_HEARTBEAT_BYTES}")
    replay = _replay_endpoint(head)
    rows = _load_json(bytes(body), "heartbeat body")
    if not isinstance(rows, list):
        raise ProtocolError("heartbeat body is not a JSON array")
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
    value = head.get("instance")
    if not isinstance(value, str) or not STREAM_RE.match(value):
        raise ProtocolError("instance: expected 16 lowercase hex digits")
    return value


def _stream(head: dict[str, Any]) -> str:
    value = head.get("stream")
    if not isinstance(value, str) or not STREAM_RE.match(value):
        raise ProtocolError("stream: expected 16 lowercase hex digits")
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
