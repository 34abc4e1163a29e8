"""A StreamManager driven directly, with a collector's rules in place of the network.

`Harness` holds a real StreamManager over real files and hands it paths the
way discovery would. `Sink` is what a collector would write: per stream an
expected offset, duplicates dropped, overlaps trimmed, gaps filled by a
replay read through the registry (`open_instance` + `read_range`, as the
replay server reads), lost ranges answered "gone". Lines are numbered, so a
test can say exactly which were delivered, twice, or never.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zaggd.config import ProducerConfig, PublishConfig, Source, StartAt
from zaggd.identity import open_instance
from zaggd.metrics import PRODUCER_COUNTERS, Counters
from zaggd.producer.offsets import StoredState
from zaggd.producer.streams import Announce, Registry, Retire, StreamManager
from zaggd.producer.tailer import Block, Tailer, read_range

READ_BYTES = 65536
MAX_ROUNDS = 10_000
LINE_RE = re.compile(rb"^L(\d{7})(?: [^\n]*)?\n\Z")


def line(number: int, width: int = 40) -> bytes:
    """A numbered line, `width` bytes with its newline."""
    head = f"L{number:07d} "
    return (head + "x" * max(0, width - len(head) - 1) + "\n").encode()


def number_of(raw: bytes) -> int:
    m = LINE_RE.match(raw)
    assert m is not None, f"not a numbered line: {raw[:80]!r}"
    return int(m.group(1))


def make_config(
    logs: Path,
    state: Path,
    close_idle_s: float = 300.0,
    max_open_files: int = 1024,
    start_at: StartAt = StartAt.BEGINNING,
    pattern: str = "*.log",
) -> ProducerConfig:
    return ProducerConfig(
        path=str(state / "producer.yaml"),
        node="n1",
        state_dir=str(state),
        publish=PublishConfig(bind=("tcp://127.0.0.1:1",), replay=("tcp://127.0.0.1:2",)),
        sources=(Source("app", "app", (str(logs / pattern),), start_at=start_at),),
        close_idle_s=close_idle_s,
        max_open_files=max_open_files,
    )


@dataclass
class StreamView:
    expected: int
    path: str
    lines: list[int] = field(default_factory=list)


class Sink:
    """A collector's view of the blocks: exactly once per stream, gaps repaired by replay."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamView] = {}
        self.registry: Registry | None = None
        self.delivered: list[int] = []
        self.gone_bytes = 0
        self.retired: set[str] = set()
        self.in_flight: list[tuple[Block | Announce | Retire, Tailer | None]] = []
        self.hold = False  # blocks wait in flight, as in the publisher's queue

    def emit(self, item: Block | Announce | Retire, tailer: Tailer | None) -> None:
        if self.hold:
            self.in_flight.append((item, tailer))
        else:
            self.deliver(item)

    def release(self) -> None:
        items, self.in_flight = self.in_flight, []
        for item, _ in items:
            self.deliver(item)

    def drop_in_flight(self) -> None:
        """A kill -9: what the publisher had not sent is gone."""
        self.in_flight = []

    def deliver(self, item: Block | Announce | Retire) -> None:
        if isinstance(item, Retire):
            self.retired.add(item.stream)
            return
        view = self.streams.get(item.stream)
        if isinstance(item, Announce):
            if view is None:
                # A collector with start_at: beginning expects every new stream from 0.
                view = StreamView(0, item.path)
                self.streams[item.stream] = view
            if item.end > view.expected:
                self._replay(item.stream, view, item.end)  # the heartbeat shows a lost tail
            return
        assert view is not None, f"block of stream {item.stream} before its announce"
        if item.start > view.expected:
            self._replay(item.stream, view, item.start)
        if item.end <= view.expected:
            return  # duplicate
        payload = item.payload
        if item.start < view.expected:
            assert len(payload) == item.end - item.start
            payload = payload[view.expected - item.start :]
        self._accept(view, payload, item.end)

    def _accept(self, view: StreamView, payload: bytes, end: int) -> None:
        for raw in payload.splitlines(keepends=True):
            n = number_of(raw)
            view.lines.append(n)
            self.delivered.append(n)
        view.expected = end

    def _replay(self, stream: str, view: StreamView, end: int) -> None:
        """Read [expected, end) of the stream as the replay server would, or count it gone."""
        target = self.registry.get(stream) if self.registry is not None else None
        found = None if target is None else open_instance(target.path, target.file_id)
        if target is None or found is None:
            self.gone_bytes += end - view.expected
            view.expected = end
            return
        try:
            while view.expected < end:
                block = read_range(
                    found.fd,
                    stream,
                    view.expected,
                    end - view.expected,
                    target.max_line_bytes,
                    target.policy,
                    target.floor,
                )
                if block is None:
                    break
                self._accept(view, block.payload, block.end)
        finally:
            os.close(found.fd)
        if view.expected < end:
            self.gone_bytes += end - view.expected
            view.expected = end


class Harness:
    """A StreamManager over `logs`, restartable from its last saved records."""

    def __init__(self, folder: Path, **config: object) -> None:
        self.logs = folder / "logs"
        self.logs.mkdir(exist_ok=True)
        self.config = make_config(self.logs, folder / "state", **config)  # type: ignore[arg-type]
        self.counters = Counters(PRODUCER_COUNTERS)
        self.sink = Sink()
        self.saved: StoredState | None = None
        self.manager = self._new_manager()

    def _new_manager(self) -> StreamManager:
        registry = Registry()
        self.sink.registry = registry
        return StreamManager(self.config, registry, self.counters, self.sink.emit)

    def path(self, name: str) -> Path:
        return self.logs / name

    def append(self, name: str, numbers: Iterable[int], width: int = 40) -> None:
        with open(self.path(name), "ab") as f:
            f.write(b"".join(line(n, width) for n in numbers))

    def tell(self, *names: str) -> None:
        """What inotify would say: something happened at these paths."""
        for name in names:
            self.manager.on_path(str(self.path(name)))

    def read_all(self) -> None:
        for _ in range(MAX_ROUNDS):
            if self.manager.unsaved:
                self.save()  # as the tailer thread does before reading new streams
            if not self.manager.ready:
                return
            self.manager.read_round(READ_BYTES)
        raise AssertionError("streams still ready after MAX_ROUNDS rounds")

    def pump(self, *names: str) -> None:
        self.tell(*names)
        self.read_all()

    def rescan(self) -> None:
        self.manager.rescan()
        self.read_all()

    def housekeep(self, later_s: float = 0.0) -> None:
        import time

        self.manager.close_finished(time.monotonic() + later_s)
        self.read_all()

    def settle(self) -> None:
        """Everything there is to read, read; deleted files past their grace finished."""
        self.rescan()
        self.housekeep(later_s=5.0)
        self.rescan()

    def save(self) -> None:
        import time

        records = self.manager.records()
        retired = tuple(self.manager.retired_heads)
        self.saved = StoredState("i1", time.time(), tuple(records), retired)
        self.manager.saved(records)

    def kill_and_restart(self, after_restore: Callable[[], None] | None = None) -> None:
        """kill -9 after the last save: in-flight blocks are gone, handles dropped.

        `after_restore` runs between the restore and the first scan, as a
        rotation may while the daemon starts.
        """
        self.sink.drop_in_flight()
        self.manager.close_all()
        self.manager = self._new_manager()
        if self.saved is not None:
            self.manager.restore(self.saved)
        if after_restore is not None:
            after_restore()
        self.manager.rescan()
        self.read_all()

    def close(self) -> None:
        self.manager.close_all()

    def disk_numbers(self) -> list[int]:
        """The numbered lines in every file of the folder now, decompressing .gz."""
        import gzip

        numbers: list[int] = []
        for p in sorted(self.logs.iterdir()):
            data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            numbers += [
                number_of(raw) for raw in data.splitlines(keepends=True) if raw.endswith(b"\n")
            ]
        return numbers

    def lost(self) -> int:
        return self.counters.get("bytes_lost")
