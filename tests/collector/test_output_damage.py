"""The live output changed by hand under a running collector: deleted, truncated,
moved away. Real producer and collector daemons; every line is compared byte for
byte with the output, and the damage must be reported, never silent.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    append_lines,
    lines_differ,
    numbered_lines,
    stop_all,
    tailing_pair,
    wait_until,
)

LINE = 80


def plain_pair(tmp_path: Path) -> tuple[Path, Daemon, Daemon, Path]:
    """Producer and collector (no rotation); the source file and the live output."""
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
    )
    return source, producer, collector, tmp_path / "out" / "app" / "web-01.log"


def wait_exact(live: Path, want: bytes, timeout_s: float = 30.0) -> None:
    """Until the live file holds `want`, then a moment more: a late double would show."""
    wait_until(
        lambda: live.exists() and live.stat().st_size >= len(want), timeout_s, interval_s=0.1
    )
    time.sleep(1.5)
    got = live.read_bytes()
    assert got == want, lines_differ(got, want)


@pytest.mark.parametrize("change", ["deleted", "truncated"])
def test_live_output_deleted_or_truncated_while_running_is_written_again(
    tmp_path: Path, change: str
) -> None:
    source, producer, collector, live = plain_pair(tmp_path)
    first, second = numbered_lines("d", 0, 3000, LINE), numbered_lines("d", 3000, 3000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, first)
        wait_exact(live, b"".join(first))
        if change == "deleted":
            live.unlink()
        else:
            os.truncate(live, 0)
        append_lines(source, second)
        wait_exact(live, b"".join(first + second))
        counters = collector.status()["counters"]
        assert counters["bytes_lost"] == 0
        assert counters["bytes_repaired"] >= len(b"".join(first))
        assert collector.stop() == 0
        # One warning, naming the file and both sizes.
        found = re.findall(
            rf"WARNING .*output {change} by hand: {re.escape(str(live))} "
            r"\((\d+) bytes expected, (\d+) found\)",
            collector.output(),
        )
        assert len(found) == 1, collector.output()[-2000:]
        expected, there = (int(n) for n in found[0])
        assert expected >= len(b"".join(first)) and expected > there
        index = json.loads((live.parent / "web-01.log.index.json").read_text())
        assert index["size"] == live.stat().st_size
    finally:
        stop_all(collector, producer)


def test_live_output_truncated_then_kill_9_doubles_nothing(tmp_path: Path) -> None:
    """Truncated, more lines, kill -9 at once: found at the restart if not before."""
    source, producer, collector, live = plain_pair(tmp_path)
    lines = numbered_lines("k", 0, 8000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:3000])
        wait_exact(live, b"".join(lines[:3000]))
        os.truncate(live, 0)
        append_lines(source, lines[3000:5000])
        wait_until(lambda: live.stat().st_size > 0, timeout_s=10, interval_s=0.01)
        collector.kill()
        append_lines(source, lines[5000:])
        collector.start()
        wait_exact(live, b"".join(lines))
        assert collector.status()["counters"]["bytes_lost"] == 0
        assert collector.stop() == 0
        log = collector.output()
        assert (
            f"output truncated by hand: {live}" in log
            or f"shorter since the last run: {live}" in log
        )
    finally:
        stop_all(collector, producer)


def test_live_output_moved_away_keeps_its_lines_and_starts_a_new_file(tmp_path: Path) -> None:
    """A file moved by hand still holds its lines: they are not written again."""
    source, producer, collector, live = plain_pair(tmp_path)
    first, second = numbered_lines("m", 0, 2000, LINE), numbered_lines("m", 2000, 2000, LINE)
    moved = tmp_path / "moved.log"
    try:
        producer.start()
        collector.start()
        append_lines(source, first)
        wait_exact(live, b"".join(first))
        os.rename(live, moved)
        wait_until(lambda: "output moved away by hand" in collector.output(), timeout_s=10)
        append_lines(source, second)
        want = b"".join(first + second)
        wait_until(lambda: live.exists() and live.stat().st_size > 0, timeout_s=10)
        wait_until(lambda: len(moved.read_bytes() + live.read_bytes()) >= len(want), 30)
        time.sleep(1.5)
        assert moved.read_bytes() == b"".join(first)
        assert live.read_bytes() == b"".join(second)
        assert collector.stop() == 0
        assert f"output moved away by hand: {live}" in collector.output()
    finally:
        stop_all(collector, producer)
