"""Rotation of output files by size and time, background compression, retention.

What it promises:

- A live file is cut when the next block would take it past `max_bytes`, or
  on its first write (or the first checkpoint) after a UTC boundary of
  `every_s`: periods are counted from the epoch, so a daily file starts at
  00:00 UTC, an hourly one on the hour. Cuts fall between blocks, so between
  lines (a single block larger than `max_bytes` makes one larger file). The
  cut file is renamed to `NAME.<UTC stamp of the cut>` (see manifest.py):
  sortable, strictly increasing per live file, never an existing name.
- Crash safety, by write order: the cut is first recorded as an intent in the
  checkpoint (which flushes and fsyncs the output first), then the file is
  renamed and its successor opened. Until a later checkpoint supersedes it,
  the intent lets a restarted collector finish the rename and cut the
  successor back to zero (its bytes are replayed). The rename is fsynced
  before that later checkpoint, which carries the cut on as a "seal" job
  until the worker has written the manifest and, for gzip, the archive.
  `kill -9` at any point thus loses or doubles no line, and leaves no
  half-written archive under a final name.
- The live index goes with the cut (liveindex.py): right after the rename,
  `<base>.index.json` describes the rotated file (its ranges are on disk
  before its manifest is), then the live path's index starts empty, naming
  the cut as `previous`; only then is the successor opened. The seal removes
  `<base>.index.json` once the manifest and archive are whole. The intent's
  checkpoint hashes the live index fully, so the index handed over is exact.
- Sealing runs on its own thread at nice 19, off the write path: gzip (level
  3: one thread keeps up with about 65 MB/s of log lines) to `<base>.gz.tmp`,
  fsync, manifest, rename to `<base>.gz`, and only then remove the plain file. An error (disk full) removes the temporary file and
  retries later. The same thread writes back the live file a quarter of
  `max_bytes` at a time, so the fsync the cut waits for is short.
- Retention, oldest first, in each output folder, over the rotated files
  zaggd sealed there (the ones with a manifest): `keep` archives of each live
  file, none older than `max_age_s`, at most `max_total_bytes` of archives in
  the folder (the live files are bounded by `max_bytes`). Live files and
  anything without a manifest are never touched.

Threads: `before_write`, `intents` and `after_checkpoint` run on the
subscriber's thread, which owns the writer; the worker touches only rotated
files. `_lock` guards what both read: the intents.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zaggd.collector.access import keep_access
from zaggd.collector.liveindex import (
    INDEX_SUFFIX,
    LiveIndex,
    hand_over,
    remove_index,
)
from zaggd.collector.manifest import (
    GZIP_SUFFIX,
    MANIFEST_SUFFIX,
    TEMP_SUFFIX,
    Manifest,
    manifest_path,
    mark_expired,
    parse_rotated,
    read_manifest,
    rotated_base,
    write_manifest,
)
from zaggd.collector.writer import Writer, output_root
from zaggd.config import Compression, OutputConfig, RotateConfig
from zaggd.errors import ZaggdError
from zaggd.logs import shown
from zaggd.metrics import Counters
from zaggd.service import Worker

log = logging.getLogger(__name__)

GZIP_LEVEL = 3  # deflate's fast strategy: ~2.3x level 6's speed on logs, ~9% larger
CHUNK_BYTES = 1048576
RETRY_S = 5.0
AGE_SWEEP_S = 60.0
IDLE_CHECK_S = 1.0
QUEUE_WAIT_S = 0.5
STOP_TIMEOUT_S = 10.0
WORKER_NICE = 19  # the write path wins the CPU when both want it
PREFLUSH_MIN_BYTES = 1048576


Ranges = dict[str, list[int]]


def merge_ranges(older: Ranges, newer: Ranges) -> Ranges:
    """Per stream, the span covering both: what a file holds across restarts."""
    merged = {key: list(span) for key, span in older.items()}
    for key, (start, end) in newer.items():
        span = merged.get(key)
        merged[key] = [start, end] if span is None else [min(span[0], start), max(span[1], end)]
    return merged


def period_of(t: float, every_s: int) -> int:
    """Index of the UTC-aligned period holding `t` (the epoch is 00:00 UTC)."""
    return int(t // every_s)


def is_due(rules: RotateConfig, size: int, incoming: int, since: float, now: float) -> bool:
    """Whether a live file of `size` bytes, begun at `since`, is cut before `incoming` more."""
    if size <= 0:
        return False
    if rules.max_bytes is not None and size + incoming > rules.max_bytes:
        return True
    every_s = rules.every_s
    return every_s is not None and period_of(now, every_s) > period_of(since, every_s)


@dataclass(frozen=True, slots=True)
class Archive:
    base: str  # path of the rotated file without its compression suffix
    stamp_us: int
    size: int  # bytes on disk
    live: str = ""  # name of the live file it was cut from


def select_expired(archives: list[Archive], rules: RotateConfig, now: float) -> list[Archive]:
    """The archives of one folder that retention removes, oldest first.

    `keep` counts the archives of each live file (as logrotate's `rotate N`
    does: `keep: 14` with `every: 1d` keeps two weeks of every node's file);
    `max_age_s` applies to each archive; `max_total_bytes` to the folder's
    archives together.
    """
    ordered = sorted(archives, key=lambda a: (a.stamp_us, a.base))
    doomed: set[str] = set()
    if rules.keep is not None:
        chains: dict[str, list[Archive]] = {}
        for a in ordered:
            chains.setdefault(a.live, []).append(a)
        for chain in chains.values():
            doomed.update(a.base for a in chain[: max(0, len(chain) - rules.keep)])
    if rules.max_age_s is not None:
        limit_us = (now - rules.max_age_s) * 1e6
        doomed.update(a.base for a in ordered if a.stamp_us < limit_us)
    if rules.max_total_bytes is not None:
        total = sum(a.size for a in ordered if a.base not in doomed)
        for a in ordered:
            if total <= rules.max_total_bytes:
                break
            if a.base not in doomed:
                doomed.add(a.base)
                total -= a.size
    return [a for a in ordered if a.base in doomed]


def has_retention(rules: RotateConfig) -> bool:
    return (
        rules.keep is not None or rules.max_age_s is not None or rules.max_total_bytes is not None
    )


def fsync_dir(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


class Stopped(Exception):
    """The worker was asked to stop in the middle of a job."""


@dataclass(slots=True)
class LiveFile:
    since: float  # when its first byte came: the start of its time period
    carried: Ranges = field(default_factory=dict)  # ranges written by earlier runs


def seal(intent: dict[str, Any], tick: Callable[[], None]) -> Manifest:
    """Write a rotated file's manifest and, for gzip, its archive; the plain file goes last.

    `tick` is called each chunk: it reports progress and raises Stopped to abort.
    """
    base = str(intent["base"])
    folder = os.path.dirname(base)
    gzip = intent.get("compress") == Compression.GZIP.value
    archive = base + GZIP_SUFFIX if gzip else base
    content = hashlib.sha256()
    stored = hashlib.sha256()
    lines = content_size = stored_size = 0
    tmp = archive + TEMP_SUFFIX
    out_fd = -1
    try:
        with open(base, "rb") as src:
            st = os.fstat(src.fileno())
            if gzip:
                out_fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, st.st_mode & 0o777
                )
                keep_access(out_fd, st)  # readable by whoever could read the live file
                # wbits 31: a gzip stream (header and CRC), readable by gzip, zcat, Python.
                deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            while chunk := src.read(CHUNK_BYTES):
                tick()
                content.update(chunk)
                content_size += len(chunk)
                lines += chunk.count(b"\n")
                if gzip:
                    stored_size += _write_all(out_fd, deflate.compress(chunk), stored)
            if gzip:
                stored_size += _write_all(out_fd, deflate.flush(), stored)
                # As gzip(1) does: the archive keeps the time of the last line written.
                os.utime(out_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(out_fd)
        if not gzip:
            stored_size = content_size
            stored = content
        manifest = Manifest(
            file=os.path.basename(archive),
            live=os.path.basename(str(intent["live"])),
            compression=Compression.GZIP.value if gzip else Compression.NONE.value,
            size=stored_size,
            sha256=stored.hexdigest(),
            content_size=content_size,
            content_sha256=content.hexdigest(),
            lines=lines,
            ranges={str(k): [int(v[0]), int(v[1])] for k, v in intent.get("ranges", {}).items()},
            started_at=float(intent.get("since", 0.0)),
            rotated_at=float(intent.get("cut_at", 0.0)),
            previous=intent.get("previous"),
            format=intent["format"] if isinstance(intent.get("format"), str) else None,
        )
        # The manifest first: an archive under its final name always has one.
        write_manifest(manifest_path(base), manifest)
        if gzip:
            os.close(out_fd)
            out_fd = -1
            os.rename(tmp, archive)
            fsync_dir(folder)
        remove_index(base)  # the manifest says all it did, and more
        if gzip:
            os.unlink(base)
        fsync_dir(folder)
        return manifest
    except BaseException:
        if out_fd >= 0:
            os.close(out_fd)
        if gzip:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def _write_all(fd: int, data: bytes, digest: Any) -> int:
    if not data:
        return 0
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


class Rotation:
    def __init__(
        self,
        output: OutputConfig,
        writer: Writer,
        counters: Counters,
        on_crash: Callable[[str], None] | None = None,
        start_worker: bool = True,
    ) -> None:
        self.output = output
        self.rules = output.rotate
        self.writer = writer
        self.counters = counters
        # Set by the subscriber: flush and fsync the output, save a checkpoint with intents().
        self.checkpoint: Callable[[], None] | None = None
        self.jobs: queue.Queue[str] = queue.Queue()  # bases to seal; "" only wakes the worker
        self.flushes: queue.SimpleQueue[int] = queue.SimpleQueue()  # fds to write back early
        self._flushed: dict[str, int] = {}  # live path -> size when last handed to the worker
        self._unsynced_dirs: set[str] = set()  # folders with a rename not yet fsynced
        self._lock = threading.Lock()
        self._rotating: dict[str, Any] | None = None
        self._pending: dict[str, dict[str, Any]] = {}  # base -> seal intent
        self._live: dict[str, LiveFile] = {}
        # live path -> (stamp, base name) of its last cut
        self._last: dict[str, tuple[int, str | None]] = {}
        self._folders: set[str] = set()
        self._busy = False
        self._cutting = False  # the checkpoint under way records a cut
        self._current = ""  # the path before_write last returned, and when
        self._current_at = 0.0
        self._next_idle_check = 0.0
        self._idle_error_logged = False
        self._seal_error_logged = False  # worker's: one error per outage, not one per retry
        # folder -> base -> sealed archive; the worker's alone
        self._archives: dict[str, dict[str, Archive]] = {}
        self._worker = RotationWorker(self, on_crash or _log_crash)
        if start_worker:
            self._worker.start()

    def start_worker(self) -> None:
        """Start sealing and retention (when not started at construction)."""
        if not self._worker.is_alive():
            self._worker.start()

    @property
    def wants_complete_index(self) -> bool:
        """The checkpoint under way records a cut: the index handed over must be exact."""
        return self._cutting

    def previous_of(self, path: str) -> str | None:
        """Base name of the last archive cut from the live file `path`."""
        return self._last_cut(path)[1]

    def carried_of(self, path: str) -> Ranges:
        """Ranges the live file `path` held before this run, as the checkpoint recorded."""
        live = self._live.get(path)
        return live.carried if live is not None else {}

    def pending_ranges(self) -> list[Ranges]:
        """The ranges of the cuts not sealed yet: on disk, but in no manifest."""
        with self._lock:
            found = [dict(i.get("ranges", {})) for i in self._pending.values()]
            if self._rotating is not None:
                found.append(dict(self._rotating.get("ranges", {})))
        return found

    def is_pending(self, base: str) -> bool:
        with self._lock:
            return base in self._pending

    def note_cut(self, path: str, base: str) -> None:
        """A cut of `path` to `base` finished at start from the output folder alone."""
        stamp = _stamp_of(base)
        self._last[path] = (stamp, os.path.basename(base))
        self._live[path] = LiveFile(stamp / 1e6)

    def forget_live(self, path: str, now: float) -> None:
        """The live file at `path` was emptied or replaced by hand: it starts again."""
        self._live[path] = LiveFile(now)
        self._flushed.pop(path, None)

    @property
    def enabled(self) -> bool:
        return self.rules.max_bytes is not None or self.rules.every_s is not None

    # -- subscriber thread ---------------------------------------------------

    def before_write(self, path: str, now: float, incoming: int) -> str:
        """Cut `path` first if it is due; the path to append `incoming` bytes to."""
        if not self.enabled:
            return path
        self._current, self._current_at = path, now
        live = self._live.get(path)
        if live is None:
            live = self._first_sight(path, now)
        out = self.writer.files.get(path)
        size = out.size if out is not None else _size_on_disk(path)
        if size == 0:
            live.since = now
        elif is_due(self.rules, size, incoming, live.since, now):
            self._rotate(path, now, size)
        elif out is not None:
            self._maybe_preflush(path, size)
        return path

    def _maybe_preflush(self, path: str, size: int) -> None:
        """Have the worker write back a quarter of `max_bytes` at a time, ahead of the cut.

        The cut's checkpoint must fsync the whole file; flushed ahead, that fsync
        finds little left to write. The worker uses its own open file description,
        so a write-back error it sees is still reported to the writer's fsync.
        """
        if self.rules.max_bytes is None:
            return
        step = max(self.rules.max_bytes // 4, PREFLUSH_MIN_BYTES)
        if size - self._flushed.get(path, 0) < step:
            return
        self._flushed[path] = size
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        self.flushes.put(fd)
        self.jobs.put("")  # wakes the worker

    def intents(self) -> list[dict[str, Any]]:
        """What the next checkpoint must carry: cuts and seals under way, live files' history.

        Called as the checkpoint is written: the renames it no longer carries as
        intents are made durable here first.
        """
        while self._unsynced_dirs:
            folder = next(iter(self._unsynced_dirs))
            fsync_dir(folder)
            self._unsynced_dirs.discard(folder)
        with self._lock:
            found = [] if self._rotating is None else [dict(self._rotating)]
            found += [dict(i) for i in self._pending.values()]
        found += [
            {"op": "live", "path": path, "since": live.since, "ranges": live.carried}
            for path, live in self._live.items()
            if path in self.writer.files or live.carried
        ]
        return found

    def after_checkpoint(self, now: float | None = None) -> None:
        """Cut idle files whose time period is over: a checkpoint comes every second or so."""
        if self._busy or self.rules.every_s is None:
            return
        if now is None:
            now = time.time()
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + IDLE_CHECK_S
        try:
            self.rotate_idle(now)
        except OSError as exc:
            # The write path will meet the same error and hold its data; no need to raise here.
            if not self._idle_error_logged:
                log.error("cannot rotate an idle output file: %s", exc)
                self._idle_error_logged = True
        else:
            self._idle_error_logged = False

    def rotate_idle(self, now: float) -> None:
        for path, out in list(self.writer.files.items()):
            if path == self._current and now - self._current_at < IDLE_CHECK_S:
                continue  # the subscriber may be between before_write and its append
            live = self._live.get(path)
            if live is not None and is_due(self.rules, out.size, 0, live.since, now):
                self._rotate(path, now, out.size)

    def _first_sight(self, path: str, now: float) -> LiveFile:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            since = now
        else:
            # Left by a run whose checkpoint is gone: its last write says which period it is in.
            since = st.st_mtime if st.st_size else now
        live = self._live[path] = LiveFile(since)
        with self._lock:
            self._folders.add(os.path.dirname(path))
        return live

    def _rotate(self, path: str, now: float, size: int) -> None:
        if self.checkpoint is None:
            raise ZaggdError("rotation is not wired to the checkpoint")
        live = self._live[path]
        stamp, base, previous = self._new_name(path, now)
        intent: dict[str, Any] = {
            "op": "rotate",
            "live": path,
            "base": base,
            "size": size,
            "since": live.since,
            "cut_at": now,
            "previous": previous,
            "ranges": merge_ranges(live.carried, self.writer.ranges_of(path)),
            "compress": self.rules.compress.value,
            "format": self.output.format.value,
        }
        self._busy = True
        try:
            with self._lock:
                self._rotating = intent
            try:
                self._cutting = True
                try:
                    self.checkpoint()  # flushes and fsyncs the output, then records the intent
                finally:
                    self._cutting = False
                self.writer.close(path)
                os.rename(path, base)
            except BaseException:
                with self._lock:
                    self._rotating = None
                raise
            # Renamed: from here the intent must become a seal job, whatever fails next.
            # The rename is made durable before the next checkpoint drops the intent.
            self._unsynced_dirs.add(os.path.dirname(path))
            with self._lock:
                self._rotating = None
                self._pending[base] = {**intent, "op": "seal"}
        finally:
            self._busy = False
        self._last[path] = (stamp, os.path.basename(base))
        self._live[path] = LiveFile(now)
        self._flushed.pop(path, None)
        self.jobs.put(base)
        self.counters.add("rotations")
        log.info(
            "output rotated: %s -> %s (%d bytes)", shown(path), shown(os.path.basename(base)), size
        )
        self._hand_over_index(intent)
        # Open the successor now, sparing the subscriber a checkpoint before its first
        # byte: until the next checkpoint, the intent's recovery cuts it back to zero.
        self.writer.open(path)

    def _hand_over_index(self, intent: dict[str, Any]) -> None:
        """The live index goes with the renamed file; the live path's starts empty."""
        try:
            hand_over(
                str(intent["live"]),
                str(intent["base"]),
                int(intent["size"]),
                dict(intent.get("ranges", {})),
                intent.get("previous"),
                {
                    "live": os.path.basename(str(intent["live"])),
                    "started_at": float(intent.get("since", 0.0)),
                    "rotated_at": float(intent.get("cut_at", 0.0)),
                },
            )
        except (OSError, ZaggdError) as exc:
            # The checkpoint's intent still covers the cut; a restart hands it over again.
            log.warning(
                "cannot hand over the live index of %s: %s", shown(str(intent["live"])), exc
            )

    def _new_name(self, path: str, now: float) -> tuple[int, str, str | None]:
        """A stamp later than the file's last cut, whose names are all free."""
        last_stamp, previous = self._last_cut(path)
        stamp = max(round(now * 1_000_000), last_stamp + 1)
        for _ in range(10000):
            base = rotated_base(path, stamp)
            suffixes = ("", GZIP_SUFFIX, GZIP_SUFFIX + TEMP_SUFFIX, MANIFEST_SUFFIX, INDEX_SUFFIX)
            if not any(_exists(base + s) for s in suffixes):
                return stamp, base, previous
            stamp += 1
        raise ZaggdError(f"{path}: no free name to rotate to")

    def _last_cut(self, path: str) -> tuple[int, str | None]:
        known = self._last.get(path)
        if known is not None:
            return known
        folder, name = os.path.split(path)
        best: tuple[int, str | None] = (0, None)
        try:
            names = os.listdir(folder or ".")
        except FileNotFoundError:
            names = []
        for other in names:
            parsed = parse_rotated(other)
            if parsed is not None and parsed.live == name and parsed.stamp_us > best[0]:
                best = (parsed.stamp_us, parsed.base)
        self._last[path] = best
        return best

    # -- start: finish what a crash interrupted -------------------------------

    def recover(self, restored: Any) -> None:
        """Finish the cut and seals under way in `restored` (a CheckpointState).

        Called before the output files are cut back to their checkpointed sizes;
        a live file renamed away has its checkpointed size set to zero, so
        anything written to its successor before a checkpoint named it is removed
        (and replayed).
        """
        intents = [i for i in restored.rotations if isinstance(i, dict)]
        for intent in intents:
            if intent.get("op") == "live":
                self._recover_live(intent, restored.files)
        for intent in intents:
            try:
                if intent.get("op") == "rotate":
                    self._recover_cut(intent, restored.files)
                elif intent.get("op") == "seal":
                    self._recover_seal(intent)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("rotation intent ignored, it is damaged (%s): %r", exc, intent)
            except OSError as exc:
                where = exc.filename or intent.get("base", "?")
                raise ZaggdError(
                    f"{where}: cannot finish an interrupted rotation: {exc.strerror or exc}"
                ) from None

    def _recover_live(self, intent: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
        try:
            path = str(intent["path"])
            last_run = files.get(path, {})
            carried = merge_ranges(dict(intent.get("ranges", {})), dict(last_run.get("ranges", {})))
            if _size_on_disk(path) == 0 or last_run.get("size") == 0:
                carried = {}  # emptied or removed since: nothing earlier is in it any more
            self._live[path] = LiveFile(float(intent["since"]), carried)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("rotation intent ignored, it is damaged (%s): %r", exc, intent)
            return
        with self._lock:
            self._folders.add(os.path.dirname(path))

    def _recover_cut(self, intent: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
        path, base, size = str(intent["live"]), str(intent["base"]), int(intent["size"])
        renamed = any(_exists(base + s) for s in ("", GZIP_SUFFIX, MANIFEST_SUFFIX))
        if not renamed:
            try:
                actual = os.stat(path).st_size
            except FileNotFoundError:
                log.warning(
                    "rotation not finished, %s is gone: %d bytes missing from the output",
                    shown(path),
                    size,
                )
                return
            if actual > size:
                os.truncate(path, size)
            elif actual < size:
                log.warning(
                    "output shorter than its checkpoint: %s has %d of %d bytes",
                    shown(path),
                    actual,
                    size,
                )
            os.rename(path, base)
            fsync_dir(os.path.dirname(path))
        log.info(
            "rotation finished after a restart: %s -> %s",
            shown(path),
            shown(os.path.basename(base)),
        )
        if _exists(base) and not _exists(manifest_path(base)):
            self._hand_over_index(intent)
        # The checkpoint's size, if it names the file at all, was the old file's: its
        # successor had no checkpointed byte, whatever reached it is cut and replayed.
        files[path] = {**files.get(path, {}), "size": 0, "lines": 0, "ranges": {}}
        self._live[path] = LiveFile(float(intent["cut_at"]))
        stamp = parse_rotated(os.path.basename(base))
        if stamp is not None:
            self._last[path] = (stamp.stamp_us, stamp.base)
        self.counters.add("rotations")
        self._recover_seal({**intent, "op": "seal"})

    def resume_seal(self, intent: dict[str, Any]) -> None:
        """Finish sealing a rotated file found without its manifest (see recovery.py)."""
        try:
            self._recover_seal(intent)
        except OSError as exc:
            raise ZaggdError(
                f"{exc.filename or intent['base']}: cannot finish sealing: {exc.strerror or exc}"
            ) from None

    def _recover_seal(self, intent: dict[str, Any]) -> None:
        base = str(intent["base"])
        gzip = intent.get("compress") == Compression.GZIP.value
        archive = base + GZIP_SUFFIX
        if not _exists(base):
            if not (gzip and _exists(archive)) and not _exists(manifest_path(base)):
                log.warning("rotated file gone before it was sealed: %s", shown(base))
            remove_index(base)
            return
        if gzip and _exists(archive):
            # The archive is whole (renamed after fsync, manifest first): only the plain file is left.
            remove_index(base)
            os.unlink(base)
            fsync_dir(os.path.dirname(base))
            return
        if not gzip and _exists(manifest_path(base)):
            remove_index(base)
            return
        with self._lock:
            self._pending[base] = dict(intent)
            self._folders.add(os.path.dirname(base))
        self.jobs.put(base)

    # -- worker thread -------------------------------------------------------

    def workers(self) -> list[Worker]:
        return [self._worker]

    def stop(self) -> None:
        """Stop the worker; a job it abandons is sealed after the next start."""
        self._worker.stop()
        self.jobs.put("")
        if self._worker.is_alive():
            self._worker.join(STOP_TIMEOUT_S)
        if not self._worker.is_alive():
            while not self.flushes.empty():
                os.close(self.flushes.get_nowait())

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def seal_one(self, base: str, now: float, tick: Callable[[], None]) -> bool:
        """Seal one rotated file; False when it failed and must be tried again later."""
        with self._lock:
            intent = self._pending.get(base)
        if intent is None:
            return True
        try:
            manifest = seal(intent, tick)
        except OSError as exc:
            self.counters.add("seal_errors")
            if not self._seal_error_logged:
                what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "error"
                log.error(
                    "cannot seal %s (%s: %s); retrying every %.0f s",
                    shown(base),
                    what,
                    exc.strerror or exc,
                    RETRY_S,
                )
                self._seal_error_logged = True
            self._expire_folder(os.path.dirname(base), now)
            return False
        if self._seal_error_logged:
            log.warning("sealing rotated files again after the earlier error")
            self._seal_error_logged = False
        with self._lock:
            self._pending.pop(base, None)
        self.counters.add("archives_sealed")
        folder = os.path.dirname(base)
        archives = self._archives.get(folder)
        if archives is not None:
            archives[base] = Archive(base, _stamp_of(base), manifest.size, manifest.live)
        log.debug(
            "output sealed: %s (%d -> %d bytes)",
            shown(manifest.file),
            manifest.content_size,
            manifest.size,
        )
        self._expire_folder(folder, now)
        return True

    def expire(self, now: float) -> None:
        """Apply retention to every output folder known to hold rotated files."""
        with self._lock:
            folders = sorted(self._folders)
        for folder in folders:
            self._expire_folder(folder, now)

    def discover_folders(self) -> None:
        """Find folders rotated in earlier runs, so max_age applies there too."""
        root = output_root(self.output.path)
        if not root or not os.path.isdir(root):
            return
        found = set()
        for folder, _, names in os.walk(root):
            if any(name.endswith(MANIFEST_SUFFIX) for name in names):
                found.add(folder)
        with self._lock:
            self._folders |= found

    def _expire_folder(self, folder: str, now: float) -> None:
        if not has_retention(self.rules):
            return
        try:
            archives = self._scan_archives(folder)
            for victim in select_expired(list(archives.values()), self.rules, now):
                self._remove(victim)
                archives.pop(victim.base, None)
        except OSError as exc:
            log.error("retention failed in %s: %s", shown(folder), exc)
            self._archives.pop(folder, None)

    def _scan_archives(self, folder: str) -> dict[str, Archive]:
        """The sealed archives of a folder, read from their manifests once, then kept up to date."""
        known = self._archives.get(folder)
        if known is not None:
            return known
        known = {}
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        for name in names:
            parsed = parse_rotated(name)
            if parsed is None or parsed.ext != MANIFEST_SUFFIX:
                continue
            base = os.path.join(folder, parsed.base)
            try:
                manifest = read_manifest(manifest_path(base))
            except ZaggdError:
                continue  # not one of ours, or damaged: never touched
            if manifest.file not in (parsed.base, parsed.base + GZIP_SUFFIX):
                continue
            try:
                size = os.stat(os.path.join(folder, manifest.file)).st_size
            except FileNotFoundError:
                size = 0
            known[base] = Archive(base, parsed.stamp_us, size, manifest.live)
        self._archives[folder] = known
        return known

    def _remove(self, archive: Archive) -> None:
        """Marked first, so a crash halfway never leaves a manifest that reads as a lost file."""
        mpath = manifest_path(archive.base)
        try:
            manifest = read_manifest(mpath)
        except ZaggdError:
            return
        if not manifest.expired:
            mark_expired(mpath, manifest)
        path = os.path.join(os.path.dirname(archive.base), manifest.file)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.unlink(mpath)
        fsync_dir(os.path.dirname(mpath))
        self.counters.add("archives_expired")
        log.info("output expired: %s", shown(path))


def seal_intent_of(base: str, index: LiveIndex, compress: str) -> dict[str, Any]:
    """A seal job for a rotated file known only by its own index (no checkpoint names it)."""
    extra = index.extra
    parsed = parse_rotated(os.path.basename(base))
    live = str(extra.get("live", parsed.live if parsed is not None else ""))
    return {
        "op": "seal",
        "live": os.path.join(os.path.dirname(base), live),
        "base": base,
        "size": index.size,
        "since": float(extra.get("started_at", 0.0)),
        "cut_at": float(extra.get("rotated_at", _stamp_of(base) / 1e6)),
        "previous": index.previous,
        "ranges": index.ranges,
        "compress": compress,
    }


def seal_intent_from(base: str, manifest: Manifest) -> dict[str, Any]:
    """The seal job whose manifest is written: to finish it (the plain file still there)."""
    return {
        "op": "seal",
        "live": os.path.join(os.path.dirname(base), manifest.live),
        "base": base,
        "size": manifest.content_size,
        "since": manifest.started_at,
        "cut_at": manifest.rotated_at,
        "previous": manifest.previous,
        "ranges": manifest.ranges,
        "compress": manifest.compression,
    }


def _stamp_of(base: str) -> int:
    parsed = parse_rotated(os.path.basename(base))
    return parsed.stamp_us if parsed is not None else 0


def _size_on_disk(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _log_crash(name: str) -> None:
    log.error("thread %s stopped; the watchdog will see it", name)


class RotationWorker(Worker):
    """zaggd-rotation: seals rotated files and applies retention, off the write path."""

    def __init__(self, rotation: Rotation, on_crash: Callable[[str], None]) -> None:
        super().__init__("zaggd-rotation", on_crash)
        self.rotation = rotation
        self._retry: list[tuple[float, str]] = []

    def work(self) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        rotation = self.rotation
        if has_retention(rotation.rules):
            rotation.discover_folders()
        next_sweep = time.monotonic()
        while not self.stop_event.is_set():
            self.tick()
            try:
                base = rotation.jobs.get(timeout=QUEUE_WAIT_S)
            except queue.Empty:
                base = ""
            self._preflush()
            if base:
                self._seal(base)
            now = time.monotonic()
            due = [b for t, b in self._retry if t <= now]
            self._retry = [(t, b) for t, b in self._retry if t > now]
            for retry in due:
                self._seal(retry)
            if now >= next_sweep and rotation.rules.max_age_s is not None:
                rotation.expire(time.time())
                next_sweep = now + AGE_SWEEP_S

    def _seal(self, base: str) -> None:
        try:
            done = self.rotation.seal_one(base, time.time(), self._tick_or_stop)
        except Stopped:
            return
        if not done:
            self._retry.append((time.monotonic() + RETRY_S, base))

    def _tick_or_stop(self) -> None:
        self.tick()
        if self.stop_event.is_set():
            raise Stopped
        self._preflush()  # ahead of a long seal: the write path waits on these

    def _preflush(self) -> None:
        flushes = self.rotation.flushes
        while not flushes.empty():
            fd = flushes.get_nowait()
            try:
                os.fdatasync(fd)
            except OSError:
                pass  # the checkpoint's own fsync reports it
            finally:
                os.close(fd)
