"""TailerThread: the loop that turns file events into blocks for the publisher.

It alone calls the StreamManager: paths from discovery, rescans on an
interval (most of them list only the folders that changed; every
FULL_RESCAN_EVERY-th also stats every file, for growth no event told of),
one block per ready stream per round (so one busy file cannot starve the
others), idle handles closed, the offset store written when something
changed, and at once (at most every NEW_STREAM_SAVE_GAP_S) when a stream is
new to it: no block of a stream goes out before the store, and the stream
journal beside it, can find it again.
Blocks go to the publisher's bounded queue; when it is full the loop waits
there, and reading stops: back-pressure to the files. When nothing happens
the loop wakes IDLE_WAIT_S apart, to keep its CPU use near nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from zaggd import wire
from zaggd.config import ProducerConfig
from zaggd.logs import shown
from zaggd.metrics import Counters
from zaggd.producer.discovery import Discovery
from zaggd.producer.journal import StreamJournal
from zaggd.producer.offsets import OffsetStore, StoredState
from zaggd.producer.publisher import Outgoing, PublisherThread
from zaggd.producer.streams import Announce, Registry, Retire, StreamManager, tailer_link
from zaggd.producer.tailer import Block, Tailer
from zaggd.producer.unreadable import UNREADABLE
from zaggd.producer.whereabouts import current_path
from zaggd.service import Worker

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 0.5
FULL_RESCAN_EVERY = 6  # rescans; the others list folders without a stat per file
IDLE_WAIT_S = 0.25  # an event wakes the loop at once; this paces housekeeping and ticks
# New streams wait for the offset store; many at once share one save, at most this often.
NEW_STREAM_SAVE_GAP_S = 0.05


class TailerThread(Worker):
    def __init__(
        self,
        config: ProducerConfig,
        instance: str,
        stored: StoredState | None,
        store: OffsetStore,
        journal: StreamJournal,
        registry: Registry,
        publisher: PublisherThread,
        counters: Counters,
        on_crash: Callable[[str], None],
    ) -> None:
        super().__init__("zaggd-tailer", on_crash)
        self.config = config
        self.instance = instance
        self.stored = stored
        self.store = store
        self.journal = journal
        self.publisher = publisher
        self.counters = counters
        self.manager = StreamManager(config, registry, counters, self._emit)
        self.discovery = Discovery(config.sources, config.rescan_interval_s)
        self.first_scan_done = threading.Event()
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self.snapshot: dict[str, object] = {
            "streams": 0,
            "open": 0,
            "lag_bytes": 0,
            "watching": "inotify",
        }
        self.final_state_saved = True  # False when the save at shutdown failed
        self._save_failing = False

    def _emit(self, item: Block | Announce | Retire, tailer: Tailer | None) -> None:
        out: Outgoing | Announce | Retire
        if isinstance(item, Block):
            assert tailer is not None
            prev, prev_end = tailer_link(tailer)
            header = wire.DataHeader(
                self.config.node,
                item.stream,
                tailer.source,
                tailer.path,
                item.start,
                item.end,
                item.lines,
                prev=prev,
                prev_end=prev_end,
            )
            out = Outgoing(tailer.topic, header, item.payload)
        else:
            out = item
        self.publisher.put(out, self.stop_event.is_set, self.tick)

    def work(self) -> None:
        try:
            if self.stored is not None:
                self.manager.restore(self.stored)
            self.discovery.start()
            self.manager.rescan()
            # At once: a restart before the first interval must not be a "first start" again.
            self.save_state()
            self._refresh_snapshot()  # the STATUS= sent with READY=1 counts what was found
        finally:
            self.first_scan_done.set()
        try:
            self._loop()
        finally:
            self.discovery.stop()
            self.final_state_saved = self.save_state()
            self.manager.close_all()

    def _loop(self) -> None:
        manager = self.manager
        now = last_rescan = last_house = last_save = time.monotonic()
        rescans = 0
        while not self.stop_event.is_set():
            self.tick()
            self._run_calls()
            if manager.has_readable():
                wait_s = 0.0
            elif manager.unsaved:
                wait_s = min(IDLE_WAIT_S, max(0.0, last_save + NEW_STREAM_SAVE_GAP_S - now))
            else:
                wait_s = IDLE_WAIT_S
            for path in self._take_paths(wait_s):
                manager.on_path(path)
            now = time.monotonic()
            requested = self.discovery.take_rescan_request()
            if requested or now - last_rescan >= self.config.rescan_interval_s:
                self.discovery.update_watches(self.config.sources)
                # Events tell of growth; a stat of every idle file is only a fallback.
                manager.rescan(full=requested or rescans % FULL_RESCAN_EVERY == 0)
                rescans += 1
                last_rescan = now
            if manager.unsaved and now - last_save >= NEW_STREAM_SAVE_GAP_S:
                self.save_state()  # new streams are known to the store before their first block
                last_save = now
            manager.read_round(self.config.read_bytes)
            if now - last_house >= HOUSEKEEPING_INTERVAL_S:
                manager.close_finished(now)
                self._refresh_snapshot()
                last_house = now
            if now - last_save >= self.config.state_interval_s and (
                # Deleted by hand: write it again.
                manager.dirty or self.store.missing() or self.journal.missing()
            ):
                self.save_state()
                last_save = now

    def _take_paths(self, timeout_s: float) -> set[str]:
        paths: set[str] = set()
        try:
            paths.add(
                self.discovery.paths.get(timeout=timeout_s)
                if timeout_s
                else self.discovery.paths.get_nowait()
            )
        except queue.Empty:
            return paths
        while len(paths) < 10000:
            try:
                paths.add(self.discovery.paths.get_nowait())
            except queue.Empty:
                break
        return paths

    def _run_calls(self) -> None:
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                return
            call()

    def save_state(self) -> bool:
        """Write the offset store; whether it was written. A failure (a full disk) is
        logged once, and once more when a save works again."""
        what, path = "stream journal", self.journal.path
        try:
            records = self.manager.records()
            # The journal first: no block of a new stream before both know it.
            self.journal.note(records, self.manager.retired_heads)
            what, path = "offset store", self.store.path
            self.store.save(self.instance, time.time(), records, self.manager.retired_heads)
        except OSError as exc:
            if not self._save_failing:
                log.error(
                    "cannot write the %s %s: %s; new files wait, retrying",
                    what,
                    shown(path),
                    exc.strerror,
                )
                self._save_failing = True
            return False
        self.manager.saved(records)
        self.manager.dirty = False
        if self._save_failing:
            log.info("the offset store %s is written again", shown(self.store.path))
            self._save_failing = False
        return True

    def apply_config(self, config: ProducerConfig) -> None:
        """Runs on this thread (queued by reload): sources added, removed or changed."""
        self.config = config
        self.discovery.rescan_interval_s = config.rescan_interval_s
        self.manager.apply_sources(config)
        self.discovery.update_watches(config.sources)
        self.manager.rescan()

    def fresh_snapshot(self, timeout_s: float = 2.0) -> dict[str, object]:
        """A snapshot taken by this thread now (or the last one, if it is busy)."""
        done = threading.Event()

        def take() -> None:
            self._refresh_snapshot(detail=True)
            done.set()

        self.calls.put(take)
        done.wait(timeout_s)
        return self.snapshot

    def _refresh_snapshot(self, detail: bool = False) -> None:
        """Counts for the STATUS line; the streams themselves only when asked (status)."""
        m = self.manager
        snapshot: dict[str, object] = {
            "streams": len(m.tailers),
            "open": m.open_handles(),
            "lag_bytes": m.lag_bytes(),
            "watching": self.discovery.watching,
            "unreadable": len(UNREADABLE.paths()),
        }
        if detail:
            snapshot["unreadable_files"] = UNREADABLE.paths()[:100]
            snapshot["streams_detail"] = [
                {
                    "stream": t.stream,
                    "source": t.source,
                    "path": t.path if t.fd is not None else current_path(t.path, t.file_id),
                    "offset": t.offset,
                    "rotated": t.rotated,
                    "finished": t.finished,
                    "open": t.fd is not None,
                }
                for t in list(m.tailers.values())[:1000]
            ]
        self.snapshot = snapshot
