"""A producer that nobody hears says so: in its log, once, and in its status.

Real daemons. Heartbeats every 100 ms, so "a while" (30 heartbeats) is 3 s.
"""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.helpers import Daemon, append_lines, stop_all, tailing_pair, wait_until
from tests.test_reload import Pair, edit
from tests.test_security import allow, binding_producer, connecting_collector, make_keys


def warnings(daemon: Daemon) -> list[str]:
    return [line for line in daemon.output().splitlines() if "no collector has subscribed" in line]


def test_a_producer_with_no_collector_warns_once_and_says_when_one_comes(tmp_path: Path) -> None:
    log, producer, collector = tailing_pair(tmp_path, {})
    edit(producer.config, lambda c: c["publish"].update(heartbeat_interval="100ms"))
    endpoint = yaml.safe_load(producer.config.read_text())["publish"]["bind"][0]
    try:
        producer.start()
        append_lines(log, [b"heard by no one yet\n"])
        wait_until(lambda: warnings(producer), 15)
        assert " WARNING " in warnings(producer)[0]
        assert f"bound on {endpoint}" in warnings(producer)[0]
        status = producer.status()
        assert status["collectors"] == 0 and float(status["no_collector_for_s"]) >= 3
        assert "0 collectors subscribed" in str(status["status"])

        collector.start()
        wait_until(lambda: producer.status()["collectors"] == 1, 15)
        wait_until(lambda: "a collector listens again: 1 subscribed" in producer.output(), 5)
        assert len(warnings(producer)) == 1

        collector.stop()
        wait_until(lambda: len(warnings(producer)) == 2, 15)  # once per silence
    finally:
        stop_all(producer, collector)


def test_a_producer_whose_key_the_collector_revoked_says_no_one_hears_it(
    tmp_path: Path,
) -> None:
    """The issue's walkthrough: the collector binds with CURVE, the producer's key is
    removed from its allow_dir and the collector reloaded."""
    pair = Pair.curve(tmp_path)
    edit(pair.producer.config, lambda c: c["publish"].update(heartbeat_interval="100ms"))
    try:
        pair.start()
        pair.lines_flow(10)
        wait_until(lambda: pair.producer.status()["collectors"] == 1, 10)
        (tmp_path / "allowed" / "web-01.key").unlink()
        pair.collector.signal(signal.SIGHUP)
        wait_until(lambda: warnings(pair.producer), 20)
        assert pair.producer.status()["collectors"] == 0
        assert "is this node's key in its allow_dir?" in warnings(pair.producer)[0]
        assert "connecting to tcp://127.0.0.1:" in warnings(pair.producer)[0]
    finally:
        pair.stop()


def test_a_binding_producer_counts_the_collectors_its_allowlist_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01", "collector")
    producer, _logs, data = binding_producer(tmp_path, "web-01", keys, allow(tmp_path / "ok", keys))
    collector = connecting_collector(tmp_path, keys, [data], "web-01")
    try:
        producer.start()
        assert producer.status()["curve_refused"] == 0
        collector.start()
        wait_until(lambda: producer.status()["curve_refused"] >= 1, 20)
        status = producer.status()
        assert status["collectors"] == 0 and "client refused" in producer.output()
    finally:
        stop_all(producer, collector)
