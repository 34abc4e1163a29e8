"""A producer's offset store lost (deleted, moved aside) never doubles lines at collectors.

The stream journal (`state_dir/streams.jsonl`) keeps the instance id and each
stream's identity from its birth. A producer that starts without its offset
store finds every file again by identity there, under the same stream ids, and
reads each from its start: collectors, expecting each stream where it was,
drop what they already have. Only a whole state_dir lost makes every file new
again, and the producer says so once, loudly.
"""

from __future__ import annotations

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
    (state_dir(pair) / "offsets.json").unlink()
    pair.producer.kill()
    pair.send(lines[200:300], wait=False)  # written while the producer is down
    pair.producer.start()
    pair.send(lines[300:], wait=False)
    assert_each_line_once(pair)
    log = last_start(pair)
    assert MISSING.format(n=2) in log
    assert pair.producer.status()["instance"] == instance
    assert pair.producer.stop() == 0 and pair.collector.stop() == 0


def test_damaged_offset_store_moved_aside_as_told_doubles_nothing(pair: Pair) -> None:
    lines = numbered_lines("b", 0, 300, 80)
    pair.send(lines[:200])
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
