"""Order across rotation: after a collector outage during which the real
logrotate ran several times, the collector catches up on several copies of one
file at once, and still writes every line in the order of the source copies.

An app writes numbered lines; logrotate (`create`, SIGHUP to the app) runs
three times while the collector is stopped; once the collector is back and
has caught up, its output is exactly lines 0, 1, 2, ... in order.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    collector_config,
    free_port,
    producer_config,
    stop_all,
    wait_until,
)
from tests.producer.rotation_run import (
    LOGROTATE,
    MODES,
    line_number,
    logrotate,
    start_logwriter,
    write_logrotate_config,
)

pytestmark = pytest.mark.skipif(
    not Path(LOGROTATE).exists(), reason="needs logrotate (scripts/setup.sh)"
)

WRITE_RATE = 3000  # lines per second, 100 bytes each
ROTATIONS = 3


class OrderRig:
    def __init__(self, tmp_path: Path) -> None:
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        os.chmod(self.logs, 0o755)  # logrotate refuses world-writable folders
        self.log = self.logs / "app.log"
        self.folder = tmp_path
        port = free_port()
        self.producer = Daemon(
            "producer",
            producer_config(
                tmp_path,
                "node1",
                [{"name": "app", "topic": "app", "paths": [str(self.logs / "*.log")]}],
                {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
            ),
            tmp_path,
        )
        self.collector = Daemon(
            "collector",
            collector_config(tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{port}"]}),
            tmp_path,
        )
        self.output = tmp_path / "out-c1" / "app" / "node1-app.log"
        self.writer: subprocess.Popen[str] | None = None
        self.written = 0

    def start(self) -> None:
        self.collector.start()
        self.producer.start()
        self.writer = start_logwriter(self.log, "app", WRITE_RATE)
        write_logrotate_config(self.folder, self.log, MODES["create"].format(pid=self.writer.pid))

    def logrotate(self) -> None:
        done = logrotate(self.folder)
        assert done.returncode == 0 and not done.stderr, done.stderr

    def stop_writer(self) -> None:
        assert self.writer is not None
        self.writer.send_signal(signal.SIGTERM)
        out, _ = self.writer.communicate(timeout=30)
        self.written = int(out.split()[-1])

    def numbers(self) -> list[int]:
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        return [line_number(raw) for raw in data.splitlines(keepends=True) if raw.endswith(b"\n")]

    def stop(self) -> None:
        if self.writer is not None and self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait(timeout=10)
        stop_all(self.producer, self.collector)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[OrderRig]:
    rig = OrderRig(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def test_lines_keep_their_order_across_rotations_during_an_outage(rig: OrderRig) -> None:
    rig.start()
    wait_until(lambda: len(rig.numbers()) > WRITE_RATE // 4, timeout_s=20)
    rig.collector.stop()
    for _ in range(ROTATIONS):
        time.sleep(0.6)
        rig.logrotate()
    time.sleep(0.6)
    rig.collector.start()
    time.sleep(0.5)
    rig.stop_writer()
    wait_until(lambda: len(rig.numbers()) >= rig.written, timeout_s=60)
    copies = sorted(p.name for p in rig.logs.iterdir())
    assert copies == ["app.log", "app.log.1", "app.log.2", "app.log.3"], copies
    numbers = rig.numbers()
    assert len(numbers) == len(set(numbers)), "lines written twice"
    out_of_order = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    assert numbers == list(range(rig.written)), f"out of order at {out_of_order[:5]}"
