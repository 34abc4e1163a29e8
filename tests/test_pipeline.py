"""End to end: real producers and collectors as subprocesses, real files and sockets."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    collector_config,
    free_port,
    numbered_lines,
    producer_config,
    read_output_lines,
    stop_all,
    wait_until,
)


def by_prefix(lines: list[bytes]) -> dict[str, list[bytes]]:
    groups: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        groups[line.split(b" ", 1)[0].decode()].append(line)
    return groups


def endpoints(tmp_path: Path, transport: str) -> tuple[str, str]:
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    return f"ipc://{tmp_path}/data.sock", f"ipc://{tmp_path}/replay.sock"


def wiring(
    tmp_path: Path, transport: str, binder: str
) -> tuple[dict[str, object], dict[str, object]]:
    data, replay = endpoints(tmp_path, transport)
    if binder == "producer":
        return {"bind": [data], "replay": replay}, {"connect": [data], "topics": [""]}
    return {"connect": [data], "replay": [replay]}, {
        "bind": [data],
        "replay": replay,
        "topics": [""],
    }


def writer_thread(
    path: Path, lines: list[bytes], chunk: int = 500, pause_s: float = 0.002
) -> threading.Thread:
    """Append `lines` to `path` in chunks while the daemons run."""

    def run() -> None:
        with open(path, "ab") as f:
            for i in range(0, len(lines), chunk):
                f.write(b"".join(lines[i : i + chunk]))
                f.flush()
                time.sleep(pause_s)

    t = threading.Thread(target=run)
    t.start()
    return t


def wait_for_lines(folder: Path, count: int, timeout_s: float = 60.0) -> list[bytes]:
    wait_until(lambda: len(read_output_lines(folder)) >= count, timeout_s, 0.2)
    time.sleep(0.5)  # anything extra (a duplicate) would show up now
    return read_output_lines(folder)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("binder", ["producer", "collector"])
def test_four_files_appended_while_running_arrive_exactly_once(
    tmp_path: Path, transport: str, binder: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    publish, subscribe = wiring(tmp_path, transport, binder)
    pcfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app.main", "paths": [f"{logs}/*.log"]}],
        publish,
    )
    ccfg = collector_config(tmp_path, "c1", subscribe)
    collector = Daemon("collector", ccfg, tmp_path)
    producer = Daemon("producer", pcfg, tmp_path)
    try:
        collector.start()
        producer.start()
        expected = {f"f{i}": numbered_lines(f"f{i}", 0, 50_000) for i in range(4)}
        writers = [writer_thread(logs / f"{name}.log", lines) for name, lines in expected.items()]
        for w in writers:
            w.join(timeout=120)
        got = by_prefix(wait_for_lines(tmp_path / "out-c1", 200_000))
        for name, lines in expected.items():
            assert len(got[name]) == len(lines), name
            assert got[name] == lines, f"{name}: lines differ or out of order"
        assert producer.stop() == 0
        assert collector.stop() == 0
    finally:
        stop_all(producer, collector)


def test_three_producers_into_one_collector(tmp_path: Path) -> None:
    port = free_port()
    replay = free_port()
    ccfg = collector_config(
        tmp_path,
        "c1",
        {
            "bind": [f"tcp://127.0.0.1:{port}"],
            "replay": f"tcp://127.0.0.1:{replay}",
            "topics": [""],
        },
    )
    collector = Daemon("collector", ccfg, tmp_path)
    producers = []
    try:
        collector.start()
        for n in range(3):
            logs = tmp_path / f"logs{n}"
            logs.mkdir()
            cfg = producer_config(
                tmp_path,
                f"node{n}",
                [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
                {"connect": [f"tcp://127.0.0.1:{port}"], "replay": [f"tcp://127.0.0.1:{replay}"]},
            )
            producers.append(Daemon("producer", cfg, tmp_path).start())
        for n in range(3):
            (tmp_path / f"logs{n}" / "a.log").write_bytes(
                b"".join(numbered_lines(f"n{n}", 0, 20_000))
            )
        got = wait_for_lines(tmp_path / "out-c1", 60_000)
        assert len(got) == 60_000
        for n in range(3):
            out = (tmp_path / "out-c1" / "app" / f"node{n}-app.log").read_bytes()
            assert out == (tmp_path / f"logs{n}" / "a.log").read_bytes()
    finally:
        stop_all(*producers, collector)


def test_one_producer_into_two_collectors(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    collectors = [
        Daemon(
            "collector",
            collector_config(tmp_path, f"c{i}", {"connect": [f"tcp://127.0.0.1:{port}"]}),
            tmp_path,
        )
        for i in range(2)
    ]
    producer = Daemon("producer", pcfg, tmp_path)
    try:
        for c in collectors:
            c.start()
        producer.start()
        writer_thread(logs / "a.log", numbered_lines("a", 0, 30_000)).join(timeout=60)
        source = (logs / "a.log").read_bytes()
        for i in range(2):
            wait_for_lines(tmp_path / f"out-c{i}", 30_000)
            assert (tmp_path / f"out-c{i}" / "app" / "node1-app.log").read_bytes() == source
    finally:
        stop_all(producer, *collectors)


def test_collector_gets_only_its_topics(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [
            {"name": "a", "topic": "a.x", "paths": [f"{logs}/a*.log"]},
            {"name": "b", "topic": "b.x", "paths": [f"{logs}/b*.log"]},
        ],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    ccfg = collector_config(
        tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{port}"], "topics": ["a."]}
    )
    producer, collector = Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path)
    try:
        collector.start()
        producer.start()
        (logs / "a1.log").write_bytes(b"".join(numbered_lines("a", 0, 1000)))
        (logs / "b1.log").write_bytes(b"".join(numbered_lines("b", 0, 1000)))
        got = wait_for_lines(tmp_path / "out-c1", 1000)
        time.sleep(1.5)  # heartbeats of topic b would have come by now
        got = read_output_lines(tmp_path / "out-c1")
        assert len(got) == 1000
        assert all(line.startswith(b"a ") for line in got)
        assert not (tmp_path / "out-c1" / "b.x").exists()
        status = collector.status()
        assert status["streams"] == 1
    finally:
        stop_all(producer, collector)


def start_pair(
    tmp_path: Path, source: dict[str, object], output: dict[str, object] | None = None
) -> tuple[Daemon, Daemon]:
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [source],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    ccfg = collector_config(tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{port}"]}, output)
    collector = Daemon("collector", ccfg, tmp_path).start()
    producer = Daemon("producer", pcfg, tmp_path).start()
    return producer, collector


def out_file(tmp_path: Path) -> Path:
    return tmp_path / "out-c1" / "app" / "node1-app.log"


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(b"first\nsecond without newline")
    producer, collector = start_pair(
        tmp_path, {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    )
    try:
        wait_until(
            lambda: out_file(tmp_path).exists() and out_file(tmp_path).read_bytes() == b"first\n"
        )
        time.sleep(1.5)
        assert out_file(tmp_path).read_bytes() == b"first\n"
        with open(log, "ab") as f:
            f.write(b" ends here\n")
        wait_until(
            lambda: out_file(tmp_path).read_bytes() == b"first\nsecond without newline ends here\n"
        )
    finally:
        stop_all(producer, collector)


def test_binary_and_nul_bytes_pass_byte_exact_in_raw(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    payload = b"".join(
        bytes([i, (i * 7) % 256, 0, 0xFF, 0xC3, 0x28]) + b"\n" for i in range(256) if i != 10
    )
    payload = payload.replace(b"\n\n", b"\n")
    (logs / "a.log").write_bytes(payload)
    producer, collector = start_pair(
        tmp_path, {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    )
    try:
        wait_until(
            lambda: (
                out_file(tmp_path).exists() and out_file(tmp_path).stat().st_size >= len(payload)
            )
        )
        assert out_file(tmp_path).read_bytes() == payload
    finally:
        stop_all(producer, collector)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "split",
            [b"short\n", b"a" * 1024 + b"\n", b"a" * 1024 + b"\n", b"a" * 100 + b"\n", b"after\n"],
        ),
        ("truncate", [b"short\n", b"a" * 1024 + b"\n", b"after\n"]),
        ("skip", [b"short\n", b"after\n"]),
    ],
)
def test_long_line_policies(tmp_path: Path, policy: str, expected: list[bytes]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"short\n" + b"a" * 2148 + b"\nafter\n")
    source = {
        "name": "app",
        "topic": "app",
        "paths": [f"{logs}/*.log"],
        "max_line_bytes": "1KiB",
        "long_lines": policy,
    }
    producer, collector = start_pair(tmp_path, source)
    try:
        want = b"".join(expected)
        wait_until(lambda: out_file(tmp_path).exists() and out_file(tmp_path).read_bytes() == want)
        counter = {"split": "lines_split", "truncate": "lines_truncated", "skip": "lines_skipped"}[
            policy
        ]
        assert producer.status()["counters"][counter] >= 1
        time.sleep(1.0)
        assert out_file(tmp_path).read_bytes() == want
    finally:
        stop_all(producer, collector)


def test_prefixed_and_jsonl_formats(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(b'hello\n\xff\xfe binary\nthird "quoted"\n')
    source = {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    producer, collector = start_pair(
        tmp_path,
        source,
        {"path": str(tmp_path / "out-c1" / "{topic}" / "{node}-{source}.log"), "format": "jsonl"},
    )
    try:
        wait_until(
            lambda: (
                out_file(tmp_path).exists() and out_file(tmp_path).read_bytes().count(b"\n") == 3
            )
        )
        rows = [json.loads(line) for line in out_file(tmp_path).read_bytes().splitlines()]
        assert [r["offset"] for r in rows] == [0, 6, 16]
        assert rows[0] == {
            "node": "node1",
            "path": str(log),
            "topic": "app",
            "offset": 0,
            "line": "hello",
        }
        import base64

        assert base64.b64decode(rows[1]["line_b64"]) == b"\xff\xfe binary"
        assert rows[2]["line"] == 'third "quoted"'
    finally:
        stop_all(producer, collector)


def test_prefixed_format_puts_node_and_path_before_each_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(b"one\ntwo\n")
    source = {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    producer, collector = start_pair(
        tmp_path,
        source,
        {
            "path": str(tmp_path / "out-c1" / "{topic}" / "{node}-{source}.log"),
            "format": "prefixed",
        },
    )
    try:
        want = f"node1\t{log}\tone\nnode1\t{log}\ttwo\n".encode()
        wait_until(lambda: out_file(tmp_path).exists() and out_file(tmp_path).read_bytes() == want)
    finally:
        stop_all(producer, collector)
