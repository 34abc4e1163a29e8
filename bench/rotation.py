"""Rotation benchmark: end-to-end throughput with rotation every 10 MB and gzip,
beside the same backlog without rotation, as a ratio (issue 5; target >= 0.70).

The input is access-log-like lines of about 120 bytes (varied enough that gzip
does real work: roughly 4:1, not the 50:1 of padded test lines), in 4 files,
moved into the watched folder as a backlog while a producer and a collector
run. Throughput is lines written per second, from the move to the collector's
`lines_written` reaching the total; the run with rotation also reports when
the last archive was sealed, and checks that the archives and the live file
hold exactly the input.

    python bench/rotation.py [--lines 625000] [--max-bytes 10MB] [--pairs 5]

The machine is shared and a run takes about a second, so each invocation
measures several pairs (alternating which goes first, after a sync) and
prints every pair's ratio and their median.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, drop_backlog, output_files, pair, peak_rss_mb, wait_written

from zaggd.collector.manifest import parse_rotated

FILES = 4
POOL = 20_000  # distinct line bodies: far more than gzip's 32 KiB window holds

METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
PATHS = [
    "/",
    "/api/v1/items",
    "/api/v1/users",
    "/static/app.js",
    "/login",
    "/search",
    "/img/logo.png",
]
AGENTS = ["curl/8.5", "Mozilla/5.0", "Go-http/1.1", "python-requests/2.31", "kube-probe/1.29"]


def line_pool(seed: int) -> list[str]:
    """Access-log-like bodies, each padded or cut so a numbered line is 120 bytes."""
    rng = random.Random(seed)
    pool = []
    for _ in range(POOL):
        body = (
            f"{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} "
            f"{rng.choice(METHODS)} {rng.choice(PATHS)}?id={rng.randrange(10**8)} "
            f"{rng.choice([200, 200, 200, 301, 404, 500])} {rng.randrange(50, 90000)} "
            f"{rng.randrange(1, 3000)}ms {rng.choice(AGENTS)} {rng.getrandbits(64):016x}"
        )
        pool.append((body + " " * 120)[:106])
    return pool


def make_files(folder: Path, lines_per_file: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(FILES):
        pool = line_pool(i)
        path = folder / f"f{i}.log"
        with open(path, "wb") as f:
            for start in range(0, lines_per_file, 100_000):
                end = min(start + 100_000, lines_per_file)
                chunk = "".join(f"f{i} {n:09d} {pool[n % POOL]}\n" for n in range(start, end))
                f.write(chunk.encode())
        paths.append(path)
    return paths


def unsealed(folder: Path) -> int:
    """Rotated files not yet sealed: a temp archive, or a plain file its manifest does not name."""
    count = 0
    for p in folder.iterdir():
        parsed = parse_rotated(p.name)
        if parsed is None or parsed.ext not in ("", ".gz.tmp"):
            continue
        manifest = folder / f"{parsed.base}.manifest.json"
        try:
            sealed = parsed.ext == "" and json.loads(manifest.read_text())["file"] == p.name
        except (FileNotFoundError, ValueError, KeyError):
            sealed = False
        count += not sealed
    return count


def output_matches(folder: Path, files: list[Path]) -> bool:
    """Archives in name order, then the live file: every input line once (order per file)."""
    got = 0
    per_file: dict[bytes, int] = {}
    names = sorted(p.name for p in output_files(folder))
    for name in [n for n in names if parse_rotated(n) is not None] + [
        n for n in names if parse_rotated(n) is None
    ]:
        parsed = parse_rotated(name)
        if parsed is not None and parsed.ext not in ("", ".gz"):
            continue
        data = (folder / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        got += len(data)
        for line in data.splitlines():
            prefix, number = line.split(b" ", 2)[:2]
            if int(number) != per_file.get(prefix, 0):
                print(f"out of order or doubled: {line[:40]!r}")
                return False
            per_file[prefix] = int(number) + 1
    return got == sum(f.stat().st_size for f in files)


def run(
    base: Path, files: list[Path], total: int, rotate: dict[str, object] | None, label: str
) -> dict[str, float]:
    run_dir = base / label
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    output: dict[str, object] = {"path": str(run_dir / "out" / "{topic}" / "{node}.log")}
    if rotate:
        output["rotate"] = rotate
    producer, collector = pair(
        run_dir,
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        output=output,
        name=label,
    )
    collector.start()
    producer.start()
    try:
        cpu0 = (cpu_seconds(producer.pid), cpu_seconds(collector.pid))
        start = drop_backlog(files, run_dir, logs)
        end = wait_written(collector, total, timeout_s=1800.0)
        folder = run_dir / "out" / "app"
        sealed_at = end
        if rotate:
            while unsealed(folder):
                time.sleep(0.05)
            sealed_at = time.monotonic()
        result = {
            "seconds": end - start,
            "lines_per_s": total / (end - start),
            "sealed_after_s": sealed_at - start,
            "producer_cpu_s": cpu_seconds(producer.pid) - cpu0[0],
            "collector_cpu_s": cpu_seconds(collector.pid) - cpu0[1],
            "collector_rss_mb": peak_rss_mb(collector.pid),
            "files": len(output_files(folder)),
        }
        if rotate:
            stored = sum(p.stat().st_size for p in output_files(folder))
            result["stored_mb"] = stored / 1e6
            result["exact"] = float(output_matches(folder, files))
        return result
    finally:
        producer.stop()
        collector.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def describe(label: str, r: dict[str, float], size_mb: float) -> str:
    extra = ""
    if "stored_mb" in r:
        extra = (
            f"; sealed by {r['sealed_after_s']:.1f} s; {r['files']:.0f} files, "
            f"{r['stored_mb']:.0f} MB stored; output exact: {'yes' if r['exact'] else 'NO'}"
        )
    return (
        f"  {label:20}: {r['seconds']:.2f} s, {r['lines_per_s']:,.0f} lines/s, "
        f"{size_mb / r['seconds']:.0f} MB/s; CPU producer {r['producer_cpu_s']:.1f} s, "
        f"collector {r['collector_cpu_s']:.1f} s; collector peak RSS {r['collector_rss_mb']:.0f} MB{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lines", type=int, default=625_000, help="lines per file (4 files, 120 bytes each)"
    )
    parser.add_argument("--max-bytes", default="10MB")
    parser.add_argument("--compress", default="gzip")
    parser.add_argument("--pairs", type=int, default=5, help="runs of each kind, alternating")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-rotation-"))
    rotate = {"max_bytes": args.max_bytes, "compress": args.compress}
    try:
        files = make_files(base / "source", args.lines)
        total = FILES * args.lines
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {FILES} files x {args.lines} lines, {size_mb:.0f} MB, as a backlog")
        ratios = []
        exact = True
        for i in range(args.pairs):
            # Alternate the order, and start each run with no dirty pages left by the last.
            results = {}
            for kind in ("plain", "rotated") if i % 2 == 0 else ("rotated", "plain"):
                os.sync()
                results[kind] = run(base, files, total, rotate if kind == "rotated" else None, kind)
            ratio = results["rotated"]["lines_per_s"] / results["plain"]["lines_per_s"]
            ratios.append(ratio)
            exact = exact and bool(results["rotated"]["exact"])
            print(f"pair {i + 1}: ratio {ratio:.2f}")
            print(describe("no rotation", results["plain"], size_mb))
            print(describe(f"{args.max_bytes} + {args.compress}", results["rotated"], size_mb))
        median = statistics.median(ratios)
        verdict = "met" if median >= 0.70 else "MISSED"
        print(
            f"ratio, rotation every {args.max_bytes} with {args.compress} / no rotation: "
            f"{median:.2f} (median of {len(ratios)}: {', '.join(f'{r:.2f}' for r in ratios)}); "
            f"target >= 0.70 {verdict}; output exact: {'yes' if exact else 'NO'}"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
