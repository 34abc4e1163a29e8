"""File names are shown escaped: a name holding a newline cannot forge a log or status line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import append_lines, numbered_lines
from tests.producer.watched import Pair

FORGED = "<3>zaggd: forged: the disk is on fire"
NAME = f"evil\n{FORGED}\nx.log"
SHOWN_NAME = "evil\\n<3>zaggd: forged: the disk is on fire\\nx.log"


def test_shown_escapes_control_characters_and_bytes_that_are_not_utf8() -> None:
    from zaggd.logs import shown

    assert shown("/var/log/app.log") == "/var/log/app.log"
    assert shown("/var/log/café ünïcode.log") == "/var/log/café ünïcode.log"
    assert shown("a\nb\tc\rd\x1be\x7ff") == "a\\nb\\tc\\x0dd\\x1be\\x7ff"
    assert shown(b"/logs/\xff\xfe.log") == "/logs/\\xff\\xfe.log"
    assert shown(os.fsdecode(b"/logs/\xff.log")) == "/logs/\\xff.log"
    assert shown("x\u2028y\x85z") == "x\\u2028y\\x85z"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    logs = tmp_path / "logs"
    logs.mkdir()
    # Under systemd: each stderr line is a journal entry, its `<N>` prefix its priority.
    log_file = tmp_path / "producer-producer-web-01.log"
    log_file.touch()
    st = os.stat(log_file)
    pair = Pair(
        tmp_path,
        [str(logs / "*.log")],
        producer_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
    )
    assert pair.producer.log_path == log_file
    try:
        yield pair
    finally:
        pair.stop()


def forged_lines(text: str) -> list[str]:
    """Lines where the forged text stands on a line of its own, apart from the name."""
    return [line for line in text.splitlines() if "forged" in line and "evil" not in line]


def test_a_file_name_with_a_newline_forges_no_log_or_status_line(
    pair: Pair, tmp_path: Path
) -> None:
    path = tmp_path / "logs" / NAME
    append_lines(path, numbered_lines("evil", 0, 10))
    pair.start()
    pair.wait_for(numbered_lines("evil", 0, 10), quiet_s=0.2)
    os.rename(path, tmp_path / "logs" / (NAME + ".1"))  # logged: a rotation, both names
    append_lines(path, numbered_lines("evil", 10, 10))
    pair.wait_for(numbered_lines("evil", 0, 20), quiet_s=0.5)
    table = pair.status_table()
    assert SHOWN_NAME in table
    assert forged_lines(table) == []
    output = pair.producer.output()
    assert SHOWN_NAME in output
    assert forged_lines(output) == []
    assert forged_lines(pair.collector.output()) == []
