"""A collector's output inside a producer's glob is never tailed (it would feed on itself).

The collector marks each folder it writes into with `.zaggd-output`; folders
of rotated output are also known by their zaggd manifests. The producer skips
such folders and says so once, naming the folder and the source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import append_lines, numbered_lines, wait_until
from tests.producer.harness import Harness
from tests.producer.watched import Pair, log_lines
from zaggd.statefile import write_state

SKIP_TEXT = "not tailing a zaggd collector's output"


@pytest.fixture
def var(tmp_path: Path) -> Path:
    """A folder watched with `**`, the producer's input and the collector's output in it."""
    root = tmp_path / "var"
    (root / "app").mkdir(parents=True)
    return root


@pytest.fixture
def pair(tmp_path: Path, var: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path, [str(var / "**" / "*.log")], output_root=var / "zaggd")
    try:
        yield pair
    finally:
        pair.stop()


def write_marker(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_state(str(folder / ".zaggd-output"), "zaggd-output", 1, {"written_by": "zaggd collector"})


def check_fed_once(pair: Pair, var: Path, written: int = 0) -> None:
    """1 KB in (`written` lines of it already), exactly that out after a few seconds,
    and the skip said once."""
    lines = numbered_lines("in", 0, 10)
    append_lines(var / "app" / "app.log", lines[written:])
    pair.wait_for(lines, quiet_s=3.0)
    append_lines(var / "app" / "app.log", numbered_lines("in", 10, 10))
    pair.wait_for(numbered_lines("in", 0, 20), quiet_s=2.0)
    said = log_lines(pair.producer, SKIP_TEXT)
    assert len(said) == 1, said
    assert str(pair.output.parent) in said[0] and "source app" in said[0]


def test_collector_writing_inside_a_watched_glob_does_not_feed_on_itself(
    pair: Pair, var: Path
) -> None:
    pair.start()
    append_lines(var / "app" / "app.log", numbered_lines("in", 0, 10))
    wait_until(pair.output.exists, 20)
    assert (pair.output.parent / ".zaggd-output").exists()
    check_fed_once(pair, var, written=10)


def test_folder_marked_as_collector_output_is_not_tailed(pair: Pair, var: Path) -> None:
    write_marker(pair.output.parent)
    pair.start()
    check_fed_once(pair, var)


def test_folders_of_rotated_output_are_known_by_their_manifests(tmp_path: Path) -> None:
    """Output written before collectors marked their folders: its manifests tell it."""
    h = Harness(tmp_path, pattern="**/*")
    old = h.logs / "old-output"
    old.mkdir()
    h.append("old-output/web-01.log", range(100, 110))
    h.append("old-output/web-01.log.20250301T000002.123456Z", range(100, 110))
    write_state(
        str(old / "web-01.log.20250301T000002.123456Z.manifest.json"),
        "zaggd-manifest",
        1,
        {"file": "web-01.log.20250301T000002.123456Z"},
    )
    (h.logs / "own").mkdir()
    h.append("own/app.log", range(10))
    # A file called like a manifest, not a zaggd one, marks nothing.
    h.append("own/notes.manifest.json", range(10, 12))
    h.settle()
    assert sorted(h.sink.delivered) == list(range(12))
    h.append("old-output/web-01.log", range(110, 120))
    h.tell("old-output/web-01.log")
    h.settle()
    assert sorted(h.sink.delivered) == list(range(12))
    h.close()


def test_a_folder_marked_while_tailed_stops_there_and_after_a_restart(tmp_path: Path) -> None:
    """A folder tailed before its collector marked it (a collector upgraded in place):
    its streams stop at the next full rescan, and are not resumed after a restart."""
    h = Harness(tmp_path, pattern="**/*.log")
    (h.logs / "out").mkdir()
    h.append("out/web-01.log", range(5))
    h.append("app.log", range(100, 105))
    h.settle()
    h.save()
    write_marker(h.logs / "out")
    h.rescan()
    h.append("out/web-01.log", range(5, 10))
    h.append("app.log", range(105, 110))
    h.pump("out/web-01.log", "app.log")
    assert sorted(h.sink.delivered) == [*range(5), *range(100, 110)]
    h.save()
    h.kill_and_restart()
    h.append("out/web-01.log", range(10, 15))
    h.append("app.log", range(110, 115))
    h.pump("out/web-01.log", "app.log")
    h.settle()
    assert sorted(h.sink.delivered) == [*range(5), *range(100, 115)]
    h.close()
