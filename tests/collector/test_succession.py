"""The collector's rules beyond the sequencer's table, on a subscriber thread's
write path driven directly (no sockets): a successor waits for its
predecessor (prev, prev_end), an empty block over bytes is taken only from
a replay answer, an empty block [pos, pos) in one lowers a wrong known end,
and a "gone" counts only from the peer that was asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.helpers import collector_config, subscriber_thread
from zaggd import config as config_mod
from zaggd import wire
from zaggd.collector.subscriber import SubscriberThread

S1, S2, S3 = (f"{n:016x}" for n in (1, 2, 3))
INSTANCE = "00000000000000a1"
PEER = b"tcp://127.0.0.1:1"


@pytest.fixture
def sub(tmp_path: Path) -> Iterator[SubscriberThread]:
    cfg = config_mod.load_collector(
        str(
            collector_config(
                tmp_path,
                "c1",
                {"connect": ["tcp://127.0.0.1:9"]},
                {"path": str(tmp_path / "out" / "{node}.log")},
            )
        )
    )
    context = zmq.Context()
    thread, crashes = subscriber_thread(context, cfg)
    try:
        yield thread
    finally:
        thread.writer.close_all()
        context.term()
    assert crashes == []


def block(
    stream: str, start: int, body: bytes, prev: str = "", prev_end: int = 0, end: int = -1
) -> wire.Data:
    end = start + len(body) if end < 0 else end
    header = wire.DataHeader(
        "web",
        stream,
        "app",
        "/var/log/app.log",
        start,
        end,
        body.count(b"\n"),
        prev=prev,
        prev_end=prev_end,
    )
    return wire.Data(b"app", header, body)


def output(sub: SubscriberThread, tmp_path: Path) -> bytes:
    sub.writer.sync(True)
    path = tmp_path / "out" / "web.log"
    return path.read_bytes() if path.exists() else b""


def test_a_successor_waits_for_its_predecessors_end(sub: SubscriberThread, tmp_path: Path) -> None:
    old, new, newer = b"old 1\nold 2\n", b"new 1\n", b"newer 1\n"
    # The newest copy first, then the middle one, as replays may answer after an outage.
    sub._handle(block(S3, 0, newer, prev=S2, prev_end=len(new)), PEER)
    sub._handle(block(S2, 0, new, prev=S1, prev_end=len(old)), PEER)
    assert output(sub, tmp_path) == b""
    s1 = sub.streams[("web", S1)]  # never heard of: taken in, wanted from 0
    assert (s1.expected, s1.known_end) == (0, len(old))
    assert {("web", S1), ("web", S2), ("web", S3)} <= sub.gapped
    assert not sub._ask_replay(sub.streams[("web", S3)], 0.0)  # it waits: not asked
    sub._handle(block(S1, 0, old), PEER)
    sub._handle(block(S3, 0, newer, prev=S2, prev_end=len(new)), PEER)  # still waits for S2
    sub._handle(block(S2, 0, new, prev=S1, prev_end=len(old)), PEER)
    sub._handle(block(S3, 0, newer, prev=S2, prev_end=len(new)), PEER)
    assert output(sub, tmp_path) == old + new + newer


def test_lines_the_predecessor_got_after_the_successor_began_come_after(
    sub: SubscriberThread, tmp_path: Path
) -> None:
    sub._handle(block(S1, 0, b"a\n"), None)
    sub._handle(block(S2, 0, b"b\n", prev=S1, prev_end=2), None)
    sub._handle(block(S1, 2, b"late\n"), None)
    assert output(sub, tmp_path) == b"a\nb\nlate\n"


def test_an_empty_block_over_bytes_is_taken_only_from_a_replay_answer(
    sub: SubscriberThread, tmp_path: Path
) -> None:
    sub._handle(block(S1, 0, b"a\n"), None)
    st = sub.streams[("web", S1)]
    sub._handle(block(S1, 2, b"", end=1000), None)  # the data channel: a notice
    assert (st.expected, st.known_end) == (2, 1000)
    sub._handle(block(S1, 2, b"", end=1000), PEER)  # the producer's own answer
    assert st.expected == 1000 and not st.has_gap()
    sub._handle(block(S1, 1000, b"b\n"), None)
    assert output(sub, tmp_path) == b"a\nb\n"


def test_an_empty_answer_where_expected_lowers_a_wrong_known_end(sub: SubscriberThread) -> None:
    sub._handle(block(S1, 0, b"a\n"), None)
    st = sub.streams[("web", S1)]
    st.known_end = 2**62  # as a forged heartbeat would make it
    sub.gapped.add(("web", S1))
    sub._handle(block(S1, 1, b"", end=1), PEER)  # not where it expects: ignored
    assert st.known_end == 2**62
    sub._handle(block(S1, 2, b"", end=2), PEER)
    assert st.known_end == 2 and not st.has_gap() and ("web", S1) not in sub.gapped


def test_gone_counts_only_from_the_peer_asked(sub: SubscriberThread) -> None:
    sub._handle(block(S1, 0, b"a\n"), None)
    st = sub.streams[("web", S1)]
    st.known_end, st.replay_peer = 100, PEER
    sub._handle(wire.Gone("web", S1, 2, 100, "stream no longer exists"), b"tcp://other:1")
    assert st.expected == 2 and sub.counters.get("bytes_lost") == 0
    sub._handle(wire.Gone("web", S1, 2, 100, "stream no longer exists"), PEER)
    assert st.expected == 100 and sub.counters.get("bytes_lost") == 98


def test_replays_go_to_the_instance_that_announced_the_stream(sub: SubscriberThread) -> None:
    info = wire.StreamInfo(S1, b"app", "app", "/var/log/app.log", 100)
    other = wire.StreamInfo(S2, b"app", "app", "/var/log/app.log", 50)
    sub._handle(wire.Heartbeat("web", INSTANCE, "tcp://127.0.0.1:9001", (info,)), None)
    sub._handle(wire.Heartbeat("web", "00000000000000b2", "tcp://127.0.0.1:9002", (other,)), None)
    sub._handle(wire.Heartbeat("web", INSTANCE, "tcp://127.0.0.1:9001", (info,)), None)
    assert sub.nodes["web"].clash
    assert sub._ask_replay(sub.streams[("web", S1)], 0.0)
    assert sub._ask_replay(sub.streams[("web", S2)], 0.0)
    assert sub.streams[("web", S1)].replay_peer == b"tcp://127.0.0.1:9001"
    assert sub.streams[("web", S2)].replay_peer == b"tcp://127.0.0.1:9002"
    sub._close_sockets()
