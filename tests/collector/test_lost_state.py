"""A collector's state lost under it: the checkpoint deleted or moved aside before
a kill -9, the whole state folder removed while running, a final checkpoint that
cannot be written. The output folder describes itself (archive manifests and
live indexes), so no line is written twice; real daemons, byte-exact output.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import zmq

from tests.collector.test_forget import (  # noqa: F401 - pub_and_subscriber is a fixture
    FORGET_AFTER_S,
    LIVE,
    RETIRED,
    pub_and_subscriber,
    send_block,
    send_heartbeat,
)
from tests.helpers import (
    Appender,
    Daemon,
    append_lines,
    assert_rotated_exactly,
    collector_config,
    free_port,
    numbered_lines,
    producer_config,
    rotated_caught_up,
    stop_all,
    tailing_pair,
    wait_until,
    zaggd_verify,
)
from zaggd.collector.manifest import read_manifest
from zaggd.collector.subscriber import SubscriberThread

LINE = 80


def rotating_pair(tmp_path: Path, max_bytes: str = "100KB") -> tuple[Path, Daemon, Daemon]:
    return tailing_pair(
        tmp_path,
        {
            "path": str(tmp_path / "out" / "{topic}" / "{node}.log"),
            "rotate": {"max_bytes": max_bytes, "compress": "gzip", "keep": 1000},
        },
    )


@pytest.mark.parametrize("how", ["deleted", "moved aside", "state folder emptied"])
def test_checkpoint_lost_before_kill_9_writes_no_line_twice(tmp_path: Path, how: str) -> None:
    rng = random.Random(6)
    source, producer, collector = rotating_pair(tmp_path)
    state = tmp_path / "state-c1"
    checkpoint = state / "checkpoint.json"
    folder = tmp_path / "out" / "app"
    written = Appender(source, "s", LINE)
    try:
        producer.start()
        for _ in range(3):
            collector.start()
            written.add(4000)
            wait_until(lambda: rotated_caught_up(folder, written.data), timeout_s=30)
            written.add(rng.randrange(500, 2000))  # some in flight at the kill
            time.sleep(rng.uniform(0.0, 0.3))
            if how == "deleted":
                checkpoint.unlink()
            elif how == "moved aside":
                checkpoint.rename(state / "checkpoint.json.old")
            collector.kill()  # within a second: no new checkpoint, or one we take away again
            if how == "state folder emptied":
                shutil.rmtree(state)
            else:
                checkpoint.unlink(missing_ok=True)
            written.add(1000)
        collector.start()
        assert_rotated_exactly(folder, written.data)
        assert collector.status()["counters"]["bytes_lost"] == 0
        assert collector.stop() == 0
        verify = zaggd_verify(tmp_path / "out")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        stop_all(collector, producer)


def test_state_folder_removed_while_running_is_made_again(tmp_path: Path) -> None:
    source, producer, collector = rotating_pair(tmp_path)
    state = tmp_path / "state-c1"
    folder = tmp_path / "out" / "app"
    lines = numbered_lines("r", 0, 9000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:3000])
        wait_until(lambda: rotated_caught_up(folder, b"".join(lines[:3000])), timeout_s=30)
        shutil.rmtree(state)
        append_lines(source, lines[3000:6000])
        wait_until(lambda: (state / "checkpoint.json").exists(), timeout_s=10)
        assert_rotated_exactly(folder, b"".join(lines[:6000]))
        warned = [line for line in collector.output().splitlines() if "state folder" in line]
        assert len(warned) == 1 and "WARNING" in warned[0] and str(state) in warned[0]
        collector.kill()  # what it recreated is what the restart goes on from
        append_lines(source, lines[6000:])
        collector.start()
        assert_rotated_exactly(folder, b"".join(lines))
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)


def test_final_checkpoint_that_cannot_be_written_exits_non_zero(tmp_path: Path) -> None:
    source, producer, collector = rotating_pair(tmp_path)
    state = tmp_path / "state-c1"
    folder = tmp_path / "out" / "app"
    lines = numbered_lines("f", 0, 2000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, lines)
        wait_until(lambda: rotated_caught_up(folder, b"".join(lines)), timeout_s=30)
        shutil.rmtree(state)
        state.write_text("not a folder\n")  # the state folder cannot be made again
        assert collector.stop() != 0
        assert "cannot write the final checkpoint" in collector.output()
    finally:
        stop_all(collector, producer)


def test_output_folders_carry_the_marker_and_live_index(tmp_path: Path) -> None:
    source, producer, collector = rotating_pair(tmp_path)
    folder = tmp_path / "out" / "app"
    lines = numbered_lines("x", 0, 4000, LINE)
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:2000])
        wait_until(lambda: rotated_caught_up(folder, b"".join(lines[:2000])), timeout_s=30)
        append_lines(source, lines[2000:])  # past max_bytes: a cut, then a live file
        wait_until(lambda: rotated_caught_up(folder, b"".join(lines)), timeout_s=30)
        live = folder / "web-01.log"
        wait_until(
            lambda: (
                json.loads((folder / "web-01.log.index.json").read_text())["size"]
                == live.stat().st_size
            ),
            timeout_s=10,
        )
        marker = json.loads((folder / ".zaggd-output").read_text())
        assert marker == {
            "kind": "zaggd-output",
            "version": 1,
            "written_by": "zaggd collector",
        }
        index = json.loads((folder / "web-01.log.index.json").read_text())
        assert index["kind"] == "zaggd-live-index" and index["version"] == 1
        assert index["file"] == "web-01.log"
        assert index["lines"] == live.read_bytes().count(b"\n")
        (archive,) = folder.glob("*.manifest.json")
        assert index["previous"] == read_manifest(str(archive)).file.removesuffix(".gz")
        ((key, span),) = index["ranges"].items()
        assert key.startswith("web-01/") and span[1] == len(b"".join(lines))
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)


def test_damaged_checkpoint_says_what_moving_it_aside_costs(tmp_path: Path) -> None:
    _, _, collector = rotating_pair(tmp_path)
    state = tmp_path / "state-c1"
    state.mkdir()
    (state / "checkpoint.json").write_text('{"kind": "zaggd-collector-checkpoint", "vers')
    collector.start(wait_ready=False)
    assert collector.proc is not None
    collector.proc.wait(timeout=30)
    assert collector.proc.returncode != 0
    last = collector.output().strip().splitlines()[-1]
    assert "checkpoint.json" in last and "moving it aside costs no line written twice" in last
    assert "rebuilds its state from the output folder" in last


def test_new_output_file_takes_no_byte_before_a_checkpoint_names_it(tmp_path: Path) -> None:
    """The checkpoint that names a new output file fails (here: its temporary name is
    taken by a folder); the block is held and retried. No byte may reach the file
    before a checkpoint names it, or a kill -9 then doubles those bytes."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "web-01",
        [
            {"name": "a", "topic": "a", "paths": [str(logs / "a*.log")]},
            {"name": "b", "topic": "b", "paths": [str(logs / "b*.log")]},
        ],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    ccfg = collector_config(
        tmp_path,
        "c1",
        {"connect": [f"tcp://127.0.0.1:{port}"]},
        {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")},
    )
    producer, collector = Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path)
    a_lines, b_lines = numbered_lines("a", 0, 1000, LINE), numbered_lines("b", 0, 1000, LINE)
    a_out, b_out = tmp_path / "out" / "a" / "web-01.log", tmp_path / "out" / "b" / "web-01.log"
    blocker = tmp_path / "state-c1" / "checkpoint.json.tmp"
    try:
        producer.start()
        collector.start()
        append_lines(logs / "a.log", a_lines)
        wait_until(lambda: a_out.exists() and a_out.read_bytes() == b"".join(a_lines), 30)
        blocker.mkdir()  # every checkpoint fails from here on
        append_lines(logs / "b.log", b_lines)
        wait_until(lambda: collector.status()["counters"]["write_errors"] >= 3, timeout_s=20)
        collector.kill()
        blocker.rmdir()
        collector.start()
        wait_until(lambda: b_out.exists() and b_out.stat().st_size >= len(b"".join(b_lines)), 30)
        time.sleep(1.0)
        assert b_out.read_bytes() == b"".join(b_lines)
        assert a_out.read_bytes() == b"".join(a_lines)
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)


def test_forgotten_stream_that_comes_back_is_not_written_again(
    pub_and_subscriber: tuple[zmq.Socket, SubscriberThread],  # type: ignore[type-arg]  # noqa: F811
) -> None:
    """A stream missing from the checkpoint (forgotten) resumes where the output says it
    stands: a producer that sends it again from zero gets its lines dropped as doubles."""
    pub, sub = pub_and_subscriber
    line = b"a line\n"
    wait_until(lambda: send_block(pub, "web-01", RETIRED, 0, line) or sub.streams, 10)
    send_block(pub, "web-01", LIVE, 0, line)
    wait_until(lambda: len(sub.streams) == 2, 10)
    deadline = time.monotonic() + 4 * FORGET_AFTER_S + 5
    while sub.counters.get("streams_forgotten") < 1 and time.monotonic() < deadline:
        send_heartbeat(pub, "web-01", {LIVE: len(line)})
        time.sleep(0.1)
    assert sub.counters.get("streams_forgotten") == 1
    dropped = sub.counters.get("duplicates_dropped")
    send_block(pub, "web-01", RETIRED, 0, line)  # the producer sends it again from zero
    send_block(pub, "web-01", LIVE, len(line), line)
    out = Path(sub.config.output.path).parent.parent / "app" / "web-01.log"
    wait_until(lambda: out.read_bytes().count(b"\n") >= 3, 10)
    time.sleep(0.3)
    assert out.read_bytes() == line * 3
    assert sub.counters.get("duplicates_dropped") == dropped + 1
