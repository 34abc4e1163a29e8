"""The rescan: every regular file the sources' globs name now, with its source.

A rescan runs over every watched file, so the common pattern (a glob of
folders, then a name glob) lists each folder with scandir, matches names
with one regex and stats nothing: the folder entry tells a regular file
and its inode. Folder globs follow each real folder once (see globs), so a
symlink loop under `**` costs one look, not an endless walk.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator

from zaggd.config import Source
from zaggd.producer.globs import exclusions, expand, glob_regex, has_magic, split_glob


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

    A quick scan skips a folder whose mtime is the one it had when last listed
    (no file added, removed or renamed in it since), unless that mtime is too
    recent for the clock that sets it to be trusted.
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
            by_name, by_path = exclusions(source.exclude)
            for pattern in source.paths:
                folder_glob, name_glob = split_glob(pattern)
                if not name_glob:
                    continue
                if not has_magic(name_glob):
                    listed = None  # named by glob alone: nothing skipped
                    candidates = _named(folder_glob, name_glob)
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
                    if _is_regular(path, entry):
                        found[path] = Found(source, path, entry)
        return found, listed

    def _listed(
        self, folder_glob: str, name_glob: str, quick: bool, listed: set[str] | None
    ) -> Iterator[tuple[str, os.DirEntry[str] | None]]:
        name_re = glob_regex(name_glob)
        hidden = name_glob.startswith(".")  # as glob: `*` does not match a leading dot
        for folder in expand(folder_glob):
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


def _named(folder_glob: str, name: str) -> Iterator[tuple[str, os.DirEntry[str] | None]]:
    for folder in expand(folder_glob):
        path = os.path.join(folder, name) if folder else name
        if os.path.lexists(path):
            yield path, None


def _is_regular(path: str, entry: os.DirEntry[str] | None) -> bool:
    try:
        if entry is not None:
            return entry.is_file(follow_symlinks=False)
        return stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def watched_folders(sources: tuple[Source, ...]) -> list[str]:
    """The existing folders the sources' globs can name files in."""
    folders: set[str] = set()
    for source in sources:
        for pattern in source.paths:
            folders.update(expand(split_glob(pattern)[0]))
    return sorted(folders)
