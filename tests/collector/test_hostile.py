"""Hostile input on the wire: a real collector (and a producer's replay server)
fed garbage and malicious frames over real sockets stays up, counts what it
drops, writes nothing outside its output folder, and still delivers a real
producer's lines exactly."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    Daemon,
    append_lines,
    collector_config,
    free_port,
    numbered_lines,
    output_names,
    producer_config,
    stop_all,
    wait_until,
)
from zaggd import wire
from zaggd.errors import ProtocolError

SID = "0123456789abcdef"
INSTANCE = "fedcba9876543210"
MARKER = "zaggd-escape-marker"
SOCKET_TIMEOUT_MS = 5000
# About 250 messages per test; each example costs two status queries.
WIRE_EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def header(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


def data(topic: bytes = b"evil.t", block: bytes = b"a\nb\n", **changes: Any) -> list[bytes]:
    fields: dict[str, Any] = {
        "v": 1,
        "k": "data",
        "node": "evil-01",
        "stream": SID,
        "source": "src",
        "path": "/var/log/x.log",
        "start": 0,
        "end": len(block),
        "lines": block.count(b"\n"),
    }
    fields.update(changes)
    return [topic, header(**fields), block]


def heartbeat(node: str = "probe-01", rows: Any = (), **changes: Any) -> list[bytes]:
    fields = {"v": 1, "k": "hb", "node": node, "instance": INSTANCE, "replay": "", **changes}
    return [wire.CONTROL_TOPIC, header(**fields), json.dumps(list(rows)).encode()]


def replay_request(node: str, stream: str, start: int, end: int) -> list[bytes]:
    return wire.encode_replay_request(wire.ReplayRequest(node, stream, start, end))


def is_invalid(frames: list[bytes]) -> bool:
    try:
        wire.decode(frames)
    except ProtocolError:
        return True
    return False


# Every one of these is refused by wire.decode, or (the replay request) by the collector.
HOSTILE: list[tuple[str, list[bytes]]] = [
    ("random bytes", [os.urandom(64)]),
    ("random frames", [os.urandom(7), os.urandom(300), os.urandom(1000)]),
    ("two frames", data()[:2]),
    ("four frames", [*data(), b"x"]),
    ("wrong version", data(v=2)),
    ("version as text", data(v="1")),
    ("oversized header", [b"evil.t", b"{" + b" " * wire.MAX_HEADER_BYTES + b"}", b"a\n"]),
    ("header not JSON", [b"evil.t", b"\xff\xfe{", b"a\n"]),
    ("header twice the same key", [b"evil.t", data()[1][:-1] + b',"start":0}', b"a\nb\n"]),
    ("negative start", data(start=-1)),
    ("end past 2^63-1", data(end=2**63)),
    ("offset as bool", data(start=False)),
    ("end before start", data(start=10, end=4)),
    ("node ../x", data(node="../x")),
    ("node a/b", data(node="a/b")),
    ("node /", data(node="/")),
    ("node ..", data(node="..")),
    ("source ../../etc", data(source="../../etc")),
    ("source with NUL", data(source="a\x00b")),
    ("topic with a control character", data(topic=b"../\x01/x")),
    ("topic too long", data(topic=b"t" * 256)),
    ("topic not UTF-8", data(topic=b"\xc0\xaf../")),
    ("stream not hex", data(stream="../../../../etc0")),
    ("path with a newline", data(path="/x\n/y")),
    ("block without a newline", data(block=b"a\nb", end=3, lines=1)),
    ("too many lines", data(lines=3)),
    ("too few lines", data(lines=1)),
    ("block larger than its range", data(end=1)),
    ("data on the control topic", data(topic=wire.CONTROL_TOPIC)),
    ("heartbeat with a surrogate topic", heartbeat(rows=[[SID, "\ud800", "src", "/p", 5]])),
    ("heartbeat with a ../ source", heartbeat(rows=[[SID, "t", "../x", "/p", 5]])),
    ("heartbeat row of 4", heartbeat(rows=[[SID, "t", "src", "/p"]])),
    ("heartbeat to inproc", heartbeat(replay="inproc://zaggd")),
    ("heartbeat body not JSON", [*heartbeat()[:2], b"[[[["]),
    ("heartbeat off the control topic", [b"evil.t", *heartbeat()[1:]]),
    ("replay request to a collector", replay_request("evil-01", SID, 0, 10)),
]


class Rig:
    """A collector bound on 127.0.0.1, and a plain PUB socket connected to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.replay_port = free_port()
        config = collector_config(
            folder,
            "c",
            {
                "bind": [f"tcp://127.0.0.1:{self.port}"],
                "replay": f"tcp://127.0.0.1:{self.replay_port}",
            },
        )
        self.out = folder / "out-c"
        self.collector = Daemon("collector", config, folder)
        self.context = zmq.Context()
        self.pub: zmq.Socket[bytes] | None = None

    def start(self) -> None:
        self.collector.start()
        self.connect()

    def connect(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=0)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.connect(f"tcp://127.0.0.1:{self.port}")
        # A PUB drops everything until the collector's subscription reaches it: probe.
        before = self.counter("heartbeats_in")

        def probe() -> bool:
            self.send([heartbeat()])
            return self.counter("heartbeats_in") > before

        wait_until(probe, timeout_s=10, interval_s=0.02)

    def close(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=0)
        self.context.term()
        stop_all(self.collector)

    def counters(self) -> dict[str, int]:
        counters = self.collector.status()["counters"]
        assert isinstance(counters, dict)
        return counters

    def counter(self, name: str) -> int:
        return int(self.counters().get(name, 0))

    def send(self, messages: list[list[bytes]]) -> None:
        assert self.pub is not None
        for frames in messages:
            self.pub.send_multipart(frames)

    def barrier(self, before: dict[str, int] | None = None) -> dict[str, int]:
        """Once the collector has handled everything sent before: its counters.

        `before`: counters read before anything was sent, saving a status query
        (each costs up to a turn of the subscriber's loop).
        """
        seen = (before or self.counters())["heartbeats_in"]
        self.send([heartbeat()])

        def passed() -> dict[str, int] | None:
            self.assert_running()
            counters = self.counters()
            return counters if counters["heartbeats_in"] > seen else None

        result: dict[str, int] = wait_until(passed, timeout_s=10, interval_s=0.01)
        return result

    def expect_dropped(self, messages: list[list[bytes]]) -> None:
        before = self.counters()
        self.send(messages)
        after = self.barrier(before)
        assert after["messages_dropped"] == before["messages_dropped"] + len(messages)

    def assert_running(self) -> None:
        assert self.collector.proc is not None and self.collector.proc.poll() is None, (
            self.collector.output()[-3000:]
        )

    def assert_alive(self) -> None:
        self.assert_running()
        assert self.collector.status()["daemon"] == "collector"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("hostile"))
    try:
        rig.start()
        yield rig
        rig.assert_alive()
        assert "Traceback" not in rig.collector.output()
    finally:
        rig.close()


# -- the collector -------------------------------------------------------------


@pytest.mark.parametrize("what,frames", HOSTILE, ids=[name for name, _ in HOSTILE])
def test_hostile_message_is_dropped_and_counted(rig: Rig, what: str, frames: list[bytes]) -> None:
    rig.expect_dropped([frames])


hostile_frames = st.lists(st.binary(max_size=200), min_size=1, max_size=4)
hostile_headers = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 2, "1", True])},
    optional={
        "k": st.sampled_from(["data", "hb", "replay", "gone", "hello", "x"]),
        "node": st.sampled_from(["web-01", "../x", "a/b", "", ".", "é", "a\x00"]),
        "stream": st.sampled_from([SID, "../../../../etc0", "0123456789ABCDEF", 5]),
        "source": st.sampled_from(["src", "../src", "/", ".."]),
        "path": st.sampled_from(["/p", "", "\ud800", "/a\nb", "../../../etc/passwd\x00"]),
        "start": st.integers(-(2**64), 2**64) | st.booleans() | st.floats(allow_nan=False),
        "end": st.integers(-(2**64), 2**64) | st.booleans(),
        "lines": st.integers(-2, 5),
        "instance": st.sampled_from([INSTANCE, "x"]),
        "replay": st.sampled_from(["", "inproc://x", "tcp://h:1\n"]),
    },
)
structured = st.builds(
    lambda topic, head, body: [topic, json.dumps(head).encode(), body],
    st.sampled_from([b"evil.t", wire.CONTROL_TOPIC, b"../..", b"/etc/" + MARKER.encode(), b"\x01"]),
    hostile_headers,
    st.sampled_from([b"", b"a\n", b"a", b"\n\n", b"[]", b'[["0123456789abcdef","t","s","/p",1]]']),
)


@WIRE_EXAMPLES
@given(st.lists(hostile_frames | structured, min_size=2, max_size=12))
def test_random_frames_are_dropped_and_counted(rig: Rig, messages: list[list[bytes]]) -> None:
    rig.expect_dropped([m for m in messages if is_invalid(m)])


def test_frame_over_maxmsgsize_only_disconnects_its_sender(rig: Rig) -> None:
    before = rig.counter("messages_dropped")
    rig.send([[b"evil.t", data()[1], bytes(wire.MAX_FRAME_BYTES + wire.MAX_HEADER_BYTES + 1)]])
    time.sleep(0.5)  # nothing to wait on: libzmq closes the connection without a trace
    rig.assert_alive()
    rig.connect()  # a fresh PUB: the old one's queue may be gone with its connection
    assert rig.counter("messages_dropped") == before
    rig.expect_dropped([data(v=2)])


HOSTILE_TOPICS = [
    b"/../../" + MARKER.encode(),
    b"../../../../../../tmp/" + MARKER.encode(),
    b"..",
    b".",
    b"a/../../b/" + MARKER.encode(),
    "\u202e/../é".encode() + MARKER.encode(),
]


def test_valid_message_with_a_hostile_topic_is_written_inside_the_output_folder(rig: Rig) -> None:
    lines_before = rig.counter("lines_written")
    messages = []
    for index, topic in enumerate(HOSTILE_TOPICS):
        line = f"hostile {index} {MARKER}\n".encode()
        sid = f"{index:016x}"
        messages.append(
            data(topic, line, stream=sid, node="a..b", source="x.y", path="/../../etc/passwd")
        )
        assert isinstance(wire.decode(messages[-1]), wire.Data)
    rig.send(messages)
    wait_until(lambda: rig.counter("lines_written") >= lines_before + len(messages), timeout_s=10)
    rig.assert_alive()
    written = [
        line
        for path in rig.out.rglob("*")
        if path.is_file()
        for line in path.read_bytes().splitlines()
    ]
    for index in range(len(HOSTILE_TOPICS)):
        assert f"hostile {index} {MARKER}".encode() in written
    # Nothing named after the marker exists anywhere but under the output folder.
    for root in {rig.folder, rig.folder.parent}:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                if MARKER in name:
                    assert Path(dirpath, name).resolve().is_relative_to(rig.out.resolve()), (
                        f"{dirpath}/{name}"
                    )
    assert not Path("/tmp", MARKER).exists()


def test_no_file_is_created_outside_the_collectors_folders(rig: Rig) -> None:
    """Every file under the test folder is output, collector state, or the test's own."""
    own = {rig.collector.config.name, rig.collector.log_path.name}
    for dirpath, _, filenames in os.walk(rig.folder):
        for name in filenames:
            relative = Path(dirpath, name).relative_to(rig.folder)
            if relative.parts[0] in ("out-c", "state-c"):
                continue
            assert len(relative.parts) == 1, relative
            assert name in own or (name.startswith("notify-") and name.endswith(".sock")), relative
    # Output files sit exactly at {topic}/{node}-{source}.log under the output folder.
    for path in rig.out.rglob("*"):
        assert len(path.relative_to(rig.out).parts) <= 2, path


def test_real_producer_still_delivers_every_line_exactly_once(rig: Rig) -> None:
    logs = rig.folder / "logs-good"
    logs.mkdir()
    config = producer_config(
        rig.folder,
        "good-01",
        [{"name": "app", "topic": "good.app", "paths": [str(logs / "*.log")]}],
        {
            "connect": [f"tcp://127.0.0.1:{rig.port}"],
            "replay": [f"tcp://127.0.0.1:{rig.replay_port}"],
            "heartbeat_interval": "200ms",
        },
    )
    producer = Daemon("producer", config, rig.folder)
    expected: list[bytes] = []
    try:
        producer.start()
        for batch in range(5):
            lines = numbered_lines("good", batch * 400, 400)
            append_lines(logs / "app.log", lines)
            expected += lines
            rig.send([m for _, m in HOSTILE])  # garbage interleaved with the good traffic
        out = rig.out / "good.app"

        def delivered() -> list[bytes]:
            path = out / "good-01-app.log"
            return path.read_bytes().splitlines(keepends=True) if path.exists() else []

        wait_until(lambda: len(delivered()) >= len(expected), timeout_s=30)
        rig.barrier()
        time.sleep(0.3)  # a late duplicate would show up here
        assert delivered() == expected
        assert output_names(out) == ["good-01-app.log"]
        rig.assert_alive()
    finally:
        stop_all(producer)


# -- a producer's replay server ------------------------------------------------------


class ReplayRig:
    """A producer binding its PUB and replay ROUTER, and a DEALER to torment it."""

    def __init__(self, folder: Path) -> None:
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.file = self.logs / "app.log"
        append_lines(self.file, numbered_lines("replay", 0, 50))
        self.replay_port = free_port()
        config = producer_config(
            folder,
            "node-01",
            [{"name": "app", "topic": "app.t", "paths": [str(self.logs / "*.log")]}],
            {
                "bind": [f"tcp://127.0.0.1:{free_port()}"],
                "replay": f"tcp://127.0.0.1:{self.replay_port}",
            },
        )
        self.producer = Daemon("producer", config, folder)
        self.context = zmq.Context()
        self.dealer: zmq.Socket[bytes] | None = None
        self.stream = ""

    def start(self) -> None:
        self.producer.start()
        self.stream = wait_until(self._stream_id, timeout_s=10)
        self.connect()

    def _stream_id(self) -> str:
        detail = self.producer.status().get("streams_detail") or []
        assert isinstance(detail, list)
        return str(detail[0]["stream"]) if detail else ""

    def connect(self) -> None:
        if self.dealer is not None:
            self.dealer.close(linger=0)
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RCVTIMEO, SOCKET_TIMEOUT_MS)
        self.dealer.connect(f"tcp://127.0.0.1:{self.replay_port}")

    def close(self) -> None:
        if self.dealer is not None:
            self.dealer.close(linger=0)
        self.context.term()
        stop_all(self.producer)

    def counter(self, name: str) -> int:
        counters = self.producer.status()["counters"]
        assert isinstance(counters, dict)
        return int(counters.get(name, 0))

    def send(self, messages: list[list[bytes]]) -> None:
        assert self.dealer is not None
        for frames in messages:
            self.dealer.send_multipart(frames)

    def receive(self) -> wire.Message:
        assert self.dealer is not None
        msg = wire.decode(self.dealer.recv_multipart())  # a bad answer raises here
        node = msg.header.node if isinstance(msg, wire.Data) else getattr(msg, "node", None)
        assert node == "node-01", msg
        return msg

    def barrier(self) -> None:
        """A request for an unknown stream; its 'gone' comes after every earlier answer."""
        self.send([replay_request("node-01", "ffffffffffffffff", 0, 1)])
        msg = self.receive()
        assert isinstance(msg, wire.Gone) and msg.stream == "ffffffffffffffff", msg

    def expect_refused(self, messages: list[list[bytes]]) -> None:
        before = self.counter("bad_requests")
        self.send(messages)
        self.barrier()  # no answer to the refused ones comes before it
        assert self.counter("bad_requests") == before + len(messages)  # also: still answering

    def assert_alive(self) -> None:
        assert self.producer.proc is not None and self.producer.proc.poll() is None, (
            self.producer.output()[-3000:]
        )
        assert self.producer.status()["daemon"] == "producer"


@pytest.fixture(scope="module")
def replay_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayRig]:
    rig = ReplayRig(tmp_path_factory.mktemp("replay-hostile"))
    try:
        rig.start()
        yield rig
        rig.assert_alive()
        assert "Traceback" not in rig.producer.output()
    finally:
        rig.close()


def test_replay_requests_that_are_not_requests_are_counted(replay_rig: ReplayRig) -> None:
    hello = wire.encode_hello(wire.Hello("node-01", INSTANCE))
    replay_rig.expect_refused(
        [
            [os.urandom(50)],
            [b""],
            data(),
            hello,
            heartbeat(node="node-01"),
            [wire.CONTROL_TOPIC, replay_request("node-01", SID, 0, 1)[1], b"body"],
            [b"app.t", *replay_request("node-01", SID, 0, 1)[1:]],
            [
                wire.CONTROL_TOPIC,
                header(v=1, k="replay", node="node-01", stream=SID, start=5, end=1),
                b"",
            ],
            [
                wire.CONTROL_TOPIC,
                header(v=1, k="replay", node="../node-01", stream=SID, start=0, end=1),
                b"",
            ],
            [
                wire.CONTROL_TOPIC,
                header(v=1, k="replay", node="node-01", stream="../..", start=0, end=1),
                b"",
            ],
            [
                wire.CONTROL_TOPIC,
                header(v=1, k="replay", node="node-01", stream=SID, start=-5, end=1),
                b"",
            ],
            [
                wire.CONTROL_TOPIC,
                header(v=2, k="replay", node="node-01", stream=SID, start=0, end=1),
                b"",
            ],
        ]
    )


def test_replay_request_for_another_node_gets_no_answer(replay_rig: ReplayRig) -> None:
    replay_rig.expect_refused([replay_request("node-02", replay_rig.stream, 0, 100)])


def test_replay_request_for_an_unknown_stream_gets_gone(replay_rig: ReplayRig) -> None:
    replay_rig.send([replay_request("node-01", SID, 0, 2**63 - 1)])
    msg = replay_rig.receive()
    assert isinstance(msg, wire.Gone)
    assert (msg.stream, msg.start, msg.end) == (SID, 0, 2**63 - 1)


def test_replay_range_past_the_end_of_the_file(replay_rig: ReplayRig) -> None:
    size = replay_rig.file.stat().st_size
    replay_rig.send([replay_request("node-01", replay_rig.stream, size + 100, 2**63 - 1)])
    msg = replay_rig.receive()
    assert isinstance(msg, wire.Gone) and msg.stream == replay_rig.stream
    # A range that runs past the end is served up to the end, and no further: an
    # empty block there says where the stream stops.
    replay_rig.send([replay_request("node-01", replay_rig.stream, 0, 2**63 - 1)])
    got = b""
    for _ in range(size + 1):
        msg = replay_rig.receive()
        assert isinstance(msg, wire.Data) and msg.header.stream == replay_rig.stream
        assert msg.header.start == len(got)
        got += bytes(msg.block)
        if len(got) >= size:
            break
    assert got == replay_rig.file.read_bytes()
    msg = replay_rig.receive()
    assert isinstance(msg, wire.Data) and (msg.header.start, msg.header.end) == (size, size)
    replay_rig.barrier()  # and nothing more came before it
    replay_rig.send([replay_request("node-01", replay_rig.stream, size, size)])
    msg = replay_rig.receive()  # an empty range at the end: the same answer
    assert isinstance(msg, wire.Data) and (msg.header.start, msg.header.end) == (size, size)
    replay_rig.barrier()


@WIRE_EXAMPLES
@given(st.lists(hostile_frames | structured, min_size=2, max_size=12))
def test_random_frames_to_the_replay_server_are_counted(
    replay_rig: ReplayRig, messages: list[list[bytes]]
) -> None:
    refused = [
        m for m in messages if is_invalid(m) or not isinstance(wire.decode(m), wire.ReplayRequest)
    ]
    replay_rig.expect_refused(refused)


def test_frame_over_maxmsgsize_only_disconnects_the_replay_client(replay_rig: ReplayRig) -> None:
    replay_rig.send([[wire.CONTROL_TOPIC, b" " * (4 * wire.MAX_HEADER_BYTES), b""]])
    time.sleep(0.3)
    replay_rig.assert_alive()
    replay_rig.connect()
    replay_rig.barrier()
