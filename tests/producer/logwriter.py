"""A log-writing app for rotation tests: numbered lines at a steady rate, reopened on SIGHUP.

    python tests/producer/logwriter.py PATH --prefix NAME --rate LINES_PER_S

Appends (O_APPEND, as loggers do) lines `NAME 000000123 xxx...` of WIDTH
bytes, in small batches so the rate holds. SIGHUP reopens PATH (logrotate
`create` + postrotate); SIGTERM stops after the current batch and prints the
number of lines written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

WIDTH = 100
BATCH_S = 0.005


def line(prefix: str, number: int) -> bytes:
    head = f"{prefix} {number:09d} "
    return (head + "x" * (WIDTH - len(head) - 1) + "\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rate", type=float, default=6000.0)
    args = parser.parse_args()
    events: list[str] = []
    signal.signal(signal.SIGHUP, lambda *_: events.append("hup"))
    signal.signal(signal.SIGTERM, lambda *_: events.append("term"))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(args.path, flags, 0o644)
    written = 0
    start = time.monotonic()
    print("ready", flush=True)
    while "term" not in events:
        if "hup" in events:
            events.remove("hup")
            os.close(fd)
            fd = os.open(args.path, flags, 0o644)
        due = int((time.monotonic() - start) * args.rate)
        if due > written:
            os.write(fd, b"".join(line(args.prefix, n) for n in range(written, due)))
            written = due
        time.sleep(BATCH_S)
    os.close(fd)
    print(f"written {written}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
