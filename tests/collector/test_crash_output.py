"""kill -9 of a collector whose output rotates: no line doubled or lost, end to end.

Real producer and collector daemons; the source is compared byte for byte
with every archive (decompressed) followed by the live file.
"""

from __future__ import annotations

import gzip
import random
import time
from pathlib import Path

from tests.helpers import (
    append_lines,
    numbered_lines,
    rotated_output,
    stop_all,
    tailing_pair,
    wait_until,
)
from zaggd.collector.manifest import read_manifest

LINE = 80


def has_caught_up(folder: Path, want: bytes) -> bool:
    """The output is at least as long as `want` and ends with its last line."""
    try:
        got = b"".join(rotated_output(folder).values())
    except (AssertionError, OSError, EOFError, gzip.BadGzipFile):
        return False  # caught between two steps of a seal
    return len(got) >= len(want) and got.endswith(want[-LINE:])


def assert_same_lines(got: bytes, want: bytes) -> None:
    """Byte-equal, or a message counting the doubled and missing lines."""
    if got == want:
        return
    got_lines, want_lines = got.splitlines(), want.splitlines()
    doubled = len(got_lines) - len(set(got_lines))
    missing = len(set(want_lines) - set(got_lines))
    raise AssertionError(
        f"output differs: {len(got_lines)} lines for {len(want_lines)} written; "
        f"{doubled} doubled, {missing} missing"
    )


def test_kill_9_after_bursts_while_rotating_doubles_nothing(tmp_path: Path) -> None:
    """The issue's run: 300 kB gzip rotation, bursts of 5,000 lines, kill -9 0.05-1.5 s
    after each, 2,000 more lines while down, restart; ten times."""
    rng = random.Random(12)
    source, producer, collector = tailing_pair(
        tmp_path,
        {
            "path": str(tmp_path / "out" / "{topic}" / "{node}.log"),
            "rotate": {"max_bytes": "300KB", "compress": "gzip", "keep": 1000},
        },
    )
    folder = tmp_path / "out" / "app"
    written: list[bytes] = []

    def add(count: int) -> None:
        lines = numbered_lines("b", len(written), count, LINE)
        append_lines(source, lines)
        written.extend(lines)

    try:
        producer.start()
        for _ in range(10):
            collector.start()
            add(5000)
            time.sleep(rng.uniform(0.05, 1.5))
            collector.kill()
            add(2000)
        collector.start()
        want = b"".join(written)
        wait_until(lambda: has_caught_up(folder, want), timeout_s=60, interval_s=0.2)
        assert collector.stop() == 0
        got = rotated_output(folder)
        assert list(got) == ["web-01.log"]
        assert_same_lines(got["web-01.log"], want)
        for manifest in folder.glob("*.manifest.json"):
            assert read_manifest(str(manifest)).ranges, f"{manifest.name} holds no ranges"
    finally:
        stop_all(collector, producer)
