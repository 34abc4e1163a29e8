"""CURVE benchmark: end-to-end throughput with CurveZMQ beside plain text, in the same run.

A backlog of 120-byte lines (4 files, a few hundred MB in all) is moved into
the watched folder of a producer (binding, CURVE server with an allowlist of
collectors) while a collector (connecting, pinning the producer's key) runs;
the time until the collector has written every line is the measure. Plain and
CURVE runs alternate, `--rounds` times each, so that both see the same
machine; the ratio is of the best runs (the least disturbed by other load).
Target: CURVE at least 70% of plain text.

    python bench/curve.py [--mb 300] [--rounds 2] [--profile DIR]

With --profile, each daemon of the last CURVE round runs under cProfile and
its top functions are printed, to show what limits the rate.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, make_lines, pair, peak_rss_mb  # noqa: E402

from zaggd.security import keygen  # noqa: E402

FILES = 4
LINE_BYTES = 120
TARGET_RATIO = 0.70


def make_backlog(folder: Path, total_mb: int) -> tuple[list[Path], int]:
    """FILES files of LINE_BYTES-byte lines, `total_mb` MB in all; returns them and the line count."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = total_mb * 1_000_000 // FILES // LINE_BYTES
    paths = []
    for i in range(FILES):
        path = folder / f"f{i}.log"
        path.write_bytes(make_lines(f"f{i}", per_file, LINE_BYTES))
        paths.append(path)
    return paths, per_file * FILES


def make_keys(folder: Path) -> dict[str, str]:
    keys = folder / "keys"
    keygen(str(keys), "producer")
    keygen(str(keys), "collector")
    allowed = folder / "allowed-collectors"
    allowed.mkdir()
    shutil.copy(keys / "collector.key", allowed / "collector.key")
    return {
        "producer_secret": str(keys / "producer.key_secret"),
        "producer_public": str(keys / "producer.key"),
        "collector_secret": str(keys / "collector.key_secret"),
        "allow_dir": str(allowed),
    }


def wait_written(collector, total_lines: int, timeout_s: float = 900.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        if collector.status()["counters"]["lines_written"] >= total_lines:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the collector")
        time.sleep(0.02)


def run_once(
    base: Path,
    files: list[Path],
    total_lines: int,
    keys: dict[str, str] | None,
    label: str,
    profile_dir: Path | None = None,
) -> dict[str, float]:
    run_dir = base / label
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    publish_extra: dict[str, object] = {}
    subscribe_extra: dict[str, object] = {}
    if keys is not None:
        publish_extra["curve"] = {"secret_key_file": keys["producer_secret"], "allow_dir": keys["allow_dir"]}
        subscribe_extra["curve"] = {
            "secret_key_file": keys["collector_secret"],
            "server_key_file": keys["producer_public"],
        }
    producer, collector = pair(
        run_dir,
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        output={"path": str(run_dir / "out" / "{topic}" / "{node}.log"), "format": "raw"},
        publish_extra=publish_extra,
        subscribe_extra=subscribe_extra,
        name=label,
    )
    collector.start()
    producer.start()
    try:
        cpu0 = (cpu_seconds(producer.pid), cpu_seconds(collector.pid))
        staged = [run_dir / f.name for f in files]
        for src, dst in zip(files, staged, strict=True):
            os.link(src, dst)
        start = time.monotonic()
        for path in staged:
            os.rename(path, logs / path.name)
        end = wait_written(collector, total_lines)
        elapsed = end - start
        size = sum(f.stat().st_size for f in files)
        return {
            "seconds": elapsed,
            "lines_per_s": total_lines / elapsed,
            "mb_per_s": size / elapsed / 1e6,
            "producer_cpu_s": cpu_seconds(producer.pid) - cpu0[0],
            "collector_cpu_s": cpu_seconds(collector.pid) - cpu0[1],
            "producer_rss_mb": peak_rss_mb(producer.pid),
            "collector_rss_mb": peak_rss_mb(collector.pid),
        }
    finally:
        producer.stop()
        collector.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def show(label: str, r: dict[str, float]) -> None:
    print(
        f"{label:6}: {r['seconds']:6.2f} s, {r['lines_per_s']:>10,.0f} lines/s, {r['mb_per_s']:5.0f} MB/s; "
        f"CPU producer {r['producer_cpu_s']:.1f} s, collector {r['collector_cpu_s']:.1f} s; "
        f"peak RSS producer {r['producer_rss_mb']:.0f} MB, collector {r['collector_rss_mb']:.0f} MB",
        flush=True,
    )


def print_profiles(folder: Path, top: int = 12) -> None:
    for path in sorted(folder.glob("*.prof")):
        print(f"\n--- {path.stem}: top {top} by internal time")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300, help="backlog size in MB")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each kind, alternating")
    parser.add_argument("--profile", metavar="DIR", help="profile the daemons of the last CURVE run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-curve-"))
    try:
        files, total = make_backlog(base / "source", args.mb)
        keys = make_keys(base)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {FILES} files, {total:,} lines of {LINE_BYTES} bytes, {size_mb:.0f} MB; producer binds")
        results: dict[str, list[dict[str, float]]] = {"plain": [], "curve": []}
        for n in range(args.rounds):
            for label in ("plain", "curve"):
                profile = None
                if args.profile and label == "curve" and n == args.rounds - 1:
                    profile = Path(args.profile).resolve()
                    profile.mkdir(parents=True, exist_ok=True)
                r = run_once(base, files, total, keys if label == "curve" else None, f"{label}{n}", profile)
                results[label].append(r)
                show(label, r)
        best = {k: max(v, key=lambda r: r["lines_per_s"]) for k, v in results.items()}
        ratio = best["curve"]["lines_per_s"] / best["plain"]["lines_per_s"]
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(
            f"CURVE / plain (best of {args.rounds}): {ratio:.0%} "
            f"({verdict} the {TARGET_RATIO:.0%} target); "
            f"CPU per GB: plain {cpu_per_gb(best['plain'], size_mb):.1f} s, curve {cpu_per_gb(best['curve'], size_mb):.1f} s"
        )
        if args.profile:
            print_profiles(Path(args.profile))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def cpu_per_gb(r: dict[str, float], size_mb: float) -> float:
    return (r["producer_cpu_s"] + r["collector_cpu_s"]) / (size_mb / 1000)


if __name__ == "__main__":
    main()
