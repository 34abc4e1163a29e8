"""A producer and a collector over real sockets, for tests of what the producer watches.

`Pair` starts a producer (web-01, binding) on the given globs and a collector
connecting to it, writing `{topic}/{node}.log` under a given output root (by
default outside every glob). The producer may run under a command prefix
(a user namespace with its own inotify limits).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import (
    REPO,
    Daemon,
    collector_config,
    free_port,
    producer_config,
    stop_all,
    wait_until,
)


class Pair:
    def __init__(
        self,
        tmp_path: Path,
        globs: list[str],
        output_root: Path | None = None,
        producer_prefix: list[str] | None = None,
        producer_env: dict[str, str] | None = None,
    ) -> None:
        data_port, replay_port = free_port(), free_port()
        self.output_root = output_root or tmp_path / "out"
        pcfg = producer_config(
            tmp_path,
            "web-01",
            [{"name": "app", "topic": "app", "paths": globs}],
            {"bind": [f"tcp://127.0.0.1:{data_port}"], "replay": f"tcp://127.0.0.1:{replay_port}"},
        )
        ccfg = collector_config(
            tmp_path,
            "c1",
            {"connect": [f"tcp://127.0.0.1:{data_port}"], "topics": [""]},
            {"path": str(self.output_root / "{topic}" / "{node}.log")},
        )
        self.producer = Daemon("producer", pcfg, tmp_path, producer_env, producer_prefix)
        self.collector = Daemon("collector", ccfg, tmp_path)
        self.output = self.output_root / "app" / "web-01.log"

    def start(self, ready_timeout_s: float = 30.0) -> Pair:
        self.collector.start()
        self.producer.start(timeout_s=ready_timeout_s)
        return self

    def lines(self) -> list[bytes]:
        """The lines of the output file (not rotated here)."""
        try:
            return self.output.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def wait_for(
        self, expected: list[bytes], timeout_s: float = 20.0, quiet_s: float = 1.5
    ) -> None:
        """Until the output holds the `expected` lines, each once, and still does `quiet_s`
        later (lines of one file in their order: give them in that order)."""
        wait_until(lambda: len(self.lines()) >= len(expected), timeout_s, 0.1)
        time.sleep(quiet_s)  # anything more (a line twice, output fed back) shows up now
        got = self.lines()
        assert len(got) == len(expected), f"{len(got)} lines out for {len(expected)} in"
        assert sorted(got) == sorted(expected)
        for prefix in {line.split(b" ", 1)[0] for line in expected}:
            mine = [line for line in expected if line.startswith(prefix + b" ")]
            assert [line for line in got if line.startswith(prefix + b" ")] == mine

    def status_table(self) -> str:
        """`zaggd status -c CONFIG`, as an operator runs it."""
        done = subprocess.run(
            [sys.executable, "-m", "zaggd", "status", "-c", str(self.producer.config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        stop_all(self.producer, self.collector)


def log_lines(daemon: Daemon, text: str) -> list[str]:
    """The lines of the daemon's log that contain `text`."""
    return [line for line in daemon.output().splitlines() if text in line]
