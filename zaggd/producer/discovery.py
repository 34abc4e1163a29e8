"""Discovery: watchdog events and a periodic rescan, turned into paths to look at.

watchdog calls our handler on its own thread; the handler only puts paths on
a bounded queue. When the queue overflows, a rescan is asked for instead, so
nothing is missed for long: the rescan also runs on an interval for file
systems inotify cannot watch (NFS), and catches what an inotify overflow
lost (watchdog does not report one). Only events that can mean new content
are taken: opening, reading and closing a file, ours included, are not.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from zaggd.config import Source

log = logging.getLogger(__name__)

_MAGIC = re.compile(r"[*?\[]")


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a path glob: `*` and `?` stay within a folder, `**` spans folders."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            close = pattern.find("]", i + 2)
            if close < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : close].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = close + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def is_excluded(path: str, source: Source) -> bool:
    by_name, by_path = _exclusions(source.exclude)
    return bool(
        (by_name is not None and by_name.match(os.path.basename(path)))
        or (by_path is not None and by_path.match(path))
    )


@lru_cache(maxsize=256)
def _exclusions(patterns: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """One regex for the name patterns and one for the path patterns (those with a '/')."""

    def joined(group: list[str]) -> re.Pattern[str] | None:
        if not group:
            return None
        return re.compile("|".join(f"(?:{glob_regex(p).pattern})" for p in group))

    return (
        joined([p for p in patterns if "/" not in p]),
        joined([p for p in patterns if "/" in p]),
    )


def source_of(path: str, sources: tuple[Source, ...]) -> Source | None:
    """The first source whose paths match `path` and whose excludes do not."""
    for source in sources:
        if any(glob_regex(p).match(path) for p in source.paths):
            return None if is_excluded(path, source) else source
    return None


def watch_root(pattern: str) -> tuple[str, bool]:
    """The folder to watch for a glob, and whether to watch below it."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            return "/".join(fixed) or "/", True
        fixed.append(part)
    return "/".join(fixed) or "/", False


class Found:
    """A file a scan found: its source, and its inode without a stat when listed."""

    __slots__ = ("_st", "entry", "path", "source")

    def __init__(self, source: Source, path: str, entry: os.DirEntry[str] | None) -> None:
        self.source = source
        self.path = path
        self.entry = entry
        self._st: os.stat_result | None = None

    def inode(self) -> int:
        return self.entry.inode() if self.entry is not None else self.stat().st_ino

    def stat(self) -> os.stat_result:
        if self._st is None:
            self._st = os.stat(self.path, follow_symlinks=False)
        return self._st


def scan(sources: tuple[Source, ...]) -> dict[str, Found]:
    """Every regular file the sources name now (never through a symlink), with its source."""
    return Scanner().scan(sources)[0]


class Scanner:
    """Lists the watched folders: every one, or (quick) only those changed since.

    A rescan runs over every watched file, so the common pattern (a glob of
    folders, then a name glob) lists each folder with scandir, matches names
    with one regex and stats nothing: the folder entry tells a regular file
    and its inode. A quick scan skips a folder whose mtime is the one it had
    when last listed (no file added, removed or renamed in it since), unless
    that mtime is too recent for the clock that sets it to be trusted.
    """

    RECENT_NS = 2_000_000_000

    def __init__(self) -> None:
        self._listed_at: dict[str, int] = {}  # folder -> its mtime when listed

    def scan(
        self, sources: tuple[Source, ...], quick: bool = False
    ) -> tuple[dict[str, Found], set[str] | None]:
        """The files found, and the folders listed (None: every folder was)."""
        found: dict[str, Found] = {}
        listed: set[str] | None = set()
        for source in sources:
            by_name, by_path = _exclusions(source.exclude)
            for pattern in source.paths:
                folder_glob, name_glob = os.path.split(pattern)
                if not name_glob or "**" in name_glob or not _MAGIC.search(name_glob):
                    listed = None  # named by glob alone: nothing skipped
                    candidates = _globbed(pattern)
                else:
                    candidates = self._listed(folder_glob, name_glob, quick, listed)
                for path, entry in candidates:
                    if path in found:
                        continue
                    name = entry.name if entry is not None else os.path.basename(path)
                    if (by_name is not None and by_name.match(name)) or (
                        by_path is not None and by_path.match(path)
                    ):
                        continue
                    try:
                        if entry is not None:
                            regular = entry.is_file(follow_symlinks=False)
                        else:
                            regular = stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode)
                    except OSError:
                        continue
                    if regular:
                        found[path] = Found(source, path, entry)
        return found, listed

    def _listed(
        self, folder_glob: str, name_glob: str, quick: bool, listed: set[str] | None
    ) -> Iterator[tuple[str, os.DirEntry[str] | None]]:
        if _MAGIC.search(folder_glob):
            folders: Iterable[str] = glob.iglob(folder_glob, recursive=True)
        else:
            folders = (folder_glob,)
        name_re = glob_regex(name_glob)
        hidden = name_glob.startswith(".")  # as glob: `*` does not match a leading dot
        for folder in folders:
            folder = folder or "."
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            if quick and self._is_unchanged(folder, mtime):
                continue
            try:
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError:
                continue
            self._listed_at[folder] = mtime
            if listed is not None:
                listed.add(folder)
            for entry in entries:
                name = entry.name
                if (hidden or name[0] != ".") and name_re.match(name):
                    yield entry.path, entry

    def _is_unchanged(self, folder: str, mtime: int) -> bool:
        return self._listed_at.get(folder) == mtime and time.time_ns() - mtime > self.RECENT_NS


def _globbed(pattern: str) -> Iterator[tuple[str, os.DirEntry[str] | None]]:
    for path in glob.iglob(pattern, recursive=True):
        yield path, None


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


def watched_folders(sources: tuple[Source, ...]) -> list[str]:
    """The existing folders the sources' globs can name files in."""
    folders: set[str] = set()
    for source in sources:
        for pattern in source.paths:
            folder = os.path.dirname(pattern) or "."
            if _MAGIC.search(folder):
                folders.update(p for p in glob.iglob(folder, recursive=True) if os.path.isdir(p))
            elif os.path.isdir(folder):
                folders.add(folder)
    return sorted(folders)


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

    def __init__(self, sources: tuple[Source, ...], max_queued: int = 65536) -> None:
        self.paths: queue.Queue[str] = queue.Queue(maxsize=max_queued)
        self._rescan = threading.Event()
        self._observer: BaseObserver | None = None
        self._handler = _Handler(self)
        self._watched: dict[tuple[str, bool], ObservedWatch] = {}
        self.sources = sources

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
        self._observer = Observer()
        self._observer.name = "zaggd-watchdog"
        self._observer.start()
        self.update_watches(self.sources)

    def update_watches(self, sources: tuple[Source, ...]) -> None:
        """Watch the folders the sources' globs name; retried at each rescan."""
        assert self._observer is not None
        self.sources = sources
        wanted = {watch_root(p) for s in sources for p in s.paths}
        for key in list(self._watched):
            if key not in wanted:
                self._observer.unschedule(self._watched.pop(key))
        for key in wanted:
            root, recursive = key
            if key in self._watched or not os.path.isdir(root):
                continue
            try:
                self._watched[key] = self._schedule(root, recursive)
                log.info("watching %s%s", root, " and below" if recursive else "")
            except OSError as exc:
                log.warning("cannot watch %s: %s (the rescan still finds its files)", root, exc)

    def _schedule(self, root: str, recursive: bool) -> ObservedWatch:
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

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
