"""Laggard benchmark: one stopped collector must not hold the others.

1. One producer, three collectors, lines appended at 5,000 lines/s. Once as
   is, once with the third collector stopped (SIGSTOP) for 60 s: the latency
   from each line's write to its arrival in the two others' output (p50, p99,
   max), side by side, and how long the third one takes to catch up once
   continued. Every output is compared with the file byte for byte.
2. One collector alone whose network carries 80% of the write rate (tc in a
   private network namespace; needs root): the bytes the producer read
   (/proc/PID/io rchar), as a multiple of the file, for this tree and for the
   baseline tree (`--baseline`, by default `main` of this repository).
3. Single-collector throughput of a backlog, this tree against the baseline,
   alternating runs, as a ratio.

    python bench/laggard.py [--rate 5000] [--freeze-seconds 60] [--baseline main]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import drop_backlog, make_lines, pair, wait_written

from tests.helpers import Daemon, NetNamespaces, collector_config, free_port, producer_config

REPO = Path(__file__).resolve().parent.parent
WRITER = (
    "import sys, time\n"
    "path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "pad = 'x' * 71\n"
    "tick = 0.01\n"
    "n = 0\n"
    "start = time.monotonic()\n"
    "with open(path, 'ab', buffering=0) as f:\n"
    "    while time.monotonic() - start < seconds:\n"
    "        due = int((time.monotonic() - start) * rate)\n"
    "        now = time.monotonic()\n"
    "        f.write(''.join(f'{i:09d} {now:017.6f} {pad}\\n' for i in range(n, due)).encode())\n"
    "        n = due\n"
    "        time.sleep(tick)\n"
)


def write_paced(path: Path, rate: int, seconds: float) -> subprocess.Popen[bytes]:
    """A process appending lines of 100 bytes stamped with their write time (CLOCK_MONOTONIC)."""
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(rate), str(seconds)])


class Arrivals(threading.Thread):
    """Follows an output file; the latency of every line, from the stamp it carries."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.done = threading.Event()
        self.latencies_s: list[float] = []
        self.arrivals: list[float] = []  # monotonic, one per line

    def run(self) -> None:
        while not self.path.exists() and not self.done.is_set():
            time.sleep(0.005)
        if self.done.is_set():
            return
        rest = b""
        with open(self.path, "rb") as f:
            while True:
                chunk = f.read()
                now = time.monotonic()
                if not chunk:
                    if self.done.is_set():
                        return
                    time.sleep(0.002)
                    continue
                rest += chunk
                *lines, rest = rest.split(b"\n")
                self.latencies_s += [now - float(line.split(b" ", 2)[1]) for line in lines]
                self.arrivals += [now] * len(lines)

    def live_again(self, since: float, within_s: float = 0.5) -> float:
        """When, after `since`, lines first arrived within `within_s` of their write."""
        for arrival, latency in zip(self.arrivals, self.latencies_s, strict=True):
            if arrival > since and latency < within_s:
                return arrival
        return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def fleet(run_dir: Path, count: int) -> tuple[Daemon, list[Daemon], Path]:
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    port, replay = free_port(), free_port()
    producer = Daemon(
        "producer",
        producer_config(
            run_dir,
            "node",
            [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
            {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
        ),
        run_dir,
    )
    collectors = [
        Daemon(
            "collector",
            collector_config(run_dir, f"c{i}", {"connect": [f"tcp://127.0.0.1:{port}"]}),
            run_dir,
        )
        for i in range(count)
    ]
    return producer, collectors, logs / "app.log"


def run_fleet(base: Path, rate: int, seconds: float, freeze_s: float) -> dict[str, object]:
    """Three collectors; the third stopped for `freeze_s` from 5 s in (none when 0)."""
    run_dir = base / f"fleet-freeze{freeze_s:g}"
    producer, collectors, source = fleet(run_dir, 3)
    outputs = [run_dir / f"out-c{i}" / "app" / "node-app.log" for i in range(3)]
    followers = [Arrivals(p) for p in outputs]
    try:
        producer.start()
        for c in collectors:
            c.start()
        for f in followers:
            f.start()
        writer = write_paced(source, rate, seconds)
        thawed = 0.0
        if freeze_s:
            time.sleep(5.0)
            collectors[2].signal(signal.SIGSTOP)
            time.sleep(freeze_s)
            collectors[2].signal(signal.SIGCONT)
            thawed = time.monotonic()
        writer.wait()
        size = source.stat().st_size
        for i, path in enumerate(outputs):
            deadline = time.monotonic() + 300
            while not path.exists() or path.stat().st_size < size:
                if time.monotonic() > deadline:
                    raise SystemExit(f"collector c{i} did not get every line")
                time.sleep(0.02)
        expected = source.read_bytes()
        exact = all(p.read_bytes() == expected for p in outputs)
        time.sleep(0.2)
        caught_up = followers[2].live_again(thawed) - thawed if thawed else 0.0
        return {
            "lines": size // 100,
            "latencies": [f.latencies_s for f in followers[:2]],
            "exact": exact,
            "caught_up_s": caught_up,
            "left_behind": producer.status()["counters"].get("laggards_left_behind", 0),
        }
    finally:
        for f in followers:
            f.done.set()
            f.join(timeout=5)
        for c in collectors:
            if c.proc is not None and c.proc.poll() is None:
                c.signal(signal.SIGCONT)
        for d in (producer, *collectors):
            d.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def report_fleet(name: str, result: dict[str, object]) -> float:
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    worst_p99 = 0.0
    parts = []
    for i, values in enumerate(latencies):
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        worst_p99 = max(worst_p99, p99)
        parts.append(
            f"c{i} {len(values)} lines p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms "
            f"max {max(values) * 1000:.0f} ms"
        )
    extra = ""
    if result["caught_up_s"]:
        extra = f"; the stopped one was live again {result['caught_up_s']:.1f} s after it continued"
    print(
        f"{name:24}: {'; '.join(parts)}; outputs exact: {result['exact']}; "
        f"left behind {result['left_behind']} times{extra}"
    )
    return worst_p99


def export_tree(ref: str, into: Path) -> Path:
    """The baseline code: `ref` of this repository, exported (or a folder given as is)."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def with_tree(daemons: list[Daemon], tree: Path) -> None:
    for d in daemons:
        d.extra_env["PYTHONPATH"] = str(tree)


def io_read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def run_slow_alone(base: Path, tree: Path, tag: str, rate: int, seconds: float) -> float | None:
    """Bytes the producer read per byte of the file, its only collector's network at 80%."""
    if os.geteuid() != 0 or shutil.which("tc") is None:
        return None
    nets = NetNamespaces("zlb")
    run_dir = base / f"slow-{tag}"
    try:
        ns = nets.add("slow")
        nets.ip(ns, "link", "set", "lo", "mtu", "1500")
        kbit = int(rate * 100 * 8 * 0.8 / 1000)  # lines of 100 bytes
        shape = ["rate", f"{kbit}kbit", "burst", "32kb", "latency", "1s"]
        subprocess.run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "tbf", *shape],
            check=True,
            capture_output=True,
        )
        producer, collectors, source = fleet(run_dir, 1)
        for d in (producer, *collectors):
            d.prefix = nets.prefix(ns)
        with_tree([producer, *collectors], tree)
        producer.start()
        collectors[0].start()
        try:
            read0 = io_read_bytes(producer.pid)
            write_paced(source, rate, seconds).wait()
            size = source.stat().st_size
            out = run_dir / "out-c0" / "app" / "node-app.log"
            deadline = time.monotonic() + 600
            while not out.exists() or out.stat().st_size < size:
                if time.monotonic() > deadline:
                    raise SystemExit("the slow collector did not get every line")
                time.sleep(0.1)
            return (io_read_bytes(producer.pid) - read0) / size
        finally:
            for d in (producer, *collectors):
                d.stop()
    finally:
        nets.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def run_backlog(base: Path, tree: Path, tag: str, files: list[Path], lines: int) -> float:
    run_dir = base / f"backlog-{tag}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    producer, collector = pair(
        run_dir,
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        name=tag,
    )
    with_tree([producer, collector], tree)
    collector.start()
    producer.start()
    try:
        start = drop_backlog(files, run_dir, logs)
        end = wait_written(collector, lines)
        return lines / (end - start)
    finally:
        producer.stop()
        collector.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()  # so that no run pays for another's writeback


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=5000, help="lines/s appended")
    parser.add_argument("--freeze-seconds", type=float, default=60.0)
    parser.add_argument("--baseline", default="main", help="git ref or folder of the old code")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per backlog file")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per tree")
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-laggard-"))
    try:
        seconds = args.freeze_seconds + 15.0
        print(f"three collectors, {args.rate} lines/s for {seconds:.0f} s")
        calm = report_fleet("no collector stopped", run_fleet(base, args.rate, seconds, 0.0))
        frozen = report_fleet(
            f"c2 stopped {args.freeze_seconds:.0f} s",
            run_fleet(base, args.rate, seconds, args.freeze_seconds),
        )
        verdict = "met" if frozen < 1.0 else "NOT met"
        print(
            f"worst p99 of the two running: {frozen * 1000:.0f} ms with c2 stopped, "
            f"{calm * 1000:.0f} ms without ({frozen / calm:.1f} x); target p99 < 1 s: {verdict}"
        )

        baseline = export_tree(args.baseline, base / "baseline")
        trees = {"this tree": REPO, f"baseline ({args.baseline})": baseline}
        for tag, tree in trees.items():
            ratio = run_slow_alone(base, tree, tag.split()[0], args.rate * 2, args.slow_seconds)
            if ratio is None:
                print("slow collector alone: skipped (needs root and tc)")
                break
            print(f"slow collector alone at 80% of the write rate, {tag}: read {ratio:.2f} x")

        files = []
        (base / "source").mkdir()
        for i in range(4):
            path = base / "source" / f"f{i}.log"
            path.write_bytes(make_lines(f"f{i}", args.lines))
            files.append(path)
        os.sync()
        rates: dict[str, list[float]] = {tag: [] for tag in trees}
        for _ in range(args.rounds):
            for tag, tree in trees.items():
                rates[tag].append(run_backlog(base, tree, tag.split()[0], files, 4 * args.lines))
        medians = {tag: statistics.median(r) for tag, r in rates.items()}
        for tag, r in rates.items():
            runs = ", ".join(f"{x:,.0f}" for x in r)
            print(f"one collector, backlog, {tag}: median {medians[tag]:,.0f} lines/s ({runs})")
        mine, old = medians.values()
        print(f"throughput ratio this tree / baseline: {mine / old:.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
