"""Torture run: seeded random schedules of crashes, rotations, outages and reloads,
each ending with an exact line-by-line comparison and `zaggd verify`.

    python bench/torture.py --minutes 2 --seed 1        # seeds 1, 2, 3, ... for 2 minutes
    python bench/torture.py --seed 17 --schedules 1     # replay schedule 17
    python bench/torture.py --seed 1 --schedules 50     # seeds 1 to 50

Each schedule draws its actions, sizes and delays from random.Random(seed):
bursts and idle spells of the writers of three source files (two of them
sharing one source and so one output file), kill -9 and SIGTERM of either
daemon or both with lines written while they are down, collector outages, a
kill -9 of the collector just after it cut an output file, logrotate of the
sources (`create` with the writer reopening afterwards, the same with
`delaycompress`, and `copytruncate` with the writer held still: its race is
documented as lossy), and SIGHUP reloads. The collector rotates its output
at tens of KB with gzip; its fsync policy is drawn too. The timing of threads
and processes is the machine's: a schedule replays its actions exactly, not
always their interleaving with the daemons' work.

A schedule ends by waiting (bounded) until the collector holds every byte
written, then compares the output (archives decompressed, then the live
file) with what was written: every line is unique (seed, file, sequence
number), and per source file each must appear exactly once and in order. It
then stops both daemons with SIGTERM (exit 0 expected), compares again and
runs `zaggd verify` on the output (exit 0 expected). A failing schedule
prints its seed, what differed (missing, doubled, out-of-order lines, with
the first examples) and the command that replays it; its folder is kept.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import itertools
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Daemon, collector_config, free_port, producer_config
from zaggd.collector.manifest import parse_rotated
from zaggd.errors import ZaggdError

REPO = Path(__file__).resolve().parent.parent

# Every kind of action a schedule may hold.
KINDS = (
    "burst",
    "idle",
    "kill_collector",
    "term_collector",
    "kill_producer",
    "term_producer",
    "kill_both",
    "outage",
    "kill_after_cut",
    "logrotate",
    "reload",
)
WEIGHTS = (8, 2, 3, 2, 3, 2, 1, 2, 3, 3, 2)
ROTATE_MODES = ("create", "create-delaycompress", "copytruncate")

# Source files: (source name, file name). a0 and a1 share a source, so their
# lines interleave in one output file; order is checked per file.
FILES = (("a", "a0.log"), ("a", "a1.log"), ("b", "b0.log"))

CATCH_UP_S = 90.0
START_S = 30.0


# -- the schedule -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    file: int = 0  # burst: which of FILES
    lines: int = 0  # burst, and lines written while a daemon is down
    chunk: int = 0  # burst: lines per write
    pause_s: float = 0.0  # burst: pause between writes
    delay_s: float = 0.0  # idle spell, time down, delay after a cut
    mode: str = ""  # logrotate mode; reload: which daemon
    files: tuple[int, ...] = ()  # logrotate: which of FILES
    # while a daemon is down: logrotate runs (mode, files) between the lines written
    rotations: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def describe(self) -> str:
        if self.kind == "burst":
            return f"burst {FILES[self.file][1]} {self.lines} lines"
        if self.kind == "idle":
            return f"idle {self.delay_s:.2f} s"
        if self.kind == "logrotate":
            names = ",".join(FILES[i][1] for i in self.files)
            return f"logrotate {self.mode} {names}"
        if self.kind == "reload":
            return f"reload {self.mode}"
        rotated = "".join(
            f", logrotate {mode} {','.join(FILES[i][1] for i in files)}"
            for mode, files in self.rotations
        )
        if self.kind == "kill_after_cut":
            return (
                f"kill -9 collector {self.delay_s:.2f} s after a cut, "
                f"{self.lines} lines meanwhile{rotated}"
            )
        return f"{self.kind} down {self.delay_s:.2f} s, {self.lines} lines meanwhile{rotated}"


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    max_bytes: int  # collector output rotation
    fsync: str
    history: tuple[int, ...]  # lines per file written before the daemons start
    actions: tuple[Action, ...]

    def kinds(self) -> set[str]:
        return {a.kind for a in self.actions}


def plan(seed: int, steps: int) -> Plan:
    """The schedule of `seed`: everything drawn from random.Random(seed)."""
    rng = random.Random(seed)
    max_bytes = rng.randint(20, 80) * 1000
    fsync = rng.choice(("interval", "interval", "always", "never"))
    history = tuple(rng.choice((0, 0, rng.randint(1, 3000))) for _ in FILES)
    actions = tuple(draw_action(rng) for _ in range(steps))
    return Plan(seed, max_bytes, fsync, history, actions)


def draw_action(rng: random.Random) -> Action:
    kind = rng.choices(KINDS, WEIGHTS)[0]
    if kind == "burst":
        return Action(
            kind,
            file=rng.randrange(len(FILES)),
            lines=rng.randint(100, 5000),
            chunk=rng.choice((1, 10, 100, 500)),
            pause_s=rng.choice((0.0, 0.001, 0.01)),
        )
    if kind == "idle":
        return Action(kind, delay_s=rng.uniform(0.1, 2.0))
    if kind == "logrotate":
        return Action(kind, mode=rng.choice(ROTATE_MODES), files=draw_files(rng))
    if kind == "reload":
        return Action(kind, mode=rng.choice(("producer", "collector")))
    if kind == "outage":
        rotations = draw_rotations(rng, rng.choice((0, 1, 2, 3)))
        return Action(
            kind, lines=rng.randint(500, 5000), delay_s=rng.uniform(1.0, 4.0), rotations=rotations
        )
    if kind == "kill_after_cut":
        return Action(kind, lines=rng.randint(0, 2000), delay_s=rng.uniform(0.0, 1.5))
    # kill_* and term_*: down for a moment, maybe with lines written and files rotated meanwhile.
    lines = rng.choice((0, rng.randint(1, 3000)))
    rotations = draw_rotations(rng, rng.choice((0, 0, 1))) if lines else ()
    return Action(kind, lines=lines, delay_s=rng.uniform(0.0, 1.5), rotations=rotations)


def draw_files(rng: random.Random) -> tuple[int, ...]:
    return tuple(i for i in range(len(FILES)) if rng.random() < 0.6) or (rng.randrange(len(FILES)),)


def draw_rotations(rng: random.Random, count: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((rng.choice(ROTATE_MODES), draw_files(rng)) for _ in range(count))


# -- the lines ----------------------------------------------------------------------


def line(tag: str, seq: int) -> bytes:
    """Line `seq` of the file tagged `tag`: unique, of a length that varies with seq."""
    head = f"{tag} {seq:08d} "
    return (head + "." * ((seq * 37) % 150) + "\n").encode()


class SourceWriter:
    """Appends numbered lines to one source file, from its own thread, job by job.

    `held()` keeps it from writing (copytruncate); `reopen()` is what a
    program does on logrotate's postrotate signal in `create` mode.
    """

    def __init__(self, path: Path, tag: str) -> None:
        self.path, self.tag = path, tag
        self.lines = 0
        self.bytes = 0
        self.cuts: list[int] = []  # first line of each new copy of the file (logrotate)
        self.cut_while: list[int | None] = []  # per cut: the producer's outage then, if any
        self.lock = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.jobs: queue.Queue[Action | None] = queue.Queue()
        self.closing = threading.Event()  # ends a burst early when the schedule is torn down
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"writer-{tag}", daemon=True)
        self.thread.start()

    def write_now(self, count: int, chunk: int = 500, pause_s: float = 0.0) -> None:
        done = 0
        while done < count and not self.closing.is_set():
            n = min(chunk, count - done)
            with self.lock:
                data = b"".join(line(self.tag, self.lines + i) for i in range(n))
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
                self.lines += n
                self.bytes += len(data)
            done += n
            if pause_s:
                time.sleep(pause_s)

    def submit(self, action: Action) -> None:
        self.jobs.put(action)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    self.write_now(job.lines, job.chunk, job.pause_s)
            except BaseException as exc:  # reported by wait_idle, not lost in a thread
                self.error = exc
            finally:
                self.jobs.task_done()

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.jobs.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if self.error is not None:
            raise self.error
        return True

    def reopen(self, outage: int | None) -> None:
        with self.lock:
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.cut(outage)

    def cut(self, outage: int | None) -> None:
        """A new copy starts here; `outage` numbers the producer's outage, if it is down."""
        self.cuts.append(self.lines)
        self.cut_while.append(outage)

    def unordered(self) -> set[int]:
        """Copies begun and cut in one producer outage (copy k runs from cut k-1 to cut k)."""
        return {
            k
            for k in range(1, len(self.cuts))
            if self.cut_while[k] is not None and self.cut_while[k - 1] == self.cut_while[k]
        }

    @contextlib.contextmanager
    def held(self) -> Any:
        with self.lock:
            yield

    def close(self) -> None:
        self.closing.set()
        self.jobs.put(None)
        self.thread.join(timeout=30)
        with contextlib.suppress(OSError):
            os.close(self.fd)


# -- reading and judging the output ---------------------------------------------------


@dataclass
class Judgement:
    """What the output holds against what was written."""

    missing: list[tuple[str, int]] = field(default_factory=list)
    doubled: list[tuple[str, int, int]] = field(default_factory=list)  # tag, seq, extra copies
    out_of_order: list[tuple[str, int, int]] = field(default_factory=list)  # tag, seq, after seq
    foreign: list[bytes] = field(default_factory=list)  # lines we never wrote
    misplaced: list[str] = field(default_factory=list)  # a file's lines in two output files
    lines_out: int = 0
    # (tag, seq) of the first doubled lines -> the output pieces holding each copy
    copies_in: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    rangeless: list[str] = field(default_factory=list)  # archives with lines but no ranges
    doubled_in: set[str] = field(default_factory=set)  # output pieces holding a doubled line
    # per tag, the first line of each copy after the first (logrotate cut the file there)
    copies: dict[str, list[int]] = field(default_factory=dict)

    def copy_of(self, tag: str, seq: int) -> int:
        return bisect.bisect_right(self.copies.get(tag, []), seq)

    def classes(self) -> list[str]:
        """Failure classes, for a summary over many schedules."""
        out = []
        if self.doubled:
            rangeless = set(self.rangeless) & {p.removesuffix(".gz") for p in self.doubled_in}
            out.append("doubled:archive-without-ranges" if rangeless else "doubled")
        if self.missing:
            out.append("missing")
        if any(self.copy_of(t, s) < self.copy_of(t, p) for t, s, p in self.out_of_order):
            out.append("out-of-order:across-copies")
        if any(self.copy_of(t, s) == self.copy_of(t, p) for t, s, p in self.out_of_order):
            out.append("out-of-order:within-a-copy")
        if self.foreign or self.misplaced:
            out.append("foreign")
        return out

    @property
    def exact(self) -> bool:
        return not (
            self.missing or self.doubled or self.out_of_order or self.foreign or self.misplaced
        )

    def summary(self) -> str:
        if self.exact:
            return f"exact ({self.lines_out} lines)"
        extra = sum(n for _, _, n in self.doubled)
        parts = [
            f"{len(self.missing)} missing",
            f"{len(self.doubled)} doubled ({extra} extra copies)",
            f"{len(self.out_of_order)} out of order",
            f"{len(self.foreign)} foreign",
        ]
        if self.misplaced:
            parts.append(f"misplaced: {self.misplaced[:3]}")
        return ", ".join(parts)

    def examples(self) -> list[str]:
        out = []
        if self.missing:
            out.append("first missing: " + ", ".join(f"{t}#{s}" for t, s in self.missing[:5]))
            out.append("missing ranges: " + ranges_of(self.missing))
        if self.doubled:
            out.append(
                "first doubled: " + ", ".join(f"{t}#{s} x{n + 1}" for t, s, n in self.doubled[:5])
            )
            out.append("doubled ranges: " + ranges_of([(t, s) for t, s, _ in self.doubled]))
            for (t, s), pieces in list(self.copies_in.items())[:3]:
                out.append(f"copies of {t}#{s} in: " + ", ".join(pieces))
        if self.rangeless:
            out.append("archives holding lines but no ranges: " + ", ".join(self.rangeless[:5]))
        if self.out_of_order:
            out.append(
                "first out of order: "
                + ", ".join(
                    f"{t}#{s} (copy {self.copy_of(t, s)}) after #{p} (copy {self.copy_of(t, p)})"
                    for t, s, p in self.out_of_order[:5]
                )
            )
        if self.foreign:
            out.append(f"first foreign: {self.foreign[:3]!r}")
        return out


def ranges_of(items: list[tuple[str, int]], limit: int = 6) -> str:
    """`a0 100-199, b0 7` for a list of (tag, seq)."""
    spans: list[list[Any]] = []
    for tag, seq in sorted(items):
        if spans and spans[-1][0] == tag and spans[-1][2] == seq - 1:
            spans[-1][2] = seq
        else:
            spans.append([tag, seq, seq])
    shown = [f"{t} {a}" if a == b else f"{t} {a}-{b}" for t, a, b in spans[:limit]]
    more = f" (+{len(spans) - limit} more)" if len(spans) > limit else ""
    return ", ".join(shown) + more


class _Unsettled(Exception):
    """The output folder was caught mid-change (an archive being compressed)."""


Piece = tuple[str, list[bytes]]  # an archive or live file (relative path) and its lines


def output_streams(root: Path) -> dict[str, list[Piece]]:
    """Per live output file (relative path): its pieces in order, archives first
    (by name, gunzipped), then the live file. Manifests, indexes, markers and
    locks are not output. Read again while the folder is caught mid-change."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            return _output_streams_once(root)
        except (FileNotFoundError, _Unsettled):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _output_streams_once(root: Path) -> dict[str, list[Piece]]:
    out: dict[str, list[Piece]] = {}
    if not root.exists():
        return out
    for folder, _dirs, names in os.walk(root):
        parts: dict[str, list[tuple[str, str, bytes]]] = {}  # live -> (order key, name, data)
        bases: set[str] = set()
        for name in sorted(names):
            path = Path(folder) / name
            parsed = parse_rotated(name)
            if parsed is None:
                if name.endswith(".log"):
                    parts.setdefault(name, []).append(("~live", name, path.read_bytes()))
                continue
            if parsed.ext not in ("", ".gz"):
                continue
            if parsed.base in bases:
                raise _Unsettled(parsed.base)
            bases.add(parsed.base)
            data = path.read_bytes()
            if parsed.ext == ".gz":
                try:
                    data = gzip.decompress(data)
                except (EOFError, OSError) as exc:
                    raise _Unsettled(name) from exc
            parts.setdefault(parsed.live, []).append((parsed.stamp, name, data))
        for live, pieces in parts.items():
            rel = (Path(folder) / live).relative_to(root)
            out[str(rel)] = [
                (str(rel.parent / name), data.splitlines(keepends=True))
                for _, name, data in sorted(pieces)
            ]
    return out


def rangeless_archives(root: Path) -> list[str]:
    """Archives whose manifest counts lines but names no stream range."""
    found = []
    for manifest in sorted(root.rglob("*.manifest.json")) if root.exists() else []:
        try:
            body = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and body.get("lines") and not body.get("ranges"):
            found.append(str(manifest.relative_to(root)).removesuffix(".manifest.json"))
    return found


_LINE = re.compile(rb"^(\S+) (\d{8}) \.*\n$")


def judge(
    root: Path,
    written: dict[str, int],
    copies: dict[str, list[int]] | None = None,
    unordered: dict[str, set[int]] | None = None,
) -> Judgement:
    """Every written line (tag -> count) exactly once, in order, in one output file.
    `copies`: per tag, where logrotate cut the file (for the failure classes).
    `unordered`: per tag, the copies made and rotated away entirely while the
    producer was stopped: the README promises their lines no order against the
    other copies' (only within themselves)."""
    j = Judgement(copies=copies or {})
    loose = unordered or {}
    seen: dict[str, list[int]] = {tag: [] for tag in written}
    pieces_of: dict[str, list[str]] = {tag: [] for tag in written}  # parallel to seen
    where: dict[str, set[str]] = {tag: set() for tag in written}
    for rel, pieces in output_streams(root).items():
        for piece, lines in pieces:
            j.lines_out += len(lines)
            for raw in lines:
                m = _LINE.match(raw)
                tag = m[1].decode() if m else ""
                if m is None or tag not in written or raw != line(tag, int(m[2])):
                    j.foreign.append(raw[:120])
                    continue
                seen[tag].append(int(m[2]))
                pieces_of[tag].append(piece)
                where[tag].add(rel)
    j.rangeless = rangeless_archives(root)
    for tag, count in written.items():
        seqs = seen[tag]
        copies = Counter(seqs)
        j.missing += [(tag, s) for s in range(count) if s not in copies]
        doubled = [(tag, s, n - 1) for s, n in sorted(copies.items()) if n > 1]
        j.doubled += doubled
        twice = {s for _, s, _ in doubled}
        j.doubled_in |= {p for q, p in zip(seqs, pieces_of[tag], strict=True) if q in twice}
        for _, s, _ in doubled[:3]:
            j.copies_in[(tag, s)] = [p for q, p in zip(seqs, pieces_of[tag], strict=True) if q == s]
        j.foreign += [f"{tag} {s:08d} (never written)".encode() for s in copies if s >= count]
        first: list[int] = []
        met: set[int] = set()
        for s in seqs:
            if s not in met:
                met.add(s)
                first.append(s)
        free = loose.get(tag, set())
        ordered = [q for q in first if j.copy_of(tag, q) not in free]
        j.out_of_order += [(tag, b, a) for a, b in itertools.pairwise(ordered) if b < a]
        for copy in sorted(free):
            own = [q for q in first if j.copy_of(tag, q) == copy]
            j.out_of_order += [(tag, b, a) for a, b in itertools.pairwise(own) if b < a]
        if len(where[tag]) > 1:
            j.misplaced.append(f"{tag} in {sorted(where[tag])}")
    return j


# -- one schedule -------------------------------------------------------------------


@dataclass
class Result:
    seed: int
    steps: int
    plan: Plan
    problems: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    judgement: Judgement | None = None
    elapsed_s: float = 0.0
    folder: Path | None = None
    done: list[str] = field(default_factory=list)  # actions carried out, in order

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, cls: str, text: str) -> None:
        self.problems.append(text)
        if cls not in self.classes:
            self.classes.append(cls)

    def replay(self) -> str:
        return f"python bench/torture.py --seed {self.seed} --schedules 1 --steps {self.steps}"

    def report(self) -> str:
        head = f"seed {self.seed}: " + ("ok" if self.ok else f"FAILED [{' '.join(self.classes)}]")
        head += f" in {self.elapsed_s:.0f} s ({len(self.done)} actions"
        head += f", rotate {self.plan.max_bytes // 1000} KB, fsync {self.plan.fsync})"
        if self.ok:
            return head
        lines = [head, *(f"  {p}" for p in self.problems), *(f"  {d}" for d in self.details)]
        lines.append("  actions: " + "; ".join(self.done))
        if self.folder is not None:
            lines.append(f"  kept: {self.folder}")
        lines.append(f"  replay: {self.replay()}")
        return "\n".join(lines)


class World:
    """The folder, the two daemons and the writers of one schedule."""

    def __init__(self, folder: Path, p: Plan) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.logs.mkdir(mode=0o755)
        os.chmod(folder, 0o755)  # logrotate refuses folders others may write
        self.out = folder / "out"
        port, replay = free_port(), free_port()
        sources: dict[str, list[str]] = {}
        for name, file in FILES:
            sources.setdefault(name, []).append(str(self.logs / file))
        pcfg = producer_config(
            folder,
            "node",
            [{"name": n, "topic": f"t.{n}", "paths": paths} for n, paths in sources.items()],
            {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
        )
        ccfg = collector_config(
            folder,
            "c",
            {"connect": [f"tcp://127.0.0.1:{port}"]},
            {
                "path": str(self.out / "{topic}" / "{node}-{source}.log"),
                "rotate": {"max_bytes": p.max_bytes, "compress": "gzip"},
                "fsync": p.fsync,
            },
        )
        self.producer = Daemon("producer", pcfg, folder)
        self.collector = Daemon("collector", ccfg, folder)
        self.writers = [
            SourceWriter(self.logs / file, f"s{p.seed}-{file.removesuffix('.log')}")
            for _, file in FILES
        ]
        self.rotations = 0
        self.producer_outage: int | None = None  # numbers the producer's outages
        self.outages = 0

    def written(self) -> dict[str, int]:
        return {w.tag: w.lines for w in self.writers}

    def copies(self) -> dict[str, list[int]]:
        return {w.tag: list(w.cuts) for w in self.writers}

    def unordered(self) -> dict[str, set[int]]:
        return {w.tag: w.unordered() for w in self.writers}

    def bytes_written(self) -> int:
        return sum(w.bytes for w in self.writers)

    def counters(self, daemon: Daemon) -> dict[str, int]:
        try:
            return dict(daemon.status()["counters"])
        except (ZaggdError, OSError, KeyError, TypeError):
            return {}

    def collector_has(self) -> int | None:
        """Bytes the collector holds, summed over its streams (None: no answer)."""
        try:
            status = self.collector.status()
            return sum(int(s["expected"]) for s in status["streams_detail"])
        except (ZaggdError, OSError, KeyError, TypeError, ValueError):
            return None

    def write_while_down(self, rng: random.Random, action: Action) -> None:
        """The action's lines spread over the files, written now (a daemon is down),
        with its logrotate runs between equal parts."""
        parts = len(action.rotations) + 1
        for part in range(parts):
            lines = action.lines // parts + (1 if part < action.lines % parts else 0)
            for i, w in enumerate(self.writers):
                share = lines // len(self.writers) + (1 if i < lines % len(self.writers) else 0)
                w.write_now(share, chunk=rng.choice((50, 500)))
            if part < len(action.rotations):
                mode, files = action.rotations[part]
                self.logrotate(mode, files)

    def logrotate(self, mode: str, files: tuple[int, ...]) -> None:
        self.rotations += 1
        conf = self.folder / f"logrotate-{self.rotations}.conf"
        options = ["rotate 100000", "missingok", "nomail"]
        options.append("copytruncate" if mode == "copytruncate" else "create")
        if mode == "create-delaycompress":
            options += ["compress", "delaycompress"]
        paths = " ".join(str(self.writers[i].path) for i in files)
        conf.write_text(f"{paths} {{\n" + "".join(f"    {o}\n" for o in options) + "}\n")
        os.chmod(conf, 0o644)
        cmd = ["logrotate", "-s", str(self.folder / "logrotate.state"), "-f", str(conf)]
        writers = [self.writers[i] for i in files]
        with contextlib.ExitStack() as stack:
            if mode == "copytruncate":
                for w in writers:  # held still: copytruncate's own race is a documented loss
                    stack.enter_context(w.held())
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if mode == "copytruncate":
                for w in writers:
                    w.cut(self.producer_outage)
        if r.returncode != 0 or r.stderr.strip():
            raise HarnessError(f"logrotate failed ({r.returncode}): {r.stderr.strip()[:300]}")
        if mode != "copytruncate":
            for w in writers:  # the program's postrotate reopen
                w.reopen(self.producer_outage)

    def cleanup(self) -> None:
        for d in (self.producer, self.collector):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    d.proc.wait(timeout=10)
            if d.notify is not None:
                d.notify.close()
                d.notify = None
        for w in self.writers:
            w.close()


class HarnessError(Exception):
    """The harness itself could not do an action (not a finding about zaggd)."""


class Failed(Exception):
    """A daemon did something it promises not to (would not start, bad exit)."""

    def __init__(self, cls: str, text: str) -> None:
        super().__init__(text)
        self.cls = cls


def run_schedule(
    seed: int,
    steps: int,
    folder: Path,
    time_limit_s: float = 300.0,
    log: Any = None,
) -> Result:
    """Run schedule `seed` in `folder` (which must not exist yet); always cleans up."""
    p = plan(seed, steps)
    result = Result(seed, steps, p, folder=folder)
    rng = random.Random(seed * 7919 + 1)  # delays inside actions
    started = time.monotonic()
    deadline = started + time_limit_s
    folder.mkdir(parents=True)
    world = World(folder, p)
    say = log or (lambda _text: None)
    try:
        for w, n in zip(world.writers, p.history, strict=True):
            w.write_now(n)
        start(world.collector)
        start(world.producer)
        for action in p.actions:
            if time.monotonic() > deadline:
                result.fail("time-limit", f"time limit {time_limit_s:.0f} s: later actions skipped")
                break
            say(f"seed {seed}: {action.describe()}")
            check_alive(world)
            do(world, action, rng, result)
            result.done.append(action.describe())
        finish(world, result)
    except Failed as exc:
        result.fail(exc.cls, str(exc))
        with contextlib.suppress(Exception):
            finish_after_failure(world, result)
    except HarnessError as exc:
        result.fail("harness", f"harness: {exc}")
    finally:
        world.cleanup()
        result.elapsed_s = time.monotonic() - started
    if not result.ok:
        result.details += log_findings(world)
    return result


def check_alive(world: World) -> None:
    """Both daemons run between actions: one that exited by itself is a finding."""
    for daemon in (world.producer, world.collector):
        if daemon.proc is not None and daemon.proc.poll() is not None:
            tail = daemon.output()[-1500:]
            raise Failed(
                "crash", f"{daemon.kind} exited {daemon.proc.returncode} by itself: {tail}"
            )


def start(daemon: Daemon) -> None:
    try:
        daemon.start(timeout_s=START_S)
    except AssertionError as exc:
        raise Failed("start", f"{daemon.kind} did not start: {str(exc)[:500]}") from None


def stop(daemon: Daemon, sig: int) -> None:
    """kill -9 or SIGTERM; a SIGTERM must end in exit 0."""
    if sig == signal.SIGKILL:
        daemon.kill()
        return
    try:
        code = daemon.stop()
    except AssertionError as exc:
        raise Failed("stop", str(exc)) from None
    if code != 0:
        raise Failed("exit", f"{daemon.kind} exited {code} on SIGTERM")


def do(world: World, action: Action, rng: random.Random, result: Result) -> None:
    kind = action.kind
    if kind == "burst":
        world.writers[action.file].submit(action)
    elif kind == "idle":
        time.sleep(action.delay_s)
    elif kind == "reload":
        daemon = world.producer if action.mode == "producer" else world.collector
        daemon.signal(signal.SIGHUP)
    elif kind == "logrotate":
        world.logrotate(action.mode, action.files)
    elif kind == "outage":
        stop(world.collector, rng.choice((signal.SIGKILL, signal.SIGTERM)))
        world.write_while_down(rng, action)
        time.sleep(action.delay_s)
        start(world.collector)
    elif kind == "kill_after_cut":
        kill_after_cut(world, action, rng)
    else:
        victims = {
            "kill_collector": [world.collector],
            "term_collector": [world.collector],
            "kill_producer": [world.producer],
            "term_producer": [world.producer],
            "kill_both": [world.producer, world.collector],
        }[kind]
        sig = signal.SIGTERM if kind.startswith("term") else signal.SIGKILL
        if world.producer in victims:
            world.outages += 1
            world.producer_outage = world.outages
        for daemon in victims:
            stop(daemon, sig)
        world.write_while_down(rng, action)
        time.sleep(action.delay_s)
        for daemon in reversed(victims):
            start(daemon)
        world.producer_outage = None


def kill_after_cut(world: World, action: Action, rng: random.Random) -> None:
    """Write until the collector cuts an output file, then kill -9 it `delay_s` after."""
    before = world.counters(world.collector).get("rotations", 0)
    writer = world.writers[rng.randrange(len(world.writers))]
    deadline = time.monotonic() + 20.0
    while world.counters(world.collector).get("rotations", 0) <= before:
        if time.monotonic() > deadline:
            break  # no cut seen: the kill below still happens
        writer.write_now(100, chunk=100)
        time.sleep(0.05)
    time.sleep(action.delay_s)
    world.collector.kill()
    world.write_while_down(rng, action)
    start(world.collector)


def finish(world: World, result: Result) -> None:
    """Let the writers finish, wait for the collector, compare, stop, compare, verify."""
    for w in world.writers:
        if not w.wait_idle(120.0):
            raise HarnessError(f"writer {w.tag} did not finish its bursts")
    check_alive(world)
    want = world.bytes_written()
    deadline = time.monotonic() + CATCH_UP_S
    has: int | None = None
    while time.monotonic() < deadline:
        has = world.collector_has()
        if has is not None and has >= want:
            break
        time.sleep(0.2)
    else:
        result.fail(
            "catch-up",
            f"not caught up in {CATCH_UP_S:.0f} s: collector holds {has} of {want} bytes",
        )
    result.details.append(f"collector counters: {compact(world.counters(world.collector))}")
    result.details.append(f"producer counters: {compact(world.counters(world.producer))}")
    running = judge(world.out, world.written(), world.copies(), world.unordered())
    stop(world.producer, signal.SIGTERM)
    stop(world.collector, signal.SIGTERM)
    final = judge(world.out, world.written(), world.copies(), world.unordered())
    result.judgement = final
    for cls in final.classes():
        if cls not in result.classes:
            result.classes.append(cls)
    if not final.exact:
        result.problems.append("output after stop: " + final.summary())
        result.details += final.examples()
    if not running.exact and running.summary() != final.summary():
        result.fail("running", "output while running: " + running.summary())
    verify(world, result)


def finish_after_failure(world: World, result: Result) -> None:
    """After a daemon failed: still compare what is there, for the report."""
    j = judge(world.out, world.written(), world.copies(), world.unordered())
    result.judgement = j
    result.details.append("output when it failed: " + j.summary())


def verify(world: World, result: Result) -> None:
    if not world.out.exists():
        return
    r = subprocess.run(
        [sys.executable, "-m", "zaggd", "verify", str(world.out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    if r.returncode != 0:
        lines = (r.stdout + r.stderr).strip().splitlines()
        result.fail("verify", f"zaggd verify exited {r.returncode}: {lines[-1] if lines else ''}")
        result.details += [f"verify: {x}" for x in lines[:5]]


def compact(counters: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counters.items()) if v)


def log_findings(world: World) -> list[str]:
    """The daemons' warnings and errors (first few, once each), for a failed schedule."""
    out = []
    for d in (world.producer, world.collector):
        seen: dict[str, int] = {}
        for text in d.output().splitlines():
            if " WARNING " in text or " ERROR " in text or "Traceback" in text:
                key = re.sub(r"\d+", "N", text.split(" ", 3)[-1])[:100]
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == 1 and len(seen) <= 8:
                    out.append(f"{d.kind} log: {text[:240]}")
    return out


# -- the command --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=None, help="run schedules this long")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first schedule")
    parser.add_argument("--schedules", type=int, default=None, help="how many schedules")
    parser.add_argument("--steps", type=int, default=12, help="actions per schedule")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per schedule")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to work (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folders of passed schedules")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each action")
    args = parser.parse_args()
    # Stop cleanly (each schedule kills what it started) on Ctrl-C and SIGTERM,
    # also when started in the background, where SIGINT comes in ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if shutil.which("logrotate") is None:
        print("torture: needs logrotate(8): run scripts/setup.sh", file=sys.stderr)
        return 2
    if args.minutes is None and args.schedules is None:
        args.schedules = 1
    base = args.dir or Path(tempfile.mkdtemp(prefix="zaggd-torture-"))
    base.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + args.minutes * 60 if args.minutes is not None else None
    results: list[Result] = []
    seed = args.seed
    log = print if args.verbose else None
    while True:
        if args.schedules is not None and len(results) >= args.schedules:
            break
        if end is not None and time.monotonic() >= end:
            break
        folder = base / f"seed-{seed}"
        if folder.exists():
            shutil.rmtree(folder)
        try:
            result = run_schedule(seed, args.steps, folder, args.time_limit, log)
        except KeyboardInterrupt:
            print(f"interrupted during seed {seed}")
            break
        results.append(result)
        print(result.report(), flush=True)
        if result.ok and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        seed += 1
    failed = [r for r in results if not r.ok]
    print(
        f"{len(results)} schedules (seeds {args.seed}-{seed - 1}), {len(failed)} failed"
        + (": seeds " + " ".join(str(r.seed) for r in failed) if failed else "")
    )
    by_class: dict[str, list[int]] = {}
    for r in failed:
        for cls in r.classes:
            by_class.setdefault(cls, []).append(r.seed)
    for cls, seeds in sorted(by_class.items()):
        print(f"  {cls}: {len(seeds)} (seeds {' '.join(map(str, seeds))})")
    if not failed and not args.keep and args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
