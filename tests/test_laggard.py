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
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import (
    Daemon,
    collector_config,
    free_port,
    numbered_lines,
    producer_config,
    stop_all,
    wait_until,
)

LINE_BYTES = 100


class PacedWriter(threading.Thread):
    """Appends numbered lines to `path` at `rate` lines/s, every 10 ms, and
    remembers how many bytes were in the file at each moment."""

    def __init__(self, path: Path, prefix: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.prefix = prefix
        self.rate = rate
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
                time.sleep(0.01)

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


def test_frozen_collector_among_three_does_not_stall_the_others(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, replay = free_port(), free_port()
    producer = Daemon(
        "producer",
        producer_config(
            tmp_path,
            "web-01",
            [{"name": "app", "topic": "app", "paths": [str(logs / "*.log")]}],
            {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
        ),
        tmp_path,
    )
    names = ["c1", "c2", "c3"]
    collectors = [
        Daemon(
            "collector",
            collector_config(tmp_path, n, {"connect": [f"tcp://127.0.0.1:{port}"]}),
            tmp_path,
        )
        for n in names
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
