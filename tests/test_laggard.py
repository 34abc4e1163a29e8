"""A collector that stops reading must not stall the others for more than
`publish.laggard_timeout`; it is left behind, repairs from the files by
replay, and ends byte-exact. A lone collector that is merely slow still paces
its producer, with no re-reading of the files.

Real daemons, real files, real sockets: a collector is frozen with SIGSTOP
(a hung disk, a paused VM), its disk is filled (a tmpfs), or it is slowed by
the test stopping and continuing it in a duty cycle.
"""

from __future__ import annotations

import bisect
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.helpers import (
    Daemon,
    NetNamespaces,
    collector_config,
    fill_up,
    free_port,
    numbered_lines,
    producer_config,
    stop_all,
    tmpfs,
    wait_until,
)
from zaggd import config, wire
from zaggd.errors import ConfigError
from zaggd.producer.laggards import send_past_full

LINE_BYTES = 100
# A token bucket at 6.4 Mbit/s: 80% of the 1 MB/s the slow-collector test writes.
TBF_80_PERCENT = ["rate", "6400kbit", "burst", "32kb", "latency", "1s"]


class PacedWriter(threading.Thread):
    """Appends numbered lines to `path` at `rate` lines/s, every `every_s`, and
    remembers how many bytes were in the file at each moment."""

    def __init__(self, path: Path, prefix: str, rate: float, every_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.prefix = prefix
        self.rate = rate
        self.every_s = every_s
        self.stop_event = threading.Event()
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.lines = 0

    def run(self) -> None:
        start = time.monotonic()
        with open(self.path, "ab", buffering=0) as f:
            while not self.stop_event.is_set():
                due = int((time.monotonic() - start) * self.rate)
                if due > self.lines:
                    f.write(b"".join(numbered_lines(self.prefix, self.lines, due - self.lines)))
                    self.lines = due
                    self.times.append(time.monotonic())
                    self.sizes.append(self.lines * LINE_BYTES)
                time.sleep(self.every_s)

    def written_by(self, moment: float) -> int:
        """Bytes the file held at monotonic time `moment`."""
        i = bisect.bisect_right(self.times, moment)
        return self.sizes[i - 1] if i else 0

    def finish(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def thaw(*daemons: Daemon) -> None:
    """SIGCONT, so that a test failing mid-freeze still stops its daemons cleanly."""
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.signal(signal.SIGCONT)


def counters(daemon: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = daemon.status()["counters"]
    return result


def watch_while_frozen(
    frozen: Daemon, freeze_s: float, writer: PacedWriter, outputs: list[Path]
) -> list[list[tuple[float, int]]]:
    """SIGSTOP `frozen` for `freeze_s`, sampling the size of each of `outputs`."""
    samples: list[list[tuple[float, int]]] = [[] for _ in outputs]
    frozen.signal(signal.SIGSTOP)
    try:
        end = time.monotonic() + freeze_s
        while time.monotonic() < end:
            now = time.monotonic()
            for trace, path in zip(samples, outputs, strict=True):
                trace.append((now, size_of(path)))
            time.sleep(0.2)
    finally:
        frozen.signal(signal.SIGCONT)
    return samples


def assert_kept_up(
    name: str, trace: list[tuple[float, int]], writer: PacedWriter, within_s: float
) -> None:
    """The output had, at the end of the freeze, every line written `within_s` before."""
    moment, size = trace[-1]
    wanted = writer.written_by(moment - within_s)
    assert size >= wanted, (
        f"{name} stalled while another collector was frozen: it had {size} bytes, "
        f"the file had {wanted} bytes {within_s} s earlier; "
        f"trace (s, bytes): {[(round(t - trace[0][0], 1), s) for t, s in trace[::5]]}"
    )


def assert_caught_up(collector: Daemon, node: str) -> None:
    """The collector says it was left behind by `node`, and then that it caught up."""
    wait_until(lambda: f"caught up with node {node}" in collector.output(), timeout_s=10)
    assert f"left behind by node {node}" in collector.output()
    done = counters(collector)
    assert done["left_behind"] >= 1 and done["caught_up"] == done["left_behind"]


def test_libzmq_skips_a_full_queue_until_its_reader_has_read_half_of_it(tmp_path: Path) -> None:
    """What leaving a collector behind relies on (docs/laggards.md), on the
    installed libzmq: one send with NODROP off skips the full subscriber only,
    later NODROP sends skip it too, and it gets messages again once it reads."""
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    subs = [context.socket(zmq.SUB) for _ in range(2)]
    try:
        xpub.setsockopt(zmq.XPUB_NODROP, 1)
        xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
        xpub.setsockopt(zmq.SNDHWM, 4)
        xpub.setsockopt(zmq.SNDBUF, 65536)
        xpub.bind(f"ipc://{tmp_path}/x.sock")
        for sub in subs:
            sub.setsockopt(zmq.RCVHWM, 4)
            sub.setsockopt(zmq.RCVBUF, 65536)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(f"ipc://{tmp_path}/x.sock")
        joined = []
        wait_until(lambda: (xpub.poll(10) and joined.append(xpub.recv())) or len(joined) == 2)
        reading, stuck = subs
        body = b"x" * 65536

        def send(n: int, wait_s: float = 0.2) -> bool:
            """Send message `n` with NODROP, waiting up to `wait_s` for room."""
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    xpub.send_multipart([b"t", str(n).encode(), body], zmq.NOBLOCK)
                    return True
                except zmq.Again:
                    if time.monotonic() > deadline:
                        return False
                    xpub.getsockopt(zmq.EVENTS)  # take in the notices of room
                    time.sleep(0.001)

        def receive(sub: zmq.Socket, wait_ms: int = 2000) -> int | None:  # type: ignore[type-arg]
            if not sub.poll(wait_ms):
                return None
            return int(sub.recv_multipart()[1])

        sent = 0
        while send(sent):  # until the stuck one's queue is full
            assert receive(reading) == sent
            sent += 1
            assert sent < 10_000
        assert send_past_full(xpub, [b"t", str(sent).encode(), body])
        assert receive(reading) == sent
        left_at = sent
        for n in range(sent + 1, sent + 200):  # NODROP again: the stuck one is skipped
            assert send(n)
            assert receive(reading) == n
        got = [receive(stuck) for _ in range(left_at)]
        assert got == list(range(left_at))  # what was queued before, in order
        # It has read its queue: libzmq takes it back (asynchronously), and it
        # gets what is sent from then on; what was sent meanwhile it never gets.
        back = None
        for n in range(left_at + 200, left_at + 400):
            assert send(n)
            assert receive(reading) == n
            back = receive(stuck, wait_ms=20)
            if back is not None:
                break
        assert back is not None and back >= left_at + 200
    finally:
        for sock in (xpub, *subs):
            sock.close(linger=0)
        context.term()


def test_laggard_timeout_is_a_publish_duration_of_one_second_by_default(tmp_path: Path) -> None:
    def load(extra: str) -> config.ProducerConfig:
        path = tmp_path / "p.yaml"
        path.write_text(
            "state_dir: s\npublish:\n  bind: ['tcp://127.0.0.1:7450']\n"
            f"  replay: 'tcp://127.0.0.1:7451'\n{extra}"
            "sources: [{name: a, topic: a, paths: ['/tmp/x/*.log']}]\n"
        )
        return config.load_producer(str(path))

    assert load("").publish.laggard_timeout_s == 1.0
    assert load("  laggard_timeout: 300ms\n").publish.laggard_timeout_s == 0.3
    with pytest.raises(ConfigError) as error:
        load("  laggard_timeout: 10ms\n")
    assert str(error.value) == (
        f"{tmp_path / 'p.yaml'}:5: publish.laggard_timeout: must be at least 0.05s, got '10ms'"
    )


def binding_producer(
    tmp_path: Path, node: str, prefix: list[str] | None = None, **publish: str
) -> tuple[Daemon, Path, dict[str, object], int]:
    """A producer tailing tmp_path/logs/*.log (topic app), binding on 127.0.0.1: the
    daemon, its log folder, the subscribe section of its collectors, its replay port."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    producer = Daemon(
        "producer",
        producer_config(
            tmp_path,
            node,
            [{"name": "app", "topic": "app", "paths": [str(logs / "*.log")]}],
            {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}", **publish},
        ),
        tmp_path,
        prefix=prefix,
    )
    return producer, logs, {"connect": [f"tcp://127.0.0.1:{port}"]}, replay


def test_frozen_collector_among_three_does_not_stall_the_others(tmp_path: Path) -> None:
    producer, logs, subscribe, _ = binding_producer(tmp_path, "web-01")
    names = ["c1", "c2", "c3"]
    collectors = [
        Daemon("collector", collector_config(tmp_path, n, subscribe), tmp_path) for n in names
    ]
    outputs = [tmp_path / f"out-{n}" / "app" / "web-01-app.log" for n in names]
    source = logs / "app.log"
    writer = PacedWriter(source, "a", rate=10_000)
    try:
        producer.start()
        for c in collectors:
            c.start()
        writer.start()
        wait_until(lambda: all(size_of(p) >= 100_000 for p in outputs), timeout_s=30)
        samples = watch_while_frozen(collectors[2], 14.0, writer, outputs[:2])
        for name, trace in zip(names[:2], samples, strict=True):
            assert_kept_up(name, trace, writer, within_s=3.0)
        writer.finish()
        expected = source.read_bytes()
        for path in outputs:
            wait_until(lambda p=path: size_of(p) >= len(expected), timeout_s=60, interval_s=0.2)
            assert path.read_bytes() == expected
        assert counters(producer)["laggards_left_behind"] >= 1
        assert "collector left behind" in producer.output()
        assert_caught_up(collectors[2], "web-01")
        for c in collectors:
            assert c.stop() == 0
        assert producer.stop() == 0
    finally:
        thaw(*collectors)
        writer.finish()
        stop_all(producer, *collectors)


def test_frozen_collector_on_another_topic_does_not_stall_a_bound_collector(
    tmp_path: Path,
) -> None:
    """Collectors bind, the producer connects to both; each takes its own topic."""
    logs = tmp_path / "logs"
    logs.mkdir()
    ports = {n: (free_port(), free_port()) for n in ("ca", "cb")}
    collectors = [
        Daemon(
            "collector",
            collector_config(
                tmp_path,
                n,
                {
                    "bind": [f"tcp://127.0.0.1:{ports[n][0]}"],
                    "replay": f"tcp://127.0.0.1:{ports[n][1]}",
                    "topics": [n[1]],
                },
            ),
            tmp_path,
        )
        for n in ports
    ]
    producer = Daemon(
        "producer",
        producer_config(
            tmp_path,
            "web-02",
            [
                {"name": "a", "topic": "a", "paths": [str(logs / "a.log")]},
                {"name": "b", "topic": "b", "paths": [str(logs / "b.log")]},
            ],
            {
                "connect": [f"tcp://127.0.0.1:{d}" for d, _ in ports.values()],
                "replay": [f"tcp://127.0.0.1:{r}" for _, r in ports.values()],
            },
        ),
        tmp_path,
    )
    outputs = [tmp_path / f"out-{n}" / n[1] / f"web-02-{n[1]}.log" for n in ports]
    writers = [PacedWriter(logs / f"{t}.log", t, rate=6_000) for t in ("a", "b")]
    try:
        for c in collectors:
            c.start()
        producer.start()
        for w in writers:
            w.start()
        wait_until(lambda: all(size_of(p) >= 100_000 for p in outputs), timeout_s=30)
        (trace,) = watch_while_frozen(collectors[0], 14.0, writers[1], outputs[1:])
        assert_kept_up("the collector of topic b", trace, writers[1], within_s=3.0)
        for w in writers:
            w.finish()
        for w, path in zip(writers, outputs, strict=True):
            expected = w.path.read_bytes()
            wait_until(lambda p=path, e=expected: size_of(p) >= len(e), timeout_s=60)
            assert path.read_bytes() == expected
        assert counters(producer)["laggards_left_behind"] >= 1
        assert_caught_up(collectors[0], "web-02")
        assert counters(collectors[1])["left_behind"] == 0
    finally:
        thaw(*collectors)
        for w in writers:
            w.finish()
        stop_all(producer, *collectors)


def is_still(value: Callable[[], int], for_s: float = 1.0) -> bool:
    """Whether a positive `value()` stays the same for `for_s`."""
    before = value()
    time.sleep(for_s)
    return before > 0 and value() == before


def test_collector_on_a_full_disk_is_left_behind_and_catches_up(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=32m,mode=0755") as small:
        producer, logs, subscribe, _ = binding_producer(tmp_path, "web-03")
        healthy = Daemon("collector", collector_config(tmp_path, "c1", subscribe), tmp_path)
        full = Daemon(
            "collector",
            collector_config(
                tmp_path, "c2", subscribe, {"path": str(small / "{topic}" / "{node}.log")}
            ),
            tmp_path,
        )
        outputs = [tmp_path / "out-c1" / "app" / "web-03-app.log", small / "app" / "web-03.log"]
        writer = PacedWriter(logs / "app.log", "d", rate=10_000)
        try:
            producer.start()
            healthy.start()
            full.start()
            writer.start()
            wait_until(lambda: all(size_of(p) >= 100_000 for p in outputs), timeout_s=30)
            filler = fill_up(small)
            wait_until(lambda: "disk full" in full.output(), timeout_s=30)
            time.sleep(12.0)
            trace = [(time.monotonic(), size_of(outputs[0]))]
            assert_kept_up("the collector with room", trace, writer, within_s=3.0)
            filler.unlink()
            writer.finish()
            expected = writer.path.read_bytes()
            for path in outputs:
                wait_until(lambda p=path: size_of(p) >= len(expected), timeout_s=60)
                assert path.read_bytes() == expected
            assert counters(producer)["laggards_left_behind"] >= 1
            assert_caught_up(full, "web-03")
        finally:
            writer.finish()
            stop_all(producer, healthy, full)


def test_replays_to_a_collector_that_stopped_reading_do_not_hold_the_others(
    tmp_path: Path,
) -> None:
    """A client asks for a large range and never reads the answer (what a stopped
    collector does): a collector that then needs a replay gets it at once."""
    producer, logs, subscribe, replay = binding_producer(tmp_path, "web-04")
    source = logs / "app.log"
    source.write_bytes(b"".join(numbered_lines("r", 0, 400_000)))  # 40 MB, sent to no one
    collector = Daemon("collector", collector_config(tmp_path, "c1", subscribe), tmp_path)
    context = zmq.Context()
    stuck = context.socket(zmq.DEALER)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt(zmq.LINGER, 0)
    try:
        producer.start()
        stream = wait_until(lambda: producer.status().get("streams_detail"), timeout_s=20)[0]
        wait_until(lambda: counters(producer)["bytes_out"] >= source.stat().st_size)
        stuck.connect(f"tcp://127.0.0.1:{replay}")
        size = source.stat().st_size
        for _ in range(4):
            request = wire.ReplayRequest("web-04", stream["stream"], 0, size)
            stuck.send_multipart(wire.encode_replay_request(request))
        wait_until(lambda: is_still(lambda: counters(producer)["replay_bytes_out"]), timeout_s=30)
        started = time.monotonic()
        collector.start()
        out = tmp_path / "out-c1" / "app" / "web-04-app.log"
        wait_until(lambda: size_of(out) >= size, timeout_s=60)
        took_s = time.monotonic() - started
        assert out.read_bytes() == source.read_bytes()
        # About 3 s here; behind the stopped client it waited 10 s per request of it.
        assert took_s < 15.0, (
            f"the collector's replay waited behind a stopped client: {took_s:.1f} s"
        )
    finally:
        stuck.close(linger=0)
        context.term()
        stop_all(producer, collector)


def io_read_bytes(pid: int) -> int:
    """Bytes the process read through read(2) and the like: files, not sockets (rchar)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


def test_lone_slow_collector_paces_its_producer_without_rereading(tmp_path: Path) -> None:
    """The collector's network carries 80% of the write rate (tc in a private
    network namespace): the producer waits for it, reading the file once."""
    if os.geteuid() != 0 or shutil.which("tc") is None or shutil.which("ip") is None:
        pytest.skip("needs root, ip and tc to shape a private loopback")
    nets = NetNamespaces("zlg")
    try:
        ns = nets.add("slow")
        nets.ip(ns, "link", "set", "lo", "mtu", "1500")
        shaped = subprocess.run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "tbf", *TBF_80_PERCENT],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if shaped.returncode != 0:
            pytest.skip(f"cannot shape the loopback here: {shaped.stderr.strip()}")
        producer, logs, subscribe, _ = binding_producer(
            tmp_path, "web-05", nets.prefix(ns), laggard_timeout="300ms"
        )
        collector = Daemon(
            "collector",
            collector_config(tmp_path, "c1", subscribe),
            tmp_path,
            prefix=nets.prefix(ns),
        )
        out = tmp_path / "out-c1" / "app" / "web-05-app.log"
        # 1 MB/s (8 Mbit/s), in writes of 50 KB: the tailer checks the file's first
        # KiB around each read, which is not reading the file again.
        writer = PacedWriter(logs / "app.log", "s", rate=10_000, every_s=0.05)
        try:
            producer.start()
            collector.start()
            read0 = io_read_bytes(producer.pid)
            writer.start()
            time.sleep(10.0)
            writer.finish()
            size = writer.path.stat().st_size
            behind = size - size_of(out)
            assert behind > size // 10, f"the collector kept up ({behind} bytes behind)"
            wait_until(lambda: size_of(out) >= size, timeout_s=60, interval_s=0.2)
            assert out.read_bytes() == writer.path.read_bytes()
            ratio = (io_read_bytes(producer.pid) - read0) / size
            assert ratio <= 1.3, f"the producer read the file {ratio:.2f} times"
            assert counters(producer)["laggards_left_behind"] == 0
            assert counters(producer)["send_held_ms"] > 1000
            assert counters(collector)["left_behind"] == 0
        finally:
            writer.finish()
            stop_all(producer, collector)
    finally:
        nets.close()
