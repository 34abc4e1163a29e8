"""Discovery: watchdog events and a periodic rescan, turned into paths to look at.

watchdog calls our handler on its own thread; the handler only puts paths on
a bounded queue. When the queue overflows, a rescan is asked for instead, so
nothing is missed for long: the rescan also runs on an interval for file
systems inotify cannot watch (NFS), and catches what an inotify overflow
lost (watchdog does not report one). Only events that can mean new content
are taken: opening, reading and closing a file, ours included, are not.

Without inotify (the user's instances or watches exhausted, see inotify.py)
the producer goes on by rescanning, says so once at warning level with the
sysctl to raise, shows it in `watching` (status), and takes inotify again
when the kernel grants it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from zaggd.config import Source
from zaggd.logs import shown
from zaggd.producer.globs import folder_key, glob_regex, is_excluded, source_of, watch_root
from zaggd.producer.inotify import LIMITS, refusal, watches_held, watches_needed
from zaggd.producer.scanner import Found, Scanner, scan, watched_folders

__all__ = [
    "Discovery",
    "Found",
    "Scanner",
    "glob_regex",
    "is_excluded",
    "scan",
    "source_of",
    "watch_root",
    "watched_folders",
]

log = logging.getLogger(__name__)

RETRY_S = 30.0  # without inotify: how often to ask for it again
UNAVAILABLE = "unavailable"

WatchKey = tuple[str, bool]  # a folder, and whether below it too


# Opening and reading a file (ours included) says nothing about its content;
# a folder's "modified" only echoes the file events that come anyway.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write", "attrib"})
_FOLDER_EVENTS = frozenset({"created", "moved", "deleted"})


def _event_filter() -> list[type[FileSystemEvent]] | None:
    """The events worth waking up for (watchdog >= 4 filters them in inotify itself)."""
    try:
        from watchdog import events as ev

        return [
            ev.FileCreatedEvent,
            ev.FileModifiedEvent,
            ev.FileMovedEvent,
            ev.FileDeletedEvent,
            ev.FileClosedEvent,
            ev.DirCreatedEvent,
            ev.DirMovedEvent,
            ev.DirDeletedEvent,
        ]
    except AttributeError:
        return None


class _Handler(FileSystemEventHandler):
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        if event.is_directory:
            # A new or moved folder may hold files made before it was watched.
            if event.event_type in _FOLDER_EVENTS:
                self.discovery.request_rescan()
            return
        self.discovery.put(_text(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.discovery.put(_text(dest))


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


class Discovery:
    """Owns the watchdog observer; hands paths to the tailer thread."""

    def __init__(
        self, sources: tuple[Source, ...], rescan_interval_s: float = 10.0, max_queued: int = 65536
    ) -> None:
        self.paths: queue.Queue[str] = queue.Queue(maxsize=max_queued)
        self._rescan = threading.Event()
        self._observer: BaseObserver | None = None
        self._handler = _Handler(self)
        self._watched: dict[WatchKey, ObservedWatch] = {}
        self._refused: set[WatchKey] = set()  # roots watchdog refused for another reason
        self.sources = sources
        self.rescan_interval_s = rescan_interval_s
        # "instances" or "watches" while inotify lacks them; UNAVAILABLE without inotify at all
        self._lacking: str | None = None
        self._unavailable_why = ""
        self._partly = False  # some folders watched, the others found by rescan only
        self._next_try = 0.0
        self._next_check = 0.0  # when to count the watches held again

    @property
    def watching(self) -> str:
        """How files are found: `inotify`, or what lacks and what to raise (status)."""
        if self._lacking is None:
            return "inotify"
        how = "inotify and rescan" if self._partly else "rescan only"
        if self._lacking == UNAVAILABLE:
            return f"{how} (inotify unavailable: {self._unavailable_why})"
        sysctl = _sysctl(self._lacking)
        return f"{how} (inotify {self._lacking} exhausted: raise {sysctl})"

    def put(self, path: str) -> None:
        try:
            self.paths.put_nowait(path)
        except queue.Full:
            self._rescan.set()

    def request_rescan(self) -> None:
        self._rescan.set()

    def take_rescan_request(self) -> bool:
        if self._rescan.is_set():
            self._rescan.clear()
            return True
        return False

    def start(self) -> None:
        self.update_watches(self.sources)

    def update_watches(self, sources: tuple[Source, ...]) -> None:
        """Watch the folders the sources' globs name; retried at each rescan."""
        self.sources = sources
        wanted = watch_roots(sources)
        now = time.monotonic()
        if self._lacking is not None:
            if now < self._next_try:
                return
            self._next_try = now + RETRY_S
            if self._is_still_refused(wanted):
                return  # asking watchdog now would only fail again (and leak, in watchdog 2)
            if self._partly:
                self._unschedule(set())  # the folders watchdog skipped are asked for again
        if not self._has_observer():
            return
        self._unschedule(wanted)
        added = False
        for key in sorted(wanted):
            if key not in self._watched and os.path.isdir(key[0]):
                added = self._schedule(key) or added
        if added or self._lacking is not None or now >= self._next_check:
            self._next_check = now + RETRY_S
            self._check_watches(wanted)

    def _is_still_refused(self, wanted: set[WatchKey]) -> bool:
        roots = [root for root, _ in sorted(wanted) if os.path.isdir(root)]
        return bool(roots) and refusal(roots[0]) in LIMITS

    def _has_observer(self) -> bool:
        if self._observer is not None:
            return True
        try:
            observer = Observer()  # watchdog >= 4 takes its inotify instance here
            observer.name = "zaggd-watchdog"
            observer.start()
        except OSError as exc:
            self._note_lacking(exc)
            return False
        self._observer = observer
        return True

    def _unschedule(self, wanted: set[WatchKey]) -> None:
        assert self._observer is not None or not self._watched
        for key in list(self._watched):
            if key not in wanted:
                watch = self._watched.pop(key)
                with contextlib.suppress(OSError, KeyError):  # its folder gone, its watch too
                    self._observer.unschedule(watch)  # type: ignore[union-attr]

    def _schedule(self, key: WatchKey) -> bool:
        root, recursive = key
        try:
            self._watched[key] = self._watch(root, recursive)
        except OSError as exc:
            if exc.errno in LIMITS:
                self._note_lacking(exc)
            elif key not in self._refused:
                self._refused.add(key)
                log.warning(
                    "cannot watch %s: %s (the rescan still finds its files)",
                    shown(root),
                    exc.strerror or exc,
                )
            return False
        self._refused.discard(key)
        log.info("watching %s%s", shown(root), " and below" if recursive else "")
        return True

    def _watch(self, root: str, recursive: bool) -> ObservedWatch:
        assert self._observer is not None
        wanted = _event_filter()
        if wanted is not None:
            try:
                return self._observer.schedule(
                    self._handler, root, recursive=recursive, event_filter=wanted
                )
            except TypeError:
                pass  # watchdog < 4 has no event_filter: the handler ignores the rest
        return self._observer.schedule(self._handler, root, recursive=recursive)

    def _check_watches(self, wanted: set[WatchKey]) -> None:
        """Every folder watched, or what inotify lacks (watchdog >= 4 says nothing of
        the folders below a root that it could not watch)."""
        missing = [k for k in wanted if k not in self._watched and os.path.isdir(k[0])]
        if not missing and self._is_short_of_watches():
            self._note_lacking(OSError(errno.ENOSPC, "inotify watch limit reached"))
        elif not missing and self._lacking is not None:
            log.info("inotify watches every folder again, events come as they happen")
            self._lacking = None
            self._partly = False

    def _is_short_of_watches(self) -> bool:
        held = watches_held()
        if held is None or held >= watches_needed(self._watched):
            return False
        return any(refusal(root) == errno.ENOSPC for root, _ in list(self._watched)[:1])

    def _note_lacking(self, exc: OSError) -> None:
        """No inotify instance or watch left (or no inotify): go on by rescan; said once."""
        what, sysctl = LIMITS.get(exc.errno or 0, (UNAVAILABLE, ""))
        partly = bool(self._watched)
        if self._lacking != what or self._partly != partly:
            found = "files in some folders are" if partly else "files are"
            every = f"found by a rescan every {self.rescan_interval_s:g} s only"
            if what == UNAVAILABLE:
                self._unavailable_why = str(exc.strerror or exc)
                log.warning("inotify unavailable (%s): %s %s", self._unavailable_why, found, every)
            else:
                log.warning(
                    "inotify %s exhausted (%s): %s %s; raise %s (shared by all of this "
                    "user's programs)",
                    what,
                    exc.strerror or exc,
                    found,
                    every,
                    sysctl,
                )
        self._lacking, self._partly = what, partly
        self._next_try = time.monotonic() + RETRY_S

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)


def _sysctl(what: str) -> str:
    return next(sysctl for name, sysctl in LIMITS.values() if name == what)


def watch_roots(sources: tuple[Source, ...]) -> set[WatchKey]:
    """The folders to hand to watchdog, each real folder once: a folder below a
    recursive root, or the same folder under another name, is left out."""
    keys = {watch_root(p) for s in sources for p in s.paths}
    recursive = sorted(root for root, below in keys if below)
    out: set[WatchKey] = set()
    seen: set[tuple[int, int]] = set()
    for root, below in sorted(keys, key=lambda k: (not k[1], k[0])):
        if not below and any(_is_within(root, top) for top in recursive):
            continue
        if below and any(top != root and _is_within(root, top) for top in recursive):
            continue
        key = folder_key(root)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.add((root, below))
    return out


def _is_within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
