"""A collector forgets the streams their producers retired, and only those.

A real subscriber thread listens to a real PUB socket on which the test
speaks protocol v1 as producers would. Its forget delay is cut from hours to
a second (the attribute the daemon reads), so the rule runs on the real clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.helpers import collector_config, free_port, subscriber_thread, wait_until
from zaggd import config as config_mod
from zaggd import wire
from zaggd.collector.subscriber import SubscriberThread

FORGET_AFTER_S = 1.0
# Stream ids are 16 hex digits on the wire.
RETIRED, LIVE, GAPPED, SILENT = (f"{n:016x}" for n in (1, 2, 3, 4))


@pytest.fixture
def pub_and_subscriber(tmp_path: Path) -> Iterator[tuple[zmq.Socket, SubscriberThread]]:  # type: ignore[type-arg]
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = config_mod.load_collector(
        str(
            collector_config(
                tmp_path,
                "c1",
                {"connect": [endpoint], "topics": [""]},
                {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")},
            )
        )
    )
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    sub, crashes = subscriber_thread(context, cfg)
    sub.forget_after_s = FORGET_AFTER_S
    sub.start()
    assert sub.started.wait(10) and sub.error is None
    try:
        yield pub, sub
    finally:
        sub.stop()
        sub.join(timeout=30)
        sub.writer.close_all()
        pub.close(linger=0)
        context.term()
    assert crashes == []


def send_block(pub: zmq.Socket, node: str, stream: str, start: int, body: bytes) -> None:  # type: ignore[type-arg]
    header = wire.DataHeader(
        node, stream, "app", f"/var/log/{stream}.log", start, start + len(body), body.count(b"\n")
    )
    pub.send_multipart(wire.encode_data(b"app", header, body))


def send_heartbeat(pub: zmq.Socket, node: str, streams: dict[str, int]) -> None:  # type: ignore[type-arg]
    infos = tuple(
        wire.StreamInfo(sid, b"app", "app", f"/var/log/{sid}.log", end)
        for sid, end in streams.items()
    )
    # No replay endpoint: a gap stays open, as behind a producer that cannot be reached.
    pub.send_multipart(wire.encode_heartbeat(wire.Heartbeat(node, "00000000000000a1", "", infos)))


def checkpointed_streams(sub: SubscriberThread) -> set[str]:
    sub.write_checkpoint()
    return set(json.loads(Path(sub.checkpoint.path).read_text())["streams"])


def test_streams_retired_by_a_heartbeating_producer_are_forgotten_and_no_others(
    pub_and_subscriber: tuple[zmq.Socket, SubscriberThread],  # type: ignore[type-arg]
) -> None:
    pub, sub = pub_and_subscriber
    line = b"a line\n"
    # Sent until the subscription is surely up: the first block of each stream is at 0.
    wait_until(lambda: send_block(pub, "web-01", RETIRED, 0, line) or sub.streams, 10)
    for node, stream in (("web-01", LIVE), ("web-02", SILENT)):
        send_block(pub, node, stream, 0, line)
    send_heartbeat(pub, "web-01", {GAPPED: 100})  # told of, never sent: a gap
    wait_until(lambda: len(sub.streams) == 4, 10)
    assert checkpointed_streams(sub) == {
        f"web-01/{RETIRED}",
        f"web-01/{LIVE}",
        f"web-01/{GAPPED}",
        f"web-02/{SILENT}",
    }

    # web-01 goes on announcing one stream; web-02 falls silent.
    deadline = time.monotonic() + 4 * FORGET_AFTER_S + 5
    while sub.counters.get("streams_forgotten") < 1 and time.monotonic() < deadline:
        send_heartbeat(pub, "web-01", {LIVE: len(line)})
        time.sleep(0.1)
    for _ in range(10):  # and longer still: nothing else goes
        send_heartbeat(pub, "web-01", {LIVE: len(line)})
        time.sleep(0.1)

    assert sub.counters.get("streams_forgotten") == 1
    assert checkpointed_streams(sub) == {f"web-01/{LIVE}", f"web-01/{GAPPED}", f"web-02/{SILENT}"}
    assert sub.nodes["web-01"].streams == 2
    # The lines written before stay, once each.
    out = Path(sub.config.output.path).parent.parent
    assert (out / "app" / "web-01.log").read_bytes() == line * 2
