"""Collector output: folders a zaggd collector writes into, which a producer never tails.

A collector inside a producer's glob would otherwise be fed its own output,
for ever. A collector marks each folder it writes output files into with
`.zaggd-output`; folders written before that marker existed are known by a
zaggd manifest (`*.manifest.json`, kind zaggd-manifest) or live index
(`*.index.json`, kind zaggd-live-index) in them. The marker is looked for at
each new file (it is written before the collector's first output file, so a
file seen means its marker can be seen); the manifests once per change of the
folder. A folder found to be output is said once, at warning level.
"""

from __future__ import annotations

import logging
import os

from zaggd.logs import shown

log = logging.getLogger(__name__)

MARKER = ".zaggd-output"
# Name endings of what zaggd writes beside output, and the start of such a file.
_OWN_FILES = {
    ".manifest.json": b'{"kind":"zaggd-manifest"',
    ".index.json": b'{"kind":"zaggd-live-index"',
}
_MAX_LOOKS = 8  # files read per folder listing: a few named alike are not zaggd's


class CollectorOutputs:
    """Which folders hold a collector's output; each one said once."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._listed: dict[str, tuple[int, bool]] = {}  # folder -> (mtime, has zaggd files)

    def holds(self, path: str, source: str) -> bool:
        """Whether `path` lies in a collector's output folder (said once per folder)."""
        folder = os.path.dirname(path) or "."
        if folder in self._known:
            return True
        why = self._why(folder)
        if why is None:
            return False
        self._known.add(folder)
        log.warning(
            "not tailing a zaggd collector's output: %s (source %s): %s; "
            "keep the output out of the sources' paths, or exclude it",
            shown(folder),
            source,
            why,
        )
        return True

    def _why(self, folder: str) -> str | None:
        if os.path.lexists(os.path.join(folder, MARKER)):
            return f"it holds {MARKER}"
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        cached = self._listed.get(folder)
        if cached is None or cached[0] != mtime:
            cached = self._listed[folder] = (mtime, _has_own_files(folder))
        return "it holds zaggd manifests" if cached[1] else None


def _has_own_files(folder: str) -> bool:
    looks = 0
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                start = next((v for k, v in _OWN_FILES.items() if entry.name.endswith(k)), None)
                if start is None:
                    continue
                if _starts_with(entry.path, start):
                    return True
                looks += 1
                if looks >= _MAX_LOOKS:
                    return False
    except OSError:
        return False
    return False


def _starts_with(path: str, start: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.pread(fd, len(start), 0) == start
    except OSError:
        return False
    finally:
        os.close(fd)
