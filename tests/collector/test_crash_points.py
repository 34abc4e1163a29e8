"""Crash points of output rotation and of the live index, one by one.

Each test drives the subscriber's write path on real files (OutputHarness),
leaves on disk exactly what a kill -9 at one point leaves, restarts, writes
what the checkpoint (or the output folder) says is missing, and compares the
output with what was written: every line once, in order.
"""

from __future__ import annotations

import calendar
from pathlib import Path

from tests.helpers import OutputHarness, numbered_lines, rotated_output
from zaggd.collector.manifest import read_manifest
from zaggd.config import RotateConfig

T0 = float(calendar.timegm((2025, 3, 1, 12, 0, 0)))
LINE = 100


def seal_all(h: OutputHarness) -> None:
    """Do the worker's job on this thread."""
    for _ in range(10000):
        if h.rotation.jobs.empty():
            return
        base = h.rotation.jobs.get_nowait()
        if base:
            assert h.rotation.seal_one(base, h.now, lambda: None)


def write_from(h: OutputHarness, lines: list[bytes], now: float, per_block: int = 3) -> None:
    """Write what the restarted collector says is still missing, as a replay would."""
    first = h.offsets.get("n1/s1", 0) // LINE
    rest = lines[first:]
    for i in range(0, len(rest), per_block):
        h.write(rest[i : i + per_block], now + i * 0.001)


def finish_and_check(h: OutputHarness, lines: list[bytes], now: float) -> None:
    write_from(h, lines, now)
    h.save()
    seal_all(h)
    folder = h.folder / "out" / "t"
    assert rotated_output(folder) == {"n1.log": b"".join(lines)}
    for manifest in folder.glob("*.manifest.json"):
        assert read_manifest(str(manifest)).ranges, f"{manifest.name} holds no ranges"


def test_cut_of_a_file_not_reopened_since_a_restart_is_undone_by_a_kill(tmp_path: Path) -> None:
    """After a restart the checkpoint names no file until one is written. A cut on the
    first write, bytes to the successor, kill -9: the successor is cut back to zero."""
    lines = numbered_lines("k", 0, 30, LINE)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    h.write(lines[0:3], T0)
    h.write(lines[3:6], T0 + 1)
    h.write(lines[6:9], T0 + 2)
    h.save()
    h = h.restart()
    h.save()  # the periodic checkpoint: the live file is not open, so not named
    h.write(lines[9:12], T0 + 3)  # 1200 bytes: cut first, then into the successor
    h.write(lines[12:15], T0 + 4)
    h = h.restart()  # kill -9: no checkpoint since the cut
    try:
        live = tmp_path / "out" / "t" / "n1.log"
        assert live.read_bytes() == b""
        finish_and_check(h, lines, T0 + 10)
    finally:
        h.close()
