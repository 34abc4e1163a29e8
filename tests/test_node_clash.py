"""Two producers with one node name (cloned machines keep the host name): a
collector keeps their streams apart by instance, loses and doubles nothing
across its own outages, and warns once, naming both.

Each producer writes numbered lines with its own prefix into one source; both
go to the same output file ({node}-{source}.log), where every line must appear
exactly once, each producer's in its order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

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

OUTAGES = 3
LIVE_LINES = 40
OUTAGE_LINES = 300  # per producer, written while the collector is down
CLASH_RE = re.compile(r"node name clash: node web .*")


class ClashRig:
    """Producers `a` and `b`, both named `web`, each in its own folder; one collector."""

    def __init__(self, tmp_path: Path, collector_binds: bool) -> None:
        self.tmp_path = tmp_path
        data, replay = free_port(), free_port()
        producers = []
        data_ports = []
        for name in ("a", "b"):
            folder = tmp_path / name
            (folder / "logs").mkdir(parents=True)
            if collector_binds:
                publish = {
                    "connect": [f"tcp://127.0.0.1:{data}"],
                    "replay": [f"tcp://127.0.0.1:{replay}"],
                    "heartbeat_interval": "300ms",
                }
            else:
                port = free_port()
                data_ports.append(port)
                publish = {
                    "bind": [f"tcp://127.0.0.1:{port}"],
                    "replay": f"tcp://127.0.0.1:{free_port()}",
                    "heartbeat_interval": "300ms",
                }
            config = producer_config(
                folder,
                "web",
                [{"name": "app", "topic": "app", "paths": [str(folder / "logs" / "*.log")]}],
                publish,
            )
            producers.append(Daemon("producer", config, folder))
        self.producers = producers
        if collector_binds:
            subscribe = {
                "bind": [f"tcp://127.0.0.1:{data}"],
                "replay": f"tcp://127.0.0.1:{replay}",
            }
        else:
            subscribe = {"connect": [f"tcp://127.0.0.1:{p}" for p in data_ports]}
        self.collector = Daemon("collector", collector_config(tmp_path, "c1", subscribe), tmp_path)
        self.output = tmp_path / "out-c1" / "app" / "web-app.log"
        self.written: dict[str, int] = {"a": 0, "b": 0}

    def start(self) -> None:
        self.collector.start()
        for producer in self.producers:
            producer.start()

    def write(self, count: int) -> None:
        for name in ("a", "b"):
            start = self.written[name]
            append_lines(
                self.tmp_path / name / "logs" / "app.log", numbered_lines(name, start, count)
            )
            self.written[name] += count

    def expected(self) -> list[bytes]:
        return [line for name in ("a", "b") for line in numbered_lines(name, 0, self.written[name])]

    def output_lines(self) -> list[bytes]:
        try:
            return self.output.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def wait_all_delivered(self, timeout_s: float = 40.0) -> None:
        want = len(self.expected())
        try:
            wait_until(lambda: len(self.output_lines()) >= want, timeout_s=timeout_s)
        except AssertionError:
            have = set(self.output_lines())
            missing = [line for line in self.expected() if line not in have]
            raise AssertionError(
                f"{len(missing)} of {want} lines missing, e.g. {missing[:3]}"
            ) from None

    def instances(self) -> list[str]:
        return [str(p.status()["instance"]) for p in self.producers]

    def stop(self) -> None:
        stop_all(*self.producers, self.collector)


@pytest.fixture(params=["producers bind", "collector binds"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClashRig]:
    rig = ClashRig(tmp_path, collector_binds=request.param == "collector binds")
    try:
        yield rig
    finally:
        rig.stop()


def test_two_producers_with_one_node_name_lose_and_double_nothing(rig: ClashRig) -> None:
    rig.start()
    rig.write(LIVE_LINES)
    rig.wait_all_delivered()
    for _ in range(OUTAGES):
        rig.collector.stop()
        for _ in range(3):
            rig.write(OUTAGE_LINES // 3)
        rig.collector.start()
        rig.write(LIVE_LINES)
        rig.wait_all_delivered()
    instances = rig.instances()
    rig.stop()

    lines = rig.output_lines()
    assert len(lines) == len(set(lines)), "lines written twice"
    assert sorted(lines) == sorted(rig.expected())
    for name in ("a", "b"):
        mine = [line for line in lines if line.startswith(f"{name} ".encode())]
        assert mine == numbered_lines(name, 0, rig.written[name]), f"{name}: out of order"

    log = rig.collector.output()
    assert "producer restarted" not in log
    # One warning per collector run that saw both, naming both instances.
    warnings = CLASH_RE.findall(log)
    assert 1 <= len(warnings) <= rig.collector.starts, warnings
    for warning in warnings:
        assert all(instance in warning for instance in instances), warning
    starts = log.split("--- start ")[1:]
    assert all(len(CLASH_RE.findall(run)) <= 1 for run in starts)
