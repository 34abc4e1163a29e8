"""Core benchmark: end-to-end throughput, CPU, memory and latency of a producer-collector pair.

4 files x 1,000,000 lines of 120 bytes, once as a backlog (moved into the
watched folder while both daemons run) and once appended while they run, in
each output format; beside `cat` of the same files in the same run. Then the
latency from append to output at 50 lines/s.

    python bench/pipeline.py [--lines 1000000] [--formats raw,prefixed,jsonl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, drop_backlog, make_lines, pair, peak_rss_mb, wait_written

FILES = 4


def make_files(folder: Path, lines: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(FILES):
        path = folder / f"f{i}.log"
        path.write_bytes(make_lines(f"f{i}", lines))
        paths.append(path)
    return paths


def cat_baseline(paths: list[Path], out: Path) -> float:
    start = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run(["cat", *map(str, paths)], stdout=f, check=True)
    return time.monotonic() - start


def append_writer(paths: list[Path], dests: list[Path]) -> subprocess.Popen[bytes]:
    """A separate process appending each file's bytes to its destination in 1 MiB writes."""
    code = (
        "import sys\n"
        "pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "srcs = [open(s, 'rb') for s, _ in pairs]\n"
        "dsts = [open(d, 'ab', buffering=0) for _, d in pairs]\n"
        "live = list(range(len(pairs)))\n"
        "while live:\n"
        "    for i in list(live):\n"
        "        chunk = srcs[i].read(1 << 20)\n"
        "        if not chunk:\n"
        "            live.remove(i)\n"
        "            continue\n"
        "        dsts[i].write(chunk)\n"
    )
    args = [a for src, dst in zip(paths, dests, strict=True) for a in (str(src), str(dst))]
    return subprocess.Popen([sys.executable, "-c", code, *args])


def run_throughput(
    base: Path, files: list[Path], fmt: str, mode: str, total_lines: int
) -> dict[str, float]:
    run_dir = base / f"{fmt}-{mode}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    producer, collector = pair(
        run_dir,
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        output={"path": str(run_dir / "out" / "{topic}" / "{node}.log"), "format": fmt},
        name=f"{fmt}-{mode}",
    )
    collector.start()
    producer.start()
    try:
        cpu0 = (cpu_seconds(producer.pid), cpu_seconds(collector.pid))
        if mode == "backlog":
            start = drop_backlog(files, run_dir, logs)
        else:
            start = time.monotonic()
            writer = append_writer(files, [logs / f.name for f in files])
        end = wait_written(collector, total_lines)
        if mode == "append":
            writer.wait(timeout=60)
        elapsed = end - start
        return {
            "seconds": elapsed,
            "lines_per_s": total_lines / elapsed,
            "mb_per_s": sum(f.stat().st_size for f in files) / elapsed / 1e6,
            "producer_cpu_s": cpu_seconds(producer.pid) - cpu0[0],
            "collector_cpu_s": cpu_seconds(collector.pid) - cpu0[1],
            "producer_rss_mb": peak_rss_mb(producer.pid),
            "collector_rss_mb": peak_rss_mb(collector.pid),
        }
    finally:
        producer.stop()
        collector.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def run_latency(base: Path, seconds: float, rate: float = 50.0) -> list[float]:
    run_dir = base / "latency"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    producer, collector = pair(
        run_dir,
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        output={"path": str(run_dir / "out" / "{topic}" / "{node}.log"), "format": "raw"},
        name="latency",
    )
    collector.start()
    producer.start()
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    count = int(seconds * rate)
    out = run_dir / "out" / "app" / "latency-node.log"
    done = threading.Event()

    def read_output() -> None:
        while not out.exists() and not done.is_set():
            time.sleep(0.001)
        with open(out, "rb") as f:
            buf = b""
            while not done.is_set():
                chunk = f.read()
                now = time.monotonic()
                if not chunk:
                    time.sleep(0.0002)
                    continue
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    arrived[int(line.split()[1])] = now

    reader = threading.Thread(target=read_output)
    reader.start()
    try:
        with open(logs / "a.log", "ab", buffering=0) as f:
            # Past the first KiB (the fingerprint), so the figure is steady state.
            f.write(b"".join(f"warmup -1 {'w' * 100}\n".encode() for _ in range(20)))
            time.sleep(1.0)
            for i in range(count):
                sent[i] = time.monotonic()
                f.write(f"line {i} {'x' * 100}\n".encode())
                time.sleep(1.0 / rate)
        deadline = time.monotonic() + 10
        while len(arrived) < count + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        reader.join(timeout=5)
        producer.stop()
        collector.stop()
    series = [(i, (arrived[i] - sent[i]) * 1000) for i in range(count) if i in arrived]
    if os.environ.get("ZAGGD_BENCH_SERIES"):
        print("slow lines (index, ms):", [(i, round(ms, 1)) for i, ms in series if ms > 5])
    return sorted(ms for _, ms in series)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per file")
    parser.add_argument("--formats", default="raw,prefixed,jsonl")
    parser.add_argument("--modes", default="backlog,append")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-"))
    try:
        files = make_files(base / "source", args.lines)
        total = FILES * args.lines
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {FILES} files x {args.lines} lines, {size_mb:.0f} MB")
        cat_s = cat_baseline(files, base / "cat.out")
        cat_rate = total / cat_s
        print(
            f"baseline cat > file: {cat_s:.2f} s, {cat_rate:,.0f} lines/s, {size_mb / cat_s:.0f} MB/s"
        )
        for fmt in args.formats.split(","):
            for mode in args.modes.split(","):
                r = run_throughput(base, files, fmt, mode, total)
                print(
                    f"{fmt:8} {mode:7}: {r['seconds']:.2f} s, {r['lines_per_s']:,.0f} lines/s, "
                    f"{r['mb_per_s']:.0f} MB/s ({r['lines_per_s'] / cat_rate:.2f} x cat); "
                    f"CPU producer {r['producer_cpu_s']:.1f} s, collector {r['collector_cpu_s']:.1f} s; "
                    f"peak RSS producer {r['producer_rss_mb']:.0f} MB, collector {r['collector_rss_mb']:.0f} MB"
                )
        if args.latency_seconds > 0:
            lat = run_latency(base, args.latency_seconds)
            p50 = statistics.median(lat)
            p99 = lat[int(len(lat) * 0.99) - 1] if len(lat) >= 100 else max(lat)
            print(
                f"latency at 50 lines/s: {len(lat)} lines, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(lat):.2f} ms"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
