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
    append_lines,
    collector_config,
    ends_with,
    free_port,
    numbered_lines,
    probe_line,
    producer_config,
    stop_all,
    wait_until,
)
from zaggd.errors import ZaggdError

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
    """The output equals the source. A probe line appended to the source (the
    writer has finished) is waited for at the end of the output: once it is
    there, every line before it was processed, and the comparison is final."""
    probe = probe_line()
    append_lines(source, [probe])
    want = source.read_bytes()
    out = output_of(tmp_path, collector)
    with contextlib.suppress(AssertionError):  # the comparison below says what differs
        wait_until(lambda: ends_with(out, probe), timeout_s, 0.2)
    got = out.read_bytes() if out.exists() else b""
    if got != want:
        got_lines, want_lines = got.splitlines(), want.splitlines()
        dupes = len(got_lines) - len(set(got_lines))
        missing = len(set(want_lines) - set(got_lines))
        raise AssertionError(
            f"output differs: {len(got_lines)} lines vs {len(want_lines)} in source; "
            f"{dupes} duplicated, {missing} missing"
        )


def repaired(collector: Daemon) -> int:
    """The collector's bytes_repaired in its current life (0 if it cannot answer)."""
    try:
        return int(collector.status()["counters"]["bytes_repaired"])
    except ZaggdError:
        return 0


def kill_repeatedly(daemon: Daemon, writer: Writer, kills: int) -> int:
    """kill -9 and restart `daemon` while `writer` writes; returns, for a collector,
    the bytes it repaired in the lives that ended, each read just before its kill."""
    rng = random.Random(7)
    period = writer.duration_s / (kills + 1)
    total = 0
    for _ in range(kills):
        time.sleep(period * rng.uniform(0.5, 1.0))
        if daemon.kind == "collector":
            total += repaired(daemon)
        daemon.kill()
        daemon.start()
    return total


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["collector", "producer"])
def test_killed_ten_times(tmp_path: Path, victim: str) -> None:
    producer, (collector,), logs = pair(tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log")
        writer.start()
        killed = collector if victim == "collector" else producer
        repaired_before = kill_repeatedly(killed, writer, 10)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
        # A collector back from a kill asks for what came after its checkpoint:
        # lines were written meanwhile, so some came by replay.
        if victim == "collector":
            assert repaired_before + repaired(collector) > 0
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
        # Lines written before the collector's subscription took hold come by
        # replay: count from when that is done.
        wait_until(lambda: collector.status()["gaps_open"] == 0, 20)
        waits, before = producer.status()["counters"]["send_waits"], collector.status()["counters"]
        collector.signal(signal.SIGSTOP)
        time.sleep(10.0)
        collector.signal(signal.SIGCONT)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
        # Back-pressure, not drops: the producer waited for the frozen collector
        # (the file was the buffer), and so nothing was lost on the way to repair.
        assert producer.status()["counters"]["send_waits"] > waits
        after = collector.status()["counters"]
        for name in ("gaps_found", "bytes_repaired"):
            assert after[name] == before[name], (before, after)
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
        stopped_at = writer.written
        time.sleep(15.0)
        # Lines written in the outage's first half were published (to nobody)
        # long before the restart: they can only come by replay.
        unseen = writer.written - stopped_at
        time.sleep(15.0)
        collector.start()
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
        assert unseen > 0 and repaired(collector) >= unseen * 100
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
        self.bytes_relayed = 0

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
                with self.lock:
                    self.bytes_relayed += len(data)
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
    """Both links, data and replay, go through relays that are cut together:
    heartbeats advertise the replay relay, so repairs cross the cut network too."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    data_link, replay_link = CuttableProxy(port), CuttableProxy(replay)
    links = (data_link, replay_link)
    for link in links:
        link.start()
    pcfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {
            "bind": [f"tcp://127.0.0.1:{port}"],
            "replay": f"tcp://127.0.0.1:{replay}",
            "advertise": f"tcp://127.0.0.1:{replay_link.port}",
        },
    )
    ccfg = collector_config(tmp_path, "c0", {"connect": [f"tcp://127.0.0.1:{data_link.port}"]})
    producer, collector = Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path)
    try:
        collector.start()
        producer.start()
        writer = Writer(logs / "a.log", total=200_000, duration_s=10.0)
        writer.start()
        for _ in range(3):
            time.sleep(2.0)
            for link in links:
                link.open.clear()
            time.sleep(1.5)
            for link in links:
                link.open.set()
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log")
        # Lines published while the data link was down reached nobody: they
        # came by replay, through the replay relay.
        assert repaired(collector) > 0
        assert replay_link.bytes_relayed >= repaired(collector)
    finally:
        stop_all(producer, collector)
        for link in links:
            link.stop_flag.set()
            link.join(timeout=5)


@pytest.mark.slow
def test_two_collectors_one_killed_repeatedly(tmp_path: Path) -> None:
    producer, collectors, logs = pair(tmp_path, collectors=2)
    try:
        for c in collectors:
            c.start()
        producer.start()
        writer = Writer(logs / "a.log", total=300_000, duration_s=10.0)
        writer.start()
        repaired_before = kill_repeatedly(collectors[1], writer, 6)
        writer.join(timeout=120)
        assert_exact(tmp_path, logs / "a.log", 0)
        assert_exact(tmp_path, logs / "a.log", 1)
        assert repaired_before + repaired(collectors[1]) > 0
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
