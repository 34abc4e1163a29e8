"""Shared benchmark plumbing: daemons, process figures from /proc, line files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Daemon, collector_config, free_port, producer_config

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and not target.startswith("/dev/"):
            count += 1
    return count


def make_lines(prefix: str, count: int, width: int = 120) -> bytes:
    """`count` lines of `width` bytes each (newline included), numbered."""
    pad = "x" * (width - len(prefix) - 10)
    return "".join(f"{prefix} {i:07d} {pad}\n" for i in range(count)).encode()


def pair(
    folder: Path,
    sources: list[dict[str, object]],
    output: dict[str, object] | None = None,
    producer_extra: dict[str, object] | None = None,
    publish_extra: dict[str, object] | None = None,
    subscribe_extra: dict[str, object] | None = None,
    name: str = "bench",
) -> tuple[Daemon, Daemon]:
    port, replay = free_port(), free_port()
    publish: dict[str, object] = {
        "bind": [f"tcp://127.0.0.1:{port}"],
        "replay": f"tcp://127.0.0.1:{replay}",
    }
    publish.update(publish_extra or {})
    subscribe: dict[str, object] = {"connect": [f"tcp://127.0.0.1:{port}"]}
    subscribe.update(subscribe_extra or {})
    pcfg = producer_config(folder, f"{name}-node", sources, publish, **(producer_extra or {}))
    ccfg = collector_config(
        folder,
        name,
        subscribe,
        output or {"path": str(folder / f"out-{name}" / "{topic}" / "{node}.log")},
    )
    return Daemon("producer", pcfg, folder), Daemon("collector", ccfg, folder)


def is_bookkeeping(name: str) -> bool:
    """A collector's own file beside its output: the folder marker, a live index."""
    return name == ".zaggd-output" or name.endswith((".index.json", ".index.json.tmp"))


def output_files(folder: Path) -> list[Path]:
    """The output files under `folder`, without the collector's bookkeeping."""
    return [p for p in folder.rglob("*") if p.is_file() and not is_bookkeeping(p.name)]


def wait_output_bytes(folder: Path, total: int, timeout_s: float = 600.0) -> float:
    """Wait until the files under `folder` hold `total` bytes; returns the monotonic time then."""
    deadline = time.monotonic() + timeout_s
    while True:
        size = sum(p.stat().st_size for p in output_files(folder)) if folder.exists() else 0
        if size >= total:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {size} of {total} bytes arrived")
        time.sleep(0.01)


def wait_output_lines(folder: Path, total: int, timeout_s: float = 600.0) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = 0
        if folder.exists():
            for p in output_files(folder):
                with open(p, "rb") as f:
                    lines += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if lines >= total:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {lines} of {total} lines arrived")
        time.sleep(0.05)


def drop_backlog(files: list[Path], run_dir: Path, logs: Path) -> float:
    """Hard-link `files` into `run_dir`, then rename them into the watched `logs`
    all at once; the monotonic time they appeared there."""
    staged = [run_dir / f.name for f in files]
    for src, dst in zip(files, staged, strict=True):
        os.link(src, dst)
    start = time.monotonic()
    for path in staged:
        os.rename(path, logs / path.name)
    return start


def wait_written(collector: Daemon, total_lines: int, timeout_s: float = 900.0) -> float:
    """Wait until the collector has written `total_lines`; the monotonic time then."""
    deadline = time.monotonic() + timeout_s
    while True:
        if collector.status()["counters"]["lines_written"] >= total_lines:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the collector")
        time.sleep(0.02)
