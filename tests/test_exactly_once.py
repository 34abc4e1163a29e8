"""Exactly once: kill -9, SIGSTOP, outages and network cuts lose and double nothing.

Each test ends with a byte-exact comparison of every stream's output with its
source file.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    collector_config,
    free_port,
    numbered_lines,
    producer_config,
    stop_all,
    wait_until,
)

TOTAL_LINES = 500_000
CHUNK_LINES = 2_000


class Writer(threading.Thread):
    """Appends numbered lines to a file at a steady pace while a test disturbs the daemons."""

    def __init__(
        self, path: Path, total: int = TOTAL_LINES, duration_s: float = 10.0, prefix: str = "w"
    ) -> None:
        super().__init__()
        self.path, self.total, self.duration_s, self.prefix = path, total, duration_s, prefix
        self.written = 0

    def run(self) -> None:
        chunks = self.total // CHUNK_LINES
        pause = self.duration_s / chunks
        with open(self.path, "ab") as f:
            for i in range(chunks):
                f.write(b"".join(numbered_lines(self.prefix, i * CHUNK_LINES, CHUNK_LINES)))
                f.flush()
                self.written += CHUNK_LINES
                time.sleep(pause)


def pair(
    tmp_path: Path, collectors: int = 1, start_at: str = "beginning"
) -> tuple[Daemon, list[Daemon], Path]:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    cs = [
        Daemon(
            "collector",
            collector_config(
                tmp_path, f"c{i}", {"connect": [f"tcp://127.0.0.1:{port}"], "start_at": start_at}
            ),
            tmp_path,
        )
        for i in range(collectors)
    ]
    return Daemon("producer", pcfg, tmp_path), cs, logs


def output_of(tmp_path: Path, collector: int = 0) -> Path:
    return tmp_path / f"out-c{collector}" / "app" / "node1-app.log"


def assert_exact(tmp_path: Path, source: Path, collector: int = 0, timeout_s: float = 90.0) -> None:
    want = source.read_bytes()
    out = output_of(tmp_path, collector)
    wait_until(lambda: out.exists() and out.stat().st_size >= len(want), timeout_s, 0.2)
    time.sleep(0.5)
    got = out.read_bytes()
    if got != want:
        got_lines, want_lines = got.splitlines(), want.splitlines()
        dupes = len(got_lines) - len(set(got_lines))
        missing = len(set(want_lines) - set(got_lines))
        raise AssertionError(
            f"output differs: {len(got_lines)} lines vs {len(want_lines)} in source; "
            f"{dupes} duplicated, {missing} missing"
        )


def kill_repeatedly(daemon: Daemon, writer: Writer, kills: int) -> None:
    rng = random.Random(7)
    period = writer.duration_s / (kills + 1)
    for _ in range(kills):
        time.sleep(period * rng.uniform(0.5, 1.0))
        daemon.kill()
        daemon.start()


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["collector", "producer"])
def test_killed_ten_times(tmp_path: Path, victim: str) -> None:
    producer, (collector,), logs = pair(tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log")
        writer.start()
        kill_repeatedly(collector if victim == "collector" else producer, writer, 10)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
    finally:
        stop_all(producer, collector)


@pytest.mark.slow
def test_collector_stopped_ten_seconds(tmp_path: Path) -> None:
    producer, (collector,), logs = pair(tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log", total=200_000, duration_s=12.0)
        writer.start()
        time.sleep(1.0)
        collector.signal(signal.SIGSTOP)
        time.sleep(10.0)
        collector.signal(signal.SIGCONT)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
    finally:
        stop_all(producer, collector)


@pytest.mark.slow
def test_collector_down_thirty_seconds(tmp_path: Path) -> None:
    producer, (collector,), logs = pair(tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log", total=300_000, duration_s=33.0)
        writer.start()
        time.sleep(1.5)
        assert collector.stop() == 0
        time.sleep(30.0)
        collector.start()
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
    finally:
        stop_all(producer, collector)


class CuttableProxy(threading.Thread):
    """A TCP relay between collector and producer that a test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        super().__init__(daemon=True)
        self.target_port = target_port
        self.port = free_port()
        self.open = threading.Event()
        self.open.set()
        self.stop_flag = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        listener: socket.socket | None = None
        while not self.stop_flag.is_set():
            if not self.open.is_set():
                if listener is not None:
                    listener.close()
                    listener = None
                self.cut_connections()
                time.sleep(0.05)
                continue
            if listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(8)
                listener.settimeout(0.1)
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()  # the producer is not up yet: the collector will retry
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()
        if listener is not None:
            listener.close()
        self.cut_connections()

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut_connections(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.slow
def test_network_cut_and_restored(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    proxy = CuttableProxy(port)
    proxy.start()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    ccfg = collector_config(tmp_path, "c0", {"connect": [f"tcp://127.0.0.1:{proxy.port}"]})
    producer, collector = Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log", total=200_000, duration_s=10.0)
        writer.start()
        for _ in range(3):
            time.sleep(2.0)
            proxy.open.clear()
            time.sleep(1.5)
            proxy.open.set()
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
    finally:
        stop_all(producer, collector)
        proxy.stop_flag.set()
        proxy.join(timeout=5)


@pytest.mark.slow
def test_two_collectors_one_killed_repeatedly(tmp_path: Path) -> None:
    producer, collectors, logs = pair(tmp_path, collectors=2)
    try:
        for c in collectors:
            c.start()
        producer.start()
        writer = Writer(logs / "a.log", total=300_000, duration_s=10.0)
        writer.start()
        kill_repeatedly(collectors[1], writer, 6)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log", 0)
        assert_exact(tmp_path, logs / "a.log", 1)
    finally:
        stop_all(producer, *collectors)


def test_late_collector_with_start_at_beginning_gets_history(tmp_path: Path) -> None:
    producer, (collector,), logs = pair(tmp_path)
    try:
        producer.start()
        (logs / "a.log").write_bytes(b"".join(numbered_lines("h", 0, 100_000)))
        wait_until(lambda: producer.status()["counters"]["lines_out"] >= 100_000, 30)
        collector.start()
        assert_exact(tmp_path, logs / "a.log")
        status = collector.status()
        assert status["counters"]["bytes_repaired"] == (logs / "a.log").stat().st_size
    finally:
        stop_all(producer, collector)


def test_late_collector_with_start_at_end_gets_only_new_lines(tmp_path: Path) -> None:
    producer, (collector,), logs = pair(tmp_path, start_at="end")
    try:
        producer.start()
        log = logs / "a.log"
        log.write_bytes(b"".join(numbered_lines("old", 0, 1000)))
        wait_until(lambda: producer.status()["counters"]["lines_out"] >= 1000, 30)
        collector.start()
        wait_until(lambda: collector.status()["streams"] == 1, 20)
        with open(log, "ab") as f:
            f.write(b"".join(numbered_lines("new", 0, 500)))
        out = output_of(tmp_path)
        want = b"".join(numbered_lines("new", 0, 500))
        wait_until(lambda: out.exists() and out.read_bytes() == want, 20)
    finally:
        stop_all(producer, collector)
