"""Rotation of collector output: size and time cuts, gzip, retention, crash recovery.

Unit-level tests drive the subscriber's write path on real files through
OutputHarness, with time passed as an argument. Crash points are reached by a
checkpoint callback that dies right before or after saving, and by leaving on
disk exactly what a kill -9 at that point leaves. The end-to-end test kills a
real collector 20 times while it rotates every 200 KB.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    OutputHarness,
    append_lines,
    numbered_lines,
    output_names,
    rotated_output,
    stop_all,
    tailing_pair,
    wait_until,
    zaggd_verify,
)
from zaggd.collector.manifest import format_stamp, parse_rotated, read_manifest
from zaggd.collector.rotation import Archive, Stopped, select_expired
from zaggd.config import Compression, RotateConfig

HOUR = 3600
DAY = 86400
T0 = float(calendar.timegm((2025, 3, 1, 12, 0, 0)))
LINE = 100  # bytes per numbered line


class Killed(Exception):
    """Stands for kill -9 at this point of the write path."""


def stamp_name(live: str, t: float) -> str:
    return f"{live}.{format_stamp(round(t * 1_000_000))}"


def rotated_names(folder: Path, ext: str = "") -> list[str]:
    names = []
    for p in sorted(folder.iterdir()):
        parsed = parse_rotated(p.name)
        if parsed is not None and parsed.ext == ext:
            names.append(p.name)
    return names


def seal_all(h: OutputHarness) -> None:
    """Do the worker's job on this thread, for tests that run without it."""
    for _ in range(10000):
        if h.rotation.jobs.empty():
            return
        base = h.rotation.jobs.get_nowait()
        if base:
            assert h.rotation.seal_one(base, h.now, lambda: None)


def blocks_of(lines: list[bytes], per_block: int) -> list[list[bytes]]:
    return [lines[i : i + per_block] for i in range(0, len(lines), per_block)]


def write_from(h: OutputHarness, lines: list[bytes], now: float, per_block: int = 3) -> None:
    """Write what the checkpoint says is still missing, as a replay would."""
    first = h.offsets.get("n1/s1", 0) // LINE
    for i, block in enumerate(blocks_of(lines[first:], per_block)):
        h.write(block, now + i * 0.001)


# -- size and time -----------------------------------------------------------------


def test_size_rotation_cuts_between_blocks_before_max_bytes(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    lines = numbered_lines("a", 0, 30, LINE)
    try:
        for i, block in enumerate(blocks_of(lines, 3)):
            h.write(block, T0 + i)
        h.save()
        seal_all(h)
        folder = tmp_path / "out" / "t"
        # A fourth block of 300 bytes would take a 900-byte file past 1000: cut before it.
        assert rotated_names(folder) == [
            stamp_name("n1.log", T0 + 3),
            stamp_name("n1.log", T0 + 6),
            stamp_name("n1.log", T0 + 9),
        ]
        assert [(folder / n).stat().st_size for n in rotated_names(folder)] == [900, 900, 900]
        assert (folder / "n1.log").read_bytes() == lines[27] + lines[28] + lines[29]
        assert rotated_output(folder) == {"n1.log": b"".join(lines)}
        assert h.counters.get("rotations") == 3
    finally:
        h.close()


def test_manifest_records_hash_size_lines_ranges_and_chain(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    lines = numbered_lines("a", 0, 21, LINE)
    try:
        for i, block in enumerate(blocks_of(lines, 3)):
            h.write(block, T0 + i)
        h.save()
        seal_all(h)
        folder = tmp_path / "out" / "t"
        first, second = rotated_names(folder)
        m1 = read_manifest(str(folder / f"{first}.manifest.json"))
        m2 = read_manifest(str(folder / f"{second}.manifest.json"))
        data = (folder / first).read_bytes()
        assert (m1.file, m1.size, m1.lines, m1.compression) == (first, 900, 9, "none")
        assert m1.sha256 == hashlib.sha256(data).hexdigest() == m1.content_sha256
        assert m1.ranges == {"n1/s1": [0, 900]}
        assert m2.ranges == {"n1/s1": [900, 1800]}
        assert (m1.started_at, m1.rotated_at) == (T0, T0 + 3)
        assert m2.previous == first
    finally:
        h.close()


def test_manifest_ranges_span_restarts(tmp_path: Path) -> None:
    """A live file written across restarts: its manifest covers every run's ranges."""
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    lines = numbered_lines("m", 0, 12, LINE)
    h.write(lines[0:3], T0, stream="a")
    h.write(lines[3:5], T0 + 1, stream="b")
    h.save()
    h = h.restart()
    h.write(lines[5:7], T0 + 2, stream="a")
    h.save()
    h = h.restart()
    try:
        h.write(lines[7:9], T0 + 3, stream="b")
        h.write(lines[9:12], T0 + 4, stream="a")  # 900 + 300: cut first
        h.save()
        seal_all(h)
        folder = tmp_path / "out" / "t"
        (first,) = rotated_names(folder)
        manifest = read_manifest(str(folder / f"{first}.manifest.json"))
        assert manifest.ranges == {"n1/a": [0, 500], "n1/b": [0, 400]}
        assert manifest.lines == 9
    finally:
        h.close()


def test_time_rotation_cuts_at_the_utc_day_boundary(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(every_s=DAY))
    morning = float(calendar.timegm((2025, 3, 1, 8, 0, 0)))
    before_midnight = float(calendar.timegm((2025, 3, 1, 23, 59, 59)))
    after_midnight = float(calendar.timegm((2025, 3, 2, 0, 0, 1)))
    lines = numbered_lines("d", 0, 4, LINE)
    try:
        h.write([lines[0]], morning)
        h.write([lines[1]], before_midnight)
        folder = tmp_path / "out" / "t"
        assert rotated_names(folder) == []
        h.write([lines[2]], after_midnight)
        h.write([lines[3]], after_midnight + 23 * HOUR)
        assert rotated_names(folder) == [stamp_name("n1.log", after_midnight)]
        assert rotated_names(folder)[0] == "n1.log.20250302T000001.000000Z"
        assert (folder / rotated_names(folder)[0]).read_bytes() == lines[0] + lines[1]
        assert (folder / "n1.log").read_bytes() == lines[2] + lines[3]
    finally:
        h.close()


def test_time_rotation_hourly_and_size_whichever_comes_first(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(every_s=HOUR, max_bytes=1000))
    lines = numbered_lines("h", 0, 12, LINE)
    ten = float(calendar.timegm((2025, 3, 1, 10, 0, 0)))
    try:
        h.write(lines[0:5], ten + 10)  # 500 bytes
        h.write(lines[5:10], ten + 20)  # 1000: at the limit, not past it
        h.write(lines[10:11], ten + 30)  # past it: cut by size
        h.write(lines[11:12], ten + HOUR - 0.5)  # same hour: no cut
        h.write([], ten + HOUR)  # 11:00:00 sharp: cut by time
        folder = tmp_path / "out" / "t"
        names = rotated_names(folder)
        assert names == [stamp_name("n1.log", ten + 30), stamp_name("n1.log", ten + HOUR)]
        assert (folder / names[0]).read_bytes() == b"".join(lines[0:10])
        assert (folder / names[1]).read_bytes() == lines[10] + lines[11]
    finally:
        h.close()


def test_idle_file_is_cut_at_the_boundary_without_a_write(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(every_s=DAY))
    late = float(calendar.timegm((2025, 3, 1, 23, 0, 0)))
    lines = numbered_lines("i", 0, 2, LINE)
    try:
        h.write(lines, late)
        h.rotation.after_checkpoint(late + 0.5 * HOUR)
        folder = tmp_path / "out" / "t"
        assert rotated_names(folder) == []
        h.rotation.after_checkpoint(late + HOUR + 2)
        assert rotated_names(folder) == [stamp_name("n1.log", late + HOUR + 2)]
        assert (folder / "n1.log").read_bytes() == b""  # its successor, as logrotate's `create`
        assert rotated_output(folder) == {"n1.log": b"".join(lines)}
    finally:
        h.close()


def test_time_period_survives_a_restart(tmp_path: Path) -> None:
    """A file begun yesterday is cut on today's first write even after a restart."""
    h = OutputHarness(tmp_path, RotateConfig(every_s=DAY))
    late = float(calendar.timegm((2025, 3, 1, 22, 0, 0)))
    lines = numbered_lines("r", 0, 3, LINE)
    h.write(lines[:1], late)
    h.write(lines[1:2], late + 60)
    h.save()
    h = h.restart()
    try:
        h.write(lines[2:], late + 60)  # still the same day: no cut
        folder = tmp_path / "out" / "t"
        assert rotated_names(folder) == []
        h.save()
        h = h.restart()
        h.write([], late + 3 * HOUR)
        assert rotated_names(folder) == [stamp_name("n1.log", late + 3 * HOUR)]
        assert rotated_output(folder) == {"n1.log": b"".join(lines)}
    finally:
        h.close()


def test_rotated_names_sort_in_cut_order_and_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "t"
    folder.mkdir(parents=True)
    # Not zaggd's: a file that happens to carry the name the first cut would take.
    foreign = folder / stamp_name("n1.log", T0 + 1)
    foreign.write_bytes(b"someone else's\n")
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=150))
    lines = numbered_lines("c", 0, 5, LINE)
    try:
        h.write([lines[0]], T0)
        h.write([lines[1]], T0 + 1)  # cut; its name is taken, so one microsecond later
        h.write([lines[2]], T0 - 50)  # the clock went back: the name still sorts after
        h.write([lines[3]], T0 - 50)  # same instant again
        h.write([lines[4]], T0 - 60)
        h.save()
        seal_all(h)
        names = [n for n in rotated_names(folder) if n != foreign.name]
        assert len(names) == 4
        assert names == sorted(names) and len(set(names)) == 4
        assert names[0] == "n1.log." + format_stamp(int(T0 + 1) * 1_000_000 + 1)
        assert foreign.read_bytes() == b"someone else's\n"
        chained = b"".join((folder / n).read_bytes() for n in names)
        assert chained + (folder / "n1.log").read_bytes() == b"".join(lines)
    finally:
        h.close()


# -- gzip ---------------------------------------------------------------------------


@pytest.mark.parametrize("per_block", [1, 50])
def test_gzip_archives_decompress_to_exactly_the_lines_written(
    tmp_path: Path, per_block: int
) -> None:
    rules = RotateConfig(max_bytes=50_000, compress=Compression.GZIP)
    h = OutputHarness(tmp_path, rules, start_worker=True)
    lines = numbered_lines("g", 0, 2000, LINE)
    try:
        for i, block in enumerate(blocks_of(lines, per_block)):
            h.write(block, T0 + i * 0.01)
        h.save()
        wait_until(lambda: h.rotation.pending() == 0 and h.rotation.jobs.empty(), timeout_s=20)
        folder = tmp_path / "out" / "t"
        archives = rotated_names(folder, ".gz")
        assert len(archives) == 3
        assert rotated_names(folder, "") == [] and rotated_names(folder, ".gz.tmp") == []
        total = b""
        for name in archives:
            plain = gzip.decompress((folder / name).read_bytes())
            manifest = read_manifest(str(folder / (name[:-3] + ".manifest.json")))
            assert manifest.compression == "gzip"
            assert manifest.content_sha256 == hashlib.sha256(plain).hexdigest()
            assert manifest.sha256 == hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert manifest.lines == plain.count(b"\n") == len(plain) // LINE
            total += plain
        if shutil.which("gzip"):
            # What an operator runs: zcat of the archives in name order.
            zcat = subprocess.run(
                ["gzip", "-dc", *(str(folder / n) for n in archives)],
                check=True,
                capture_output=True,
                timeout=30,
            )
            assert zcat.stdout == total
        assert total + (folder / "n1.log").read_bytes() == b"".join(lines)
    finally:
        h.close()


# -- retention ---------------------------------------------------------------------


def make_archives(h: OutputHarness, count: int, node: str = "n1", spacing_s: float = 100.0) -> None:
    """`count` rotated files (and one live file) from one live file, cut `spacing_s` apart."""
    lines = numbered_lines(node, 0, 3 * (count + 1), LINE)
    for i in range(count + 1):
        h.write(lines[3 * i : 3 * i + 3], T0 + i * spacing_s, node=node)
    h.save()


def leave_foreign_files(folder: Path) -> dict[Path, bytes]:
    foreign = {
        folder / "notes.txt": b"mine\n",
        folder / "n1.log.old": b"an old log\n",
        folder / "n1.log.20200101T000000.000000Z": b"looks rotated, has no manifest\n",
        folder / "n1.log.20200101T000001.000000Z.gz": b"not a gzip\n",
    }
    for path, data in foreign.items():
        path.write_bytes(data)
    return foreign


def test_select_expired_applies_each_rule_oldest_first() -> None:
    archives = [Archive(f"/o/a.{i}", int((T0 + i * HOUR) * 1e6), 1000, "a") for i in range(6)]
    now = T0 + 10 * HOUR
    keep = select_expired(archives[::-1], RotateConfig(keep=4), now)
    assert [a.base for a in keep] == ["/o/a.0", "/o/a.1"]
    others = [Archive(f"/o/b.{i}", int((T0 + i * 60) * 1e6), 1000, "b") for i in range(3)]
    keep_each = select_expired(archives + others, RotateConfig(keep=4), now)
    assert [a.base for a in keep_each] == ["/o/a.0", "/o/a.1"]  # b has only 3
    total_both = select_expired(archives + others, RotateConfig(max_total_bytes=7000), now)
    assert [a.base for a in total_both] == ["/o/a.0", "/o/b.0"]  # the oldest of the folder
    age = select_expired(archives, RotateConfig(max_age_s=7 * HOUR), now)
    assert [a.base for a in age] == ["/o/a.0", "/o/a.1", "/o/a.2"]
    total = select_expired(archives, RotateConfig(max_total_bytes=2500), now)
    assert [a.base for a in total] == ["/o/a.0", "/o/a.1", "/o/a.2", "/o/a.3"]
    both = select_expired(archives, RotateConfig(keep=5, max_total_bytes=3000), now)
    assert [a.base for a in both] == ["/o/a.0", "/o/a.1", "/o/a.2"]
    assert select_expired(archives, RotateConfig(), now) == []


def test_retention_keep_counts_each_live_file_and_spares_foreign_files(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "t"
    folder.mkdir(parents=True)
    foreign = leave_foreign_files(folder)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=300, keep=2))
    try:
        make_archives(h, 4, node="n1")
        make_archives(h, 2, node="n2", spacing_s=1000)
        seal_all(h)
        ours = [n for n in rotated_names(folder) if n.startswith(("n1.log.2025", "n2.log.2025"))]
        assert ours == [
            stamp_name("n1.log", T0 + 300),
            stamp_name("n1.log", T0 + 400),
            stamp_name("n2.log", T0 + 1000),
            stamp_name("n2.log", T0 + 2000),
        ]
        manifests = sorted(p.name for p in folder.glob("*.manifest.json"))
        assert manifests == [f"{n}.manifest.json" for n in ours]
        for path, data in foreign.items():
            assert path.read_bytes() == data
        assert (folder / "n1.log").exists() and (folder / "n2.log").exists()
        assert h.counters.get("archives_expired") == 2
    finally:
        h.close()


def test_retention_by_max_age(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "t"
    folder.mkdir(parents=True)
    foreign = leave_foreign_files(folder)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=300, max_age_s=2 * HOUR))
    try:
        make_archives(h, 4, spacing_s=HOUR)  # cut at T0+1h .. T0+4h
        seal_all(h)
        # Each seal applied the rule at the time of the last write (T0+4h).
        assert [n for n in rotated_names(folder) if n.startswith("n1.log.2025")] == [
            stamp_name("n1.log", T0 + i * HOUR) for i in (2, 3, 4)
        ]
        h.rotation.expire(T0 + 5 * HOUR + 1)
        assert [n for n in rotated_names(folder) if n.startswith("n1.log.2025")] == [
            stamp_name("n1.log", T0 + 4 * HOUR)
        ]
        h.rotation.expire(T0 + 100 * DAY)
        assert [n for n in rotated_names(folder) if n.startswith("n1.log.2025")] == []
        assert list(folder.glob("*.manifest.json")) == []
        for path, data in foreign.items():
            assert path.read_bytes() == data
        assert (folder / "n1.log").read_bytes() != b""
    finally:
        h.close()


def test_retention_by_max_total_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "t"
    folder.mkdir(parents=True)
    foreign = leave_foreign_files(folder)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=300, max_total_bytes=1000))
    try:
        make_archives(h, 6)  # six rotated files of 300 bytes
        seal_all(h)
        ours = [n for n in rotated_names(folder) if n.startswith("n1.log.2025")]
        assert ours == [stamp_name("n1.log", T0 + i * 100) for i in (4, 5, 6)]
        assert sum((folder / n).stat().st_size for n in ours) == 900
        for path, data in foreign.items():
            assert path.read_bytes() == data
    finally:
        h.close()


def test_retention_with_gzip_removes_archive_and_manifest(tmp_path: Path) -> None:
    rules = RotateConfig(max_bytes=300, keep=1, compress=Compression.GZIP)
    h = OutputHarness(tmp_path, rules)
    try:
        make_archives(h, 3)
        seal_all(h)
        folder = tmp_path / "out" / "t"
        assert output_names(folder) == [
            "n1.log",
            stamp_name("n1.log", T0 + 300) + ".gz",
            stamp_name("n1.log", T0 + 300) + ".manifest.json",
        ]
    finally:
        h.close()


# -- crash points, one by one ---------------------------------------------------------


def arm_kill(h: OutputHarness, before_save: bool) -> None:
    """Die at the next checkpoint (the cut's intent), just before or just after saving it."""

    def checkpoint() -> None:
        if not before_save:
            h.save()
        raise Killed

    h.rotation.checkpoint = checkpoint


def finish_and_check(h: OutputHarness, lines: list[bytes], now: float) -> None:
    write_from(h, lines, now)
    h.save()
    if h.rotation.workers()[0].is_alive():
        wait_until(lambda: h.rotation.pending() == 0, timeout_s=10)
    else:
        seal_all(h)
    assert rotated_output(h.folder / "out" / "t") == {"n1.log": b"".join(lines)}


KILL_POINTS = (
    "before the intent is saved",
    "after the intent is saved, before the rename",
    "after the rename, before the successor exists",
    "after the successor is opened, before its first byte",
    "after unsaved bytes reached the successor",
)


@pytest.mark.parametrize("where", KILL_POINTS)
def test_kill_during_a_cut_loses_and_doubles_nothing(tmp_path: Path, where: str) -> None:
    lines = numbered_lines("k", 0, 30, LINE)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    h.write(lines[0:3], T0)
    h.write(lines[3:6], T0 + 1)
    h.save()
    h.write(lines[6:8], T0 + 2)  # 800 bytes, the last 200 past the checkpoint
    live = tmp_path / "out" / "t" / "n1.log"
    if where.startswith(("before the intent", "after the intent")):
        arm_kill(h, before_save=where.startswith("before"))
        with pytest.raises(Killed):
            h.write(lines[8:11], T0 + 4)  # 1100 bytes: cut first
    elif where.startswith(("after the rename", "after the successor")):
        h.rotation.before_write(str(live), T0 + 4, 300)  # the cut alone, no append
        assert live.read_bytes() == b""
        if "exists" in where:
            live.unlink()
    else:
        h.write(lines[8:11], T0 + 4)
        h.write(lines[11:14], T0 + 5)
    h = h.restart()
    try:
        folder = tmp_path / "out" / "t"
        cut = [] if where.startswith("before") else [stamp_name("n1.log", T0 + 4)]
        assert rotated_names(folder) == cut, where
        if cut:
            assert (folder / cut[0]).read_bytes() == b"".join(lines[:8]), where
            assert not live.exists() or live.read_bytes() == b"", where
        finish_and_check(h, lines, T0 + 10)
    finally:
        h.close()


def test_kill_mid_compression_leaves_no_archive_under_its_final_name(tmp_path: Path) -> None:
    lines = numbered_lines("z", 0, 30, LINE)
    rules = RotateConfig(max_bytes=1000, compress=Compression.GZIP)
    h = OutputHarness(tmp_path, rules)
    for i, block in enumerate(blocks_of(lines[:12], 3)):
        h.write(block, T0 + i)
    h.save()
    folder = tmp_path / "out" / "t"
    (base,) = rotated_names(folder)
    whole = gzip.compress((folder / base).read_bytes())
    (folder / f"{base}.gz.tmp").write_bytes(whole[: len(whole) // 2])  # what the kill left
    assert not (folder / f"{base}.gz").exists()
    h = h.restart(start_worker=True)
    try:
        wait_until(lambda: h.rotation.pending() == 0, timeout_s=10)
        assert output_names(folder) == [
            "n1.log",
            base + ".gz",
            base + ".manifest.json",
        ]
        finish_and_check(h, lines, T0 + 20)
    finally:
        h.close()


@pytest.mark.parametrize(
    "stage", ["archive renamed, plain file not removed", "manifest written, archive not renamed"]
)
def test_kill_late_in_sealing_keeps_one_copy(tmp_path: Path, stage: str) -> None:
    lines = numbered_lines("s", 0, 30, LINE)
    rules = RotateConfig(max_bytes=1000, compress=Compression.GZIP)
    h = OutputHarness(tmp_path, rules)
    for i, block in enumerate(blocks_of(lines[:12], 3)):
        h.write(block, T0 + i)
    h.save()  # this checkpoint holds the seal job
    folder = tmp_path / "out" / "t"
    (base,) = rotated_names(folder)
    plain = (folder / base).read_bytes()
    seal_all(h)
    (folder / base).write_bytes(plain)
    if stage.startswith("manifest"):
        os.rename(folder / f"{base}.gz", folder / f"{base}.gz.tmp")
    h = h.restart(start_worker=True)
    try:
        wait_until(lambda: h.rotation.pending() == 0, timeout_s=10)
        assert not (folder / base).exists()
        assert gzip.decompress((folder / f"{base}.gz").read_bytes()) == plain
        finish_and_check(h, lines, T0 + 20)
    finally:
        h.close()


def test_stop_mid_compression_resumes_after_restart(tmp_path: Path) -> None:
    """A stop abandons the job in hand; the checkpoint still holds it."""
    lines = numbered_lines("p", 0, 30, LINE)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000, compress=Compression.GZIP))
    for i, block in enumerate(blocks_of(lines[:12], 3)):
        h.write(block, T0 + i)
    h.save()
    folder = tmp_path / "out" / "t"
    (base,) = rotated_names(folder)

    def abort() -> None:
        raise Stopped

    with pytest.raises(Stopped):
        h.rotation.seal_one(str(folder / base), T0, abort)
    assert not (folder / f"{base}.gz.tmp").exists() and not (folder / f"{base}.gz").exists()
    h = h.restart(start_worker=True)
    try:
        wait_until(lambda: h.rotation.pending() == 0, timeout_s=10)
        assert (folder / f"{base}.gz").exists() and not (folder / base).exists()
        finish_and_check(h, lines, T0 + 20)
    finally:
        h.close()


# -- end to end: kill -9 twenty times --------------------------------------------------


def checkpoint_intents(state_dir: Path) -> list[dict[str, object]]:
    try:
        state = json.loads((state_dir / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return list(state.get("rotations", []))


def complete_output(folder: Path, expected: bytes) -> bool:
    if not folder.is_dir():
        return False
    try:
        out = rotated_output(folder)
    except (AssertionError, OSError, EOFError, gzip.BadGzipFile):
        return False  # caught between two steps of a seal
    return sum(len(v) for v in out.values()) >= len(expected)


def wait_for_cut(folder: Path, known: set[Path], timeout_s: float) -> None:
    """Return as soon as a rotated file that is not in `known` appears (or on timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if folder.is_dir() and any(
            p not in known and parse_rotated(p.name) is not None for p in folder.iterdir()
        ):
            return
        time.sleep(0.002)


def test_reload_changes_rotation_without_losing_lines_or_threads(tmp_path: Path) -> None:
    source, producer, collector = tailing_pair(
        tmp_path,
        {
            "path": str(tmp_path / "out" / "{topic}" / "{node}.log"),
            "rotate": {"max_bytes": "200KB", "compress": "gzip"},
        },
    )
    folder = tmp_path / "out" / "app"
    lines = numbered_lines("l", 0, 11000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:5000])
        wait_until(lambda: complete_output(folder, b"".join(lines[:5000])), timeout_s=30)
        threads = len(os.listdir(f"/proc/{collector.pid}/task"))
        for i, max_bytes in enumerate(["100KB", "300KB", "150KB"]):
            config = yaml.safe_load(collector.config.read_text())
            config["output"]["rotate"]["max_bytes"] = max_bytes
            collector.config.write_text(yaml.safe_dump(config))
            collector.signal(signal.SIGHUP)
            wait_until(
                lambda n=i + 1: collector.output().count("INFO MainThread: reloaded") == n, 30
            )
            part = lines[: 5000 + 2000 * (i + 1)]
            append_lines(source, lines[len(part) - 2000 : len(part)])
            wait_until(lambda p=part: complete_output(folder, b"".join(p)), timeout_s=30)
        # The rotation worker of each config stopped with it: no thread piles up.
        assert len(os.listdir(f"/proc/{collector.pid}/task")) == threads
        wait_until(lambda: rotated_names(folder, "") == [], timeout_s=30)
        assert collector.stop() == 0
        assert rotated_output(folder) == {"web-01.log": b"".join(lines)}
        assert zaggd_verify(tmp_path / "out").returncode == 0
    finally:
        stop_all(collector, producer)


@pytest.mark.slow
def test_kill_9_twenty_times_while_rotating_every_200kb(tmp_path: Path) -> None:
    rng = random.Random(5)
    source, producer, collector = tailing_pair(
        tmp_path,
        {
            "path": str(tmp_path / "out" / "{topic}" / "{node}.log"),
            "rotate": {"max_bytes": "200KB", "compress": "gzip"},
        },
    )
    out = tmp_path / "out"
    folder = out / "app"
    written: list[bytes] = []
    stop_appending = threading.Event()

    def append_steadily() -> None:
        # About 1 MB/s: five cuts a second, so kills land in cuts and seals.
        for n in range(100_000):
            if stop_appending.is_set():
                return
            chunk = numbered_lines("w", n * 100, 100, LINE)
            with open(source, "ab") as f:
                f.write(b"".join(chunk))
            written.extend(chunk)
            time.sleep(0.01)

    source.write_bytes(b"".join(numbered_lines("b", 0, 5000, LINE)))
    written.extend(numbered_lines("b", 0, 5000, LINE))
    appender = threading.Thread(target=append_steadily, name="test-appender")
    seen = {"cut under way": 0, "seal pending": 0, "temp archive": 0}
    try:
        producer.start()
        appender.start()
        for i in range(20):
            collector.start()
            if i % 2:
                # Right after a cut shows up on disk: mid-seal, or before the next checkpoint.
                before = set(folder.iterdir()) if folder.is_dir() else set()
                wait_for_cut(folder, before, timeout_s=3.0)
            else:
                time.sleep(rng.uniform(0.05, 0.6))
            collector.kill()
            intents = checkpoint_intents(tmp_path / "state-c1")
            seen["cut under way"] += any(i.get("op") == "rotate" for i in intents)
            seen["seal pending"] += any(i.get("op") == "seal" for i in intents)
            seen["temp archive"] += any(out.rglob("*.gz.tmp"))
        stop_appending.set()
        appender.join(timeout=10)
        expected = b"".join(written)
        assert source.read_bytes() == expected
        collector.start()
        wait_until(lambda: complete_output(folder, expected), timeout_s=60, interval_s=0.5)
        wait_until(lambda: rotated_names(folder, "") == [], timeout_s=30)
        assert collector.stop() == 0
        got = rotated_output(folder)
        assert list(got) == ["web-01.log"]
        lines = got["web-01.log"].splitlines(keepends=True)
        assert len(lines) == len(written)
        assert len(set(lines)) == len(lines)
        assert got["web-01.log"] == expected
        assert len(rotated_names(folder, ".gz")) >= 20
        verify = zaggd_verify(out)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        print(f"kills: 20; checkpoint or disk at the kill: {seen}")
        assert seen["cut under way"] + seen["temp archive"] > 0, (
            f"no kill hit a cut or a seal: {seen}"
        )
    finally:
        stop_appending.set()
        if appender.is_alive():
            appender.join(timeout=10)
        stop_all(collector, producer)
