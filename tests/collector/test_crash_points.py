"""Crash points of output rotation and of the live index, one by one.

Each test drives the subscriber's write path on real files (OutputHarness),
leaves on disk exactly what a kill -9 at one point leaves, restarts, writes
what the checkpoint (or the output folder) says is missing, and compares the
output with what was written: every line once, in order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.collector.test_rotation import LINE, T0, Killed, seal_all, write_from
from tests.helpers import OutputHarness, numbered_lines, rotated_output
from zaggd.collector.liveindex import empty_index, read_index, write_index
from zaggd.collector.manifest import read_manifest, rotated_base
from zaggd.config import Compression, RotateConfig


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


# -- the live index: every crash point of a cut, with the checkpoint kept or lost ------

STEPS = (
    "intent saved, its index not written",
    "intent and index saved, not renamed",
    "renamed, index not handed over",
    "rotated file's index written, live index not reset",
    "live index reset, successor not opened",
    "unsaved bytes in the successor",
    "a checkpoint after the cut, then unsaved bytes",
)


def assert_indexes_true(folder: Path) -> None:
    """Each index describes a prefix of its file: size within it, same hash."""
    for path in folder.glob("*.index.json"):
        described = folder / path.name[: -len(".index.json")]
        index = read_index(str(described))
        assert index is not None
        assert index.file == described.name, path.name
        data = described.read_bytes() if described.exists() else b""
        assert index.size <= len(data), path.name
        assert hashlib.sha256(data[: index.size]).hexdigest() == index.sha256, path.name
        assert index.lines == data[: index.size].count(b"\n"), path.name


def kill_at_intent(h: OutputHarness, with_index: bool) -> None:
    def checkpoint() -> None:
        h.save_checkpoint()
        if with_index:
            h.save_indexes()
        raise Killed

    h.rotation.checkpoint = checkpoint


def crash_during_cut(h: OutputHarness, lines: list[bytes], step: str) -> None:
    """Leave on disk what kill -9 at `step` of the cut before lines[8:11] leaves."""
    live = h.folder / "out" / "t" / "n1.log"
    base = rotated_base(str(live), round((T0 + 4) * 1_000_000))
    if step.startswith("unsaved"):
        h.write(lines[8:11], T0 + 4)
        h.write(lines[11:14], T0 + 5)
        return
    if step.startswith("a checkpoint"):
        h.write(lines[8:11], T0 + 4)
        h.save()
        h.write(lines[11:14], T0 + 5)
        return
    kill_at_intent(h, with_index=not step.startswith("intent saved"))
    with pytest.raises(Killed):
        h.write(lines[8:11], T0 + 4)
    if "not renamed" in step or step.startswith("intent saved"):
        return
    os.rename(live, base)
    if step.startswith("renamed"):
        return
    index = read_index(str(live))
    assert index is not None and index.size == 800
    write_index(base, replace(index, file=os.path.basename(base)))
    if step.startswith("rotated"):
        return
    write_index(str(live), empty_index(str(live), os.path.basename(base)))


@pytest.mark.parametrize("checkpoint", ["kept", "lost"])
@pytest.mark.parametrize("step", STEPS)
def test_kill_at_each_step_of_a_cut_loses_and_doubles_nothing(
    tmp_path: Path, step: str, checkpoint: str
) -> None:
    lines = numbered_lines("c", 0, 30, LINE)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000))
    h.write(lines[0:3], T0)
    h.write(lines[3:6], T0 + 1)
    h.save()
    h.write(lines[6:8], T0 + 2)  # 800 bytes, the last 200 past the checkpoint
    crash_during_cut(h, lines, step)
    if checkpoint == "lost":
        (tmp_path / "state" / "checkpoint.json").unlink()
    h = h.restart()
    try:
        folder = tmp_path / "out" / "t"
        assert_indexes_true(folder)
        finish_and_check(h, lines, T0 + 10)
        assert_indexes_true(folder)
        assert list(folder.glob("*.*Z.index.json")) == []  # every rotated file sealed
    finally:
        h.close()


@pytest.mark.parametrize("checkpoint", ["kept", "lost"])
@pytest.mark.parametrize(
    "stage", ["manifest written", "archive renamed", "rotated file's index removed"]
)
def test_kill_late_in_a_seal_keeps_one_copy_and_its_ranges(
    tmp_path: Path, stage: str, checkpoint: str
) -> None:
    lines = numbered_lines("s", 0, 30, LINE)
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000, compress=Compression.GZIP))
    for i in range(4):
        h.write(lines[3 * i : 3 * i + 3], T0 + i)
    h.save()  # holds the seal job
    folder = tmp_path / "out" / "t"
    (base,) = [p for p in folder.iterdir() if p.name.endswith("Z")]
    plain, index = base.read_bytes(), (folder / f"{base.name}.index.json").read_bytes()
    seal_all(h)
    # What the seal had not undone yet when it was killed:
    base.write_bytes(plain)
    if stage != "rotated file's index removed":
        (folder / f"{base.name}.index.json").write_bytes(index)
    if stage == "manifest written":
        os.rename(folder / f"{base.name}.gz", folder / f"{base.name}.gz.tmp")
    if checkpoint == "lost":
        (tmp_path / "state" / "checkpoint.json").unlink()
    h = h.restart()
    try:
        seal_all(h)
        assert not base.exists() and not (folder / f"{base.name}.index.json").exists()
        assert gzip.decompress((folder / f"{base.name}.gz").read_bytes()) == plain
        finish_and_check(h, lines, T0 + 20)
    finally:
        h.close()


@pytest.mark.parametrize("checkpoint", ["kept", "lost"])
def test_kill_between_checkpoint_and_index_checkpoint_wins(tmp_path: Path, checkpoint: str) -> None:
    """The index is written after the checkpoint: killed between the two, the index
    lags. With the checkpoint, it wins and the index is brought up to it; without it,
    the lagging index is still true, and what came after is written once more."""
    lines = numbered_lines("i", 0, 20, LINE)
    h = OutputHarness(tmp_path, RotateConfig())
    h.write(lines[0:3], T0)
    h.save()
    h.write(lines[3:6], T0 + 1)
    h.save_checkpoint()  # killed before the index followed
    h.write(lines[6:8], T0 + 2)
    live = tmp_path / "out" / "t" / "n1.log"
    assert read_index(str(live)).size == 300  # type: ignore[union-attr]
    if checkpoint == "lost":
        (tmp_path / "state" / "checkpoint.json").unlink()
    h = h.restart()
    try:
        kept = 600 if checkpoint == "kept" else 300
        assert live.stat().st_size == kept
        assert h.offsets == {"n1/s1": kept}
        assert_indexes_true(live.parent)  # behind, but true of what it covers
        h.save()  # the checkpoint thread brings it up, a bounded amount at a time
        assert read_index(str(live)).size == kept  # type: ignore[union-attr]
        finish_and_check(h, lines, T0 + 10)
        assert_indexes_true(live.parent)
    finally:
        h.close()
