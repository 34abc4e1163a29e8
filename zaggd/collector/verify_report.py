"""What `zaggd verify` found: findings, the stream pieces files hold, one folder's files.

Shared by the checks of archives (verify_archives.py), of live files
(verify_live.py) and of streams and the tree (verify.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum

from zaggd.collector.manifest import Manifest, RotatedName
from zaggd.logs import shown

OUTPUT_MARKER = ".zaggd-output"
MAX_LISTED_RANGES = 5


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


@dataclass(slots=True)
class Folder:
    path: str
    names: set[str]
    chains: dict[str, list[tuple[RotatedName, Manifest]]] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)  # bases with a manifest, readable or not
    rotated: dict[str, list[RotatedName]] = field(default_factory=dict)  # live name -> its cuts
    vouched: set[str] = field(default_factory=set)  # bases not sealed whose index checks out

    @property
    def is_marked(self) -> bool:
        return OUTPUT_MARKER in self.names

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)


def holding(ranges: dict[str, list[int]], lead: str = "; it holds ") -> str:
    """`; it holds n/s [a, b), ...`: the stream ranges a damaged file put in doubt."""
    if not ranges:
        return ""
    items = sorted(ranges.items())
    shown_ranges = [f"{shown(k)} [{a}, {b})" for k, (a, b) in items[:MAX_LISTED_RANGES]]
    if len(items) > MAX_LISTED_RANGES:
        shown_ranges.append(f"and {len(items) - MAX_LISTED_RANGES} more")
    return lead + ", ".join(shown_ranges)
