"""kill -9 of a collector whose output rotates: no line doubled or lost, end to end.

Real producer and collector daemons; the source is compared byte for byte
with every archive (decompressed) followed by the live file.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.helpers import Appender, assert_rotated_exactly, stop_all, tailing_pair


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
    written = Appender(source, "b", width=80)
    try:
        producer.start()
        for _ in range(10):
            collector.start()
            written.add(5000)
            time.sleep(rng.uniform(0.05, 1.5))
            collector.kill()
            written.add(2000)
        collector.start()
        assert_rotated_exactly(tmp_path / "out" / "app", written.data)
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)
