"""StreamManager over real files: the events of a file's life, one at a time.

Each test drives the manager as discovery would (paths, rescans) and checks,
through a collector's rules (tests/producer/harness.py), which numbered lines
were delivered: exactly once each, or counted as lost.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.producer.harness import Harness, line
from zaggd.config import StartAt
from zaggd.identity import FINGERPRINT_BYTES
from zaggd.producer.streams import Announce, Retire
from zaggd.producer.tailer import Block, Tailer

WIDTH = 40  # bytes per numbered line


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def streams_of(h: Harness) -> list[str]:
    return [s for s, v in h.sink.streams.items() if v.lines]


def test_new_file_is_read_from_zero_and_followed_as_it_grows(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    h.append("a.log", range(10, 25))
    h.pump("a.log")
    assert h.sink.delivered == list(range(25))
    assert h.lost() == 0


def test_partial_last_line_waits_for_its_newline(h: Harness) -> None:
    h.append("a.log", range(3))
    with open(h.path("a.log"), "ab") as f:
        f.write(line(3)[:10])
    h.rescan()
    assert h.sink.delivered == [0, 1, 2]
    with open(h.path("a.log"), "ab") as f:
        f.write(line(3)[10:])
    h.pump("a.log")
    assert h.sink.delivered == [0, 1, 2, 3]


def test_rename_rotation_reads_the_old_file_to_its_very_end(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    h.append("a.log", range(10, 15))  # not read yet when the rename comes
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log.1", range(15, 20))  # the app writes on until it reopens
    h.append("a.log", range(20, 30))
    h.pump("a.log", "a.log.1")
    h.append("a.log.1", range(30, 32))  # a rotated file still growing is still read
    h.pump("a.log.1")
    assert sorted(h.sink.delivered) == list(range(32))
    assert len(h.sink.delivered) == 32
    old, new = (h.sink.streams[s].lines for s in streams_of(h))
    assert old == [*range(20), 30, 31] and new == list(range(20, 30))
    assert h.counters.get("streams_rotated") == 1
    assert h.lost() == 0


def test_rename_seen_in_either_event_order(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    os.rename(h.path("a.log"), h.path("a.log-20261127"))
    h.append("a.log", range(5, 8))
    h.append("a.log-20261127", range(8, 9))
    h.pump("a.log-20261127")  # the new name first, then the old one
    h.pump("a.log")
    assert sorted(h.sink.delivered) == list(range(9))
    assert len(h.sink.delivered) == 9


def test_deleted_file_is_read_to_its_end_then_closed_and_retired(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    h.append("a.log", range(5, 9))
    os.unlink(h.path("a.log"))
    h.pump("a.log")
    assert h.sink.delivered == list(range(9))
    h.housekeep(later_s=2.0)
    assert h.manager.open_handles() == 0
    assert h.lost() == 0
    (sid,) = streams_of(h)
    assert sid not in h.sink.retired  # still announced, so collectors learn its end
    h.housekeep(later_s=h.manager.retire_after_s + 1)
    assert sid in h.sink.retired
    assert h.manager.tailers == {}


def test_deleted_file_ending_in_a_partial_line_is_not_held_open(h: Harness) -> None:
    h.append("a.log", range(2))
    with open(h.path("a.log"), "ab") as f:
        f.write(b"no newline")
    h.rescan()
    os.unlink(h.path("a.log"))
    h.pump("a.log")
    h.housekeep(later_s=2.0)
    assert h.manager.open_handles() == 0
    assert h.sink.delivered == [0, 1]
    assert h.lost() == len(b"no newline")


def test_deleted_and_recreated_file_is_a_new_stream_from_zero(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    os.unlink(h.path("a.log"))
    h.append("a.log", range(5, 8))  # on ext4 this usually takes the freed inode
    h.pump("a.log")
    h.settle()
    assert sorted(h.sink.delivered) == list(range(8))
    assert len(streams_of(h)) == 2
    assert h.lost() == 0


def test_inode_reused_while_the_handle_was_closed_is_a_new_stream(tmp_path: Path) -> None:
    h = Harness(tmp_path, close_idle_s=0.0)
    try:
        h.append("a.log", range(5))
        h.rescan()
        h.housekeep()
        assert h.manager.open_handles() == 0
        old_inode = h.path("a.log").stat().st_ino
        os.unlink(h.path("a.log"))  # no event seen for it
        h.append("b.log", range(5, 12))
        if h.path("b.log").stat().st_ino != old_inode:
            pytest.skip("the file system did not reuse the inode")
        h.pump("b.log")
        h.settle()
        assert sorted(h.sink.delivered) == list(range(12))
        assert h.sink.streams[streams_of(h)[1]].lines == list(range(5, 12))
        assert h.lost() == 0
    finally:
        h.close()


def test_inode_reused_at_the_same_path_while_closed_is_a_new_stream(tmp_path: Path) -> None:
    h = Harness(tmp_path, close_idle_s=0.0)
    try:
        h.append("a.log", range(5))
        h.rescan()
        h.housekeep()
        old_inode = h.path("a.log").stat().st_ino
        os.unlink(h.path("a.log"))
        h.append("a.log", range(5, 12))  # longer than before, other first bytes
        if h.path("a.log").stat().st_ino != old_inode:
            pytest.skip("the file system did not reuse the inode")
        h.rescan()  # no events at all: only the periodic rescan sees it
        h.settle()
        assert sorted(h.sink.delivered) == list(range(12))
        assert len(streams_of(h)) == 2
    finally:
        h.close()


def test_file_shorter_than_the_fingerprint_is_read_and_followed(h: Harness) -> None:
    h.path("a.log").write_bytes(b"L0000000\n")  # 9 bytes
    h.path("b.log").write_bytes(b"L0000000\n")  # same bytes, another file
    h.path("c.log").write_bytes(b"")  # empty
    h.rescan()
    assert len(h.manager.tailers) == 3  # no collision made two files one stream
    h.path("a.log").write_bytes(b"L0000000\nL0000001\n")
    h.append("c.log", [2])
    h.pump("a.log", "c.log")
    assert sorted(h.sink.delivered) == [0, 0, 1, 2]
    tailer = h.manager.tailers[h.manager.live[str(h.path("a.log"))]]
    assert tailer.file_id.fingerprint.size == 18  # grew with the file
    # Rotated and restarted: found again by inode and its (short) first bytes.
    h.save()
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log.1", [3])
    h.kill_and_restart()
    assert sorted(h.sink.delivered) == [0, 0, 1, 2, 3]


def test_truncated_and_regrown_past_its_old_size_between_two_looks(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    os.truncate(h.path("a.log"), 0)
    h.append("a.log", range(10, 40))  # longer than before: only the first bytes tell
    h.pump("a.log")
    assert sorted(h.sink.delivered) == list(range(40))
    assert len(streams_of(h)) == 2
    assert h.counters.get("streams_truncated") == 1
    assert h.lost() == 0


def test_copytruncate_reads_the_unread_rest_from_the_copy(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    h.append("a.log", range(10, 15))  # unread when logrotate copies
    shutil.copyfile(h.path("a.log"), h.path("a.log.1"))
    os.truncate(h.path("a.log"), 0)
    h.append("a.log", range(15, 20))
    h.pump("a.log", "a.log.1")
    assert sorted(h.sink.delivered) == list(range(20))
    assert len(h.sink.delivered) == 20
    assert h.lost() == 0
    # Replays of the old stream now come from the copy.
    old = h.manager.tailers[streams_of(h)[0]]
    assert old.path == str(h.path("a.log.1"))


def test_copytruncate_race_is_counted_with_its_range(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    shutil.copyfile(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log", range(10, 12))  # after the copy, before the truncation
    h.tell("a.log")  # seen, not yet read
    os.truncate(h.path("a.log"), 0)
    h.append("a.log", range(12, 14))
    h.pump("a.log")
    assert sorted(h.sink.delivered) == [*range(10), 12, 13]
    assert h.lost() == 2 * WIDTH


def test_truncation_without_copy_counts_what_was_seen_and_unread(h: Harness) -> None:
    h.append("a.log", range(4))
    h.rescan()
    h.append("a.log", range(4, 7))
    h.tell("a.log")
    os.truncate(h.path("a.log"), 0)
    h.append("a.log", [7])
    h.pump("a.log")
    assert sorted(h.sink.delivered) == [0, 1, 2, 3, 7]
    assert h.lost() == 3 * WIDTH


def test_restart_resumes_a_file_renamed_while_stopped(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    h.save()
    h.append("a.log", range(10, 13))
    h.read_all()  # read and sent, but not in the saved offsets
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log.1", range(13, 15))
    h.append("a.log", range(15, 18))
    h.kill_and_restart()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(18))
    assert len(h.sink.delivered) == 18  # resent ranges were duplicates, dropped
    assert h.lost() == 0


def test_restart_reads_rotated_files_it_never_saw(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    h.save()
    # Two rotations while stopped: B lived and was rotated away entirely.
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log", range(5, 10))
    os.rename(h.path("a.log.1"), h.path("a.log.2"))
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log", range(10, 15))
    h.kill_and_restart()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(15))
    assert len(h.sink.delivered) == 15


def restart_rotating_while_it_starts(h: Harness, rotate: Callable[[], None]) -> None:
    """B, created while stopped, is at a.log when the restore lists the folder;
    `rotate` moves it away before the first scan. Every line arrives once."""
    h.append("a.log", range(5))
    h.rescan()
    h.save()
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log", range(5, 10))
    h.kill_and_restart(after_restore=rotate)
    h.settle()
    assert sorted(h.sink.delivered) == list(range(15))
    assert len(h.sink.delivered) == 15
    assert h.lost() == 0 and h.sink.gone_bytes == 0


def test_restart_reads_a_file_rotated_away_while_it_started(h: Harness) -> None:
    def rotate() -> None:
        os.rename(h.path("a.log.1"), h.path("a.log.2"))
        os.rename(h.path("a.log"), h.path("a.log.1"))
        h.append("a.log", range(10, 15))

    restart_rotating_while_it_starts(h, rotate)


def test_restart_reads_a_file_compressed_away_while_it_started(h: Harness) -> None:
    def rotate() -> None:
        # delaycompress, twice: B ends in a.log.2.gz, and the scan finds its plain
        # original still beside it (logrotate deletes it last).
        os.rename(h.path("a.log.1"), h.path("a.log.3"))
        os.rename(h.path("a.log"), h.path("a.log.2"))
        h.path("a.log.2.gz").write_bytes(gzip.compress(h.path("a.log.2").read_bytes()))
        h.append("a.log", range(10, 15))

    restart_rotating_while_it_starts(h, rotate)


def test_restart_with_blocks_lost_in_flight_repairs_them_by_replay(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    h.sink.hold = True
    h.append("a.log", range(5, 12))
    h.pump("a.log")
    h.save()  # the store says read to 12, the collector has 5
    os.rename(h.path("a.log"), h.path("a.log.1"))
    h.append("a.log", range(12, 14))
    h.kill_and_restart()
    h.sink.hold = False
    h.sink.release()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(14))
    assert len(h.sink.delivered) == 14
    assert h.sink.gone_bytes == 0


def test_restart_finds_a_file_compressed_while_stopped(h: Harness) -> None:
    h.append("a.log", range(5))
    h.rescan()
    h.sink.hold = True
    h.append("a.log", range(5, 12))
    h.pump("a.log")
    h.save()
    h.append("a.log", range(12, 20))  # never read before the kill
    # delaycompress while stopped: a.log -> a.log.1 -> a.log.2 -> a.log.2.gz
    os.rename(h.path("a.log"), h.path("a.log.2"))
    h.path("a.log.2.gz").write_bytes(gzip.compress(h.path("a.log.2").read_bytes()))
    os.unlink(h.path("a.log.2"))
    h.append("a.log", range(20, 22))
    h.kill_and_restart()
    h.sink.hold = False
    h.sink.release()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(22))
    assert len(h.sink.delivered) == 22
    assert h.lost() == 0 and h.sink.gone_bytes == 0


def test_restart_reads_a_compressed_rotation_it_never_saw(h: Harness) -> None:
    h.append("a.log", range(3))
    h.rescan()
    h.save()
    h.kill_and_restart()
    h.save()
    os.rename(h.path("a.log"), h.path("a.log.2"))  # the one we know, still plain
    h.append("a.log", range(3, 9))  # created and compressed while stopped
    h.path("a.log.1.gz").write_bytes(gzip.compress(h.path("a.log").read_bytes()))
    os.unlink(h.path("a.log"))
    h.append("a.log", range(9, 11))
    h.kill_and_restart()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(11))
    assert len(h.sink.delivered) == 11


def test_restart_after_copytruncate_while_stopped(h: Harness) -> None:
    h.append("a.log", range(6))
    h.rescan()
    h.save()
    h.append("a.log", range(6, 9))
    shutil.copyfile(h.path("a.log"), h.path("a.log.1"))
    os.truncate(h.path("a.log"), 0)
    h.append("a.log", range(9, 11))
    h.kill_and_restart()
    h.settle()
    assert sorted(h.sink.delivered) == list(range(11))
    assert len(h.sink.delivered) == 11
    assert h.lost() == 0


def test_restart_announces_a_stream_gone_while_stopped_so_its_loss_is_counted(
    h: Harness,
) -> None:
    h.append("a.log", range(6))
    h.rescan()
    h.append("a.log", range(6, 8))
    h.tell("a.log")  # seen to be 8 lines long, read to 6
    h.manager.ready.clear()
    h.save()
    os.unlink(h.path("a.log"))
    h.kill_and_restart()
    # The collector, told the stream's end, asks for the rest and hears "gone".
    assert h.sink.gone_bytes == 2 * WIDTH
    assert h.lost() == 0
    h.housekeep(later_s=h.manager.retire_after_s + 1)
    assert h.manager.tailers == {}


def test_start_at_end_applies_to_files_found_at_the_first_start_only(tmp_path: Path) -> None:
    h = Harness(tmp_path, start_at=StartAt.END)
    try:
        h.append("a.log", range(10))
        with open(h.path("a.log"), "ab") as f:
            f.write(b"L0000010 partial")  # a partial line is not skipped
        h.rescan()
        assert h.sink.delivered == []
        # The collector was told where the stream begins (an empty first block): no gap.
        (view,) = h.sink.streams.values()
        assert view.expected == 10 * WIDTH and h.sink.gone_bytes == 0
        with open(h.path("a.log"), "ab") as f:
            f.write(b" line\n")
        h.append("a.log", [11])
        h.append("b.log", range(12, 15))  # appears later: from 0
        h.pump("a.log", "b.log")
        assert sorted(h.sink.delivered) == list(range(10, 15))
        h.save()
        h.append("c.log", range(15, 17))  # appears while stopped: from 0
        h.kill_and_restart()
        h.settle()
        assert sorted(h.sink.delivered) == list(range(10, 17))
    finally:
        h.close()


def test_start_at_beginning_reads_existing_files_whole(h: Harness) -> None:
    h.append("a.log", range(10))
    h.rescan()
    assert h.sink.delivered == list(range(10))


def test_idle_handles_are_closed_and_reopened_when_the_file_grows(tmp_path: Path) -> None:
    h = Harness(tmp_path, close_idle_s=0.0)
    try:
        for i in range(20):
            h.append(f"f{i}.log", [i])
        h.rescan()
        h.housekeep()
        assert h.manager.open_handles() == 0
        h.append("f3.log", [100])
        h.pump("f3.log")
        assert h.manager.open_handles() == 1
        h.housekeep()
        assert h.manager.open_handles() == 0
        h.append("f4.log", [101])
        h.rescan()  # growth that no event told of
        assert sorted(h.sink.delivered) == [*range(20), 100, 101]
    finally:
        h.close()


def test_open_handles_stay_under_max_open_files(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_open_files=16)
    try:
        for i in range(60):
            h.append(f"f{i:02d}.log", range(i * 3, i * 3 + 3))
        h.manager.rescan()
        h.save()  # as the tailer thread does before it reads new streams
        peak = h.manager.open_handles()
        for _ in range(100):
            if not h.manager.ready:
                break
            h.manager.read_round(4096)
            peak = max(peak, h.manager.open_handles())
        assert peak <= 16
        assert sorted(h.sink.delivered) == list(range(180))
        assert len(os.listdir(f"/proc/{os.getpid()}/fd")) < 16 + 50
    finally:
        h.close()


def test_deleted_files_forced_closed_at_max_open_files_are_counted(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_open_files=16)
    try:
        for i in range(16):
            h.append(f"f{i:02d}.log", range(i * 2, i * 2 + 2))
            h.tell(f"f{i:02d}.log")  # opened, not read yet
        for i in range(16):
            os.unlink(h.path(f"f{i:02d}.log"))
        h.append("g.log", [100])
        h.tell("g.log")  # needs a handle: one deleted file must give way
        assert h.manager.open_handles() <= 16
        h.settle()
        assert len(h.sink.delivered) == 31
        assert h.lost() == 2 * WIDTH
    finally:
        h.close()


def test_long_rotated_history_is_followed_through_renames(h: Harness) -> None:
    n = 0
    for rotation in range(6):
        h.append("a.log", range(n, n + 4))
        n += 4
        h.pump("a.log")
        for k in range(rotation, 0, -1):  # a.log.k -> a.log.k+1, as logrotate shifts
            os.rename(h.path(f"a.log.{k}"), h.path(f"a.log.{k + 1}"))
            h.tell(f"a.log.{k}", f"a.log.{k + 1}")
        os.rename(h.path("a.log"), h.path("a.log.1"))
        h.append("a.log.1", [n])
        n += 1
        h.pump("a.log", "a.log.1")
    h.settle()
    assert sorted(h.sink.delivered) == list(range(n))
    assert len(h.sink.delivered) == n


def test_announce_precedes_blocks_and_retire_ends_a_stream(h: Harness) -> None:
    seen: list[str] = []
    emit = h.manager.emit

    def record(item: Block | Announce | Retire, tailer: Tailer | None) -> None:
        seen.append(type(item).__name__)
        emit(item, tailer)

    h.manager.emit = record
    h.append("a.log", range(2))
    h.rescan()
    os.unlink(h.path("a.log"))
    h.pump("a.log")
    h.housekeep(later_s=h.manager.retire_after_s + 1)
    h.housekeep(later_s=h.manager.retire_after_s + 2)
    assert seen == ["Announce", "Block", "Retire"]


def test_fingerprint_covers_at_most_its_size(h: Harness) -> None:
    h.append("a.log", range(100))
    h.rescan()
    (tailer,) = h.manager.tailers.values()
    assert tailer.file_id.fingerprint.size == FINGERPRINT_BYTES
