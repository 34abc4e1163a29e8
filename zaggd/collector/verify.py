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
  and a problem in a folder marked `.zaggd-output` (a collector that marks its
  folders also indexes its live files).
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

import errno
import hashlib
import itertools
import math
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import BinaryIO, TextIO

from zaggd.collector.manifest import (
    GZIP_SUFFIX,
    HASH_CHUNK_BYTES,
    INDEX_SUFFIX,
    MANIFEST_SUFFIX,
    TEMP_SUFFIX,
    LiveIndex,
    Manifest,
    RecordError,
    RotatedName,
    live_index_path,
    load_live_index,
    load_manifest,
    parse_rotated,
)
from zaggd.errors import ZaggdError
from zaggd.logs import shown

OUTPUT_MARKER = ".zaggd-output"
LOCK_NAME = ".zaggd-lock"
# A split long line goes in pieces of max_line_bytes (at least this) plus a newline
# the producer adds: the only bytes a raw file holds beyond its ranges.
MIN_SPLIT_PIECE_BYTES = 1024 + 1
MAX_LISTED_RANGES = 5
GZIP_WBITS = zlib.MAX_WBITS | 16  # a gzip header and trailer around the deflate stream


class Problem(Enum):
    MISSING = "missing"  # a file its records name is gone, or a hole in a stream
    ALTERED = "altered"  # content or a record changed, or a record damaged
    INCOMPLETE = "incomplete"  # a cut, seal or write left half done
    DOUBLED = "doubled"  # bytes of a stream held twice
    UNINDEXED = "unindexed"  # output no record accounts for
    UNREADABLE = "unreadable"  # a folder or file verify may not read
    WARNING = "warning"  # worth a look; not a failure
    NOTE = "note"  # normal in a running collector's output

    @property
    def is_failure(self) -> bool:
        return self not in (Problem.WARNING, Problem.NOTE)


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.problem.value}: {shown(self.path)}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes [start, end) of stream `key` held by the file at `path`."""

    path: str
    key: str
    start: int
    end: int
    order: float  # when it was written: an archive's cut stamp, a live file's last write (µs)
    chain: tuple[str, str]  # (folder, live file name)


@dataclass(slots=True)
class Report:
    root: str = ""
    archives: int = 0
    live_files: int = 0
    findings: list[Finding] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    # (folder, live name) -> when files were written whose ranges are unknown (µs)
    unknown: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, problem: Problem, path: str, detail: str) -> None:
        self.findings.append(Finding(problem, path, detail))

    def add_unknown(self, folder: str, live: str, order: float) -> None:
        self.unknown.setdefault((folder, live), []).append(order)

    def add_pieces(
        self, path: str, ranges: dict[str, list[int]], order: float, chain: tuple[str, str]
    ) -> None:
        for key, (start, end) in ranges.items():
            if end > start:
                self.pieces.append(Piece(path, key, start, end, order, chain))

    @property
    def problems(self) -> int:
        return sum(1 for f in self.findings if f.problem.is_failure)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.problem is Problem.WARNING)


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


@dataclass(slots=True)
class Folder:
    path: str
    names: set[str]
    chains: dict[str, list[tuple[RotatedName, Manifest]]] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)  # bases with a manifest, readable or not
    rotated: dict[str, list[RotatedName]] = field(default_factory=dict)  # live name -> its cuts

    @property
    def is_marked(self) -> bool:
        return OUTPUT_MARKER in self.names

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)


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
    check_unsealed(here, report)
    for links in here.chains.values():
        check_chain(folder, links, here.sealed, report)
    for name in live_names(here):
        check_live(here, name, report)


def live_names(here: Folder) -> list[str]:
    """Names of the live files here: indexed, cut from, or any file in a marked folder."""
    found = set(here.rotated)
    for name in here.names:
        if name.endswith(INDEX_SUFFIX):
            found.add(name.removesuffix(INDEX_SUFFIX))
        elif here.is_marked and not is_bookkeeping(name):
            found.add(name)
    return sorted(found)


def is_bookkeeping(name: str) -> bool:
    """Files beside the output that are not output: records, temporaries, cuts, marks."""
    return (
        name in (OUTPUT_MARKER, LOCK_NAME)
        or name.endswith((MANIFEST_SUFFIX, INDEX_SUFFIX, TEMP_SUFFIX))
        or parse_rotated(name) is not None
    )


# -- archives ------------------------------------------------------------------------


def check_manifest(here: Folder, parsed: RotatedName, report: Report) -> None:
    mpath = here.join(parsed.base + MANIFEST_SUFFIX)
    try:
        manifest = load_manifest(mpath)
    except RecordError as exc:
        report.add(Problem.ALTERED, mpath, f"damaged manifest: {exc}")
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    except OSError as exc:
        report.add(Problem.UNREADABLE, mpath, f"cannot read: {exc.strerror}")
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    if manifest.expired:
        return  # retention was deleting it when it stopped
    if manifest.file not in (parsed.base, parsed.base + GZIP_SUFFIX) or manifest.live != (
        parsed.live
    ):
        report.add(
            Problem.ALTERED,
            mpath,
            f"names {shown(manifest.file)} cut from {shown(manifest.live)}, not its own archive",
        )
        report.add_unknown(here.path, parsed.live, parsed.stamp_us)
        return
    here.chains.setdefault(parsed.live, []).append((parsed, manifest))
    report.archives += 1
    path = here.join(manifest.file)
    report.add_pieces(path, manifest.ranges, parsed.stamp_us, (here.path, parsed.live))
    if is_present(here, parsed, manifest, report) and is_intact(path, manifest, report):
        check_accounting(path, manifest, (here.path, parsed.live), parsed.stamp_us, report)


def is_present(here: Folder, parsed: RotatedName, manifest: Manifest, report: Report) -> bool:
    path = here.join(manifest.file)
    plain_left = manifest.file != parsed.base and parsed.base in here.names
    if manifest.file not in here.names:
        if plain_left:
            report.add(
                Problem.INCOMPLETE, path, "compression unfinished (the plain file is still there)"
            )
        else:
            report.add(
                Problem.MISSING,
                path,
                f"listed in {shown(parsed.base)}{MANIFEST_SUFFIX} but not on disk",
            )
        return False
    if plain_left:
        report.add(
            Problem.INCOMPLETE,
            here.join(parsed.base),
            "plain copy beside its archive (compression unfinished)",
        )
    return True


@dataclass(slots=True)
class Digest:
    """A file as stored and as its content: what a manifest records."""

    size: int = 0
    sha256: str = ""
    content_size: int = 0
    content_sha256: str = ""
    lines: int = 0
    content_error: str = ""  # why its content could not be had (not a gzip stream, ...)


def is_intact(path: str, manifest: Manifest, report: Report) -> bool:
    """Whether the archive is what its manifest says, as stored and as content."""
    try:
        digest = digest_archive(path, manifest.compression == "gzip")
    except OSError as exc:
        report.add(Problem.UNREADABLE, path, f"cannot read: {exc.strerror}")
        return False
    held = holding(manifest.ranges)
    # Shorter and no longer a whole gzip stream: cut off; a whole one was made anew.
    if digest.size < manifest.size and (digest.content_error or manifest.compression != "gzip"):
        report.add(
            Problem.INCOMPLETE, path, f"truncated: {digest.size} of {manifest.size} bytes{held}"
        )
    elif digest.size != manifest.size:
        report.add(
            Problem.ALTERED,
            path,
            f"{digest.size} bytes where the manifest says {manifest.size}{held}",
        )
    elif digest.sha256 != manifest.sha256:
        report.add(Problem.ALTERED, path, f"SHA-256 differs from the manifest{held}")
    elif digest.content_error:
        report.add(Problem.ALTERED, path, f"{digest.content_error}{held}")
    elif digest.content_size != manifest.content_size:
        report.add(
            Problem.ALTERED,
            path,
            f"holds {digest.content_size} bytes uncompressed where the manifest says "
            f"{manifest.content_size}",
        )
    elif digest.content_sha256 != manifest.content_sha256:
        report.add(Problem.ALTERED, path, "uncompressed, its SHA-256 differs from the manifest")
    elif digest.lines != manifest.lines:
        report.add(
            Problem.ALTERED,
            path,
            f"holds {digest.lines} lines where the manifest says {manifest.lines}",
        )
    else:
        return True
    return False


def digest_archive(path: str, is_gzip: bool) -> Digest:
    """One pass: the stored bytes hashed and, for gzip, decompressed and hashed too."""
    stored = hashlib.sha256()
    content = hashlib.sha256()
    digest = Digest()
    for chunk in content_chunks(path, is_gzip, stored, digest):
        content.update(chunk)
        digest.content_size += len(chunk)
        digest.lines += chunk.count(b"\n")
    digest.sha256 = stored.hexdigest()
    digest.content_sha256 = content.hexdigest()
    return digest


def open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file: a FIFO or a device planted
    where output belongs must not block or feed verify forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def content_chunks(
    path: str, is_gzip: bool, stored: hashlib._Hash, digest: Digest
) -> Iterator[bytes]:
    """The uncompressed content of a file in bounded chunks, hashing what is stored."""
    inflater = Inflater() if is_gzip else None
    with open_regular(path) as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            stored.update(chunk)
            digest.size += len(chunk)
            if inflater is None:
                yield chunk
            elif not digest.content_error:
                try:
                    yield from inflater.feed(chunk)
                except zlib.error as exc:
                    digest.content_error = f"not a whole gzip stream ({exc})"
    if inflater is not None and not digest.content_error and not inflater.is_done:
        digest.content_error = "not a whole gzip stream (it ends early)"


class Inflater:
    """gzip members, one after another, inflated in chunks of bounded size."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(GZIP_WBITS)

    @property
    def is_done(self) -> bool:
        return self._member.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._member.eof:  # another member follows, as `cat a.gz b.gz` makes
                self._member = zlib.decompressobj(GZIP_WBITS)
            out = self._member.decompress(data, HASH_CHUNK_BYTES)
            if out:
                yield out
            data = self._member.unused_data if self._member.eof else self._member.unconsumed_tail


def check_accounting(
    path: str, manifest: Manifest, chain: tuple[str, str], order: float, report: Report
) -> None:
    """Lines no range accounts for: none at all, or in raw format more bytes than ranges."""
    if manifest.lines and not manifest.ranges:
        report.add(Problem.UNINDEXED, path, f"holds {manifest.lines} lines but no stream ranges")
        report.add_unknown(*chain, order)
        return
    if manifest.format != "raw":
        return
    extra = manifest.content_size - sum(end - start for start, end in manifest.ranges.values())
    if extra > 0 and extra > split_newlines(path, manifest.compression == "gzip"):
        report.add(
            Problem.DOUBLED,
            path,
            f"holds {manifest.content_size} bytes, {extra} more than its stream ranges cover: "
            + holding(manifest.ranges, lead=""),
        )


def split_newlines(path: str, is_gzip: bool) -> int:
    """How many newlines a producer may have added: one per line long enough to be a
    piece of a split line. Counted only when a raw file holds more than its ranges."""
    count = 0
    partial = 0  # length of the line begun in an earlier chunk
    stored = hashlib.sha256()
    for chunk in content_chunks(path, is_gzip, stored, Digest()):
        lines = chunk.split(b"\n")
        for line in lines[:-1]:
            if partial + len(line) + 1 >= MIN_SPLIT_PIECE_BYTES:
                count += 1
            partial = 0
        partial += len(lines[-1])
    return count


def holding(ranges: dict[str, list[int]], lead: str = "; it holds ") -> str:
    """`; it holds n/s [a, b), ...`: the stream ranges a damaged file put in doubt."""
    if not ranges:
        return ""
    items = sorted(ranges.items())
    shown_ranges = [f"{shown(k)} [{a}, {b})" for k, (a, b) in items[:MAX_LISTED_RANGES]]
    if len(items) > MAX_LISTED_RANGES:
        shown_ranges.append(f"and {len(items) - MAX_LISTED_RANGES} more")
    return lead + ", ".join(shown_ranges)


def check_unsealed(here: Folder, report: Report) -> None:
    """Rotated files without a manifest: a seal not done (yet)."""
    for cuts in here.rotated.values():
        for parsed in cuts:
            if parsed.base in here.sealed or parsed.ext not in ("", GZIP_SUFFIX):
                continue
            path = here.join(parsed.live + "." + parsed.stamp + parsed.ext)
            if parsed.ext == "":
                report.add(Problem.INCOMPLETE, path, "rotated but not sealed: no manifest yet")
            else:
                report.add(Problem.INCOMPLETE, path, "archive without a manifest")
            report.add_unknown(here.path, parsed.live, parsed.stamp_us)


def check_chain(
    folder: str, links: list[tuple[RotatedName, Manifest]], sealed: set[str], report: Report
) -> None:
    """Archives cut from one live file link back to each other; a broken link is a lost archive.

    Only the oldest may point at an archive that is gone: retention removes the
    oldest first. A link to a base whose manifest is there (even unreadable,
    already reported) is not a loss.
    """
    links.sort(key=lambda pair: pair[0].stamp)
    for (older, _), (newer, manifest) in itertools.pairwise(links):
        previous = manifest.previous
        if previous is not None and previous != older.base and previous not in sealed:
            report.add(
                Problem.MISSING,
                os.path.join(folder, previous),
                f"archive and manifest gone: {shown(newer.base)} follows it, "
                f"{shown(older.base)} precedes it",
            )


# -- live files ----------------------------------------------------------------------


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
            report_unindexed(here, path, st.st_size, report)
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


LIVE_ORDER = math.inf  # a live file whose time is unknown comes after its archives


def report_unindexed(here: Folder, path: str, size: int, report: Report) -> None:
    if here.is_marked:
        report.add(Problem.UNINDEXED, path, f"{size} bytes of live output without a live index")
    else:
        # Written by a collector from before live indexes, or not by zaggd at all.
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
    except RecordError as exc:
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


def prefix_digest(path: str, size: int) -> tuple[int, int, str] | None:
    """(lines, bytes read, SHA-256) of a file's first `size` bytes; None if unreadable."""
    digest = hashlib.sha256()
    lines = done = 0
    try:
        with open_regular(path) as fh:
            while done < size and (chunk := fh.read(min(HASH_CHUNK_BYTES, size - done))):
                digest.update(chunk)
                lines += chunk.count(b"\n")
                done += len(chunk)
    except OSError:
        return None
    return lines, done, digest.hexdigest()


def is_indexed(path: str, index: LiveIndex, report: Report) -> bool:
    """Whether the live file's first `size` bytes are what its index says."""
    found = prefix_digest(path, index.size)
    if found is None:
        report.add(Problem.UNREADABLE, path, "cannot read")
        return False
    lines, done, sha256 = found
    held = holding(index.ranges)
    if done < index.size:
        report.add(Problem.INCOMPLETE, path, f"truncated: {done} of {index.size} bytes{held}")
    elif sha256 != index.sha256:
        report.add(
            Problem.ALTERED, path, f"its first {index.size} bytes differ from its live index{held}"
        )
    elif lines != index.lines:
        report.add(
            Problem.ALTERED,
            path,
            f"{lines} lines in its first {index.size} bytes where its live index says "
            f"{index.lines}",
        )
    else:
        return True
    return False


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
