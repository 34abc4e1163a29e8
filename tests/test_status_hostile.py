"""`zaggd status --socket` against a hostile control socket, served here on a real UNIX socket.

Whatever answers, status prints one line naming the socket and what is wrong,
exits non-zero, within its timeout and in bounded memory.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.test_config_hostile import run_bounded
from zaggd import control

Answer = Callable[[socket.socket, threading.Event], None]
SERVE_LIMIT_S = 60.0


@contextlib.contextmanager
def fake_daemon(path: Path, answer: Answer) -> Iterator[None]:
    """A control socket at `path` whose every connection is handled by `answer`."""
    done = threading.Event()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.1)

    def serve() -> None:
        deadline = time.monotonic() + SERVE_LIMIT_S
        while not done.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                conn.recv(64)
                answer(conn, done)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
        server.close()


def fixed(data: bytes) -> Answer:
    def answer(conn: socket.socket, done: threading.Event) -> None:
        conn.sendall(data)

    return answer


def endless(conn: socket.socket, done: threading.Event) -> None:
    """Never stops answering: a JSON string that never ends."""
    conn.sendall(b'{"daemon": "producer", "status": "')
    chunk = b"x" * 65536
    deadline = time.monotonic() + SERVE_LIMIT_S
    while not done.is_set() and time.monotonic() < deadline:
        conn.sendall(chunk)


def dripping(conn: socket.socket, done: threading.Event) -> None:
    """Answers one byte at a time, slowly, without end."""
    deadline = time.monotonic() + SERVE_LIMIT_S
    while not done.is_set() and time.monotonic() < deadline:
        conn.sendall(b" ")
        time.sleep(0.2)


def deep(depth: int) -> bytes:
    return b'{"daemon": "producer", "status": "ok", "extra": ' + b"[" * depth + b"]" * depth + b"}"


def answer_of(obj: object) -> Answer:
    return fixed(json.dumps(obj).encode() + b"\n")


HOSTILE: dict[str, tuple[Answer, str]] = {
    "deep JSON": (fixed(deep(100_000)), "the daemon's answer is nested too deeply"),
    "deep JSON within the parser's reach": (
        fixed(deep(500)),
        "the daemon's answer is nested too deeply",
    ),
    "streams_detail of numbers": (
        answer_of({"daemon": "producer", "status": "ok", "streams_detail": [5, 6]}),
        "the daemon's answer is malformed: streams_detail[0]: expected an object, got 5",
    ),
    "streams_detail not a list": (
        answer_of({"daemon": "producer", "streams_detail": "all"}),
        "the daemon's answer is malformed: streams_detail: expected a list, got 'all'",
    ),
    "a stream row holding a list": (
        answer_of({"daemon": "collector", "streams_detail": [{"stream": "s", "lag": [1]}]}),
        "the daemon's answer is malformed: streams_detail[0].lag: expected a number, "
        "a string, a boolean or null, got [1]",
    ),
    "counters of lists": (
        answer_of({"daemon": "producer", "counters": {"lines_out": [1, 2]}}),
        "the daemon's answer is malformed: counters.lines_out: expected a number, got [1, 2]",
    ),
    "counters not an object": (
        answer_of({"daemon": "producer", "counters": 7}),
        "the daemon's answer is malformed: counters: expected an object, got 7",
    ),
    "status not a string": (
        answer_of({"daemon": "producer", "status": {"a": 1}}),
        "the daemon's answer is malformed: status: expected a string, got {'a': 1}",
    ),
    "not JSON": (fixed(b"\xff\xfe hello\n"), "the daemon's answer is not JSON"),
    "a list": (answer_of([1, 2]), "the daemon's answer is not a JSON object"),
    "never stops answering": (
        endless,
        f"the daemon's answer is over {control.MAX_ANSWER_BYTES >> 20} MiB",
    ),
    "answers one byte at a time": (
        dripping,
        f"no complete answer within {control.QUERY_TIMEOUT_S:.0f} s",
    ),
}


@pytest.mark.parametrize("table", [True, False], ids=["table", "json"])
@pytest.mark.parametrize("answer, problem", HOSTILE.values(), ids=list(HOSTILE))
def test_status_against_a_hostile_socket_is_one_line(
    tmp_path: Path, answer: Answer, problem: str, table: bool
) -> None:
    path = tmp_path / "control.sock"
    with fake_daemon(path, answer):
        started = time.monotonic()
        result, _ = run_bounded(["status", "--socket", str(path), *([] if table else ["--json"])])
        took_s = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    assert result.stderr == f"zaggd: {path}: {problem}\n"
    assert took_s < control.QUERY_TIMEOUT_S + 10


def test_status_prints_a_well_formed_answer(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    good = {
        "daemon": "producer",
        "node": "web-01",
        "status": "1 streams",
        "counters": {"lines_out": 3, "bytes_out": 12},
        "streams_detail": [{"stream": "ab", "path": "/x.log", "offset": 12, "open": True}],
    }
    with fake_daemon(path, answer_of(good)):
        result, _ = run_bounded(["status", "--socket", str(path)])
        as_json, _ = run_bounded(["status", "--socket", str(path), "--json"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "producer web-01: 1 streams"
    assert "lines_out" in result.stdout and "/x.log" in result.stdout
    assert json.loads(as_json.stdout) == good
