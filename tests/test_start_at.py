"""start_at: the defaults the docs give are the shipped ones, and a gap before a
producer's start (start_at: end) closes with a line saying so.

A producer reading a file from its end never sends the bytes before; a
collector new to the stream (subscribe.start_at: beginning) sees a gap from
0 and asks for it, and the producer answers it with nothing. Real daemons.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers import REPO, append_lines, read_output_lines, stop_all, tailing_pair, wait_until
from tests.test_reload import edit


def readme_default(key: str) -> str:
    """The default the README's tables give for `key` (first table row naming it)."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", text, re.MULTILINE)
    assert match, key
    return match[1]


def test_the_shipped_producer_reads_from_where_the_readme_says() -> None:
    shipped = yaml.safe_load((REPO / "config" / "producer.yaml").read_text())
    assert {s.get("start_at") for s in shipped["sources"]} == {readme_default("sources[].start_at")}
    collector = yaml.safe_load((REPO / "config" / "collector.yaml").read_text())
    assert collector["subscribe"]["start_at"] == readme_default("subscribe.start_at")


def test_a_gap_before_the_producers_start_closes_with_a_line_saying_so(tmp_path: Path) -> None:
    log, producer, collector = tailing_pair(tmp_path, {})
    edit(producer.config, lambda c: c["sources"][0].update(start_at="end"))
    old = b"old line one, before the start\nold line two\n"
    log.write_bytes(old)
    try:
        producer.start()
        collector.start()
        wait_until(lambda: collector.status()["streams"] == 1, 20)
        append_lines(log, [b"new line\n"])
        wait_until(lambda: read_output_lines(tmp_path / "out-c1") == [b"new line\n"], 20)
        wait_until(lambda: "gap closed" in collector.output(), 10)
        closed = [line for line in collector.output().splitlines() if "gap closed" in line]
        assert len(closed) == 1 and " INFO " in closed[0], closed
        assert (
            " range 0-" in closed[0]
            and (
                f"{len(old)} bytes the producer never sent (before where it started reading, "
                "start_at: end; or lines it skipped)"
            )
            in closed[0]
        ), closed[0]
        status = collector.status()
        assert "gaps 0 open" in str(status["status"]), status["status"]
        assert status["counters"]["bytes_lost"] == 0
    finally:
        stop_all(producer, collector)
