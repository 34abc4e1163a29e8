"""A producer's offset store lost (deleted, moved aside) never doubles lines at collectors.

The stream journal (`state_dir/streams.jsonl`) keeps the instance id and each
stream's identity from its birth. A producer that starts without its offset
store finds every file again by identity there, under the same stream ids, and
reads each from its start: collectors, expecting each stream where it was,
drop what they already have. Only a whole state_dir lost makes every file new
again, and the producer says so once, loudly.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    Pair,
    numbered_lines,
    read_output_lines,
    run_refused,
    stop_all,
    tailing_pair,
    wait_until,
    write_yaml,
)
from tests.producer.harness import Harness, Sink, line
from zaggd.config import StartAt
from zaggd.producer.journal import COMPACT_MIN_LINES, StreamJournal, load_journal

MISSING = "offset store missing: {n} streams found again by identity in the journal"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """A running producer and collector. The producer saves its offset store only when a
    stream is new and at shutdown: a deleted store stays deleted until the kill."""
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
    )
    data = yaml.safe_load(producer.config.read_text())
    data["state_interval"] = "10m"
    write_yaml(producer.config, data)
    try:
        producer.start()
        collector.start()
        yield Pair(source, producer, collector, tmp_path / "out")
    finally:
        stop_all(collector, producer)


def state_dir(pair: Pair) -> Path:
    return Path(yaml.safe_load(pair.producer.config.read_text())["state_dir"])


def assert_each_line_once(pair: Pair, settle_s: float = 1.0) -> None:
    """Every line sent arrives, and none twice (a late double would show after `settle_s`)."""
    wait_until(lambda: set(read_output_lines(pair.out)) >= set(pair.sent), timeout_s=30)
    time.sleep(settle_s)
    out = read_output_lines(pair.out)
    doubled = len(out) - len(set(out))
    assert doubled == 0, f"{doubled} of {len(pair.sent)} lines written twice"
    assert out == pair.sent


def streams(pair: Pair) -> dict[str, str]:
    """The producer's streams: path -> stream id."""
    return {s["path"]: s["stream"] for s in pair.producer.status()["streams_detail"]}


def last_start(pair: Pair) -> str:
    """The producer's log since its last start."""
    return pair.producer.output().rpartition("--- start ")[2]


def test_offset_store_deleted_then_kill_9_doubles_nothing(pair: Pair) -> None:
    lines = numbered_lines("a", 0, 400, 80)
    instance = pair.producer.status()["instance"]
    pair.send(lines[:100])
    rotated = pair.source.with_name("app.log.1")
    os.rename(pair.source, rotated)  # logrotate: the stream goes on under its new name
    pair.send(lines[100:200])
    before = streams(pair)
    (state_dir(pair) / "offsets.json").unlink()
    pair.producer.kill()
    pair.send(lines[200:300], wait=False)  # written while the producer is down
    pair.producer.start()
    pair.send(lines[300:], wait=False)
    assert_each_line_once(pair)
    log = last_start(pair)
    assert MISSING.format(n=2) in log
    assert pair.producer.status()["instance"] == instance
    assert streams(pair) == before  # the same files under the same stream ids
    assert pair.producer.stop() == 0 and pair.collector.stop() == 0


def test_damaged_offset_store_moved_aside_as_told_doubles_nothing(pair: Pair) -> None:
    lines = numbered_lines("b", 0, 300, 80)
    pair.send(lines[:200])
    before = streams(pair)
    assert pair.producer.stop() == 0
    store = state_dir(pair) / "offsets.json"
    store.write_text('{"kind": "zaggd-producer-offsets", "version": 1, "streams": ')
    code, err = run_refused("producer", pair.producer.config)
    assert code == 78 and len(err.splitlines()) == 1, err
    store.rename(store.with_name("offsets.json.damaged"))  # as the message tells
    pair.send(lines[200:250], wait=False)
    pair.producer.start()
    pair.send(lines[250:], wait=False)
    assert_each_line_once(pair)
    assert MISSING.format(n=1) in last_start(pair)
    assert streams(pair) == before
    # The message says what moving the store aside costs now: a re-read, not a resend.
    assert "the stream journal" in err and "collectors drop what they already have" in err
    assert "write a second time" in err  # and what happens without the journal too
    assert pair.producer.stop() == 0 and pair.collector.stop() == 0


def test_state_dir_removed_says_so_once_loudly(pair: Pair) -> None:
    lines = numbered_lines("c", 0, 200, 80)
    pair.send(lines[:100])
    pair.producer.kill()
    state = state_dir(pair)
    shutil.rmtree(state)
    pair.send(lines[100:], wait=False)
    pair.producer.start()
    # Every line arrives (those read before the loss twice: the documented cost).
    wait_until(lambda: set(read_output_lines(pair.out)) >= set(lines), timeout_s=30)
    log = last_start(pair)
    said = [line for line in log.splitlines() if "no offset store and no stream journal" in line]
    assert len(said) == 1, log[-3000:]
    assert "WARNING" in said[0] and str(state) in said[0]
    assert "sent again from its start" in said[0] and "a second time" in said[0]
    assert pair.producer.stop() == 0 and pair.collector.stop() == 0


# -- the journal under the stream manager: restarts with the offset store gone ---------


class JournalHarness(Harness):
    """A Harness whose saves go to a real stream journal too, as the tailer thread's do;
    `restart_from_journal` is a start without the offset store."""

    def __init__(self, folder: Path, **config: object) -> None:
        super().__init__(folder, **config)
        os.makedirs(self.config.state_dir, exist_ok=True)
        self.journal = StreamJournal(self.config.state_dir, "0123456789abcdef")

    def save(self) -> None:
        self.journal.note(self.manager.records(), self.manager.retired_heads)
        super().save()

    def restart_from_journal(self) -> None:
        """kill -9, the offset store lost: the journal is all there is."""
        found = load_journal(self.journal.path)
        assert found is not None and found.instance == "0123456789abcdef"
        self.saved = found
        self.journal = StreamJournal(self.config.state_dir, found.instance)
        self.kill_and_restart()


@pytest.fixture
def jh(tmp_path: Path) -> Iterator[JournalHarness]:
    harness = JournalHarness(tmp_path)
    yield harness
    harness.close()


def assert_once(h: Harness, count: int) -> None:
    assert sorted(h.sink.delivered) == list(range(count))
    assert len(h.sink.delivered) == count, "lines delivered twice"
    assert h.lost() == 0 and h.sink.gone_bytes == 0


def test_journal_finds_a_file_renamed_while_stopped(jh: JournalHarness) -> None:
    jh.append("a.log", range(10))
    jh.rescan()
    jh.append("a.log", range(10, 13))
    jh.pump("a.log")
    os.rename(jh.path("a.log"), jh.path("a.log.1"))
    jh.append("a.log.1", range(13, 15))
    jh.append("a.log", range(15, 18))
    jh.restart_from_journal()
    jh.settle()
    assert_once(jh, 18)


def test_journal_finds_a_short_file_that_grew_and_reads_what_rotated_away_unseen(
    jh: JournalHarness,
) -> None:
    jh.append("a.log", range(2))  # a fingerprint of 80 bytes, grown by every line
    jh.rescan()
    for n in range(2, 30):
        jh.append("a.log", [n])
        jh.pump("a.log")
    # Two rotations while stopped: the second file lived and was rotated away unseen.
    os.rename(jh.path("a.log"), jh.path("a.log.1"))
    jh.append("a.log", range(30, 35))
    os.rename(jh.path("a.log.1"), jh.path("a.log.2"))
    os.rename(jh.path("a.log"), jh.path("a.log.1"))
    jh.append("a.log", range(35, 40))
    jh.restart_from_journal()
    jh.settle()
    assert_once(jh, 40)


def test_journal_finds_a_copy_made_while_stopped(jh: JournalHarness) -> None:
    jh.append("a.log", range(6))
    jh.rescan()
    jh.append("a.log", range(6, 9))
    shutil.copyfile(jh.path("a.log"), jh.path("a.log.1"))
    os.truncate(jh.path("a.log"), 0)
    jh.append("a.log", range(9, 11))
    jh.restart_from_journal()
    jh.settle()
    assert_once(jh, 11)


def test_journal_finds_a_file_compressed_while_stopped(jh: JournalHarness) -> None:
    jh.append("a.log", range(12))
    jh.rescan()
    jh.append("a.log", range(12, 20))  # never read before the kill
    os.rename(jh.path("a.log"), jh.path("a.log.2"))
    jh.path("a.log.2.gz").write_bytes(gzip.compress(jh.path("a.log.2").read_bytes()))
    os.unlink(jh.path("a.log.2"))
    jh.append("a.log", range(20, 22))
    jh.restart_from_journal()
    jh.settle()
    assert_once(jh, 22)


def test_journal_knows_retired_streams_so_a_late_copy_is_not_read_again(
    jh: JournalHarness,
) -> None:
    jh.append("a.log", range(40))
    jh.rescan()
    copy = gzip.compress(jh.path("a.log").read_bytes())
    os.unlink(jh.path("a.log"))
    jh.pump("a.log")
    jh.housekeep(later_s=jh.manager.retire_after_s + 1)
    jh.save()  # the stream retired: the journal says so
    assert jh.manager.tailers == {}
    jh.journal.rewrite(jh.manager.records(), jh.manager.retired_heads)  # compacted: it left
    jh.path("a.log.1.gz").write_bytes(copy)  # an old copy, touched after the last save
    later = time.time() + 60
    os.utime(jh.path("a.log.1.gz"), (later, later))
    jh.append("a.log", range(40, 45))
    jh.restart_from_journal()
    jh.settle()
    assert_once(jh, 45)


def test_journal_keeps_the_floor_of_start_at_end(tmp_path: Path) -> None:
    jh = JournalHarness(tmp_path, start_at=StartAt.END)
    try:
        # Longer than a fingerprint: the journal's only line of it is its birth, at offset 0.
        jh.path("a.log").write_bytes(b"".join(line(n) for n in range(100, 130)))
        jh.rescan()
        jh.append("a.log", range(3))
        jh.pump("a.log")
        jh.sink = Sink()  # a collector that never heard of the stream
        jh.restart_from_journal()
        jh.append("a.log", range(3, 5))
        jh.settle()
        assert_once(jh, 5)  # the lines before the floor are still skipped
    finally:
        jh.close()


# -- the journal file ---------------------------------------------------------------


def test_damaged_lines_are_skipped_with_one_warning_a_torn_last_line_quietly(
    jh: JournalHarness, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a.log", "b.log", "c.log"):
        jh.append(name, range(3))
    jh.rescan()
    path = Path(jh.journal.path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4  # the instance, then a line per stream
    lines[1] = b'{"stream": "0011223344556677", "offset": 1e999}\n'
    lines[2] = b"\xff" * 10 + b"\n"
    path.write_bytes(b"".join(lines) + lines[3][:30])  # and a torn last line
    with caplog.at_level(logging.INFO):
        found = load_journal(str(path))
    assert found is not None and found.instance == "0123456789abcdef"
    assert [r.path for r in found.records] == [json.loads(lines[3])["path"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"stream journal {path}: 2 damaged lines skipped "
        "(the first at line 2: offset: not a whole number >= 0 (inf)); "
        "a file only they named is a new stream to collectors, sent to them again"
    ]


def test_journal_is_compacted_retired_streams_leave_it(jh: JournalHarness) -> None:
    for n in range(400):
        jh.append(f"f{n}.log", [n])
        jh.rescan()
        os.unlink(jh.path(f"f{n}.log"))
        jh.pump(f"f{n}.log")
        jh.housekeep(later_s=jh.manager.retire_after_s + 1)
        jh.save()
    held = Path(jh.journal.path).read_bytes().count(b"\n")
    assert held < 2 * COMPACT_MIN_LINES  # 400 births and 400 retirements, compacted
    found = load_journal(jh.journal.path)
    assert found is not None and found.records == ()
    assert len(found.retired) == 400  # their first bytes, so a copy is not taken as new


def test_a_journal_removed_while_running_is_written_whole_again(jh: JournalHarness) -> None:
    jh.append("a.log", range(3))
    jh.rescan()
    os.unlink(jh.journal.path)
    assert jh.journal.missing()
    jh.save()
    found = load_journal(jh.journal.path)
    assert found is not None and [r.path for r in found.records] == [str(jh.path("a.log"))]
