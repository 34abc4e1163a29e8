"""Claims a block or heartbeat makes beyond the bytes behind it, and what the
replay channel takes: a real collector (binding) and a real producer
(connecting), with forged messages from raw ZeroMQ sockets in between. The
real lines must still arrive exactly once after each forgery.

- A forged block claiming [expected, 2^63-1) with 9 bytes is refused (counted).
- A forged empty block over a range is not taken from the data channel: the
  producer's own replay answer decides.
- A forged heartbeat end makes the collector ask; the producer's answer ("no
  line past here") lowers the known end again.
- The replay ROUTER takes only three-frame messages, and replay answers only
  from a peer that said hello as their node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.helpers import (
    Daemon,
    append_lines,
    collector_config,
    free_port,
    numbered_lines,
    producer_config,
    stop_all,
    wait_until,
)
from zaggd import wire

NODE = "web-01"


class Rig:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.file = self.logs / "app.log"
        self.data_port, self.replay_port = free_port(), free_port()
        self.collector = Daemon(
            "collector",
            collector_config(
                folder,
                "c",
                {
                    "bind": [f"tcp://127.0.0.1:{self.data_port}"],
                    "replay": f"tcp://127.0.0.1:{self.replay_port}",
                },
            ),
            folder,
        )
        self.producer = Daemon(
            "producer",
            producer_config(
                folder,
                NODE,
                [{"name": "app", "topic": "app", "paths": [str(self.logs / "*.log")]}],
                {
                    "connect": [f"tcp://127.0.0.1:{self.data_port}"],
                    "replay": [f"tcp://127.0.0.1:{self.replay_port}"],
                    "heartbeat_interval": "200ms",
                },
            ),
            folder,
        )
        self.output = folder / "out-c" / "app" / f"{NODE}-app.log"
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.written = 0
        self.stream = ""
        self.instance = ""

    def start(self) -> None:
        self.collector.start()
        self.producer.start()
        self.write(20)
        self.wait_delivered()
        status = self.producer.status()
        self.instance = str(status["instance"])
        detail = status["streams_detail"]
        assert isinstance(detail, list) and len(detail) == 1
        self.stream = str(detail[0]["stream"])
        self.pub.connect(f"tcp://127.0.0.1:{self.data_port}")
        # A PUB drops everything until the collector's subscription reaches it: probe.
        probe = wire.encode_heartbeat(wire.Heartbeat("probe-01", "0" * 16, "", ()))
        before = self.counter("heartbeats_in")

        def heard() -> bool:
            self.pub.send_multipart(probe)
            return self.counter("heartbeats_in") > before

        wait_until(heard, timeout_s=10, interval_s=0.05)

    def write(self, count: int) -> None:
        append_lines(self.file, numbered_lines("line", self.written, count))
        self.written += count

    def lines(self) -> list[bytes]:
        try:
            return self.output.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def wait_delivered(self) -> None:
        wait_until(lambda: len(self.lines()) >= self.written, timeout_s=20)

    def assert_exact(self) -> None:
        assert self.lines() == numbered_lines("line", 0, self.written)

    def size(self) -> int:
        return self.file.stat().st_size

    def counters(self) -> dict[str, int]:
        counters = self.collector.status()["counters"]
        assert isinstance(counters, dict)
        return counters

    def counter(self, name: str) -> int:
        return int(self.counters().get(name, 0))

    def forge(self, frames: list[bytes]) -> None:
        """Send on the data channel, then wait until the collector handled it."""
        seen = self.counter("heartbeats_in")
        self.pub.send_multipart(frames)
        self.pub.send_multipart(wire.encode_heartbeat(wire.Heartbeat("probe-01", "0" * 16, "", ())))
        wait_until(lambda: self.counter("heartbeats_in") > seen + 1, timeout_s=10)

    def data(self, start: int, end: int, block: bytes, **extra: Any) -> list[bytes]:
        header = {
            "v": 1,
            "k": "data",
            "node": NODE,
            "stream": self.stream,
            "source": "app",
            "path": str(self.file),
            "start": start,
            "end": end,
            "lines": block.count(b"\n"),
            **extra,
        }
        return [b"app", json.dumps(header).encode(), block]

    def close(self) -> None:
        self.pub.close(linger=0)
        self.context.term()
        stop_all(self.producer, self.collector)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        rig.start()
        yield rig
        assert "Traceback" not in rig.collector.output()
    finally:
        rig.close()


def test_forged_block_claiming_more_than_it_carries_ends_nothing(rig: Rig) -> None:
    before = rig.counter("messages_dropped")
    rig.forge(rig.data(rig.size(), wire.MAX_OFFSET, b"forged!!\n"))
    assert rig.counter("messages_dropped") == before + 1
    rig.write(30)
    rig.wait_delivered()
    rig.assert_exact()


@pytest.mark.parametrize("span", [9, 10 * 1048576, wire.MAX_OFFSET])
def test_forged_empty_block_skips_nothing(rig: Rig, span: int) -> None:
    start = rig.size()
    rig.forge(rig.data(start, min(wire.MAX_OFFSET, start + span), b""))
    rig.write(30)
    rig.wait_delivered()
    rig.assert_exact()
    wait_until(lambda: rig.collector.status()["gaps_open"] == 0, timeout_s=15)
    rig.write(5)
    rig.wait_delivered()
    rig.assert_exact()


def test_forged_heartbeat_end_is_lowered_by_the_producers_answer(rig: Rig) -> None:
    info = wire.StreamInfo(rig.stream, b"app", "app", str(rig.file), 2**62)
    asked = rig.counter("replays_asked")
    rig.forge(wire.encode_heartbeat(wire.Heartbeat(NODE, rig.instance, "", (info,))))
    wait_until(lambda: rig.counter("replays_asked") > asked, timeout_s=10)
    wait_until(lambda: rig.collector.status()["gaps_open"] == 0, timeout_s=15)
    assert "known end lowered" in rig.collector.output()
    rig.write(10)
    rig.wait_delivered()
    rig.assert_exact()


def replay_dealer(rig: Rig) -> zmq.Socket[bytes]:
    dealer = rig.context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"probe-01/0000000000000000")
    dealer.connect(f"tcp://127.0.0.1:{rig.replay_port}")
    return dealer


def probe_block(stream: str, text: bytes) -> list[bytes]:
    header = wire.DataHeader("probe-01", stream, "app", "/p", 0, len(text), text.count(b"\n"))
    return wire.encode_data(b"app", header, text)


def probe_output(rig: Rig) -> bytes:
    """What the collector wrote for node probe-01 (the lines before the last one too)."""
    path = rig.folder / "out-c" / "app" / "probe-01-app.log"
    return path.read_bytes() if path.exists() else b""


def test_replay_answer_needs_a_hello_from_its_node(rig: Rig) -> None:
    dealer = replay_dealer(rig)
    try:
        before = rig.counter("messages_dropped")
        dealer.send_multipart(probe_block("00000000000000a1", b"no hello\n"))
        wait_until(lambda: rig.counter("messages_dropped") > before, timeout_s=10)
        dealer.send_multipart(wire.encode_hello(wire.Hello("probe-01", "0" * 16)))
        dealer.send_multipart(probe_block("00000000000000a2", b"after hello\n"))
        wait_until(lambda: probe_output(rig) == b"after hello\n", timeout_s=10)
    finally:
        dealer.close(linger=0)


def test_packed_message_is_refused_on_the_replay_channel(rig: Rig) -> None:
    dealer = replay_dealer(rig)
    try:
        dealer.send_multipart(wire.encode_hello(wire.Hello("probe-01", "0" * 16)))
        before = rig.counter("messages_dropped")
        dealer.send_multipart([wire.pack(probe_block("00000000000000b1", b"packed\n"))])
        wait_until(lambda: rig.counter("messages_dropped") > before, timeout_s=10)
        dealer.send_multipart(probe_block("00000000000000b2", b"three frames\n"))
        wait_until(lambda: probe_output(rig) == b"three frames\n", timeout_s=10)
    finally:
        dealer.close(linger=0)
