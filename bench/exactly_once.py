"""Exactly-once benchmark: what the checkpoint's fsync costs, and catch-up after an outage.

1. The same backlog (4 files x 1,000,000 lines of 120 bytes) through a pair
   with `fsync: interval`, `fsync: never` and `fsync: always`, as ratios.
2. A writer appends 50,000 lines/s; the collector is stopped for 60 s, then
   started: how fast it catches up from the files, as a multiple of the rate.

    python bench/exactly_once.py [--lines 1000000] [--outage-seconds 60]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pair
from pipeline import FILES, make_files, run_throughput


def throughput_with(base: Path, files: list[Path], fsync: str, total: int) -> float:
    import pipeline

    original = pipeline.pair

    def with_fsync(folder, sources, output=None, **kw):  # type: ignore[no-untyped-def]
        output = dict(output or {})
        output["fsync"] = fsync
        return original(folder, sources, output, **kw)

    pipeline.pair = with_fsync
    try:
        return run_throughput(base, files, "raw", f"backlog-{fsync}", total)["lines_per_s"]
    finally:
        pipeline.pair = original


def paced_writer(path: Path, rate: int, seconds: float) -> subprocess.Popen[bytes]:
    code = (
        "import sys, time\n"
        "path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
        "pad = 'x' * 100\n"
        "tick = 0.02\n"
        "per_tick = int(rate * tick)\n"
        "n = 0\n"
        "start = time.monotonic()\n"
        "with open(path, 'ab', buffering=0) as f:\n"
        "    while time.monotonic() - start < seconds:\n"
        "        f.write(''.join(f'w {n + i:09d} {pad}\\n' for i in range(per_tick)).encode())\n"
        "        n += per_tick\n"
        "        time.sleep(max(0.0, start + (n / rate) - time.monotonic()))\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(rate), str(seconds)])


def catch_up(base: Path, rate: int, outage_s: float) -> None:
    run_dir = base / "outage"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    producer, collector = pair(
        run_dir, [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}], name="outage"
    )
    collector.start()
    producer.start()
    log = logs / "a.log"
    total_s = outage_s + 60
    writer = paced_writer(log, rate, total_s)
    try:
        time.sleep(2.0)
        collector.stop()
        time.sleep(outage_s)
        with open(log, "rb") as f:
            backlog_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        restart = time.monotonic()
        collector.start()
        out = run_dir / "out-outage" / "app" / "outage-node.log"
        while True:
            src_size = log.stat().st_size
            out_size = out.stat().st_size if out.exists() else 0
            if out_size >= src_size - 200 * 120:  # within ~4 ms of writing
                break
            if time.monotonic() - restart > total_s - outage_s - 5:
                raise SystemExit("did not catch up before the writer stopped")
            time.sleep(0.02)
        elapsed = time.monotonic() - restart
        caught = out_size // 120
        print(
            f"outage {outage_s:.0f} s at {rate:,} lines/s: {backlog_lines:,} lines behind; "
            f"caught up in {elapsed:.1f} s ({caught / elapsed:,.0f} lines/s, "
            f"{caught / elapsed / rate:.1f} x the write rate)"
        )
    finally:
        writer.kill()
        writer.wait()
        producer.stop()
        collector.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=50_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-eo-"))
    try:
        files = make_files(base / "source", args.lines)
        total = FILES * args.lines
        rates = {
            mode: throughput_with(base, files, mode, total)
            for mode in ("never", "interval", "always")
        }
        print(
            f"raw backlog {total:,} lines: fsync never {rates['never']:,.0f} lines/s, "
            f"interval {rates['interval']:,.0f} ({rates['interval'] / rates['never']:.2f} x never), "
            f"always {rates['always']:,.0f} ({rates['always'] / rates['never']:.2f} x never)"
        )
        shutil.rmtree(base / "source")
        catch_up(base, args.rate, args.outage_seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
