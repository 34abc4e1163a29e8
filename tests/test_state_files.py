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
    collector_config,
    fill_up,
    free_port,
    numbered_lines,
    producer_config,
    run_refused,
    running_pair,
    stop_all,
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

FILE = 'files["OUT/app/web-01-app.log"]'  # OUT: the collector's output folder
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
    ("size missing", lambda d: out_file(d).pop("size"), f"{FILE}.size: missing"),
    (
        "size big",
        lambda d: out_file(d).update(size="big"),
        f"{FILE}.size: not a whole number >= 0 ('big')",
    ),
    (
        "size -1",
        lambda d: out_file(d).update(size=-1),
        f"{FILE}.size: not a whole number >= 0 (-1)",
    ),
    (
        "size 1e999",
        lambda d: with_text(d, '"size": 0', '"size": 1e999'),
        f"{FILE}.size: not a whole number >= 0 (inf)",
    ),
    (
        "range backwards",
        lambda d: out_file(d).update(ranges={f"web-01/{STREAM}": [5, 1]}),
        f'{FILE}.ranges["web-01/{STREAM}"]: not [start, end] with start <= end ([5, 1])',
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
    "moving it aside costs a re-read: the stream journal (streams.jsonl beside it) finds "
    "every file again under its stream id, read again from its start (or where the journal "
    "last saw it), and collectors drop what they already have; with that journal gone too, "
    "every watched file is new: sent again from its start (start_at: beginning), which "
    "collectors write a second time, or only from its end (start_at: end), which skips "
    "lines not yet sent"
)
COLLECTOR_ASIDE = (
    "moving it aside costs no line written twice: the collector rebuilds its state from "
    "the output folder (archive manifests and live indexes), cuts each live file back to "
    "its index and asks its producers again only for what came after (and for all they "
    "still have of a stream whose every archive retention removed)"
)


def state_file_of(tmp_path: Path, kind: str) -> tuple[Path, Path, dict[str, Any], str]:
    """A config for `kind`, its state file, a whole document for it, and what it is called."""
    if kind == "producer":
        config, state = producer_on(tmp_path)
        return config, state, offsets_doc(tmp_path / "logs"), "offset store"
    config, state = collector_on(tmp_path)
    return config, state, checkpoint_doc(tmp_path / "out-c1"), "checkpoint"


@pytest.mark.parametrize("kind", ["producer", "collector"])
def test_an_undamaged_state_file_is_taken(tmp_path: Path, kind: str) -> None:
    """The documents the damaged cases start from are whole: each case damages one thing."""
    config, state, doc, _ = state_file_of(tmp_path, kind)
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps(doc))
    daemon = Daemon(kind, config, tmp_path)
    try:
        daemon.start()
        if kind == "producer":
            assert daemon.status()["instance"] == "89abcdef01234567"
        else:
            assert daemon.status()["streams"] == 1
        assert daemon.stop() == 0
    finally:
        stop_all(daemon)


CASES = [("producer", *case) for case in OFFSET_CASES] + [
    ("collector", *case) for case in CHECKPOINT_CASES
]


@pytest.mark.parametrize(
    ("kind", "name", "change", "what"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES]
)
def test_a_damaged_state_file_is_one_line_and_exit_78(
    tmp_path: Path, kind: str, name: str, change: Any, what: str
) -> None:
    config, state, doc, called = state_file_of(tmp_path, kind)
    text = change(doc)
    err = damaged_start(kind, config, state, text if isinstance(text, str) else json.dumps(doc))
    what = what.replace("OUT", str(tmp_path / "out-c1"))
    aside = PRODUCER_ASIDE if kind == "producer" else COLLECTOR_ASIDE
    assert err == f"zaggd: {state}: damaged {called}: {what}; {aside}\n"


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
    assert err == (
        f'zaggd: {checkpoint}: damaged checkpoint: files["{path}"]: {what}; {COLLECTOR_ASIDE}\n'
    )


# -- state lost while running ---------------------------------------------------------


def state_dir_of(daemon: Daemon) -> Path:
    return Path(yaml.safe_load(daemon.config.read_text())["state_dir"])


@pytest.mark.parametrize("kind", ["producer", "collector"])
def test_a_removed_state_dir_is_made_again_and_resumed_from(tmp_path: Path, kind: str) -> None:
    lines = numbered_lines("d", 0, 300, 80)
    with running_pair(tmp_path) as pair:
        pair.send(lines[:100])
        daemon = pair.producer if kind == "producer" else pair.collector
        state = state_dir_of(daemon)
        shutil.rmtree(state)
        pair.send(lines[100:200])
        store = state / ("offsets.json" if kind == "producer" else "checkpoint.json")
        wait_until(store.exists, timeout_s=15)
        assert (state / ".zaggd-lock").read_text() == f"{daemon.pid}\n"
        time.sleep(1.5)  # a save after the last line
        log = daemon.output()
        thread = "zaggd-tailer" if kind == "producer" else "zaggd-checkpoint"
        assert log.count(f"WARNING {thread}: state folder {state} was removed") == 1
        assert "ERROR" not in log
        # Resumed from the new state after kill -9: nothing sent twice, nothing skipped.
        daemon.kill()
        daemon.start()
        pair.send(lines[200:], wait=False)
        pair.assert_exact()
        assert pair.producer.stop() == 0 and pair.collector.stop() == 0


def test_producer_writes_a_deleted_offset_store_again_while_idle(tmp_path: Path) -> None:
    lines = numbered_lines("i", 0, 200, 80)
    with running_pair(tmp_path) as pair:
        pair.send(lines[:100])
        store = state_dir_of(pair.producer) / "offsets.json"
        time.sleep(0.5)  # idle: every offset saved
        store.unlink()
        wait_until(store.exists, timeout_s=5)
        pair.producer.kill()
        pair.producer.start()
        pair.send(lines[100:], wait=False)
        pair.assert_exact()
        assert pair.producer.stop() == 0 and pair.collector.stop() == 0


# -- a full disk under the state folder ------------------------------------------------


def test_producer_offset_store_on_a_full_disk_logs_once_and_once_on_recovery(
    tmp_path: Path,
) -> None:
    lines = numbered_lines("f", 0, 400, 80)
    with (
        tmpfs(tmp_path / "pstate", "size=1m,mode=0755") as state,
        running_pair(tmp_path, producer=state) as pair,
    ):
        pair.send(lines[:100])
        filler = fill_up(state)
        for i in range(100, 200, 10):  # several saves, each failing
            pair.send(lines[i : i + 10], wait=False)
            time.sleep(0.3)
        pair.send([])
        error = f"ERROR zaggd-tailer: cannot write the offset store {state}/offsets.json"
        assert pair.producer.output().count(error) == 1
        filler.unlink()
        pair.send(lines[200:300])
        back = f"INFO zaggd-tailer: the offset store {state}/offsets.json is written again"
        wait_until(lambda: back in pair.producer.output(), timeout_s=15)
        # Full again at shutdown: the final state is not written, and the exit says so.
        fill_up(state)
        pair.send(lines[300:])
        assert pair.producer.stop() != 0
        log = pair.producer.output()
        assert log.count(error) == 2 and log.count(back) == 1
        assert "the final offset store was not written" in log
        assert pair.collector.stop() == 0


def test_collector_checkpoint_on_a_full_disk_logs_once_and_once_on_recovery(
    tmp_path: Path,
) -> None:
    lines = numbered_lines("k", 0, 400, 80)
    with (
        tmpfs(tmp_path / "cstate", "size=1m,mode=0755") as state,
        running_pair(tmp_path, collector=state) as pair,
    ):
        pair.send(lines[:100])
        filler = fill_up(state)
        for i in range(100, 200, 10):  # intake pauses: no checkpoint, no more output
            pair.send(lines[i : i + 10], wait=False)
            time.sleep(0.3)
        wait_until(lambda: "disk full" in pair.collector.output(), timeout_s=15)
        time.sleep(2.0)  # retries, each failing
        assert pair.collector.output().count("ERROR zaggd-subscriber: disk full") == 1
        filler.unlink()
        pair.send(lines[200:300])
        back = "INFO zaggd-subscriber: writing again after the earlier error"
        wait_until(lambda: back in pair.collector.output())
        fill_up(state)
        pair.send(lines[300:], wait=False)
        assert pair.collector.stop() != 0
        log = pair.collector.output()
        assert log.count(back) == 1
        assert "cannot write the final checkpoint" in log
        assert pair.producer.stop() == 0
