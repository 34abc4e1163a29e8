"""`zaggd verify`: each live file against its live index `NAME.index.json`, and each
rotated file not sealed yet against the index it took with it.

The index vouches for exactly the first `size` bytes: they hash to its SHA-256
and hold its line count, and the file is at least that long. Bytes past
`size` are noted, not failed (a running collector writes before it indexes; a
restarted one cuts them back and has them replayed), as is an index that still
describes the file just cut. Its `previous` names the newest archive of the
live file. A live file with content and no index is a warning, and a problem when
its folder is marked `.zaggd-output` and it has archives.

A cut takes the live index with it (`NAME.<stamp>.index.json`) until the
manifest is written: such a rotated file is checked like a live file, except
that nothing may follow its indexed bytes. Once a manifest is there, a leftover
index beside it is ignored: the manifest says it all.
"""

from __future__ import annotations

import math
import os
import stat

from zaggd.collector.contents import prefix_digest
from zaggd.collector.manifest import (
    INDEX_SUFFIX,
    LiveIndex,
    RotatedName,
    live_index_path,
    load_live_index,
    parse_rotated,
)
from zaggd.collector.verify_report import Folder, Problem, Report, holding
from zaggd.logs import shown
from zaggd.statefile import Damaged

LIVE_ORDER = math.inf  # a live file whose time is unknown comes after its archives


def check_live(here: Folder, name: str, report: Report) -> None:
    path = here.join(name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        report.add(Problem.UNREADABLE, path, f"cannot read: {exc.strerror}")
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        if name + INDEX_SUFFIX in here.names:
            report.add(Problem.UNREADABLE, path, "not a regular file; its live index describes one")
        return
    order = LIVE_ORDER if st is None else st.st_mtime_ns / 1000
    if name + INDEX_SUFFIX not in here.names:
        if st is not None and st.st_size:
            report.live_files += 1
            report_unindexed(here, name, st.st_size, report)
            report.add_unknown(here.path, name, order)
        return
    report.live_files += 1
    index = read_index(path, name, report)
    if index is None:
        report.add_unknown(here.path, name, order)
        return
    cut = cut_since(here, name, index)
    if cut is not None:
        unindexed = 0 if st is None else st.st_size
        report.add(
            Problem.NOTE,
            path,
            f"its live index describes {shown(cut)}, cut since; {unindexed} bytes not yet indexed",
        )
        report.add_unknown(here.path, name, order)
        return
    if st is None:
        if index.size:
            report.add(Problem.MISSING, path, f"gone; its live index describes {index.size} bytes")
        return
    check_previous(here, name, index, report)
    report.add_pieces(path, index.ranges, order, (here.path, name))
    if is_indexed(path, index, report) and index.lines and not index.ranges:
        report.add(Problem.UNINDEXED, path, f"holds {index.lines} lines but no stream ranges")
    if st.st_size > index.size:
        report.add(
            Problem.NOTE,
            path,
            f"{st.st_size - index.size} bytes past its live index are not yet indexed "
            "(a running collector indexes them at its next checkpoint; "
            "a restarted one cuts them back and has them replayed)",
        )


def check_cut_index(here: Folder, parsed: RotatedName, report: Report) -> None:
    """A rotated file not sealed yet, against the index it took with it from the live path."""
    if parsed.base in here.sealed:
        return  # a leftover: the manifest says all it did
    path = here.join(parsed.base)
    index = read_index(path, parsed.base, report)
    if index is None:
        return
    if parsed.base not in here.names:
        if index.size:
            report.add(
                Problem.MISSING,
                path,
                f"gone before it was sealed; its index describes {index.size} bytes",
            )
        return
    report.add_pieces(path, index.ranges, parsed.stamp_us, (here.path, parsed.live))
    if not is_indexed(path, index, report, "its index"):
        return
    extra = os.stat(path).st_size - index.size
    if extra > 0:
        report.add(Problem.ALTERED, path, f"{extra} bytes past its index, after the cut")
    else:
        here.vouched.add(parsed.base)


def report_unindexed(here: Folder, name: str, size: int, report: Report) -> None:
    """A problem for a live file of a marked folder that has archives: a collector that marks
    its folders indexes its live files. Else a warning: output of a collector from before
    live indexes, or a file someone put there."""
    path = here.join(name)
    if here.is_marked and name in here.rotated:
        report.add(Problem.UNINDEXED, path, f"{size} bytes of live output without a live index")
    else:
        report.add(
            Problem.WARNING,
            path,
            f"{size} bytes of live output without a live index; "
            "their stream ranges are not checked",
        )


def read_index(path: str, name: str, report: Report) -> LiveIndex | None:
    ipath = live_index_path(path)
    try:
        index = load_live_index(ipath)
    except Damaged as exc:
        report.add(Problem.ALTERED, ipath, f"damaged live index: {exc}")
        return None
    except OSError as exc:
        report.add(Problem.UNREADABLE, ipath, f"cannot read: {exc.strerror}")
        return None
    if index.file != name:
        report.add(
            Problem.ALTERED,
            ipath,
            f"damaged live index: file: names {shown(index.file)}, not {shown(name)}",
        )
        return None
    return index


def cut_since(here: Folder, name: str, index: LiveIndex) -> str | None:
    """The base of the archive the index describes, when the live file was cut after it
    was written: a kill after the cut, before the checkpoint that would index anew."""
    if index.size == 0:
        return None
    for parsed, manifest in here.chains.get(name, []):
        if (
            manifest.previous == index.previous
            and manifest.content_size == index.size
            and manifest.content_sha256 == index.sha256
        ):
            return parsed.base
    for parsed in here.rotated.get(name, []):
        if parsed.ext == "" and parsed.base not in here.sealed:
            plain = here.join(parsed.base)
            with_content = prefix_digest(plain, index.size)
            if with_content is not None and with_content[1:] == (index.size, index.sha256):
                return parsed.base
    return None


def check_previous(here: Folder, name: str, index: LiveIndex, report: Report) -> None:
    """The live index's `previous` names the newest cut of its live file, as a manifest's
    names the cut before it: a newer one gone is a lost archive."""
    cuts = sorted(here.rotated.get(name, []), key=lambda p: p.stamp)
    if not cuts:
        return  # none cut yet, or retention took every one
    newest = cuts[-1]
    previous = index.previous
    if previous == newest.base:
        return
    ipath = live_index_path(here.join(name))
    named = None if previous is None else parse_rotated(previous)
    if previous is None:
        report.add(
            Problem.ALTERED,
            ipath,
            f"says no archive precedes the live file, but {shown(newest.base)} does",
        )
    elif named is None or named.live != name:
        report.add(
            Problem.ALTERED, ipath, f"previous: {shown(previous)} is not a cut of {shown(name)}"
        )
    elif named.stamp > newest.stamp:
        report.add(
            Problem.MISSING,
            here.join(previous),
            f"archive and manifest gone: {shown(name)} follows it, {shown(newest.base)} precedes it",
        )
    else:
        report.add(
            Problem.ALTERED,
            ipath,
            f"says the live file follows {shown(previous)}, but {shown(newest.base)} was cut after it",
        )


def is_indexed(path: str, index: LiveIndex, report: Report, what: str = "its live index") -> bool:
    """Whether the file's first `size` bytes are what its index says."""
    found = prefix_digest(path, index.size)
    if found is None:
        report.add(Problem.UNREADABLE, path, "cannot read")
        return False
    lines, done, sha256 = found
    held = holding(index.ranges)
    if done < index.size:
        report.add(Problem.INCOMPLETE, path, f"truncated: {done} of {index.size} bytes{held}")
    elif sha256 != index.sha256:
        report.add(Problem.ALTERED, path, f"its first {index.size} bytes differ from {what}{held}")
    elif lines != index.lines:
        report.add(
            Problem.ALTERED,
            path,
            f"{lines} lines in its first {index.size} bytes where {what} says {index.lines}",
        )
    else:
        return True
    return False
