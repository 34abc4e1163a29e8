"""StreamManager: which file instance each stream is, through rotation and restarts.

It owns every Tailer and answers the events of a file's life: a new file at a
watched path, a rename (the old instance is read to its very end, the new one
starts at 0), a truncation (copytruncate: the unread bytes are taken from the
rotated copy, found by fingerprint), a deletion, idleness, a restart (streams
found again by identity, wherever they were renamed to).

Bytes that can no longer be had are counted and logged once, with the stream
and the byte range. Only the tailer thread calls into this class.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from zaggd.config import LongLinePolicy, ProducerConfig, Source, StartAt
from zaggd.identity import FileId, file_id_of_fd, has_prefix
from zaggd.metrics import Counters
from zaggd.producer.discovery import is_excluded, scan, source_of
from zaggd.producer.offsets import StoredState, StreamRecord, new_id
from zaggd.producer.tailer import Block, Tailer

log = logging.getLogger(__name__)

COMPRESSED_SUFFIXES = (".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip", ".Z")
DELETED_GRACE_S = 1.0
START_AT_END_LOOKBACK = 65536


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """What the replay server needs to re-read a stream's bytes."""

    stream: str
    topic: bytes
    source: str
    path: str
    file_id: FileId
    max_line_bytes: int
    policy: LongLinePolicy


class Registry:
    """Streams the replay server may read, shared between threads under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, ReplayTarget] = {}

    def put(self, target: ReplayTarget) -> None:
        with self._lock:
            self._targets[target.stream] = target

    def drop(self, stream: str) -> None:
        with self._lock:
            self._targets.pop(stream, None)

    def get(self, stream: str) -> ReplayTarget | None:
        with self._lock:
            return self._targets.get(stream)


@dataclass(frozen=True, slots=True)
class Announce:
    """Tells the publisher a stream exists (for heartbeats) before any block of it."""

    stream: str
    topic: bytes
    source: str
    path: str
    end: int


@dataclass(frozen=True, slots=True)
class Retire:
    stream: str


Emit = Callable[[Block | Announce | Retire, Tailer | None], None]


def is_compressed(path: str) -> bool:
    return path.endswith(COMPRESSED_SUFFIXES)


class StreamManager:
    def __init__(
        self,
        config: ProducerConfig,
        registry: Registry,
        counters: Counters,
        emit: Emit,
    ) -> None:
        self.config = config
        self.registry = registry
        self.counters = counters
        self.emit = emit
        self.tailers: dict[str, Tailer] = {}
        self.live: dict[str, str] = {}  # watched path -> stream of the file there now
        self.by_inode: dict[tuple[int, int], str] = {}
        self.ready: set[str] = set()  # streams that may have bytes to read
        self.first_start = True
        self.dirty = False

    # -- restart -------------------------------------------------------------

    def restore(self, stored: StoredState) -> None:
        """Find every stored stream again, by identity, and resume it."""
        self.first_start = False
        sources = {s.name: s for s in self.config.sources}
        for record in stored.records:
            source = sources.get(record.source)
            if source is None:
                log.info("stream %s of removed source %s dropped", record.stream, record.source)
                continue
            found = self._find_instance(record)
            if found is None:
                log.warning(
                    "stream gone while the producer was stopped: %s (stream %s), read to %d",
                    record.path,
                    record.stream,
                    record.offset,
                )
                continue
            path, file_id = found
            tailer = self._make_tailer(record.stream, source, path, file_id, record.offset)
            tailer.topic = record.topic.encode("utf-8")
            tailer.rotated = record.rotated or path != record.path or source_of(
                path, self.config.sources
            ) is None
            self._adopt(tailer)
            if path != record.path:
                log.info("stream renamed while stopped: %s -> %s (stream %s)", record.path, path, record.stream)
        self._read_rotated_unknown(stored.saved_at)

    def _find_instance(self, record: StreamRecord) -> tuple[str, FileId] | None:
        """The path of a stored file instance now: same inode and first bytes, or a copy."""
        fid = record.file_id
        candidates = [record.path, *self._siblings(record.path)]
        for path in candidates:
            st = _stat(path)
            if st is not None and fid.is_same_inode(st) and _path_has_prefix(path, fid):
                return path, fid
        # copytruncate while stopped: the copy holds the stream's bytes under a new inode.
        for path in candidates:
            st = _stat(path)
            if st is None or st.st_size < record.offset or fid.is_same_inode(st):
                continue
            if fid.fingerprint.size and _path_has_prefix(path, fid):
                return path, FileId(st.st_dev, st.st_ino, fid.fingerprint)
        return None

    def _read_rotated_unknown(self, saved_at: float) -> None:
        """Read rotated siblings of watched files that appeared while we were stopped."""
        watched = scan(self.config.sources)
        for live_path, source in watched.items():
            base = os.path.basename(live_path)
            for sibling in self._siblings(live_path):
                name = os.path.basename(sibling)
                if not _is_rotated_name(base, name) or is_compressed(sibling):
                    continue
                if is_excluded(sibling, replace(source, exclude=())):
                    continue
                st = _stat(sibling)
                if st is None or (st.st_dev, st.st_ino) in self.by_inode:
                    continue
                if st.st_mtime < saved_at - 1.0:
                    continue
                fid = _file_id(sibling)
                if fid is None:
                    continue
                log.info("reading rotated file that appeared while stopped: %s", sibling)
                tailer = self._make_tailer(new_id(), source, sibling, fid, 0)
                tailer.rotated = True
                self._adopt(tailer)

    # -- discovery -----------------------------------------------------------

    def rescan(self) -> None:
        """Look at every watched path: new files, replaced files, growth inotify missed."""
        found = scan(self.config.sources)
        for path, source in found.items():
            self._look_at(path, source)
        for path in list(self.live):
            if path not in found:
                self.on_path(path)
        for sid, tailer in self.tailers.items():
            if tailer.fd is not None:
                self.ready.add(sid)
        self.first_start = False

    def on_path(self, path: str) -> None:
        """Something happened at `path`: a write, a rename, a creation or a deletion."""
        sid = self.live.get(path)
        if sid is not None:
            self.ready.add(sid)
            st = _stat(path)
            tailer = self.tailers[sid]
            if st is None or not tailer.file_id.is_same_inode(st):
                self._mark_rotated(tailer, path)
        st = _stat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return
        known = self.by_inode.get((st.st_dev, st.st_ino))
        if known is not None:
            tailer = self.tailers[known]
            self.ready.add(known)
            if tailer.path != path and tailer.rotated:
                log.info("stream renamed: %s -> %s (stream %s)", tailer.path, path, known)
                tailer.path = path
                self._publish_target(tailer)
            if tailer.fd is None:
                tailer.open()
            return
        source = source_of(path, self.config.sources)
        if source is not None:
            self._look_at(path, source)

    def _look_at(self, path: str, source: Source) -> None:
        st = _stat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return
        sid = self.live.get(path)
        if sid is not None:
            tailer = self.tailers[sid]
            if tailer.file_id.is_same_inode(st):
                if tailer.fd is None and st.st_size != tailer.offset:
                    tailer.open()
                if tailer.fd is not None:
                    self.ready.add(sid)
                return
            self._mark_rotated(tailer, path)
        if (st.st_dev, st.st_ino) in self.by_inode:
            return
        self._open_new(path, source)

    def _open_new(self, path: str, source: Source) -> None:
        fid = _file_id(path)
        if fid is None:
            return
        offset = 0
        if self.first_start and source.start_at is StartAt.END:
            offset = _line_start_before_end(path)
        tailer = self._make_tailer(new_id(), source, path, fid, offset)
        self._adopt(tailer)
        self.counters.add("streams_opened")
        log.info("stream opened: %s from offset %d (stream %s, topic %s)", path, offset, tailer.stream, source.topic)

    def _make_tailer(self, sid: str, source: Source, path: str, fid: FileId, offset: int) -> Tailer:
        return Tailer(
            stream=sid,
            source=source.name,
            topic=source.topic.encode("utf-8"),
            path=path,
            file_id=fid,
            offset=offset,
            max_line_bytes=source.max_line_bytes,
            policy=source.long_lines,
        )

    def _adopt(self, tailer: Tailer) -> None:
        self.tailers[tailer.stream] = tailer
        self.by_inode[(tailer.file_id.device, tailer.file_id.inode)] = tailer.stream
        if not tailer.rotated:
            self.live[tailer.path] = tailer.stream
        tailer.open()
        self._publish_target(tailer)
        self.emit(
            Announce(tailer.stream, tailer.topic, tailer.source, tailer.path, tailer.offset), tailer
        )
        self.ready.add(tailer.stream)
        self.dirty = True
        self._enforce_open_limit()

    def _publish_target(self, tailer: Tailer) -> None:
        self.registry.put(
            ReplayTarget(
                tailer.stream,
                tailer.topic,
                tailer.source,
                tailer.path,
                tailer.file_id,
                tailer.max_line_bytes,
                tailer.policy,
            )
        )
        self.dirty = True

    def _mark_rotated(self, tailer: Tailer, old_path: str) -> None:
        """The path names another file now (or none): keep reading this one to its end."""
        if self.live.get(old_path) == tailer.stream:
            del self.live[old_path]
        if tailer.rotated:
            return
        tailer.rotated = True
        self.counters.add("streams_rotated")
        new_path = self._find_renamed(tailer)
        if new_path is not None:
            tailer.path = new_path
            self._publish_target(tailer)
        log.info("stream rotated: %s -> %s (stream %s)", old_path, new_path or "(deleted)", tailer.stream)
        self.ready.add(tailer.stream)

    def _find_renamed(self, tailer: Tailer) -> str | None:
        for path in self._siblings(tailer.path):
            st = _stat(path)
            if st is not None and tailer.file_id.is_same_inode(st):
                return path
        return None

    def _siblings(self, path: str) -> list[str]:
        folder = os.path.dirname(path)
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return [os.path.join(folder, n) for n in names if os.path.join(folder, n) != path]

    # -- reading -------------------------------------------------------------

    def read_round(self, max_bytes: int) -> int:
        """Read one block from each ready stream; returns how many blocks were emitted."""
        emitted = 0
        for sid in list(self.ready):
            tailer = self.tailers.get(sid)
            if tailer is None or (tailer.fd is None and not tailer.open()):
                self.ready.discard(sid)
                continue
            if tailer.is_truncated():
                self._recover_truncation(tailer)
                continue
            block = tailer.read_block(max_bytes)
            if block is None:
                self.ready.discard(sid)
                continue
            self._count_cuts(tailer)
            self.emit(block, tailer)
            self.dirty = True
            emitted += 1
        return emitted

    def _count_cuts(self, tailer: Tailer) -> None:
        counts = tailer.counts
        for name, value in (
            ("lines_split", counts.split),
            ("lines_truncated", counts.truncated),
            ("lines_skipped", counts.skipped),
        ):
            if value:
                self.counters.add(name, value)
                log.warning(
                    "long line %s at max_line_bytes=%d: %s (stream %s)",
                    name.removeprefix("lines_"),
                    tailer.max_line_bytes,
                    tailer.path,
                    tailer.stream,
                )
        counts.split = counts.truncated = counts.skipped = 0

    def _recover_truncation(self, tailer: Tailer) -> None:
        """copytruncate: finish the old stream from the rotated copy; the path starts anew."""
        self.counters.add("streams_truncated")
        path = tailer.path
        was_live = self.live.get(path) == tailer.stream
        copy = self._find_copy(tailer) if was_live else None
        tailer.close()
        self.by_inode.pop((tailer.file_id.device, tailer.file_id.inode), None)
        if was_live:
            del self.live[path]
        if copy is not None:
            copy_path, copy_id = copy
            log.info(
                "stream truncated: %s; reading its rest from the copy %s (stream %s)",
                path,
                copy_path,
                tailer.stream,
            )
            tailer.path, tailer.file_id, tailer.rotated = copy_path, copy_id, True
            self.by_inode[(copy_id.device, copy_id.inode)] = tailer.stream
            self._publish_target(tailer)
            tailer.open()
            self.ready.add(tailer.stream)
        else:
            self._lose(tailer, tailer.offset, tailer.last_size, "truncated before it was read")
            self._retire(tailer)
        source = source_of(path, self.config.sources) if was_live else None
        if source is not None:
            self._open_new(path, source)

    def _find_copy(self, tailer: Tailer) -> tuple[str, FileId] | None:
        fp = tailer.file_id.fingerprint
        if fp.size == 0:
            return None
        best: tuple[float, str, FileId] | None = None
        for path in self._siblings(tailer.path):
            if is_compressed(path):
                continue
            st = _stat(path)
            if st is None or not stat.S_ISREG(st.st_mode) or tailer.file_id.is_same_inode(st):
                continue
            if (st.st_dev, st.st_ino) in self.by_inode:
                continue
            fid = FileId(st.st_dev, st.st_ino, fp)
            if _path_has_prefix(path, fid) and (best is None or st.st_mtime > best[0]):
                best = (st.st_mtime, path, fid)
        return None if best is None else (best[1], best[2])

    def _lose(self, tailer: Tailer, start: int, end: int, why: str) -> None:
        if end <= start:
            return
        self.counters.add("bytes_lost", end - start)
        log.warning(
            "bytes lost: %s (stream %s) range %d-%d (%d bytes): %s",
            tailer.path,
            tailer.stream,
            start,
            end,
            end - start,
            why,
        )

    # -- housekeeping --------------------------------------------------------

    def close_finished(self, now: float) -> None:
        """Close idle handles; retire deleted streams read to their end."""
        close_idle_s = self.config.close_idle_s
        for tailer in list(self.tailers.values()):
            if tailer.fd is None or tailer.stream in self.ready:
                continue
            idle_s = now - tailer.last_active
            try:
                deleted = tailer.is_deleted()
                pending = tailer.pending_bytes()
            except OSError:
                deleted, pending = True, 0
            if deleted and idle_s >= DELETED_GRACE_S:
                if pending > 0:
                    self.ready.add(tailer.stream)
                    continue
                log.info("stream deleted and read to its end: %s (stream %s)", tailer.path, tailer.stream)
                self._finish_incomplete(tailer)
                tailer.close()
                self._retire(tailer)
            elif idle_s >= close_idle_s and pending <= 0:
                tailer.close()
                self.counters.add("streams_closed")
                log.debug("stream idle, handle closed: %s (stream %s)", tailer.path, tailer.stream)

    def _finish_incomplete(self, tailer: Tailer) -> None:
        if tailer.last_size > tailer.offset:
            self._lose(tailer, tailer.offset, tailer.last_size, "file ended without a newline")

    def _enforce_open_limit(self) -> None:
        """Keep open handles under max_open_files: idle ones first, unread deleted ones last."""
        open_tailers = [t for t in self.tailers.values() if t.fd is not None]
        excess = len(open_tailers) - self.config.max_open_files
        if excess <= 0:
            return
        open_tailers.sort(key=lambda t: t.last_active)
        for tailer in open_tailers:
            if excess <= 0:
                break
            try:
                pending = tailer.pending_bytes()
                deleted = tailer.is_deleted()
            except OSError:
                pending, deleted = 0, True
            if pending > 0 and not deleted:
                continue
            if deleted:
                self._lose(tailer, tailer.offset, tailer.offset + max(pending, 0), "deleted file closed at max_open_files")
                tailer.close()
                self._retire(tailer)
            else:
                tailer.close()
            excess -= 1
        # Still over: live files with unread bytes wait their turn, closed and reopened later.
        for tailer in open_tailers:
            if excess <= 0:
                break
            if tailer.fd is not None and tailer.stream not in self.ready:
                tailer.close()
                excess -= 1

    def _retire(self, tailer: Tailer) -> None:
        self.tailers.pop(tailer.stream, None)
        self.ready.discard(tailer.stream)
        if self.by_inode.get((tailer.file_id.device, tailer.file_id.inode)) == tailer.stream:
            del self.by_inode[(tailer.file_id.device, tailer.file_id.inode)]
        if self.live.get(tailer.path) == tailer.stream:
            del self.live[tailer.path]
        self.registry.drop(tailer.stream)
        self.emit(Retire(tailer.stream), None)
        self.dirty = True

    def apply_sources(self, config: ProducerConfig) -> None:
        """A reload: new sources are picked up by the next rescan; removed ones stop."""
        names = {s.name for s in config.sources}
        self.config = config
        for tailer in list(self.tailers.values()):
            if tailer.source not in names:
                log.info("source removed, stream closed: %s (stream %s)", tailer.path, tailer.stream)
                tailer.close()
                self._retire(tailer)

    def records(self) -> list[StreamRecord]:
        return [
            StreamRecord(
                t.stream,
                t.source,
                t.topic.decode("utf-8"),
                t.path,
                t.file_id,
                t.offset,
                t.rotated,
            )
            for t in self.tailers.values()
        ]

    def close_all(self) -> None:
        for tailer in self.tailers.values():
            tailer.close()

    def open_handles(self) -> int:
        return sum(1 for t in self.tailers.values() if t.fd is not None)

    def lag_bytes(self) -> int:
        lag = 0
        for tailer in self.tailers.values():
            if tailer.fd is not None:
                try:
                    lag += max(0, tailer.pending_bytes())
                except OSError:
                    pass
        return lag


def _is_rotated_name(base: str, name: str) -> bool:
    """`app.log.1`, `app.log-20261127`, `app.log.2026-11-27`: a rotated copy of `app.log`."""
    if not name.startswith(base) or len(name) <= len(base):
        return False
    rest = name[len(base) :]
    return rest[0] in ".-_" and any(c.isdigit() for c in rest)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _file_id(path: str) -> FileId | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("cannot open %s: %s", path, exc.strerror)
        return None
    try:
        return file_id_of_fd(fd)
    finally:
        os.close(fd)


def _path_has_prefix(path: str, fid: FileId) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return has_prefix(fd, fid.fingerprint)
    finally:
        os.close(fd)


def _line_start_before_end(path: str) -> int:
    """The offset after the last newline: where `start_at: end` begins."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - START_AT_END_LOOKBACK)
        tail = os.pread(fd, size - start, start)
        nl = tail.rfind(b"\n")
        return start + nl + 1 if nl >= 0 else start
    finally:
        os.close(fd)


def monotonic() -> float:
    return time.monotonic()
