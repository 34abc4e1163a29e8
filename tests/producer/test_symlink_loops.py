"""Folder symlinks under a `**` glob: each real folder is followed once, loops included.

`sub/up -> ..` beside `sub/self -> .` makes the folder tree endless to a walker
that follows links; the producer must start at once, read every file once,
and keep reading while such a loop appears under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import append_lines, numbered_lines
from tests.producer.watched import Pair
from zaggd.config import Source
from zaggd.producer.scanner import scan, watched_folders

READY_TIMEOUT_S = 10.0


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    return logs


@pytest.fixture
def pair(tmp_path: Path, logs: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path, [str(logs / "**" / "*.log")])
    try:
        yield pair
    finally:
        pair.stop()


def make_loop(logs: Path) -> None:
    os.symlink("..", logs / "sub" / "up")
    os.symlink(".", logs / "sub" / "self")


def test_symlink_loop_present_at_start(pair: Pair, logs: Path) -> None:
    make_loop(logs)
    append_lines(logs / "app.log", numbered_lines("app", 0, 100))
    append_lines(logs / "sub" / "deep.log", numbered_lines("deep", 0, 100))
    pair.start(ready_timeout_s=READY_TIMEOUT_S)
    pair.wait_for(numbered_lines("app", 0, 100) + numbered_lines("deep", 0, 100))
    append_lines(logs / "app.log", numbered_lines("app", 100, 100))
    append_lines(logs / "sub" / "deep.log", numbered_lines("deep", 100, 100))
    pair.wait_for(numbered_lines("app", 0, 200) + numbered_lines("deep", 0, 200))


def test_symlink_loop_created_while_running(pair: Pair, logs: Path) -> None:
    append_lines(logs / "app.log", numbered_lines("app", 0, 100))
    append_lines(logs / "sub" / "deep.log", numbered_lines("deep", 0, 100))
    pair.start()
    pair.wait_for(numbered_lines("app", 0, 100) + numbered_lines("deep", 0, 100), quiet_s=0.5)
    make_loop(logs)
    (logs / "new").mkdir()  # a folder event: the producer rescans at once
    for step in range(1, 4):
        append_lines(logs / "app.log", numbered_lines("app", step * 100, 100))
        append_lines(logs / "sub" / "deep.log", numbered_lines("deep", step * 100, 100))
        want = numbered_lines("app", 0, (step + 1) * 100)
        pair.wait_for(want + numbered_lines("deep", 0, (step + 1) * 100), quiet_s=0.5)


@pytest.mark.timeout(60)  # a walk that follows the loop never ends
def test_a_linked_folder_outside_is_read_once_under_its_first_name(tmp_path: Path) -> None:
    """A link to a folder outside the glob's root is followed; one to a folder inside is
    not needed (its files are found under their real path)."""
    logs, elsewhere = tmp_path / "logs", tmp_path / "elsewhere"
    (logs / "a" / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (logs / "a" / "one.log").write_bytes(b"1\n")
    (elsewhere / "two.log").write_bytes(b"2\n")
    os.symlink(logs / "a", logs / "0-link-to-a")  # sorts before the real name
    os.symlink(elsewhere, logs / "b")
    make_loop(logs / "a")
    source = Source("app", "app", (str(logs / "**" / "*.log"),))
    assert sorted(scan((source,))) == [str(logs / "a" / "one.log"), str(logs / "b" / "two.log")]
    folders = [logs, logs / "a", logs / "a" / "sub", logs / "b"]
    assert watched_folders((source,)) == [str(f) for f in folders]
