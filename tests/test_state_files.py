"""State files damaged, deleted or unwritable, with real daemons.

A damaged offset store or checkpoint stops the daemon at start with one line
naming the file, where in it the damage is and what moving it aside costs, and
exit 78: never a traceback, never a silent resend. A state folder removed
while a daemon runs is made again (one warning) and the state written there; an
offset store deleted while the producer idles is written again at its next
save. A state write that fails (a full disk) is logged once, and once more when
it works again; a final state write that fails at shutdown exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    Daemon,
    append_lines,
    collector_config,
    fill_up,
    free_port,
    numbered_lines,
    producer_config,
    read_output_lines,
    run_refused,
    stop_all,
    tailing_pair,
    tmpfs,
    wait_until,
)

STREAM = "0011223344556677"


# -- damaged state files: one line, exit 78 -------------------------------------------


def deep(kind: str) -> str:
    return f'{{"kind":"{kind}","version":1,"streams":' + "[" * 100_000 + "]" * 100_000 + "}"


def offsets_doc(logs: Path) -> dict[str, Any]:
    return {
        "kind": "zaggd-producer-offsets",
        "version": 1,
        "instance": "89abcdef01234567",
        "saved_at": 1700000000.5,
        "retired": [],
        "streams": {
            STREAM: {
                "source": "app",
                "topic": "app",
                "path": str(logs / "app.log"),
                "device": 1,
                "inode": 2,
                "fingerprint": [3, hashlib.sha256(b"ab\n").hexdigest()],
                "offset": 3,
                "rotated": False,
                "finished": False,
                "last_size": 3,
                "floor": 0,
            }
        },
    }


def checkpoint_doc(out: Path) -> dict[str, Any]:
    return {
        "kind": "zaggd-collector-checkpoint",
        "version": 1,
        "streams": {f"web-01/{STREAM}": [3, "app", "app", "/var/log/app.log"]},
        "files": {str(out / "app" / "web-01-app.log"): {"size": 0, "lines": 0, "ranges": {}}},
        "nodes": ["web-01"],
        "rotations": [],
    }


def record(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["streams"][STREAM]  # type: ignore[no-any-return]


def out_file(doc: dict[str, Any]) -> dict[str, Any]:
    return next(iter(doc["files"].values()))  # type: ignore[no-any-return]


def with_text(doc: dict[str, Any], old: str, new: str) -> str:
    """`doc` as JSON, with `old` replaced by `new` (for what json.dumps cannot write)."""
    text = json.dumps(doc)
    assert old in text
    return text.replace(old, new)


# Each case: (name, damage to the document: a new JSON text, and what the error names).
OFFSET_CASES: list[tuple[str, Any, str]] = [
    ("deep", lambda d: deep("zaggd-producer-offsets"), "JSON nested too deeply"),
    (
        "offset 1e999",
        lambda d: with_text(d, '"offset": 3', '"offset": 1e999'),
        f'streams["{STREAM}"].offset: not a whole number >= 0 (inf)',
    ),
    (
        "last_size 1e999",
        lambda d: with_text(d, '"last_size": 3', '"last_size": 1e999'),
        f'streams["{STREAM}"].last_size: not a whole number >= 0 (inf)',
    ),
    (
        "offset -1",
        lambda d: record(d).update(offset=-1),
        f'streams["{STREAM}"].offset: not a whole number >= 0 (-1)',
    ),
    (
        "device string",
        lambda d: record(d).update(device="sda"),
        f"streams[\"{STREAM}\"].device: not a whole number >= 0 ('sda')",
    ),
    (
        "offset missing",
        lambda d: record(d).pop("offset"),
        f'streams["{STREAM}"].offset: missing',
    ),
    (
        "record a list",
        lambda d: d["streams"].update({STREAM: []}),
        f'streams["{STREAM}"]: not an object ([])',
    ),
    ("streams a list", lambda d: d.update(streams=[]), "streams: not an object ([])"),
    (
        "fingerprint 1e999",
        lambda d: with_text(d, '"fingerprint": [3,', '"fingerprint": [1e999,'),
        f'streams["{STREAM}"].fingerprint: not [size, digest]',
    ),
    (
        "saved_at NaN",
        lambda d: with_text(d, '"saved_at": 1700000000.5', '"saved_at": NaN'),
        "saved_at: not a time (nan)",
    ),
    ("instance a number", lambda d: d.update(instance=5), "instance: not a string (5)"),
]

CHECKPOINT_CASES: list[tuple[str, Any, str]] = [
    ("deep", lambda d: deep("zaggd-collector-checkpoint"), "JSON nested too deeply"),
    (
        "expected 1e999",
        lambda d: with_text(d, "[3,", "[1e999,"),
        f'streams["web-01/{STREAM}"][0]: not a whole number >= 0 (inf)',
    ),
    (
        "stream entry []",
        lambda d: d["streams"].update({f"web-01/{STREAM}": []}),
        f'streams["web-01/{STREAM}"]: not [offset, topic, source, path] ([])',
    ),
    (
        "stream without node",
        lambda d: d.update(streams={STREAM: [3, "app", "app", "/var/log/app.log"]}),
        f'streams["{STREAM}"]: not a NODE/STREAM key',
    ),
    ("size missing", lambda d: out_file(d).pop("size"), ".size: missing"),
    (
        "size big",
        lambda d: out_file(d).update(size="big"),
        ".size: not a whole number >= 0 ('big')",
    ),
    ("size -1", lambda d: out_file(d).update(size=-1), ".size: not a whole number >= 0 (-1)"),
    (
        "size 1e999",
        lambda d: with_text(d, '"size": 0', '"size": 1e999'),
        ".size: not a whole number >= 0 (inf)",
    ),
    (
        "range backwards",
        lambda d: out_file(d).update(ranges={f"web-01/{STREAM}": [5, 1]}),
        f'.ranges["web-01/{STREAM}"]: not [start, end] with start <= end ([5, 1])',
    ),
    ("node a number", lambda d: d.update(nodes=[5]), "nodes[0]: not a string (5)"),
    (
        "rotation size 1e999",
        lambda d: with_text(
            d,
            '"rotations": []',
            '"rotations": [{"op": "rotate", "live": "/o/a.log", "base": "/o/a.log.1", '
            '"size": 1e999, "cut_at": 1.0}]',
        ),
        "rotations[0].size: not a whole number >= 0 (inf)",
    ),
]


def damaged_start(kind: str, config: Path, state: Path, text: str) -> str:
    """Start `kind` on a state file holding `text`: the one line it prints (exit 78)."""
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(text)
    code, err = run_refused(kind, config)
    assert "Traceback" not in err, err[-3000:]
    assert code == 78, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    return err


def producer_on(tmp_path: Path) -> tuple[Path, Path]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    config = producer_config(
        tmp_path,
        "web-01",
        [{"name": "app", "topic": "app", "paths": [str(logs / "*.log")]}],
        {"bind": [f"tcp://127.0.0.1:{free_port()}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
    )
    return config, tmp_path / "state-web-01" / "offsets.json"


def collector_on(tmp_path: Path) -> tuple[Path, Path]:
    config = collector_config(tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{free_port()}"]})
    return config, tmp_path / "state-c1" / "checkpoint.json"


PRODUCER_ASIDE = (
    "moving it aside makes every watched file new (new stream ids): "
    "sent again from its start (start_at: beginning), which collectors write a second time, "
    "or only from its end (start_at: end), which skips lines not yet sent"
)


def test_an_undamaged_offset_store_is_taken(tmp_path: Path) -> None:
    config, store = producer_on(tmp_path)
    store.parent.mkdir(parents=True)
    store.write_text(json.dumps(offsets_doc(tmp_path / "logs")))
    producer = Daemon("producer", config, tmp_path)
    try:
        producer.start()
        assert producer.status()["instance"] == "89abcdef01234567"
        assert producer.stop() == 0
    finally:
        stop_all(producer)


@pytest.mark.parametrize("damage", OFFSET_CASES, ids=[c[0] for c in OFFSET_CASES])
def test_damaged_offset_store_is_one_line_and_exit_78(
    tmp_path: Path, damage: tuple[str, Any, str]
) -> None:
    _, change, what = damage
    config, store = producer_on(tmp_path)
    doc = offsets_doc(tmp_path / "logs")
    text = change(doc)
    err = damaged_start(
        "producer", config, store, text if isinstance(text, str) else json.dumps(doc)
    )
    assert err == f"zaggd: {store}: damaged offset store: {what}; {PRODUCER_ASIDE}\n"


def test_an_undamaged_checkpoint_is_taken(tmp_path: Path) -> None:
    config, checkpoint = collector_on(tmp_path)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text(json.dumps(checkpoint_doc(tmp_path / "out-c1")))
    collector = Daemon("collector", config, tmp_path)
    try:
        collector.start()
        assert collector.status()["streams"] == 1
        assert collector.stop() == 0
    finally:
        stop_all(collector)


@pytest.mark.parametrize("damage", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_damaged_checkpoint_is_one_line_and_exit_78(
    tmp_path: Path, damage: tuple[str, Any, str]
) -> None:
    _, change, what = damage
    config, checkpoint = collector_on(tmp_path)
    doc = checkpoint_doc(tmp_path / "out-c1")
    text = change(doc)
    err = damaged_start(
        "collector", config, checkpoint, text if isinstance(text, str) else json.dumps(doc)
    )
    assert err.startswith(f"zaggd: {checkpoint}: damaged checkpoint: "), err
    assert f"{what}; moving it aside " in err, err


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_checkpointed_output_file_that_is_not_a_file_is_one_line_and_exit_78(
    tmp_path: Path, kind: str
) -> None:
    config, checkpoint = collector_on(tmp_path)
    path = tmp_path / "out-c1" / "app"
    path.parent.mkdir(parents=True)
    if kind == "folder":
        path.mkdir()
        what = "a folder, not an output file"
    else:
        os.mkfifo(path)
        what = "not a regular file, so not an output file"
    doc = checkpoint_doc(tmp_path / "out-c1")
    doc["files"] = {str(path): {"size": 0, "lines": 0, "ranges": {}}}
    err = damaged_start("collector", config, checkpoint, json.dumps(doc))
    assert err.startswith(
        f'zaggd: {checkpoint}: damaged checkpoint: files["{path}"]: {what}; moving it aside '
    ), err


# -- state lost while running ---------------------------------------------------------


def state_dir_of(daemon: Daemon) -> Path:
    return Path(yaml.safe_load(daemon.config.read_text())["state_dir"])


def test_producer_makes_a_removed_state_dir_again_and_resumes_from_it(tmp_path: Path) -> None:
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
    )
    lines = numbered_lines("d", 0, 300, 80)
    out = tmp_path / "out"
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:100])
        wait_until(lambda: read_output_lines(out) == lines[:100], timeout_s=30)
        state = state_dir_of(producer)
        shutil.rmtree(state)
        append_lines(source, lines[100:200])
        wait_until(lambda: (state / "offsets.json").exists(), timeout_s=15)
        assert (state / ".zaggd-lock").read_text() == f"{producer.pid}\n"
        wait_until(lambda: read_output_lines(out) == lines[:200], timeout_s=30)
        log = producer.output()
        assert log.count(f"WARNING zaggd-tailer: state folder {state} was removed") == 1
        assert "cannot write the offset store" not in log
        # Resumed from the new store after kill -9: nothing sent twice, nothing skipped.
        time.sleep(0.5)  # one more save, for the lines just sent
        producer.kill()
        producer.start()
        append_lines(source, lines[200:])
        wait_until(lambda: read_output_lines(out) == lines, timeout_s=30)
        time.sleep(1.0)
        assert read_output_lines(out) == lines
        assert producer.stop() == 0 and collector.stop() == 0
    finally:
        stop_all(producer, collector)


def test_producer_writes_a_deleted_offset_store_again_while_idle(tmp_path: Path) -> None:
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
    )
    lines = numbered_lines("i", 0, 200, 80)
    out = tmp_path / "out"
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:100])
        wait_until(lambda: read_output_lines(out) == lines[:100], timeout_s=30)
        store = state_dir_of(producer) / "offsets.json"
        time.sleep(0.5)  # idle: every offset saved
        store.unlink()
        wait_until(store.exists, timeout_s=5)
        producer.kill()
        producer.start()
        append_lines(source, lines[100:])
        wait_until(lambda: read_output_lines(out) == lines, timeout_s=30)
        time.sleep(1.0)
        assert read_output_lines(out) == lines
        assert producer.stop() == 0 and collector.stop() == 0
    finally:
        stop_all(producer, collector)


def test_collector_makes_a_removed_state_dir_again_and_resumes_from_it(tmp_path: Path) -> None:
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
    )
    lines = numbered_lines("c", 0, 300, 80)
    out = tmp_path / "out"
    try:
        producer.start()
        collector.start()
        append_lines(source, lines[:100])
        wait_until(lambda: read_output_lines(out) == lines[:100], timeout_s=30)
        state = state_dir_of(collector)
        shutil.rmtree(state)
        append_lines(source, lines[100:200])
        wait_until(lambda: (state / "checkpoint.json").exists(), timeout_s=15)
        assert (state / ".zaggd-lock").read_text() == f"{collector.pid}\n"
        wait_until(lambda: read_output_lines(out) == lines[:200], timeout_s=30)
        time.sleep(1.5)  # a checkpoint after the last line
        log = collector.output()
        assert log.count(f"WARNING zaggd-checkpoint: state folder {state} was removed") == 1
        assert "ERROR" not in log
        collector.kill()
        collector.start()
        append_lines(source, lines[200:])
        wait_until(lambda: read_output_lines(out) == lines, timeout_s=30)
        time.sleep(1.0)
        assert read_output_lines(out) == lines
        assert producer.stop() == 0 and collector.stop() == 0
    finally:
        stop_all(producer, collector)


# -- a full disk under the state folder ------------------------------------------------


def test_producer_offset_store_on_a_full_disk_logs_once_and_once_on_recovery(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "pstate", "size=1m,mode=0755") as state:
        source, producer, collector = tailing_pair(
            tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
        )
        config = yaml.safe_load(producer.config.read_text())
        config["state_dir"] = str(state)
        producer.config.write_text(yaml.safe_dump(config))
        lines = numbered_lines("f", 0, 400, 80)
        out = tmp_path / "out"
        try:
            producer.start()
            collector.start()
            append_lines(source, lines[:100])
            wait_until(lambda: read_output_lines(out) == lines[:100], timeout_s=30)
            filler = fill_up(state)
            for i in range(100, 200, 10):  # several saves, each failing
                append_lines(source, lines[i : i + 10])
                time.sleep(0.3)
            wait_until(lambda: read_output_lines(out) == lines[:200], timeout_s=30)
            error = f"ERROR zaggd-tailer: cannot write the offset store {state}/offsets.json"
            assert producer.output().count(error) == 1
            filler.unlink()
            append_lines(source, lines[200:300])
            back = f"INFO zaggd-tailer: the offset store {state}/offsets.json is written again"
            wait_until(lambda: back in producer.output(), timeout_s=15)
            wait_until(lambda: read_output_lines(out) == lines[:300], timeout_s=30)
            # Full again at shutdown: the final state is not written, and the exit says so.
            filler = fill_up(state)
            append_lines(source, lines[300:])
            wait_until(lambda: read_output_lines(out) == lines, timeout_s=30)
            assert producer.stop() != 0
            log = producer.output()
            assert log.count(error) == 2 and log.count(back) == 1
            assert "the final offset store was not written" in log
            assert collector.stop() == 0
        finally:
            stop_all(producer, collector)


def test_collector_checkpoint_on_a_full_disk_logs_once_and_once_on_recovery(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "cstate", "size=1m,mode=0755") as state:
        source, producer, collector = tailing_pair(
            tmp_path, {"path": str(tmp_path / "out" / "{topic}" / "{node}.log")}
        )
        config = yaml.safe_load(collector.config.read_text())
        config["state_dir"] = str(state)
        collector.config.write_text(yaml.safe_dump(config))
        lines = numbered_lines("k", 0, 400, 80)
        out = tmp_path / "out"
        try:
            producer.start()
            collector.start()
            append_lines(source, lines[:100])
            wait_until(lambda: read_output_lines(out) == lines[:100], timeout_s=30)
            filler = fill_up(state)
            for i in range(100, 200, 10):
                append_lines(source, lines[i : i + 10])
                time.sleep(0.3)
            wait_until(lambda: "disk full" in collector.output(), timeout_s=15)
            time.sleep(2.0)  # retries, each failing
            assert collector.output().count("ERROR zaggd-subscriber: disk full") == 1
            filler.unlink()
            wait_until(lambda: read_output_lines(out) == lines[:200], timeout_s=30)
            back = "INFO zaggd-subscriber: writing again after the earlier error"
            wait_until(lambda: back in collector.output())
            append_lines(source, lines[200:300])
            wait_until(lambda: read_output_lines(out) == lines[:300], timeout_s=30)
            filler = fill_up(state)
            append_lines(source, lines[300:])
            assert collector.stop() != 0
            log = collector.output()
            assert log.count(back) == 1
            assert "cannot write the final checkpoint" in log
            assert producer.stop() == 0
        finally:
            stop_all(producer, collector)
