"""Globs: which source a path belongs to, and the folders a glob names.

A path glob matches as a regex (`*` and `?` within a folder, `**` across
folders). Folder globs are expanded as glob does, but each real folder once:
`**` stands for a folder and everything below it, folders reached through
links included (as with glob), but a folder reached again, told by device and
inode (a link back up the tree, a link to itself, two links to one place), is
not entered again: a loop costs one look. Real paths are walked before links,
so a folder reached both ways keeps its real name. As with glob, `*`, `?` and
`**` skip names starting with a dot unless the segment starts with one.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from functools import lru_cache

from zaggd.config import Source

_MAGIC = re.compile(r"[*?\[]")

FolderKey = tuple[int, int]  # device, inode


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
    by_name, by_path = exclusions(source.exclude)
    return bool(
        (by_name is not None and by_name.match(os.path.basename(path)))
        or (by_path is not None and by_path.match(path))
    )


@lru_cache(maxsize=256)
def exclusions(patterns: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
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


def has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def split_glob(pattern: str) -> tuple[str, str]:
    """A file glob as (folder glob, name glob); a trailing `**` becomes `**/*`."""
    folder_glob, name_glob = os.path.split(pattern)
    if name_glob == "**":
        return os.path.join(folder_glob, "**"), "*"
    return folder_glob, name_glob.replace("**", "*")


def expand(folder_glob: str) -> Iterator[str]:
    """The existing folders `folder_glob` names, each real folder once."""
    if not has_magic(folder_glob):
        if os.path.isdir(folder_glob or "."):
            yield folder_glob
        return
    parts = folder_glob.split("/")
    fixed: list[str] = []
    while parts and not has_magic(parts[0]):
        fixed.append(parts.pop(0))
    root = "/".join(fixed) if fixed != [""] else "/"
    seen: set[FolderKey] = set()
    for folder in _expand(root, tuple(parts)):
        key = folder_key(folder)
        if key is not None and key not in seen:
            seen.add(key)
            yield folder


def folder_key(path: str) -> FolderKey | None:
    """The device and inode of the folder at `path` (through links), or None."""
    try:
        st = os.stat(path or ".")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _expand(folder: str, segments: tuple[str, ...]) -> Iterator[str]:
    if not segments:
        yield folder
        return
    segment, rest = segments[0], segments[1:]
    if segment == "**":
        for below in walk(folder):
            yield from _expand(below, rest)
    elif has_magic(segment):
        name_re, hidden = _segment_regex(segment), segment.startswith(".")
        for entry in _listing(folder):
            visible = hidden or not entry.name.startswith(".")
            if visible and name_re.match(entry.name) and _is_folder(entry):
                yield from _expand(_join(folder, entry.name), rest)
    else:
        path = _join(folder, segment)
        if os.path.isdir(path):
            yield from _expand(path, rest)


def walk(root: str) -> Iterator[str]:
    """`root` and every folder below it (not hidden), each real folder once: first
    those reached without a link, then those reached only through one."""
    first = folder_key(root)
    if first is None:
        return
    seen = {first}
    links: deque[str] = deque()
    real: deque[str] = deque([root])
    yield root
    while real or links:
        if real:
            folder = real.popleft()
        else:
            folder = links.popleft()
            key = folder_key(folder)
            if key is None or key in seen:
                continue
            seen.add(key)
            yield folder
        for entry in _listing(folder):
            if entry.name.startswith("."):
                continue
            path = _join(folder, entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        real.append(path)
                        yield path
                elif entry.is_symlink() and entry.is_dir():
                    links.append(path)
            except OSError:
                continue


def _listing(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder or ".") as listing:
            return sorted(listing, key=lambda e: e.name)
    except OSError:
        return []


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if folder else name


@lru_cache(maxsize=256)
def _segment_regex(segment: str) -> re.Pattern[str]:
    return glob_regex(segment)
