"""docs/protocol.md and the README say what the code does: the defaults and
limits a third party writes a subscriber against are the ones in force."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO, write_yaml
from zaggd import config, wire
from zaggd.collector import subscriber
from zaggd.producer import publisher, replay

PROTOCOL = (REPO / "docs" / "protocol.md").read_text()
README = (REPO / "README.md").read_text()


def loaded_defaults(tmp_path: Path) -> tuple[int, int]:
    """send_hwm and receive_hwm of configs that leave them out."""
    producer = config.load_producer(
        str(
            write_yaml(
                tmp_path / "p.yaml",
                {
                    "node": "n1",
                    "state_dir": str(tmp_path / "ps"),
                    "publish": {"bind": ["tcp://127.0.0.1:7450"], "replay": "tcp://127.0.0.1:7451"},
                    "sources": [{"name": "a", "topic": "a", "paths": [str(tmp_path / "*.log")]}],
                },
            )
        )
    )
    collector = config.load_collector(
        str(
            write_yaml(
                tmp_path / "c.yaml",
                {
                    "state_dir": str(tmp_path / "cs"),
                    "subscribe": {"connect": ["tcp://127.0.0.1:7450"]},
                    "output": {"path": str(tmp_path / "out" / "{node}.log")},
                },
            )
        )
    )
    return producer.publish.send_hwm, collector.subscribe.receive_hwm


def test_high_water_mark_defaults_agree_with_the_code(tmp_path: Path) -> None:
    send_hwm, receive_hwm = loaded_defaults(tmp_path)
    assert f"`publish.send_hwm`, default {send_hwm} messages" in PROTOCOL
    assert f"`subscribe.receive_hwm`, default {receive_hwm} messages" in PROTOCOL
    assert re.search(rf"\| `publish.send_hwm` \| `{send_hwm}` \|", README)
    assert re.search(rf"\| `subscribe.receive_hwm` \| `{receive_hwm}` \|", README)


def test_stated_limits_are_the_enforced_ones() -> None:
    assert wire.MAX_JSON_DEPTH == 16 and "nest at most **16** levels" in PROTOCOL
    assert wire.MAX_HEARTBEAT_STREAMS == publisher.MAX_STREAMS_PER_HEARTBEAT == 2000
    assert "at most **2000** entries" in PROTOCOL
    assert wire.MAX_EMPTY_SPAN_BYTES == 64 * 1048576 and "`end - start <= 64 MiB`" in PROTOCOL
    assert subscriber.MAX_REPLAYS_IN_FLIGHT == 8 and "at most **8** requests in flight" in PROTOCOL
    assert subscriber.REPLAY_WINDOW_BYTES == 8 * 1048576 and "expected + 8 MiB" in PROTOCOL
    assert wire.MAX_OFFSET == 2**63 - 1 and wire.MIN_INTEGER == -(2**63)
    assert replay.MAX_REQUESTS_PER_PEER == 64 and "unless 64\n   requests" in PROTOCOL
