"""A producer's answers to replay requests, as docs/protocol.md section 7 states
them: every valid request gets an answer; a replay starts only where a block
can end (a line start, a long line's piece), and from anywhere else the bytes
up to the next line start are answered "gone"; an answer that stops short of
the range ends with an empty block saying where the stream's bytes stop.

A real producer binds its replay ROUTER; the test asks with a plain DEALER.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.helpers import Daemon, free_port, producer_config, stop_all, wait_until
from zaggd import wire

UNKNOWN = "ffffffffffffffff"
TIMEOUT_MS = 5000
SPLIT_LINE = b"a" * 3000 + b"\n" + b"x\n"  # pieces end at 1024 and 2048
TRUNC_LINE = b"short\n" + b"b" * 3000 + b"\n" + b"y\n"  # head [6, 1030), rest to 3007

Answer = tuple[str, int, int, bytes]  # ("data" or "gone", start, end, block or reason)


class Rig:
    def __init__(self, folder: Path) -> None:
        logs = folder / "logs"
        logs.mkdir()
        self.files = {
            "app": (logs / "app.log", b"hello\nworld\n"),
            "split": (logs / "split.log", SPLIT_LINE),
            "trunc": (logs / "trunc.log", TRUNC_LINE),
        }
        for path, content in self.files.values():
            path.write_bytes(content)
        self.port = free_port()
        sources = [
            {"name": "app", "topic": "app", "paths": [str(logs / "app.log")]},
            {
                "name": "split",
                "topic": "split",
                "paths": [str(logs / "split.log")],
                "max_line_bytes": 1024,
            },
            {
                "name": "trunc",
                "topic": "trunc",
                "paths": [str(logs / "trunc.log")],
                "max_line_bytes": 1024,
                "long_lines": "truncate",
            },
        ]
        config = producer_config(
            folder,
            "node-01",
            sources,
            {"bind": [f"tcp://127.0.0.1:{free_port()}"], "replay": f"tcp://127.0.0.1:{self.port}"},
        )
        self.producer = Daemon("producer", config, folder)
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.streams: dict[str, str] = {}

    def start(self) -> None:
        self.producer.start()
        self.streams = wait_until(self._streams_read, timeout_s=20)
        self.dealer.connect(f"tcp://127.0.0.1:{self.port}")

    def _streams_read(self) -> dict[str, str] | None:
        detail = self.producer.status().get("streams_detail") or []
        assert isinstance(detail, list)
        by_path = {d["path"]: d for d in detail}
        found = {}
        for name, (path, content) in self.files.items():
            entry = by_path.get(str(path))
            if entry is None or entry["offset"] < len(content):
                return None
            found[name] = str(entry["stream"])
        return found

    def answers(self, name: str, start: int, end: int) -> list[Answer]:
        """Everything the producer answers to [start, end) of stream `name`."""
        self.dealer.send_multipart(
            wire.encode_replay_request(
                wire.ReplayRequest("node-01", self.streams[name], start, end)
            )
        )
        return self.until_barrier()

    def until_barrier(self) -> list[Answer]:
        """Messages up to the answer to a request for an unknown stream, sent now."""
        self.dealer.send_multipart(
            wire.encode_replay_request(wire.ReplayRequest("node-01", UNKNOWN, 0, 1))
        )
        got: list[Answer] = []
        for _ in range(100):
            msg = wire.decode(self.dealer.recv_multipart())
            if isinstance(msg, wire.Gone) and msg.stream == UNKNOWN:
                return got
            if isinstance(msg, wire.Data):
                h = msg.header
                got.append(("data", h.start, h.end, bytes(msg.block)))
            else:
                assert isinstance(msg, wire.Gone), msg
                got.append(("gone", msg.start, msg.end, msg.reason.encode()))
        raise AssertionError(f"no end to the answers: {got[:5]}")

    def counter(self, name: str) -> int:
        counters = self.producer.status()["counters"]
        assert isinstance(counters, dict)
        return int(counters.get(name, 0))

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.context.term()
        stop_all(self.producer)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("replay-answers"))
    try:
        rig.start()
        yield rig
        assert "Traceback" not in rig.producer.output()
    finally:
        rig.close()


def test_replay_at_the_very_end_of_a_file_is_answered(rig: Rig) -> None:
    assert rig.answers("app", 12, 100) == [("data", 12, 12, b"")]


def test_replay_past_the_end_of_a_file_is_gone(rig: Rig) -> None:
    assert rig.answers("app", 50, 100) == [("gone", 50, 100, b"file is shorter than the range")]


def test_empty_range_is_answered(rig: Rig) -> None:
    assert rig.answers("app", 6, 6) == [("data", 6, 6, b"")]
    assert rig.answers("app", 0, 0) == [("data", 0, 0, b"")]


def test_answer_stopping_short_ends_with_where_the_stream_stops(rig: Rig) -> None:
    assert rig.answers("app", 0, 100) == [("data", 0, 12, b"hello\nworld\n"), ("data", 12, 12, b"")]
    assert rig.answers("app", 6, 12) == [("data", 6, 12, b"world\n")]


def test_replay_from_inside_a_line_is_gone_up_to_the_next_line(rig: Rig) -> None:
    assert rig.answers("app", 2, 12) == [
        ("gone", 2, 6, b"start is inside a line"),
        ("data", 6, 12, b"world\n"),
    ]
    assert rig.answers("app", 11, 12) == [("gone", 11, 12, b"start is inside a line")]
    assert rig.answers("app", 3, 5) == [("gone", 3, 6, b"start is inside a line")]


def test_replay_may_start_at_each_piece_of_a_split_line(rig: Rig) -> None:
    assert rig.answers("split", 1024, 3003) == [
        ("data", 1024, 2048, b"a" * 1024 + b"\n"),
        ("data", 2048, 3003, b"a" * 952 + b"\nx\n"),
    ]
    assert rig.answers("split", 2048, 2049) == [("data", 2048, 3003, b"a" * 952 + b"\nx\n")]


@pytest.mark.parametrize("start", [1, 1000, 1025, 3000])
def test_replay_from_inside_a_split_line_is_gone_to_its_end(rig: Rig, start: int) -> None:
    assert rig.answers("split", start, 3003) == [
        ("gone", start, 3001, b"start is inside a line"),
        ("data", 3001, 3003, b"x\n"),
    ]


@pytest.mark.parametrize("start", [1030, 2000, 3006])
def test_replay_may_start_in_the_dropped_rest_of_a_truncated_line(rig: Rig, start: int) -> None:
    assert rig.answers("trunc", start, 3009) == [
        ("data", start, 3007, b""),
        ("data", 3007, 3009, b"y\n"),
    ]


@pytest.mark.parametrize("start", [7, 100, 1029])
def test_replay_from_inside_a_truncated_lines_head_is_gone(rig: Rig, start: int) -> None:
    assert rig.answers("trunc", start, 3009) == [
        ("gone", start, 3007, b"start is inside a line"),
        ("data", 3007, 3009, b"y\n"),
    ]


def test_answers_follow_the_cut_of_the_first_sending(rig: Rig) -> None:
    assert rig.answers("trunc", 0, 3009) == [
        ("data", 0, 6, b"short\n"),
        ("data", 6, 1030, b"b" * 1024 + b"\n"),
        ("data", 1030, 3007, b""),
        ("data", 3007, 3009, b"y\n"),
    ]


def test_packed_request_is_refused_on_the_replay_channel(rig: Rig) -> None:
    before = rig.counter("bad_requests")
    request = wire.ReplayRequest("node-01", rig.streams["app"], 0, 12)
    rig.dealer.send_multipart([wire.pack(wire.encode_replay_request(request))])
    assert rig.until_barrier() == []
    assert rig.counter("bad_requests") == before + 1
