"""Benchmark: a producer watching 10,000 files in 100 folders.

    python bench/many_files.py [--files 10000] [--folders 100] [--trickle-s 60] [--idle-s 60]

Phases, with the producer's figures from /proc/PID:
1. first start with every file already there, one line each (start_at:
   beginning): time to READY=1, to the first block received by a subscriber,
   and to the last of the 10,000 lines;
2. trickle: 1 line/s spread over the files (each line to a file in the next
   folder): CPU of the producer, open handles;
3. idle: nothing written for --idle-s after close_idle has passed: CPU, open
   handles, peak RSS (VmHWM);
4. restart (SIGTERM, one line appended while stopped, start): time to READY=1
   and to that line.

A plain ZeroMQ SUB socket stands in for a collector, so only the producer
is measured. Targets (issue 3): idle CPU < 1% of a core, < 100 open handles,
peak RSS <= 150 MB, first block within 5 s of the start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, open_files, peak_rss_mb

from tests.helpers import Daemon, free_port, producer_config
from zaggd import wire

TARGET_IDLE_CPU = 0.01
TARGET_OPEN = 100
TARGET_RSS_MB = 150.0
TARGET_FIRST_S = 5.0


class Subscriber:
    """A SUB socket counting the lines of the data messages it receives."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.lines = 0
        self.first_at: float | None = None
        self.last_at = 0.0

    def drain(self, timeout_ms: int) -> None:
        if not self.sock.poll(timeout_ms):
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = wire.decode(frames)
            if isinstance(msg, wire.Data) and msg.header.lines:
                now = time.monotonic()
                self.first_at = self.first_at or now
                self.last_at = now
                self.lines += msg.header.lines

    def wait_lines(self, total: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.lines < total:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.lines} of {total} lines arrived in {timeout_s} s")
            self.drain(100)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


def make_files(root: Path, files: int, folders: int) -> list[Path]:
    paths = []
    for i in range(files):
        folder = root / f"d{i % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i // folders:05d}.log"
        path.write_bytes(f"{path.name} line 0\n".encode())
        paths.append(path)
    return paths


def cpu_share(pid: int, seconds: float, work: object = None) -> float:
    """The producer's CPU over `seconds`, as a share of one core."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def start_timed(producer: Daemon, sub: Subscriber, expect_lines: int) -> tuple[float, float, float]:
    """Start the producer; seconds to READY=1, to the first line and to `expect_lines` lines."""
    t0 = time.monotonic()
    producer.start(wait_ready=False)
    assert producer.notify is not None
    ready_s = 0.0
    deadline = t0 + 120
    while sub.lines < expect_lines:
        if not ready_s and producer.notify.has("READY=1"):
            ready_s = time.monotonic() - t0
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{sub.lines} of {expect_lines} lines in 120 s:\n{producer.output()[-2000:]}"
            )
        sub.drain(20)
    if not ready_s:
        producer.notify.wait_for("READY=1")
        ready_s = time.monotonic() - t0
    assert sub.first_at is not None
    return ready_s, sub.first_at - t0, sub.last_at - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--trickle-s", type=float, default=60.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--close-idle", default="10s", help="producer close_idle (default 5 min)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="zaggd-many-"))
    port = free_port()
    config = producer_config(
        work,
        "many",
        [{"name": "app", "topic": "app", "paths": [str(work / "logs" / "*" / "*.log")]}],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
        close_idle=args.close_idle,
        rescan_interval="10s",  # the product's defaults, not the test helper's
        state_interval="1s",
    )
    producer = Daemon("producer", config, work)
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    failures: list[str] = []
    try:
        t = time.monotonic()
        paths = make_files(work / "logs", args.files, args.folders)
        print(f"made {len(paths)} files in {args.folders} folders in {time.monotonic() - t:.1f} s")

        ready_s, first_s, all_s = start_timed(producer, sub, len(paths))
        pid = producer.pid
        print(
            f"first start: READY=1 after {ready_s:.2f} s, first block after {first_s:.2f} s,"
            f" all {len(paths)} lines after {all_s:.2f} s"
        )
        if first_s > TARGET_FIRST_S:
            failures.append(f"first block after {first_s:.2f} s (target {TARGET_FIRST_S} s)")
        print(
            f"  after the start: {open_files(pid)} open files, peak RSS {peak_rss_mb(pid):.1f} MB"
        )

        # Trickle: 1 line/s, each to a file in the next folder.
        sent = 0
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        peak_open = 0
        while time.monotonic() - start < args.trickle_s:
            path = paths[(sent * 101) % len(paths)]
            with open(path, "ab") as f:
                f.write(f"{path.name} trickle {sent}\n".encode())
            sent += 1
            next_at = start + sent
            while time.monotonic() < next_at:
                sub.drain(50)
            peak_open = max(peak_open, open_files(pid))
        trickle_cpu = (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)
        sub.wait_lines(len(paths) + sent, 30)
        print(
            f"trickle: {sent} lines in {args.trickle_s:.0f} s, all delivered; producer CPU"
            f" {trickle_cpu * 100:.2f}% of a core, open files up to {peak_open}"
        )

        # Idle: past close_idle, then measure.
        close_idle_s = float(args.close_idle.rstrip("s"))
        time.sleep(close_idle_s + 2)
        idle_cpu = cpu_share(pid, args.idle_s)
        idle_open = open_files(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = peak_rss_mb(pid)
        print(
            f"idle: producer CPU {idle_cpu * 100:.2f}% of a core over {args.idle_s:.0f} s,"
            f" {idle_open} open files ({fds} descriptors in all), peak RSS {rss:.1f} MB"
        )
        if idle_cpu >= TARGET_IDLE_CPU:
            failures.append(f"idle CPU {idle_cpu * 100:.2f}% (target < 1%)")
        if idle_open >= TARGET_OPEN:
            failures.append(f"{idle_open} open files (target < {TARGET_OPEN})")
        if rss > TARGET_RSS_MB:
            failures.append(f"peak RSS {rss:.1f} MB (target <= {TARGET_RSS_MB} MB)")

        # Restart with every file known, one line added while stopped.
        producer.stop()
        with open(paths[len(paths) // 2], "ab") as f:
            f.write(b"while stopped\n")
        before = sub.lines
        sub.first_at = None
        ready_s, first_s, _ = start_timed(producer, sub, before + 1)
        print(
            f"restart with {len(paths)} known files: READY=1 after {ready_s:.2f} s,"
            f" the new line after {first_s:.2f} s; peak RSS {peak_rss_mb(producer.pid):.1f} MB"
        )
        if first_s > TARGET_FIRST_S:
            failures.append(
                f"restart: first block after {first_s:.2f} s (target {TARGET_FIRST_S} s)"
            )
    finally:
        try:
            producer.stop()
        except AssertionError:
            producer.kill()
        sub.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    print("targets:", "all met" if not failures else "MISSED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
