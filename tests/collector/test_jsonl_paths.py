"""jsonl output names each line's file exactly, whatever bytes its name holds.

`path` is readable text (bytes that are not UTF-8 and control characters shown
as U+FFFD), so names that differ only there would look alike; `path_b64`
carries the name's exact bytes whenever `path` cannot. Real files with a tab,
a newline and bytes that are not UTF-8 in their names go through a real
producer and collector.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import append_lines, stop_all, tailing_pair, wait_until
from zaggd import wire
from zaggd.collector.writer import format_jsonl
from zaggd.errors import ProtocolError

NAMES = [b"tab\there.log", b"new\nline.log", b"bad\xffname.log", b"bad\xfename.log", b"plain.log"]


def records(out: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(out.rglob("*.log")):
        found += [json.loads(line) for line in path.read_bytes().splitlines()]
    return found


def exact_path(record: dict[str, Any]) -> bytes:
    """The file's name as bytes, as a reader of the jsonl output recovers it."""
    if "path_b64" in record:
        return base64.b64decode(record["path_b64"], validate=True)
    return str(record["path"]).encode("utf-8")


def test_jsonl_names_each_file_exactly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _, producer, collector = tailing_pair(
        tmp_path, {"path": str(out / "{topic}" / "{node}.log"), "format": "jsonl"}
    )
    logs = os.fsencode(tmp_path / "logs")
    expected: dict[bytes, list[str]] = {}
    for i, name in enumerate(NAMES):
        full = os.path.join(logs, name)
        lines = [f"file {i} line {n}\n" for n in range(3)]
        append_lines(Path(os.fsdecode(full)), [line.encode() for line in lines])
        expected[full] = [line.rstrip("\n") for line in lines]
    try:
        producer.start()
        collector.start()
        wait_until(lambda: len(records(out)) == 3 * len(NAMES), timeout_s=30)
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)
    got: dict[bytes, list[str]] = {}
    for record in records(out):
        got.setdefault(exact_path(record), []).append(record["line"])
    assert got == expected  # five distinct files, each with its own lines, names exact
    by_name = {exact_path(r): r for r in records(out)}
    plain = by_name[os.path.join(logs, b"plain.log")]
    assert "path_b64" not in plain  # the common case stays as it was
    tab = by_name[os.path.join(logs, NAMES[0])]
    assert tab["path"] == os.fsdecode(logs) + "/tab\ufffdhere.log"
    bad = by_name[os.path.join(logs, NAMES[2])]
    assert bad["path"] == os.fsdecode(logs) + "/bad\ufffdname.log"


def test_path_b64_only_where_path_is_not_exact() -> None:
    plain = json.loads(format_jsonl(b"x\n", "n", "/var/log/a b.log", "t", 0, True))
    assert plain == {
        "node": "n",
        "path": "/var/log/a b.log",
        "topic": "t",
        "offset": 0,
        "line": "x",
    }
    odd = os.fsdecode(b"/var/log/a\tb\xff.log")
    header = wire.DataHeader("n", "0123456789abcdef", "s", odd, 0, 2, 1)
    decoded = wire.decode(wire.encode_data(b"t", header, b"x\n"))
    assert isinstance(decoded, wire.Data)
    h = decoded.header
    row = json.loads(format_jsonl(b"x\n", "n", h.path, "t", 0, True, h.path_bytes))
    assert row["path"] == "/var/log/a\ufffdb\ufffd.log"
    assert base64.b64decode(row["path_b64"]) == b"/var/log/a\tb\xff.log"


def data_frames(path: str, path_b64: object) -> list[bytes]:
    head = {
        "v": 1,
        "k": "data",
        "node": "n",
        "stream": "0123456789abcdef",
        "source": "s",
        "path": path,
        "path_b64": path_b64,
        "start": 0,
        "end": 2,
        "lines": 1,
    }
    return [b"t", json.dumps(head).encode(), b"x\n"]


@pytest.mark.parametrize(
    ("path", "path_b64"),
    [
        ("/a\ufffd.log", 5),
        ("/a\ufffd.log", "not base64!"),
        ("/a\ufffd.log", "L2EK"),  # padding missing
        ("/a\ufffd.log", base64.b64encode(b"/b\xff.log").decode()),  # not what path shows
        ("/a\ufffd.log", ""),
        ("/a.log", base64.b64encode(b"/a\xff.log").decode()),
    ],
)
def test_path_b64_that_is_not_the_path_is_refused(path: str, path_b64: object) -> None:
    with pytest.raises(ProtocolError, match="path_b64"):
        wire.decode(data_frames(path, path_b64))


def test_a_path_too_long_for_both_forms_keeps_the_readable_one() -> None:
    odd = os.fsdecode(b"/" + b"\xff" * 1000 + b"/end.log")  # fits, but not twice
    header = wire.DataHeader("n", "0123456789abcdef", "s", odd, 0, 2, 1)
    frames = wire.encode_data(b"t", header, b"x\n")
    assert len(frames[1]) <= wire.MAX_HEADER_BYTES
    decoded = wire.decode(frames)
    assert isinstance(decoded, wire.Data)
    assert decoded.header.path == "/" + "\ufffd" * 1000 + "/end.log"
    assert decoded.header.path_bytes is None
