"""StreamManager: which file instance each stream is, through rotation and restarts.

It owns every Tailer and answers the events of a file's life:

- a new file at a watched path becomes a stream, read from offset 0 (for
  files found at the very first start with `start_at: end`, its first block
  is empty and moves the offset to the end: collectors then expect no more);
- a rename (logrotate `create`, `dateext`, apps that reopen): the old
  instance is followed by inode under its new name and read to its very end,
  as long as it grows; the new file at the path is a new stream from 0;
- a truncation (copytruncate), also one that regrew past our offset between
  two looks (the first bytes differ): the unread rest comes from the rotated
  copy, found by fingerprint in the same folder (or decompressed, once
  delaycompress compressed it); the new content is a new stream from 0;
- a deletion: the open handle is read to its end, then closed; a file
  deleted while its handle was closed goes on in a copy, if one exists;
- idleness: handles of idle files are closed after `close_idle` and reopened
  when the file grows, and never more than `max_open_files` are open;
- a restart: every stored stream is found again by identity wherever it was
  renamed, copied or compressed to while we were stopped, and rotated files
  we never saw (created and rotated away while stopped) are read from 0.
  Without an offset store, the stream journal's records serve, with older
  offsets: the same streams, under the same ids, read again from there.

Every look at a file (an event, a read) checks it is still the content the
stream read, so content replaced between two looks is read by a new stream or
counted as lost, never skipped. A stream is read only once the offset store
holds it with a fingerprint covering what is read: after a kill -9 it is found
again under the same id (collectors drop what they had), and told from new
content at its inode.

A new file at a path where another stream was (rotation, copytruncate, a
file deleted and made again) succeeds that stream: its first block waits
until the predecessor is read as far as it was when the new file got lines,
and every block of it names the predecessor and that offset (`prev`,
`prev_end`), so collectors keep the order of the copies. The link goes when
the predecessor is retired.

A finished stream (read to its end, file gone) stays announced for
RETIRE_AFTER_S so that heartbeats still tell collectors its end and replays
can still be asked, then it is retired: a collector cut off for longer may
miss a stream it never heard of. Bytes that can no longer be had are counted
in `bytes_lost` and logged once, with the stream and the byte range. Only the
tailer thread calls into this class.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from zaggd.config import LongLinePolicy, ProducerConfig, Source, StartAt
from zaggd.identity import (
    COMPRESSED_SUFFIXES,
    FINGERPRINT_BYTES,
    FileId,
    Fingerprint,
    can_decompress,
    compressed_head,
    decompress_to_fd,
    file_id_of_fd,
    fingerprint_of,
    is_compressed,
    open_compressed_copy,
    path_has_prefix,
    rotation_root,
)
from zaggd.logs import shown
from zaggd.metrics import Counters
from zaggd.producer.globs import source_of
from zaggd.producer.journal import FOUND_AGAIN
from zaggd.producer.journal import NAME as JOURNAL_NAME
from zaggd.producer.offsets import StoredState, StreamRecord, new_id
from zaggd.producer.outputs import CollectorOutputs
from zaggd.producer.scanner import Found, Scanner, scan, watched_folders
from zaggd.producer.tailer import Block, Tailer
from zaggd.producer.unreadable import UNREADABLE

__all__ = ["COMPRESSED_SUFFIXES", "is_compressed"]

log = logging.getLogger(__name__)

DELETED_GRACE_S = 1.0  # a writer may still append to a file it holds after the unlink
START_AT_END_LOOKBACK = 65536
# How long a finished stream stays in heartbeats, so that a collector back from an
# outage still learns its end (and asks for what it lacks).
RETIRE_AFTER_S = 600.0
RETIRE_AFTER_HEARTBEATS = 60
RETIRED_TARGETS = 4096
RETIRED_HEADS = 4096
MTIME_SLACK_S = 0.1  # file times come from a coarse clock, a tick behind time.time()

Inode = tuple[int, int]


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
    floor: int = 0  # bytes before it are never sent (start_at: end)
    final_end: int = -1  # where it ended, once finished (its file gone); -1 while it may grow
    prev: str = ""  # the stream it succeeds at its path, and that one's end when it began
    prev_end: int = 0


def tailer_link(tailer: Tailer) -> tuple[str, int]:
    """The `prev` and `prev_end` its blocks carry: ("", 0) until the link is settled."""
    if tailer.prev and tailer.prev_end >= 0:
        return tailer.prev, tailer.prev_end
    return "", 0


class Registry:
    """Streams the replay server may read, shared between threads under a lock.

    A retired stream stays findable for a while (the last RETIRED_TARGETS):
    a collector back from a long outage may still ask for its bytes, which a
    compressed copy may still hold.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, ReplayTarget] = {}
        self._retired: OrderedDict[str, ReplayTarget] = OrderedDict()

    def put(self, target: ReplayTarget) -> None:
        with self._lock:
            self._targets[target.stream] = target

    def drop(self, stream: str) -> None:
        with self._lock:
            target = self._targets.pop(stream, None)
            if target is not None:
                self._retired[stream] = target
                while len(self._retired) > RETIRED_TARGETS:
                    self._retired.popitem(last=False)

    def forget(self, stream: str) -> None:
        """Not to be read at all any more (its source was removed)."""
        with self._lock:
            self._targets.pop(stream, None)
            self._retired.pop(stream, None)

    def get(self, stream: str) -> ReplayTarget | None:
        with self._lock:
            return self._targets.get(stream) or self._retired.get(stream)


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
        self.at_path: dict[str, str] = {}  # path -> unfinished stream last seen there
        self.by_inode: dict[Inode, str] = {}  # unfinished streams by (device, inode)
        self.ready: set[str] = set()  # streams that may have bytes to read
        self.opened: OrderedDict[str, None] = OrderedDict()  # open handles, least recent first
        self.retiring: deque[tuple[float, str]] = deque()  # finished streams, by deadline
        # First bytes of retired streams: a copy of one found later is not new content.
        self.retired_heads: deque[Fingerprint] = deque(maxlen=RETIRED_HEADS)
        # Streams the offset store does not hold yet, or holds with a shorter fingerprint.
        # None is read until it does: after a kill, a stream must be found again under
        # its id (or its lines would double), and told from new content at its inode.
        self.unsaved: set[str] = set()
        self.first_start = True
        # The restored state until the first scan after a restore looked for rotated files.
        self._restored: StoredState | None = None
        self.dirty = False
        self.scanner = Scanner()
        self.outputs = CollectorOutputs()
        self.last_live: dict[str, str] = {}  # path -> the stream last live there
        self.live_path: dict[str, str] = {}  # and back: stream -> that path
        self.successor: dict[str, str] = {}  # stream -> the stream that succeeds it
        self._records: dict[str, tuple[tuple[object, ...], StreamRecord]] = {}
        self.retire_after_s = max(
            RETIRE_AFTER_S, RETIRE_AFTER_HEARTBEATS * config.publish.heartbeat_interval_s
        )

    # -- restart -------------------------------------------------------------

    def restore(self, stored: StoredState) -> None:
        """Find every stored stream again, by identity, and resume it."""
        self.first_start = False
        self.retired_heads.extend(stored.retired)
        sources = {s.name: s for s in self.config.sources}
        listings = _Listings()
        missing: list[tuple[StreamRecord, Source]] = []
        for record in stored.records:
            source = sources.get(record.source)
            if source is None:
                log.info("stream %s of removed source %s dropped", record.stream, record.source)
            elif self.outputs.holds(record.path, record.source):
                log.info("stream %s dropped: %s", record.stream, shown(record.path))
            elif record.finished:
                self._resume_finished(record, source)
            elif self._is_instance(record.path, record):
                self._resume(record, source, record.path, record.file_id, stored.saved_at)
            else:
                missing.append((record, source))
        # Renames first, so that a copy is never taken for a file found by inode;
        # then the longest fingerprints, the surest claims on a copy.
        missing.sort(key=lambda rs: -rs[0].file_id.fingerprint.size)
        missing = [
            (r, s) for r, s in missing if not self._resume_renamed(r, s, listings, stored.saved_at)
        ]
        missing = [
            (r, s) for r, s in missing if not self._resume_copied(r, s, listings, stored.saved_at)
        ]
        for record, source in missing:
            if not self._resume_compressed(record, source, listings):
                self._note_gone_while_stopped(record, source)
        self._restore_links(stored.records)
        # Rotated files never seen are looked for after the first scan (see rescan).
        self._restored = stored
        self.dirty = True
        if stored.from_journal:
            self._say_found_again(stored)

    def _say_found_again(self, stored: StoredState) -> None:
        """The offset store was missing: how many streams the journal found again."""
        found = [self.tailers.get(r.stream) for r in stored.records]
        log.warning(
            FOUND_AGAIN,
            sum(1 for t in found if t is not None and not t.finished),
            shown(os.path.join(self.config.state_dir, JOURNAL_NAME)),
        )

    def _restore_links(self, records: Iterable[StreamRecord]) -> None:
        """Each stream's predecessor, if both were found again."""
        for record in records:
            tailer = self.tailers.get(record.stream)
            if tailer is not None and record.prev in self.tailers:
                tailer.prev, tailer.prev_end = record.prev, record.prev_end
                self.successor[record.prev] = record.stream
                self._publish_target(tailer)

    def _is_instance(self, path: str, record: StreamRecord) -> bool:
        """The stored file instance, unclaimed, at `path`, and not cut back since.

        A stream that read nothing (no fingerprint) is taken to be renamed only
        to a rotation of its own name: anything matches no bytes at all.
        """
        st = _stat(path)
        if record.file_id.fingerprint.size == 0 and path != record.path:
            same_root = rotation_root(os.path.basename(path)) == rotation_root(
                os.path.basename(record.path)
            )
            if not same_root:
                return False
        return (
            st is not None
            and record.file_id.is_same_inode(st)
            and (st.st_dev, st.st_ino) not in self.by_inode
            and st.st_size >= max(record.offset, record.last_size)
            and path_has_prefix(path, record.file_id.fingerprint)
        )

    def _resume_renamed(
        self, record: StreamRecord, source: Source, listings: _Listings, saved_at: float
    ) -> bool:
        for path in listings.siblings(record.path):
            if not is_compressed(path) and self._is_instance(path, record):
                self._resume(record, source, path, record.file_id, saved_at)
                return True
        return False

    def _resume_copied(
        self, record: StreamRecord, source: Source, listings: _Listings, saved_at: float
    ) -> bool:
        """copytruncate while stopped: a copy under a new inode starts with the stream's bytes."""
        siblings = listings.siblings(record.path)
        copy = self._find_copy(
            record.path, record.file_id.fingerprint, None, siblings, saved_at - 1.0
        )
        if copy is None:
            return False
        path, file_id, size = copy
        log.info(
            "stream copied while stopped: %s -> %s (stream %s)",
            shown(record.path),
            shown(path),
            record.stream,
        )
        tailer = self._resume(record, source, path, file_id, saved_at, renamed=False)
        tailer.saved_fingerprint_size = -1  # the store must learn its new identity
        self.unsaved.add(tailer.stream)
        # Seen in the file before the stop, yet not in the copy: written between
        # logrotate's copy and its truncation.
        lost_from = max(record.offset, size)
        if record.last_size > lost_from:
            self._lose(tailer, lost_from, record.last_size, "written after the copy")
        tailer.last_size = size
        if size < record.offset:
            self._finish(tailer, "its copy holds nothing more to read", record.offset)
        return True

    def _resume_compressed(self, record: StreamRecord, source: Source, listings: _Listings) -> bool:
        """Compressed while stopped (delaycompress): read the rest from a decompressed copy."""
        if record.file_id.fingerprint.size == 0:
            return False
        candidates = [record.path, *listings.siblings(record.path)]
        found = open_compressed_copy(record.file_id.fingerprint, candidates)
        if found is None:
            return False
        tailer = self._make_tailer(record.stream, source, found.path, found.file_id, record.offset)
        tailer.saved_fingerprint_size = record.file_id.fingerprint.size
        tailer.floor = record.floor
        tailer.topic = record.topic.encode("utf-8")
        tailer.rotated = tailer.decompressed = True
        tailer.last_size = record.last_size
        _settle_last_size(tailer, os.fstat(found.fd).st_size, self._lose)
        log.info(
            "stream compressed while stopped: %s -> %s, reading on from %d (stream %s)",
            shown(record.path),
            shown(found.path),
            record.offset,
            record.stream,
        )
        self._adopt(tailer, found.fd)
        return True

    def _resume(
        self,
        record: StreamRecord,
        source: Source,
        path: str,
        file_id: FileId,
        saved_at: float,
        renamed: bool = True,
    ) -> Tailer:
        tailer = self._make_tailer(record.stream, source, path, file_id, record.offset)
        tailer.saved_fingerprint_size = record.file_id.fingerprint.size
        tailer.floor = record.floor
        tailer.intact_at = saved_at  # the last time its content was known
        tailer.topic = record.topic.encode("utf-8")
        tailer.last_size = record.last_size
        tailer.rotated = record.rotated or path != record.path
        if not tailer.rotated and self.live.get(path) is not None:
            tailer.rotated = True  # two records claimed one path; the first keeps it
        if path != record.path and renamed:
            log.info(
                "stream renamed while stopped: %s -> %s (stream %s)",
                shown(record.path),
                shown(path),
                record.stream,
            )
        self._adopt(tailer)
        return tailer

    def _resume_finished(self, record: StreamRecord, source: Source) -> None:
        tailer = self._make_tailer(
            record.stream, source, record.path, record.file_id, record.offset
        )
        tailer.saved_fingerprint_size = record.file_id.fingerprint.size
        tailer.floor = record.floor
        tailer.topic = record.topic.encode("utf-8")
        tailer.rotated = tailer.finished = True
        tailer.last_size = record.last_size
        self.tailers[tailer.stream] = tailer
        self._publish_target(tailer)
        self._announce(tailer)
        self.retiring.append((time.monotonic() + self.retire_after_s, tailer.stream))

    def _note_gone_while_stopped(self, record: StreamRecord, source: Source) -> None:
        """Announced to its last known size: a collector missing any of it hears "gone".

        What was sent before the stop is not known here (blocks after the last
        save may have reached collectors), so the collectors count the loss.
        """
        end = max(record.offset, record.last_size)
        log.warning(
            "stream gone while the producer was stopped: %s (stream %s), read to %d of %d bytes",
            shown(record.path),
            record.stream,
            record.offset,
            end,
        )
        self._resume_finished(replace(record, offset=end), source)

    def _read_rotated_unknown(self, stored: StoredState, watched: Iterable[str]) -> None:
        """Read rotated copies of watched files that appeared while we were stopped.

        In the folders of watched files (now or when stopped), a file that is
        not itself watched but whose rotation root is (`app.log.1` of
        `app.log`), written since the last save, untracked and starting like
        no known stream, holds lines never read.

        It runs once the watches are set and the first scan opened the watched
        files, on listings taken now: a file still at a watched name when the
        restore listed the folder, and rotated away before the scan opened it,
        is under its rotated name by then.
        """
        listings = _Listings()
        known = self._known_heads()
        folders = {os.path.dirname(p) for p in watched}
        folders |= {os.path.dirname(r.path) for r in stored.records}
        folders |= set(watched_folders(self.config.sources))
        for folder in sorted(folders):
            for name in listings.names(folder):
                path = os.path.join(folder, name)
                root = rotation_root(name)
                if root == name or source_of(path, self.config.sources) is not None:
                    continue
                source = source_of(os.path.join(folder, root), self.config.sources)
                st = _stat(path)
                if source is None or st is None or not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_mtime < stored.saved_at - 1.0 or (st.st_dev, st.st_ino) in self.by_inode:
                    continue
                if is_compressed(path):
                    self._read_unknown_compressed(path, source, known)
                else:
                    self._read_unknown_plain(path, source, known)

    def _known_heads(self) -> _KnownHeads:
        tailers = self.tailers.values()
        return _KnownHeads(
            [*(t.file_id.fingerprint for t in tailers), *self.retired_heads],
            [t.head for t in tailers if t.head is not None],
        )

    def _read_unknown_plain(self, path: str, source: Source, known: _KnownHeads) -> None:
        if self.outputs.holds(path, source.name):
            return
        fd = _open_regular(path)
        if fd is None:
            return
        fid = file_id_of_fd(fd)
        if known.has(os.pread(fd, fid.fingerprint.size, 0)):
            os.close(fd)  # a copy of a stream we know: its bytes are sent under that stream
            return
        known.add(fid.fingerprint)  # its compressed copy, beside it, is not new content
        log.info("reading a rotated file never seen before: %s", shown(path))
        tailer = self._make_tailer(new_id(), source, path, fid, 0)
        tailer.rotated = True
        self._adopt(tailer, fd)
        self.counters.add("streams_opened")

    def _read_unknown_compressed(self, path: str, source: Source, known: _KnownHeads) -> None:
        if not can_decompress(path) or self.outputs.holds(path, source.name):
            return
        head = compressed_head(path)
        if head is None or not head or known.has(head):
            return
        fd = decompress_to_fd(path)
        if fd is None:
            log.warning(
                "cannot decompress %s, a rotated file that appeared while stopped", shown(path)
            )
            return
        st = os.fstat(fd)
        fid = FileId(st.st_dev, st.st_ino, fingerprint_of(head))
        known.add(fid.fingerprint)  # its plain original, not yet deleted, is not new content
        log.info("reading compressed rotated file that appeared while stopped: %s", shown(path))
        tailer = self._make_tailer(new_id(), source, path, fid, 0)
        tailer.rotated = tailer.decompressed = True
        self._adopt(tailer, fd)
        self.counters.add("streams_opened")

    # -- discovery -----------------------------------------------------------

    def rescan(self, full: bool = True) -> None:
        """Look at every watched path: new files, replaced files, and (`full`) growth
        that no event told of, which needs a stat of every closed file."""
        found, listed = self.scanner.scan(self.config.sources, quick=not full)
        for path, item in found.items():
            try:
                self._look_at(path, item, full)
            except OSError:
                continue  # gone since the listing: its event comes
        if listed is None or listed:  # a live file gone from a folder listed now
            for path in [p for p in self.live if p not in found]:
                if listed is None or path.rpartition("/")[0] in listed:
                    self.on_path(path)
        self.ready.update(self.opened)
        if full:
            self._check_closed_rotated()
            self._stop_collector_output()
        self.first_start = False
        if self._restored is not None:
            stored, self._restored = self._restored, None
            self._read_rotated_unknown(stored, scan(self.config.sources))

    def _check_closed_rotated(self) -> None:
        """Closed rotated streams whose file moved or vanished without an event we saw."""
        for tailer in list(self.tailers.values()):
            if tailer.fd is not None or tailer.finished or not tailer.rotated:
                continue
            st = _stat(tailer.path)
            if st is None or not tailer.file_id.is_same_inode(st):
                self._relocate(tailer)
            elif st.st_size != tailer.offset and st.st_size != tailer.stalled_size:
                self.ready.add(tailer.stream)

    def _stop_collector_output(self) -> None:
        """Streams in a folder found to be a collector's output since they opened stop."""
        by_folder: dict[str, list[Tailer]] = {}
        for tailer in self.tailers.values():
            if not tailer.finished:
                by_folder.setdefault(os.path.dirname(tailer.path), []).append(tailer)
        for tailers in by_folder.values():
            if not self.outputs.holds(tailers[0].path, tailers[0].source):
                continue
            for tailer in tailers:
                log.info("stream stopped: %s (stream %s)", shown(tailer.path), tailer.stream)
                self._end(tailer)

    def on_path(self, path: str) -> None:
        """Something happened at `path`: a write, a rename, a creation or a deletion."""
        st = _stat(path)
        sid = self.live.get(path)
        if sid is not None:
            tailer = self.tailers[sid]
            if st is not None and tailer.file_id.is_same_inode(st):
                self._look(tailer, st.st_size)  # the common case: a live file grew
                return
            self._relocate(tailer)
        sid = self.at_path.get(path)
        if sid is not None:
            tailer = self.tailers[sid]
            if st is not None and tailer.file_id.is_same_inode(st):
                self._look(tailer, st.st_size)
            else:
                self._relocate(tailer)
        if st is None or not stat.S_ISREG(st.st_mode):
            return
        owner = self._owner(st, path)
        if owner is not None:
            tailer = owner
            if tailer.path != path and not _names_inode(tailer.path, st):
                self._relocate(tailer, path)  # renamed: this is its new name
            self._look(tailer, st.st_size)
            return
        source = source_of(path, self.config.sources)
        if source is not None:
            self._open_new(path, source)

    def _owner(self, st: os.stat_result, path: str) -> Tailer | None:
        """The stream that is the file at `path`, if any.

        A closed stream claiming the inode with other first bytes lost its file
        (deleted, the inode reused at once): it goes on in a copy, or finishes.
        """
        sid = self.by_inode.get((st.st_dev, st.st_ino))
        if sid is None:
            return None
        tailer = self.tailers[sid]
        if not self._is_inode_reused(tailer, path):
            return tailer
        self._forget(tailer)
        if not self._continue_in_copy(tailer, tailer.path, tailer.intact_at - MTIME_SLACK_S):
            self._finish(tailer, "its file is gone; the inode holds another file now")
        return None

    def _is_claimed(self, st: os.stat_result, path: str) -> bool:
        """Whether a stream surely is the file at `path`. A closed one that read
        nothing (no fingerprint) only guessed it by name: a copy's first bytes win."""
        owner = self._owner(st, path)
        return owner is not None and not _is_weak(owner)

    def _claim(self, tailer: Tailer) -> None:
        """`tailer` is the file at its inode: a stream that only guessed so gives way."""
        key = (tailer.file_id.device, tailer.file_id.inode)
        other = self.tailers.get(self.by_inode.get(key, tailer.stream))
        if other is not None and other is not tailer and _is_weak(other):
            self._finish(other, "another stream's copy took its inode")
        self.by_inode[key] = tailer.stream

    def _is_inode_reused(self, tailer: Tailer, path: str) -> bool:
        """A closed stream's inode at `path` with other first bytes: deleted, then reused.

        (An open handle keeps its inode from being reused; a changed file under
        one is a truncation, found when it is read.) A closed file that was cut
        back and renamed before we looked again cannot be told from a reuse: its
        new content is read only if its new name is watched.
        """
        if tailer.fd is not None or tailer.path == path:
            return False
        if is_compressed(path):
            return True
        if tailer.file_id.fingerprint.size == 0:
            # Nothing to compare: only a rotation of its own name is taken for it.
            return rotation_root(os.path.basename(path)) != rotation_root(
                os.path.basename(tailer.path)
            )
        return not path_has_prefix(path, tailer.file_id.fingerprint)

    def _look(self, tailer: Tailer, size: int) -> None:
        """An event at the stream's file: see it intact (noting its size), or cut back.

        Each look counts: content that is replaced before the next read is then
        either read by a new stream or counted as lost, never silently skipped.
        """
        if tailer.fd is None and not self._reopen(tailer):
            self._lost_sight(tailer)  # changed while its handle was closed
            return
        if tailer.fd is not None:
            try:
                if tailer.is_truncated():
                    self._recover_truncation(tailer)
                    return
                tailer.grow_fingerprint()  # so that the next look tells this content apart
            except OSError:
                pass
        self.ready.add(tailer.stream)

    def _look_at(self, path: str, found: Found, full: bool) -> None:
        sid = self.live.get(path)
        if sid is not None:
            tailer = self.tailers[sid]
            # A folder holds files of one device: the inode alone tells them apart.
            if tailer.file_id.inode == found.inode():
                if tailer.fd is not None:
                    self.ready.add(sid)
                elif full:
                    size = found.stat().st_size
                    if size != tailer.offset and size != tailer.stalled_size:
                        self.ready.add(sid)
                return
            self._relocate(tailer)
        if self._owner(found.stat(), path) is not None:
            return  # a rotated stream under a watched name, or a hard link
        self._open_new(path, found.source)

    def _open_new(self, path: str, source: Source) -> None:
        if self.outputs.holds(path, source.name):
            return
        fd = _open_regular(path)
        if fd is not None:
            self._open_fd(path, source, fd)

    def _open_fd(self, path: str, source: Source, fd: int) -> None:
        """A new stream for the file open at `fd`, last seen at `path`."""
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        st = os.fstat(fd)
        fid = FileId(st.st_dev, st.st_ino, fingerprint_of(head))
        if self._owner(st, path) is not None:
            os.close(fd)
            return
        tailer = self._make_tailer(new_id(), source, path, fid, 0)
        if self.first_start and source.start_at is StartAt.END:
            # Read from 0 all the same: its first block, empty, says where it begins.
            tailer.floor = _line_start_before_end(fd)
        tailer.last_size = st.st_size
        tailer.head = head if len(head) < FINGERPRINT_BYTES else None
        now_there = _stat(path)
        tailer.rotated = now_there is None or not fid.is_same_inode(now_there)  # deleted since
        self._link(tailer, self.last_live.get(path))
        self._adopt(tailer, fd)
        self.counters.add("streams_opened")
        log.info(
            "stream opened: %s from offset %d (stream %s, topic %s)",
            shown(path),
            tailer.floor,
            tailer.stream,
            source.topic,
        )

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
            last_size=offset,
        )

    def _adopt(self, tailer: Tailer, fd: int | None = None) -> None:
        """Take a stream in; it is read once the offset store has it (see read_round)."""
        sid = tailer.stream
        if tailer.file_id.fingerprint.size > tailer.saved_fingerprint_size:
            self.unsaved.add(sid)
        self.tailers[sid] = tailer
        self._claim(tailer)
        self.at_path[tailer.path] = sid
        if not tailer.rotated:
            self.live[tailer.path] = sid
            self.last_live[tailer.path] = sid
            self.live_path[sid] = tailer.path
        if fd is not None:
            self._attach(tailer, fd)
        self._publish_target(tailer)
        self._announce(tailer)
        self.ready.add(sid)
        self.dirty = True

    def _announce(self, tailer: Tailer) -> None:
        self.emit(
            Announce(tailer.stream, tailer.topic, tailer.source, tailer.path, tailer.offset), tailer
        )

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
                tailer.floor,
                tailer.offset if tailer.finished else -1,
                *tailer_link(tailer),
            )
        )
        self.dirty = True

    # -- order across rotation -------------------------------------------------

    def _link(self, tailer: Tailer, prev: str | None) -> None:
        """`tailer` is the new file at the path where stream `prev` was."""
        if prev is None or prev == tailer.stream or prev not in self.tailers:
            return
        tailer.prev = prev
        self.successor[prev] = tailer.stream

    def _waits_for_prev(self, tailer: Tailer) -> bool:
        """Whether its first block must wait: the predecessor still has bytes to read
        that were in its file when this stream first had a block to give."""
        prev = self.tailers.get(tailer.prev)
        if prev is None or prev.finished:
            return False
        if tailer.prev_until < 0:
            tailer.prev_until = _size_or(prev, prev.offset) if prev.fd is not None else prev.offset
            st = _stat(prev.path) if prev.fd is None else None
            if st is not None and prev.file_id.is_same_inode(st):
                tailer.prev_until = st.st_size
            self.ready.add(prev.stream)
        return prev.stream in self.ready and prev.offset < tailer.prev_until

    def _settle_link(self, tailer: Tailer) -> None:
        """Its first block goes out now: it follows the predecessor's bytes read so far."""
        prev = self.tailers.get(tailer.prev)
        if prev is None:
            self._unlink(tailer)
            return
        tailer.prev_end = prev.offset
        self._publish_target(tailer)

    def _unlink(self, tailer: Tailer) -> None:
        if self.successor.get(tailer.prev) == tailer.stream:
            del self.successor[tailer.prev]
        tailer.prev, tailer.prev_end, tailer.prev_until = "", -1, -1
        self._publish_target(tailer)

    def _move(self, tailer: Tailer, new_path: str) -> None:
        if self.at_path.get(tailer.path) == tailer.stream:
            del self.at_path[tailer.path]
        tailer.path = new_path
        self.at_path[new_path] = tailer.stream
        self._publish_target(tailer)

    def _relocate(self, tailer: Tailer, hint: str | None = None) -> None:
        """The stream's path no longer names its file: follow a rename, or note it gone."""
        old_path = tailer.path
        if self.live.get(old_path) == tailer.stream:
            del self.live[old_path]
            if not tailer.rotated:
                tailer.rotated = True
                self.counters.add("streams_rotated")
        tailer.rotated = True
        new_path = hint or self._find_renamed(tailer)
        if new_path is not None:
            if new_path != old_path:
                self._move(tailer, new_path)
                log.info(
                    "stream rotated: %s -> %s (stream %s)",
                    shown(old_path),
                    shown(new_path),
                    tailer.stream,
                )
            self.ready.add(tailer.stream)
        elif tailer.fd is not None:
            # Deleted, or moved out of the folder: the handle is read to its end.
            if self.at_path.get(old_path) == tailer.stream:
                del self.at_path[old_path]
            log.info("stream deleted or moved away: %s (stream %s)", shown(old_path), tailer.stream)
            self.ready.add(tailer.stream)
        elif not tailer.finished:
            self._forget(tailer)
            if not self._continue_in_copy(tailer, old_path, tailer.intact_at - MTIME_SLACK_S):
                self._finish(tailer, "deleted while its handle was closed")

    def _follow_compressed(self, tailer: Tailer) -> bool:
        """A closed stream whose file was compressed (delaycompress): read on from a copy."""
        if tailer.file_id.fingerprint.size == 0:
            return False
        candidates = [tailer.path, *_siblings(tailer.path)]
        found = open_compressed_copy(tailer.file_id.fingerprint, candidates)
        if found is None:
            return False
        size = os.fstat(found.fd).st_size
        if size <= tailer.offset:
            os.close(found.fd)
            return False
        log.info(
            "stream compressed: %s -> %s, reading on from %d (stream %s)",
            shown(tailer.path),
            shown(found.path),
            tailer.offset,
            tailer.stream,
        )
        self._forget(tailer)
        _settle_last_size(tailer, size, self._lose)
        tailer.file_id = found.file_id
        tailer.decompressed = True
        self._move(tailer, found.path)
        self._claim(tailer)
        self._attach(tailer, found.fd)
        self.ready.add(tailer.stream)
        return True

    def _find_renamed(self, tailer: Tailer) -> str | None:
        for path in _siblings(tailer.path):
            if is_compressed(path):
                continue  # compressing writes a new file: never our inode renamed
            st = _stat(path)
            if st is None or not tailer.file_id.is_same_inode(st):
                continue
            if self.by_inode.get((st.st_dev, st.st_ino), tailer.stream) != tailer.stream:
                continue  # another stream holds it now
            # A closed handle does not hold the inode: with other first bytes it is
            # another file's now (a new copy takes a freed inode at once on ext4).
            if tailer.fd is not None or not self._is_inode_reused(tailer, path):
                return path
        return None

    # -- handles -------------------------------------------------------------

    def _attach(self, tailer: Tailer, fd: int) -> None:
        self._make_room()
        tailer.attach(fd)
        self.opened[tailer.stream] = None

    def _reopen(self, tailer: Tailer) -> bool:
        self._make_room()
        if not tailer.open():
            return False
        self.opened[tailer.stream] = None
        return True

    def _close(self, tailer: Tailer) -> None:
        tailer.close()
        self.opened.pop(tailer.stream, None)

    def _make_room(self) -> None:
        """Below max_open_files: close the least recently used handle whose file stays on disk.

        A live or renamed file is reopened when it is read again; a deleted
        file would be gone, so one is closed only when nothing else is open,
        and its unread bytes are counted as lost.
        """
        while len(self.opened) >= self.config.max_open_files:
            victim: Tailer | None = None
            for sid in self.opened:
                tailer = self.tailers[sid]
                if not _is_deleted(tailer):
                    victim = tailer
                    break
            if victim is not None:
                self._close(victim)
                continue
            oldest = self.tailers[next(iter(self.opened))]
            end = _size_or(oldest, oldest.offset)
            self._finish(oldest, "deleted file closed at max_open_files", end)

    # -- reading -------------------------------------------------------------

    def read_round(self, max_bytes: int) -> int:
        """Read one block from each ready stream; returns how many blocks were emitted."""
        emitted = 0
        for sid in list(self.ready):
            if sid in self.unsaved:
                continue
            tailer = self.tailers.get(sid)
            if tailer is None or tailer.finished:
                self.ready.discard(sid)
                continue
            if tailer.fd is None and not self._reopen(tailer):
                self.ready.discard(sid)
                self._lost_sight(tailer)
                continue
            try:
                if tailer.is_truncated():
                    self._recover_truncation(tailer)
                    continue
                tailer.grow_fingerprint()
                if tailer.file_id.fingerprint.size > tailer.saved_fingerprint_size:
                    self.unsaved.add(sid)
                    continue
                unsettled = bool(tailer.prev) and tailer.prev_end < 0
                if unsettled and self._waits_for_prev(tailer):
                    continue  # the predecessor's last lines go first
                block = tailer.read_block(max_bytes)
            except OSError as exc:
                log.warning("cannot read %s: %s (stream %s)", shown(tailer.path), exc.strerror, sid)
                self.ready.discard(sid)
                continue
            if block is None:
                if tailer.replaced:
                    self._recover_truncation(tailer)
                else:
                    self.ready.discard(sid)
                continue
            self.opened.move_to_end(sid)
            self._count_cuts(tailer)
            if unsettled:
                self._settle_link(tailer)
            self.emit(block, tailer)
            self.dirty = True
            emitted += 1
        return emitted

    def _lost_sight(self, tailer: Tailer) -> None:
        """A closed stream's path does not open as its file: changed, renamed or gone."""
        st = _stat(tailer.path)
        if st is not None and tailer.file_id.is_same_inode(st):
            if not path_has_prefix(tailer.path, tailer.file_id.fingerprint):
                self._recover_truncation(tailer)  # truncated while closed, or inode reused
            elif st.st_size > tailer.offset:
                log.warning(
                    "cannot reopen %s (stream %s); retried later", shown(tailer.path), tailer.stream
                )
            return
        self._relocate(tailer)

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
                    shown(tailer.path),
                    tailer.stream,
                )
        counts.split = counts.truncated = counts.skipped = 0

    def _recover_truncation(self, tailer: Tailer) -> None:
        """copytruncate: finish the old stream from the rotated copy; the path starts anew."""
        if tailer.decompressed:  # our own copy: never cut back, only shorter than expected
            self._finish(tailer, "its decompressed copy ends early")
            return
        self.counters.add("streams_truncated")
        path = tailer.path
        since = tailer.intact_at - MTIME_SLACK_S
        # The new content is read through our handle: it reaches it even if deleted since.
        fd = os.dup(tailer.fd) if tailer.fd is not None else None
        self._close(tailer)
        self._forget(tailer)
        if not self._continue_in_copy(tailer, path, since):
            self._finish(tailer, "truncated before it was read, and no copy of it was found")
        # The file we followed has new content: a new stream, wherever it is named now.
        source = self._source(tailer.source)
        if source is not None:
            self._read_unseen_copies(path, source, since)
            fd = fd if fd is not None else _open_regular(path)
        if fd is not None and source is not None:
            self._open_fd(path, source, fd)
        elif fd is not None:
            os.close(fd)

    def _source(self, name: str) -> Source | None:
        return next((s for s in self.config.sources if s.name == name), None)

    def _continue_in_copy(self, tailer: Tailer, path: str, since: float) -> bool:
        """The stream's bytes live on in a copy (copytruncate), maybe compressed since."""
        fp = tailer.file_id.fingerprint
        copy = self._find_copy(path, fp, tailer.head, _siblings(path), since)
        if copy is not None:
            self._take_copy(tailer, *copy)
            return True
        return self._follow_compressed(tailer)

    def _read_unseen_copies(self, path: str, source: Source, since: float) -> None:
        """Rotated copies of content that lived at `path` between two looks.

        The file was truncated, written and copied again before we looked: a
        copy newer than our last look that starts like no known stream holds
        lines never read.
        """
        known: _KnownHeads | None = None
        base = os.path.basename(path)
        for sibling in _siblings(path):
            name = os.path.basename(sibling)
            if name == base or rotation_root(name) != base or is_compressed(sibling):
                continue
            st = _stat(sibling)
            if st is None or st.st_mtime < since or self._owner(st, sibling) is not None:
                continue
            if known is None:
                known = self._known_heads()
            self._read_unknown_plain(sibling, source, known)

    def _take_copy(self, tailer: Tailer, copy_path: str, copy_id: FileId, copy_size: int) -> None:
        log.info(
            "stream truncated or gone: %s; reading its rest from the copy %s (stream %s)",
            shown(tailer.path),
            shown(copy_path),
            tailer.stream,
        )
        # Bytes seen in the file past the copy's end were written between logrotate's
        # copy and its truncation: they exist nowhere now (what we read is sent).
        lost_from = max(tailer.offset, copy_size)
        if tailer.last_size > lost_from:
            self._count_lost(
                tailer.stream, tailer.path, lost_from, tailer.last_size, "written after the copy"
            )
        tailer.file_id = copy_id
        tailer.head = None
        tailer.saved_fingerprint_size = -1  # the store must learn its new identity
        tailer.rotated = True
        tailer.replaced = False
        tailer.stalled_size = -1
        tailer.last_size = copy_size
        self._move(tailer, copy_path)
        self._claim(tailer)
        if copy_size < tailer.offset:
            self._finish(tailer, "its copy holds nothing more to read")
        else:
            self.ready.add(tailer.stream)

    def _find_copy(
        self,
        path: str,
        fingerprint: Fingerprint,
        head: bytes | None,
        siblings: Iterable[str],
        since: float,
    ) -> tuple[str, FileId, int] | None:
        """The newest untracked file beside `path` that starts with the same bytes.

        A full fingerprint is convincing anywhere in the folder. A short one
        (many files may start alike) only for a file of the same rotation root
        (`app.log`, `app.log.1`, `app.log-20261127`), made or written since
        `since`, when the content was last seen intact. `head`, the first bytes
        of a short file when known, also matches a copy taken while it was
        shorter still.
        """
        if fingerprint.size == 0:
            return None  # nothing of it was seen: nothing to find, nor to take by mistake
        short = fingerprint.size < FINGERPRINT_BYTES
        root = rotation_root(os.path.basename(path))
        best: tuple[float, str, FileId, int] | None = None
        for candidate in siblings:
            if candidate == path or is_compressed(candidate):
                continue
            if short and rotation_root(os.path.basename(candidate)) != root:
                continue
            st = _stat(candidate)
            if st is None or not stat.S_ISREG(st.st_mode) or self._is_claimed(st, candidate):
                continue
            if (short and st.st_mtime < since) or (best is not None and st.st_mtime <= best[0]):
                continue
            copy_head = _head_of(candidate)
            if copy_head is not None and _starts_alike(copy_head, fingerprint, head):
                copy_id = FileId(st.st_dev, st.st_ino, fingerprint_of(copy_head))
                best = (st.st_mtime, candidate, copy_id, st.st_size)
        return None if best is None else best[1:]

    def _lose(self, tailer: Tailer, start: int, end: int, why: str) -> None:
        self._count_lost(tailer.stream, tailer.path, start, end, why)

    def _count_lost(self, stream: str, path: str, start: int, end: int, why: str) -> None:
        if end <= start:
            return
        self.counters.add("bytes_lost", end - start)
        log.warning(
            "bytes lost: %s (stream %s) range %d-%d (%d bytes): %s",
            shown(path),
            stream,
            start,
            end,
            end - start,
            why,
        )

    # -- finishing -----------------------------------------------------------

    def _forget(self, tailer: Tailer) -> None:
        """Drop the stream from the maps that find it by inode and path."""
        sid = tailer.stream
        key = (tailer.file_id.device, tailer.file_id.inode)
        if self.by_inode.get(key) == sid:
            del self.by_inode[key]
        if self.live.get(tailer.path) == sid:
            del self.live[tailer.path]
        if self.at_path.get(tailer.path) == sid:
            del self.at_path[tailer.path]

    def _finish(self, tailer: Tailer, why: str, lost_end: int | None = None) -> None:
        """The stream has nothing more to give; what it had unread is lost."""
        end = tailer.last_size if lost_end is None else lost_end
        if end > tailer.offset:
            self._lose(tailer, tailer.offset, end, why)
        else:
            log.info(
                "stream finished, read to its end: %s (stream %s): %s",
                shown(tailer.path),
                tailer.stream,
                why,
            )
        self._end(tailer)

    def _end(self, tailer: Tailer) -> None:
        """Nothing more is read: closed, no longer found by inode or path, retired later."""
        self._close(tailer)
        self._forget(tailer)
        self.ready.discard(tailer.stream)
        tailer.finished = True
        self._publish_target(tailer)  # replays learn where it ended
        self.retiring.append((time.monotonic() + self.retire_after_s, tailer.stream))
        self.dirty = True

    def close_finished(self, now: float) -> None:
        """Close idle handles, finish deleted files read to their end, retire old streams."""
        close_idle_s = self.config.close_idle_s
        for sid in list(self.opened):
            tailer = self.tailers[sid]
            if sid in self.ready:
                continue
            try:
                deleted = _is_deleted(tailer)
                pending = tailer.pending_bytes()
                stalled = pending > 0 and tailer.is_stalled()
            except OSError:
                deleted, pending, stalled = True, 0, False
            if pending > 0 and not stalled:
                self.ready.add(sid)  # growth that no event told of
                continue
            idle_s = now - tailer.last_active
            if deleted and idle_s >= DELETED_GRACE_S:
                why = "deleted, its last line without a newline" if pending > 0 else "deleted"
                self._finish(tailer, why, tailer.offset + max(0, pending))
            elif not deleted and idle_s >= close_idle_s:
                self._close(tailer)
                self.counters.add("streams_closed")
                log.debug("stream idle, handle closed: %s (stream %s)", shown(tailer.path), sid)
        while self.retiring and self.retiring[0][0] <= now:
            _, sid = self.retiring.popleft()
            done = self.tailers.get(sid)
            if done is not None and done.finished:
                self._retire(done)

    def _retire(self, tailer: Tailer) -> None:
        successor = self.tailers.get(self.successor.pop(tailer.stream, ""))
        if successor is not None:
            self._unlink(successor)  # collectors may forget it now: no block waits for it
        if tailer.prev:
            self._unlink(tailer)
        path = self.live_path.pop(tailer.stream, None)
        if path is not None and self.last_live.get(path) == tailer.stream:
            del self.last_live[path]
        if tailer.file_id.fingerprint.size:
            self.retired_heads.append(tailer.file_id.fingerprint)
        self._close(tailer)
        self._forget(tailer)
        self.tailers.pop(tailer.stream, None)
        self.ready.discard(tailer.stream)
        self.registry.drop(tailer.stream)
        self.emit(Retire(tailer.stream), None)
        self.dirty = True

    def apply_sources(self, config: ProducerConfig) -> None:
        """A reload: new sources are picked up by the next rescan; removed ones stop."""
        names = {s.name for s in config.sources}
        self.config = config
        for tailer in list(self.tailers.values()):
            if tailer.source not in names:
                log.info(
                    "source removed, stream closed: %s (stream %s)",
                    shown(tailer.path),
                    tailer.stream,
                )
                self._retire(tailer)
                self.registry.forget(tailer.stream)

    def has_readable(self) -> bool:
        """Whether a ready stream may be read now (not waiting for the offset store)."""
        return len(self.ready) > len(self.unsaved) or bool(self.ready - self.unsaved)

    def saved(self, records: list[StreamRecord]) -> None:
        """The offset store now holds `records`: their streams may be read on."""
        for record in records:
            tailer = self.tailers.get(record.stream)
            if tailer is not None:
                tailer.saved_fingerprint_size = record.file_id.fingerprint.size
            self.unsaved.discard(record.stream)

    def records(self) -> list[StreamRecord]:
        """What the offset store is to hold; a stream unchanged since keeps its record."""
        cache = self._records
        out = []
        for t in self.tailers.values():
            key = (
                t.path,
                t.file_id,
                t.offset,
                t.rotated,
                t.finished,
                t.last_size,
                t.floor,
                t.prev,
                t.prev_end,
            )
            cached = cache.get(t.stream)
            if cached is None or cached[0] != key:
                record = StreamRecord(t.stream, t.source, t.topic.decode("utf-8"), *key)
                cached = cache[t.stream] = (key, record)
            out.append(cached[1])
        if len(cache) > 2 * len(out):
            self._records = {r.stream: cache[r.stream] for r in out}
        return out

    def close_all(self) -> None:
        for tailer in self.tailers.values():
            tailer.close()
        self.opened.clear()

    def open_handles(self) -> int:
        return len(self.opened)

    def lag_bytes(self) -> int:
        lag = 0
        for sid in self.opened:
            with contextlib.suppress(OSError):
                lag += max(0, self.tailers[sid].pending_bytes())
        return lag


class _Listings:
    """Folder listings taken once during a restore."""

    def __init__(self) -> None:
        self._names: dict[str, list[str]] = {}

    def names(self, folder: str) -> list[str]:
        names = self._names.get(folder)
        if names is None:
            try:
                names = os.listdir(folder or ".")
            except OSError:
                names = []
            self._names[folder] = names
        return names

    def siblings(self, path: str) -> list[str]:
        folder = os.path.dirname(path)
        return [p for p in (os.path.join(folder, n) for n in self.names(folder)) if p != path]


class _KnownHeads:
    """First bytes of known streams, to tell a copy of one from a file never seen."""

    def __init__(self, fingerprints: Iterable[Fingerprint], heads: Iterable[bytes]) -> None:
        self._by_size: dict[int, set[str]] = {}
        for fp in fingerprints:
            if fp.size:
                self._by_size.setdefault(fp.size, set()).add(fp.digest)
        self._heads = [h for h in heads if h]

    def add(self, fingerprint: Fingerprint) -> None:
        if fingerprint.size:
            self._by_size.setdefault(fingerprint.size, set()).add(fingerprint.digest)

    def has(self, head: bytes) -> bool:
        if any(
            len(head) >= size and fingerprint_of(head[:size]).digest in digests
            for size, digests in self._by_size.items()
        ):
            return True
        # A short file copied before or after it grew: one head is a prefix of the other.
        return bool(head) and any(_shares_prefix(head, h) for h in self._heads)


def _shares_prefix(a: bytes, b: bytes) -> bool:
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def _starts_alike(head: bytes, fingerprint: Fingerprint, known_head: bytes | None) -> bool:
    """Whether a file starting with `head` may be a copy of a stream, at any length."""
    if known_head is not None:
        return _shares_prefix(head, known_head)
    return fingerprint.matches(head)


def _head_of(path: str) -> bytes | None:
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        return os.pread(fd, FINGERPRINT_BYTES, 0)
    finally:
        os.close(fd)


def _is_weak(tailer: Tailer) -> bool:
    """A closed stream that read nothing: its claim on an inode is a guess."""
    return tailer.fd is None and tailer.file_id.fingerprint.size == 0


def _settle_last_size(
    tailer: Tailer, size: int, lose: Callable[[Tailer, int, int, str], None]
) -> None:
    """A copy shorter than the file was seen: what lies past it exists nowhere now."""
    if tailer.last_size > size:
        lose(tailer, max(size, tailer.offset), tailer.last_size, "not in its compressed copy")
        tailer.last_size = size


def _is_deleted(tailer: Tailer) -> bool:
    try:
        return tailer.is_deleted()
    except OSError:
        return True


def _size_or(tailer: Tailer, default: int) -> int:
    try:
        return tailer.size()
    except OSError:
        return default


def _names_inode(path: str, st: os.stat_result) -> bool:
    other = _stat(path)
    return other is not None and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _siblings(path: str) -> list[str]:
    folder = os.path.dirname(path)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [p for p in (os.path.join(folder, n) for n in names) if p != path]


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


def _open_regular(path: str) -> int | None:
    """An fd on the regular file at `path` (never through a symlink), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError:
        UNREADABLE.denied(path)  # once per file, with the fix
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP):
            log.warning("cannot open %s: %s", shown(path), exc.strerror)
        return None
    UNREADABLE.opened(path)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _line_start_before_end(fd: int) -> int:
    """The offset after the last newline: where `start_at: end` begins."""
    size = os.fstat(fd).st_size
    start = max(0, size - START_AT_END_LOOKBACK)
    tail = os.pread(fd, size - start, start)
    nl = tail.rfind(b"\n")
    return start + nl + 1 if nl >= 0 else start


def monotonic() -> float:
    return time.monotonic()
