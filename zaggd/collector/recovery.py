"""Start-up recovery of the output: the live files cut back to what is vouched for,
and what the output folder itself says each stream has reached.

Runs before the subscriber takes a single byte, after rotation.recover() has
finished the cuts and seals the checkpoint recorded. For every live output
file it decides the size it may keep:

- the checkpoint's size when the checkpoint names the file (the checkpoint
  wins: the live index is written after it and may only lag it);
- otherwise the live index's size (`PATH.index.json`, liveindex.py): a lost
  checkpoint, or a file not written in the last run.

Bytes past that size are cut off (they are replayed). A file shorter than
that, or missing, lost bytes by hand or by the OS: it is reported (file,
expected size, found size), emptied, and the streams it held are rewound so
that replay asks for them again (damage.py). An index that no longer says
what was kept is rewritten when that is cheap (same bytes, other ranges),
removed when it tells of bytes cut since, and otherwise left behind, true of
what it covers, for the checkpoint thread to catch up.

From the archives' manifests, the indexes of rotated files not sealed yet and
the live files kept, it computes per stream the end of what the output holds
(`floors`): a stream the checkpoint does not know (no checkpoint, or a stream
it forgot) resumes there instead of from zero, so a collector without a
checkpoint never appends what it already wrote. An index whose live file is
gone but whose bytes are the newest rotated file's is the trace of a cut
interrupted before the index was handed over: it is handed over here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from zaggd.collector.checkpoint import CheckpointState
from zaggd.collector.damage import Change, Damage
from zaggd.collector.liveindex import (
    INDEX_SUFFIX,
    LiveIndex,
    empty_index,
    hash_prefix,
    read_index,
    remove_index,
    write_index,
)
from zaggd.collector.manifest import (
    MANIFEST_SUFFIX,
    TEMP_SUFFIX,
    Manifest,
    parse_rotated,
    read_manifest,
)
from zaggd.collector.rotation import Rotation, merge_ranges, seal_intent_from, seal_intent_of
from zaggd.collector.writer import MARKER_NAME, KnownFile, Writer
from zaggd.errors import ZaggdError
from zaggd.logs import shown

log = logging.getLogger(__name__)

Ranges = dict[str, list[int]]


@dataclass(slots=True)
class Recovered:
    floors: dict[str, int] = field(default_factory=dict)  # "node/stream" -> end held
    damaged: list[Damage] = field(default_factory=list)

    @property
    def nodes(self) -> set[str]:
        return {key.split("/", 1)[0] for key in self.floors}


@dataclass(slots=True)
class _Folder:
    """What one output folder holds, by kind of file."""

    path: str
    manifests: dict[str, Manifest] = field(default_factory=dict)  # base -> manifest
    rotated: set[str] = field(default_factory=set)  # plain rotated files (bases)
    rotated_indexes: dict[str, LiveIndex] = field(default_factory=dict)  # base -> index
    live_indexes: dict[str, LiveIndex | None] = field(default_factory=dict)  # path -> index
    others: list[str] = field(default_factory=list)  # every other file: live or foreign
    marked: bool = False


def recover_output(
    writer: Writer, restored: CheckpointState | None, rotation: Rotation | None
) -> Recovered:
    """Cut the live files back, report damage, compute the floors (see the module doc)."""
    found = Recovered()
    folders = [_scan(folder, names) for folder, names in _walk(writer.root)]
    files = dict(restored.files) if restored is not None else {}
    live_paths = set(files)
    for folder in folders:
        live_paths.update(folder.live_indexes)
    by_folder = {folder.path: folder for folder in folders}
    for path in sorted(live_paths):
        folder = by_folder.get(os.path.dirname(path)) or _Folder(os.path.dirname(path))
        _recover_live(path, files.get(path), folder, writer, rotation, found)
    for folder in folders:
        _recover_rotated(folder, rotation, found)
        if restored is None:
            _warn_unindexed(folder)
    if rotation is not None:
        for ranges in rotation.pending_ranges():
            _raise_floors(found.floors, ranges)
    return found


def _walk(root: str) -> list[tuple[str, list[str]]]:
    if not root or not os.path.isdir(root):
        return []
    return [(folder, names) for folder, _, names in os.walk(root)]


def _scan(path: str, names: list[str]) -> _Folder:
    folder = _Folder(path)
    for name in names:
        full = os.path.join(path, name)
        if name == MARKER_NAME:
            folder.marked = True
        elif name.endswith(TEMP_SUFFIX):
            continue
        elif name.endswith(INDEX_SUFFIX):
            _scan_index(folder, full)
        else:
            parsed = parse_rotated(name)
            if parsed is None:
                folder.others.append(full)
            elif parsed.ext == MANIFEST_SUFFIX:
                _scan_manifest(folder, os.path.join(path, parsed.base), full)
            elif parsed.ext == "":
                folder.rotated.add(full)
    return folder


def _scan_index(folder: _Folder, full: str) -> None:
    described = full[: -len(INDEX_SUFFIX)]
    parsed = parse_rotated(os.path.basename(described))
    if parsed is not None and parsed.ext:
        return
    try:
        index = read_index(described)
    except ZaggdError as exc:
        log.warning("live index ignored: %s", shown(str(exc)))
        index = None
    if parsed is None:
        folder.live_indexes[described] = index
    elif index is not None:
        folder.rotated_indexes[described] = index


def _scan_manifest(folder: _Folder, base: str, full: str) -> None:
    try:
        folder.manifests[base] = read_manifest(full)
    except ZaggdError as exc:
        log.warning("manifest ignored: %s", shown(str(exc)))


def _raise_floors(floors: dict[str, int], ranges: Ranges) -> None:
    for key, span in ranges.items():
        if span[1] > floors.get(key, -1):
            floors[key] = int(span[1])


# -- live files ------------------------------------------------------------------


def _recover_live(
    path: str,
    entry: dict[str, Any] | None,
    folder: _Folder,
    writer: Writer,
    rotation: Rotation | None,
    found: Recovered,
) -> None:
    index = folder.live_indexes.get(path)
    actual = _size_or_none(path)
    if entry is not None:
        expected = int(entry["size"])
        ranges = dict(entry.get("ranges", {}))
        if rotation is not None:
            ranges = merge_ranges(rotation.carried_of(path), ranges)
        if index is not None and 0 < index.size <= expected:
            ranges = merge_ranges(index.ranges, ranges)  # written by runs before the last
        source = "checkpoint"
    elif index is not None:
        cut = _cut_away_by(path, index, folder)
        if cut is not None:
            # Whatever the live path holds came after that cut, unindexed: cut and replayed.
            _finish_hand_over(path, cut, index, folder, rotation)
            index = None
        expected = index.size if index is not None else 0
        ranges = dict(index.ranges) if index is not None else {}
        source = "live index"
    else:
        return
    if actual is not None and actual > expected:
        os.truncate(path, expected)
        log.info(
            "output cut back to its %s: %s %d -> %d bytes", source, shown(path), actual, expected
        )
        actual = expected
    if actual is None or actual < expected:
        _note_damage(path, expected, actual, ranges, source, found)
        if actual:
            os.truncate(path, 0)
        expected, ranges = 0, {}
    _raise_floors(found.floors, ranges)
    previous = rotation.previous_of(path) if rotation is not None else None
    stale = _rewrite_index(path, index, expected, ranges, previous, actual is not None)
    if actual is not None:
        st = os.stat(path)
        writer.known[path] = KnownFile(expected, ranges, st.st_dev, st.st_ino, stale)


def _size_or_none(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _note_damage(
    path: str, expected: int, actual: int | None, ranges: Ranges, source: str, found: Recovered
) -> None:
    change = Change.DELETED if actual is None else Change.TRUNCATED
    found.damaged.append(Damage(path, change, expected, actual or 0, ranges))
    _raise_floors(found.floors, ranges)  # where the streams stood: rewinding starts there
    log.warning(
        "output %s since the last run: %s has %d of the %d bytes its %s vouches for; "
        "its streams are asked for again",
        "missing" if actual is None else "shorter",
        shown(path),
        actual or 0,
        expected,
        source,
    )


def _rewrite_index(
    path: str,
    index: LiveIndex | None,
    size: int,
    ranges: Ranges,
    previous: str | None,
    exists: bool,
) -> bool:
    """Make the live index say what was kept (the checkpoint won, or bytes were cut);
    True when it still has to be hashed up to `size` (the checkpoint thread does that,
    a bounded amount at a time: a large file does not hold up the start)."""
    if index is not None and (index.size, index.ranges, index.previous) == (
        size,
        ranges,
        previous,
    ):
        return False
    if size == 0:
        if exists or index is not None:
            write_index(path, empty_index(path, previous))
        return False
    if index is not None and index.size == size:
        write_index(path, replace(index, ranges=ranges, previous=previous))  # same bytes
        return False
    if index is not None and index.size > size:
        remove_index(path)  # it tells of bytes that were cut
    return True  # a shorter index stays true of what it covers until then


def _cut_away_by(path: str, index: LiveIndex, folder: _Folder) -> str | None:
    """The rotated file this stale index describes: a cut interrupted before the hand-over.

    It is the newest rotated file of this live file, cut after the index's
    `previous`, with the index's size and hash (its manifest's, once sealed).
    """
    if index.size == 0:
        return None
    name = os.path.basename(path)
    candidates = []
    for base in folder.rotated | set(folder.manifests):
        parsed = parse_rotated(os.path.basename(base))
        if parsed is not None and parsed.live == name:
            candidates.append((parsed.stamp, base))
    if not candidates:
        return None
    _, newest = max(candidates)
    if os.path.basename(newest) == index.previous:
        return None
    manifest = folder.manifests.get(newest)
    if manifest is not None:
        same = (manifest.content_size, manifest.content_sha256) == (index.size, index.sha256)
        return newest if same else None
    if _size_or_none(newest) != index.size:
        return None
    hashed = hash_prefix(newest, index.size)
    return newest if hashed is not None and hashed[1] == index.sha256 else None


def _finish_hand_over(
    path: str, base: str, index: LiveIndex, folder: _Folder, rotation: Rotation | None
) -> None:
    parsed = parse_rotated(os.path.basename(base))
    moved = LiveIndex(
        os.path.basename(base),
        index.size,
        index.lines,
        index.sha256,
        index.ranges,
        index.previous,
        {"live": os.path.basename(path), "rotated_at": parsed.stamp_us / 1e6 if parsed else 0.0},
    )
    unsealed = base in folder.rotated and base not in folder.manifests
    if unsealed and base not in folder.rotated_indexes:
        write_index(base, moved)
        folder.rotated_indexes[base] = moved
    write_index(path, empty_index(path, os.path.basename(base)))
    log.info(
        "rotation finished after a restart: %s -> %s",
        shown(path),
        shown(os.path.basename(base)),
    )
    if rotation is not None:
        rotation.note_cut(path, base)


# -- rotated files -----------------------------------------------------------------


def _recover_rotated(folder: _Folder, rotation: Rotation | None, found: Recovered) -> None:
    for sealed in folder.manifests.values():
        _raise_floors(found.floors, sealed.ranges)  # expired ones too: they were delivered
    for unsealed in folder.rotated_indexes.values():
        # Written right after the cut: the rotated file's ranges until its manifest holds them.
        _raise_floors(found.floors, unsealed.ranges)
    for base in sorted(folder.rotated):
        if rotation is not None and rotation.is_pending(base):
            continue  # the checkpoint's seal job
        manifest, index = folder.manifests.get(base), folder.rotated_indexes.get(base)
        if manifest is not None:
            intent = seal_intent_from(base, manifest)
        elif index is not None and rotation is not None:
            intent = seal_intent_of(base, index, rotation.rules.compress.value)
        else:
            log.warning(
                "rotated output without a manifest or index: %s; the ranges it holds are "
                "unknown and may be written again",
                shown(base),
            )
            continue
        if rotation is not None:
            rotation.resume_seal(intent)  # finishes what is left, or seals it again
    for base in folder.rotated_indexes:
        if base not in folder.rotated and base in folder.manifests:
            remove_index(base)  # sealed: the manifest holds all it said
        elif base not in folder.rotated:
            log.warning("rotated output gone before it was sealed: %s", shown(base))
            remove_index(base)


def _warn_unindexed(folder: _Folder) -> None:
    """Without a checkpoint, a live file without an index holds what no one can tell."""
    if not folder.marked:
        return
    for path in folder.others:
        if path in folder.live_indexes or os.path.basename(path).startswith("."):
            continue
        size = _size_or_none(path)
        if size:
            log.warning(
                "no checkpoint and no live index for %s (%d bytes): what it holds is unknown; "
                "lines it holds may be written again after it",
                shown(path),
                size,
            )
