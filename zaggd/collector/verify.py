"""`zaggd verify DIR`: a collector's output checked against what it says it holds.

DIR is one collector's output root (or a folder under it). Every file is
checked against its record, and every stream across all of them:

- Each archive against its manifest: stored size and SHA-256, then, once
  uncompressed, size, SHA-256 and line count; the chain of `previous` links
  (a broken link is an archive lost). An archive holding lines but no stream
  ranges is output nothing accounts for. In `raw` format a file holds its
  streams' own bytes, so it may not hold more bytes than its ranges cover
  (beyond the one newline a producer adds to each piece of a split long line).
- Each live file against its live index: its first `size` bytes hash to the
  index's SHA-256 and hold its line count, the file is at least that long, and
  the index's `previous` is the newest archive of that live file. Bytes past
  `size` are noted, not failed: a running collector writes before it indexes,
  and a restarted one cuts them back and has them replayed. An index that still
  describes the file just cut (a kill after the cut, before the next
  checkpoint) is noted too. A live file with content but no index is a warning,
  and a problem when it has archives in a folder marked `.zaggd-output` (a
  collector that marks its folders also indexes its live files).
- Per stream ("node/stream"), the byte ranges of all archives and live files
  together: each piece starts where the one before it ended. Bytes held twice
  are doubled; bytes between two pieces are a hole. Where a stream begins
  (retention, `start_at: end`) and where it ends are not checked. A hole next to
  a file whose ranges are unknown (not sealed yet, or its record damaged,
  which is reported already) is not reported again.

Each finding is one line, `KIND: PATH: what`, file names escaped. Problems
(missing, altered, incomplete, doubled, unindexed, unreadable) make the exit 1;
warnings and notes do not. A DIR that cannot be read is an error, exit 2.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from zaggd.collector.manifest import (
    INDEX_SUFFIX,
    MANIFEST_SUFFIX,
    TEMP_SUFFIX,
    RotatedName,
    parse_rotated,
)
from zaggd.collector.verify_archives import check_chain, check_manifest, check_unsealed
from zaggd.collector.verify_live import check_cut_index, check_live
from zaggd.collector.verify_report import OUTPUT_MARKER, Folder, Piece, Problem, Report
from zaggd.errors import ZaggdError
from zaggd.logs import shown

LOCK_NAME = ".zaggd-lock"


# -- the tree ------------------------------------------------------------------------


def check_tree(root: str) -> Report:
    """Every archive, live file and stream under `root`; ZaggdError when root is unreadable."""
    if not os.path.isdir(root):
        raise ZaggdError(f"{shown(root)}: not a folder")
    try:
        os.listdir(root)
    except OSError as exc:
        raise ZaggdError(f"{shown(root)}: cannot read: {exc.strerror}") from None
    report = Report(root)

    def unreadable(exc: OSError) -> None:
        report.add(Problem.UNREADABLE, str(exc.filename), f"cannot read: {exc.strerror}")

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs.sort()
        check_folder(folder, sorted(names), report)
    check_streams(report)
    return report


def check_folder(folder: str, names: list[str], report: Report) -> None:
    here = Folder(folder, set(names))
    for name in names:
        parsed = parse_rotated(name)
        if parsed is None:
            continue
        here.rotated.setdefault(parsed.live, []).append(parsed)
        if parsed.ext == MANIFEST_SUFFIX:
            here.sealed.add(parsed.base)
    for name in names:
        parsed = parse_rotated(name)
        if parsed is not None and parsed.ext == MANIFEST_SUFFIX:
            check_manifest(here, parsed, report)
    for cut in cut_indexes(here):
        check_cut_index(here, cut, report)
    check_unsealed(here, report)
    for links in here.chains.values():
        check_chain(folder, links, here.sealed, report)
    for name in live_names(here):
        check_live(here, name, report)


def cut_indexes(here: Folder) -> list[RotatedName]:
    """The rotated files here with an index of their own, taken with them at the cut."""
    found = []
    for name in sorted(here.names):
        parsed = parse_rotated(name.removesuffix(INDEX_SUFFIX))
        if name.endswith(INDEX_SUFFIX) and parsed is not None and parsed.ext == "":
            found.append(parsed)
    return found


def live_names(here: Folder) -> list[str]:
    """Names of the live files here: indexed, cut from, or any file in a marked folder."""
    found = set(here.rotated)
    for name in here.names:
        if name.endswith(INDEX_SUFFIX):
            found.add(name.removesuffix(INDEX_SUFFIX))
        elif here.is_marked and not is_bookkeeping(name):
            found.add(name)
    return sorted(name for name in found if parse_rotated(name) is None)


def is_bookkeeping(name: str) -> bool:
    """Files beside the output that are not output: records, temporaries, cuts, marks."""
    return (
        name in (OUTPUT_MARKER, LOCK_NAME)
        or name.endswith((MANIFEST_SUFFIX, INDEX_SUFFIX, TEMP_SUFFIX))
        or parse_rotated(name) is not None
    )


# -- streams across files ------------------------------------------------------------


def check_streams(report: Report) -> None:
    """Per stream, the pieces in offset order: each starts where the ones before it end."""
    by_key: dict[str, list[Piece]] = {}
    for piece in report.pieces:
        by_key.setdefault(piece.key, []).append(piece)
    for key in sorted(by_key):
        pieces = sorted(by_key[key], key=lambda p: (p.start, p.end, p.order, p.path))
        reach = pieces[0]  # of the pieces so far, the one that ends furthest
        for piece in pieces[1:]:
            if piece.start < reach.end:
                later, earlier = (piece, reach) if piece.order >= reach.order else (reach, piece)
                report.add(
                    Problem.DOUBLED,
                    later.path,
                    f"stream {shown(key)}: bytes [{piece.start}, {min(piece.end, reach.end)}) "
                    f"also in {display(earlier.path, later.path, report.root)}",
                )
            elif piece.start > reach.end and not is_near_unknown(reach, piece, report):
                report.add(
                    Problem.MISSING,
                    piece.path,
                    f"stream {shown(key)}: hole [{reach.end}, {piece.start}) between "
                    f"{display(reach.path, piece.path, report.root)} and "
                    f"{display(piece.path, piece.path, report.root)}",
                )
            if piece.end > reach.end:
                reach = piece


def is_near_unknown(before: Piece, after: Piece, report: Report) -> bool:
    """Whether a file whose ranges are unknown was written between two pieces."""
    low, high = sorted((before.order, after.order))
    return any(
        low <= order <= high
        for chain in {before.chain, after.chain}
        for order in report.unknown.get(chain, [])
    )


def display(path: str, beside: str, root: str) -> str:
    """A file's name when it lies beside `beside`, else its path under the root."""
    if os.path.dirname(path) == os.path.dirname(beside):
        return shown(os.path.basename(path))
    return shown(os.path.relpath(path, root))


# -- the command ---------------------------------------------------------------------


def verify_tree(root: str, out: TextIO | None = None) -> int:
    """`zaggd verify DIR`: one line per finding and a summary; 1 when anything is wrong."""
    stream = out if out is not None else sys.stdout
    report = check_tree(root)
    for finding in report.findings:
        print(finding, file=stream)
    summary = (
        f"{shown(root)}: {counted(report.archives, 'rotated file')} and "
        f"{counted(report.live_files, 'live file')} checked, "
        f"{counted(report.problems, 'problem')}"
    )
    if report.warnings:
        summary += f", {counted(report.warnings, 'warning')}"
    print(summary, file=stream)
    return 1 if report.problems else 0


def counted(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
