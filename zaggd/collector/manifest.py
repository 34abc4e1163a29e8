"""Rotated output: names, integrity manifests, and `zaggd verify DIR`.

A live output file `NAME` is rotated to `NAME.<UTC stamp>` (e.g.
`web-01.log.20250301T000002.123456Z`), compressed to `<that>.gz` when
configured. Stamps are fixed-width, so name order is rotation order, and
they strictly increase per live file, so names never collide.

Beside each rotated file lies `<base>.manifest.json`: what zaggd wrote there
(file name, stored size and SHA-256, the uncompressed size, SHA-256 and line
count, the stream byte ranges it holds) and the base name of the archive cut
before it from the same live file. The manifest is written (temp, fsync,
rename) before the archive takes its final name, so a finished archive always
has one. A manifest is also zaggd's mark of ownership: retention deletes only
files that have one.

`verify_tree` checks every manifest under a folder against its file and the
chain of `previous` links, and reports each rotated file that is missing,
altered or incomplete; the exit status is non-zero when anything is.
"""

from __future__ import annotations

import calendar
import hashlib
import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TextIO

from zaggd.errors import ZaggdError
from zaggd.statefile import read_state, write_state

KIND = "zaggd-manifest"
VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
GZIP_SUFFIX = ".gz"
TEMP_SUFFIX = ".tmp"
HASH_CHUNK_BYTES = 1048576

_STAMP_FORMAT = "%Y%m%dT%H%M%S"
_ROTATED = re.compile(
    r"^(?P<live>.+)\.(?P<stamp>\d{8}T\d{6}\.\d{6}Z)"
    r"(?P<ext>\.gz|\.gz\.tmp|\.manifest\.json|\.manifest\.json\.tmp)?$"
)


def format_stamp(stamp_us: int) -> str:
    """`20250301T000002.123456Z` for a time in microseconds since the epoch (UTC)."""
    seconds, micros = divmod(stamp_us, 1_000_000)
    return time.strftime(_STAMP_FORMAT, time.gmtime(seconds)) + f".{micros:06d}Z"


def parse_stamp(stamp: str) -> int:
    """The inverse of `format_stamp`."""
    whole, micros = stamp[:-1].split(".")
    return calendar.timegm(time.strptime(whole, _STAMP_FORMAT)) * 1_000_000 + int(micros)


def rotated_base(live_path: str, stamp_us: int) -> str:
    return f"{live_path}.{format_stamp(stamp_us)}"


def manifest_path(base: str) -> str:
    return base + MANIFEST_SUFFIX


@dataclass(frozen=True, slots=True)
class RotatedName:
    live: str  # the live file's name, without folder
    stamp: str
    ext: str  # "", ".gz", ".gz.tmp", ".manifest.json" or ".manifest.json.tmp"

    @property
    def base(self) -> str:
        return f"{self.live}.{self.stamp}"

    @property
    def stamp_us(self) -> int:
        return parse_stamp(self.stamp)


def parse_rotated(name: str) -> RotatedName | None:
    """The parts of a rotated file's name (no folder), or None for any other name."""
    match = _ROTATED.match(name)
    if match is None:
        return None
    try:
        time.strptime(match["stamp"][:15], _STAMP_FORMAT)
    except ValueError:
        return None
    return RotatedName(match["live"], match["stamp"], match["ext"] or "")


@dataclass(frozen=True, slots=True)
class Manifest:
    file: str  # the archive's name, in the manifest's folder
    live: str  # the live file it was cut from, without folder
    compression: str  # "gzip" or "none"
    size: int  # bytes as stored
    sha256: str  # of the bytes as stored
    content_size: int  # bytes once uncompressed: what the live file held
    content_sha256: str
    lines: int
    ranges: dict[str, list[int]] = field(default_factory=dict)  # "node/stream" -> [start, end]
    started_at: float = 0.0  # when the live file took its first byte
    rotated_at: float = 0.0  # when it was cut
    previous: str | None = None  # base name of the archive cut before it from the same live file
    expired: bool = False  # retention is deleting it

    def body(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "live": self.live,
            "compression": self.compression,
            "size": self.size,
            "sha256": self.sha256,
            "content_size": self.content_size,
            "content_sha256": self.content_sha256,
            "lines": self.lines,
            "ranges": self.ranges,
            "started_at": self.started_at,
            "rotated_at": self.rotated_at,
            "previous": self.previous,
            "expired": self.expired,
        }


def write_manifest(path: str, manifest: Manifest) -> None:
    """Atomically: after a crash the manifest is whole or absent."""
    write_state(path, KIND, VERSION, manifest.body())


def read_manifest(path: str) -> Manifest:
    """The manifest at `path`; ZaggdError when it is absent, unreadable or not one."""
    state = read_state(path, KIND, VERSION)
    if state is None:
        raise ZaggdError(f"{path}: no such manifest")
    try:
        ranges = {str(k): [int(v[0]), int(v[1])] for k, v in dict(state["ranges"]).items()}
        previous = state.get("previous")
        return Manifest(
            file=_plain_name(state["file"]),
            live=str(state["live"]),
            compression=str(state["compression"]),
            size=int(state["size"]),
            sha256=str(state["sha256"]),
            content_size=int(state["content_size"]),
            content_sha256=str(state["content_sha256"]),
            lines=int(state["lines"]),
            ranges=ranges,
            started_at=float(state["started_at"]),
            rotated_at=float(state["rotated_at"]),
            previous=None if previous is None else _plain_name(previous),
            expired=bool(state.get("expired", False)),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ZaggdError(f"{path}: damaged manifest ({exc})") from None


def _plain_name(value: Any) -> str:
    # A manifest names files in its own folder only; never follow one elsewhere.
    name = str(value)
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad file name {name!r}")
    return name


def mark_expired(path: str, manifest: Manifest) -> None:
    write_manifest(path, replace(manifest, expired=True))


def hash_file(path: str) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# -- zaggd verify -------------------------------------------------------------


class Problem(Enum):
    MISSING = "missing"
    ALTERED = "altered"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.problem.value}: {self.path}: {self.detail}"


@dataclass(slots=True)
class Report:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, problem: Problem, path: str, detail: str) -> None:
        self.findings.append(Finding(problem, path, detail))


def check_tree(root: str) -> Report:
    """Every rotated file under `root` checked against its manifest and its chain."""
    if not os.path.isdir(root):
        raise ZaggdError(f"{root}: not a folder")
    report = Report()
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        check_folder(folder, sorted(names), report)
    return report


def check_folder(folder: str, names: list[str], report: Report) -> None:
    present = set(names)
    chains: dict[str, list[tuple[RotatedName, Manifest]]] = {}
    sealed: set[str] = set()  # bases with a manifest
    for name in names:
        parsed = parse_rotated(name)
        if parsed is None or parsed.ext != MANIFEST_SUFFIX:
            continue
        sealed.add(parsed.base)
        mpath = os.path.join(folder, name)
        try:
            manifest = read_manifest(mpath)
        except ZaggdError as exc:
            report.add(Problem.ALTERED, mpath, f"manifest unreadable: {exc}")
            continue
        if manifest.expired:
            continue  # retention was deleting it when it stopped
        chains.setdefault(manifest.live, []).append((parsed, manifest))
        report.checked += 1
        check_archive(folder, parsed, manifest, present, report)
    for name in names:
        parsed = parse_rotated(name)
        if parsed is None or parsed.ext == MANIFEST_SUFFIX or parsed.base in sealed:
            continue
        path = os.path.join(folder, name)
        if parsed.ext == "":
            report.add(Problem.INCOMPLETE, path, "rotated but not sealed: no manifest yet")
        elif parsed.ext == GZIP_SUFFIX:
            report.add(Problem.INCOMPLETE, path, "archive without a manifest")
    for links in chains.values():
        check_chain(folder, links, sealed, report)


def check_archive(
    folder: str, parsed: RotatedName, manifest: Manifest, present: set[str], report: Report
) -> None:
    path = os.path.join(folder, manifest.file)
    if manifest.file not in present:
        if parsed.base in present and manifest.file != parsed.base:
            report.add(
                Problem.INCOMPLETE, path, "compression unfinished (the plain file is still there)"
            )
        else:
            report.add(
                Problem.MISSING, path, f"listed in {parsed.base}{MANIFEST_SUFFIX} but not on disk"
            )
        return
    if manifest.file != parsed.base and parsed.base in present:
        report.add(
            Problem.INCOMPLETE,
            os.path.join(folder, parsed.base),
            "plain copy beside its archive (compression unfinished)",
        )
    try:
        size, digest = hash_file(path)
    except OSError as exc:
        report.add(Problem.MISSING, path, f"cannot read: {exc.strerror}")
        return
    if size < manifest.size:
        report.add(Problem.INCOMPLETE, path, f"truncated: {size} of {manifest.size} bytes")
    elif size > manifest.size:
        report.add(Problem.ALTERED, path, f"{size} bytes where the manifest says {manifest.size}")
    elif digest != manifest.sha256:
        report.add(Problem.ALTERED, path, "SHA-256 differs from the manifest")


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
                f"archive and manifest gone: {newer.base} follows it, {older.base} precedes it",
            )


def verify_tree(root: str, out: TextIO | None = None) -> int:
    """`zaggd verify DIR`: one line per problem and a summary; 1 when anything is wrong."""
    stream = out if out is not None else sys.stdout
    report = check_tree(root)
    for finding in report.findings:
        print(finding, file=stream)
    word = "problem" if len(report.findings) == 1 else "problems"
    print(
        f"{root}: {report.checked} rotated files checked, {len(report.findings)} {word}",
        file=stream,
    )
    return 1 if report.findings else 0
