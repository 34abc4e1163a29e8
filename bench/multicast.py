"""Multicast benchmark: throughput over epgm:// beside tcp://, in the same run.

Everything runs inside one private network namespace made for the run
(loopback only, guarded: no interface but `lo`), so no multicast reaches a
real network. A producer and a collector are started; once the collector
has heard the producer, a file of numbered 120-byte lines is moved into the
watched folder, and the time until the collector has written every line is
the measure. Each payload goes through tcp and through epgm at each rate.

- small payload (`--small-kb`, default 250 kB): tcp, epgm at 100 kbit/s
  (libzmq's ZMQ_RATE default, set explicitly) and epgm at 1 Gbit/s;
- large payload (`--large-mb`, default 100 MB): tcp and epgm at 1 Gbit/s
  and at the other `--rates`.

Beside lines/s and MB/s each run prints how many bytes came by multicast and
how many were repaired over the tcp replay channel (lost on multicast), and
the collector's peak RSS. Ratios are against tcp on the same payload.

    python bench/multicast.py [--small-kb 250] [--large-mb 100] [--rates 1Gbit,100Mbit]

Needs root, iproute2 and a pyzmq with PGM (`zmq.has("pgm")`; scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_lines, peak_rss_mb

from tests.helpers import (
    Daemon,
    NetNamespaces,
    collector_config,
    producer_config,
    wait_until,
)

LINE_BYTES = 120
GROUP = "239.192.77.1"
DATA_PORT, REPLAY_PORT = 7450, 7451  # inside the private namespace: always free
RATE_UNITS = {"kbit": 1, "mbit": 1000, "gbit": 1000**2}


@dataclass
class Result:
    name: str
    lines: int
    size: int
    seconds: float
    repaired: int
    gaps: int
    collector_rss_mb: float
    producer_rss_mb: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def parse_rate(text: str) -> int:
    """kbit/s from 100kbit, 100Mbit, 1Gbit."""
    lower = text.lower()
    for unit, factor in RATE_UNITS.items():
        if lower.endswith(unit):
            return int(float(lower[: -len(unit)]) * factor)
    return int(text)


def show_rate(kbps: int) -> str:
    for unit, factor in reversed(RATE_UNITS.items()):
        if kbps >= factor and kbps % factor == 0:
            return f"{kbps // factor} {unit[0].upper() if factor > 1 else 'k'}bit/s"
    return f"{kbps} kbit/s"


def wiring(rate_kbps: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """publish and subscribe sections: tcp when `rate_kbps` is None, else epgm at that rate.

    The two differ in one endpoint line each, as a user's configs would.
    """
    replay = f"tcp://127.0.0.1:{REPLAY_PORT}"
    if rate_kbps is None:
        data = f"tcp://127.0.0.1:{DATA_PORT}"
        return {"bind": [data], "replay": replay, "advertise": replay}, {"connect": [data]}
    data = f"epgm://127.0.0.1;{GROUP}:{DATA_PORT}"
    pgm = {"rate": rate_kbps}
    return (
        {"bind": [data], "replay": replay, "advertise": replay, "pgm": pgm},
        {"connect": [data], "pgm": pgm},
    )


def run_one(
    base: Path,
    nets: NetNamespaces,
    ns: str,
    name: str,
    payload: Path,
    rate_kbps: int | None,
    timeout_s: float,
) -> Result:
    run_dir = base / name
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    publish, subscribe = wiring(rate_kbps)
    source = {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    pcfg = producer_config(run_dir, "bench", [source], publish)
    ccfg = collector_config(
        run_dir, "c", subscribe, {"path": str(run_dir / "out" / "{topic}" / "{node}.log")}
    )
    prefix = nets.prefix(ns)
    collector = Daemon("collector", ccfg, run_dir, prefix=prefix)
    producer = Daemon("producer", pcfg, run_dir, prefix=prefix)
    lines = payload.stat().st_size // LINE_BYTES
    try:
        collector.start()
        producer.start()
        # The collector has heard a heartbeat, so it knows where to ask for replays.
        wait_until(lambda: collector.status()["counters"]["heartbeats_in"] > 0, 30)
        staged = run_dir / "payload.log"
        os.link(payload, staged)
        start = time.monotonic()
        os.rename(staged, logs / "payload.log")
        wait_until(
            lambda: collector.status()["counters"]["lines_written"] >= lines, timeout_s, 0.02
        )
        elapsed = time.monotonic() - start
        counters = collector.status()["counters"]
        out = run_dir / "out" / "app" / "bench.log"
        if out.read_bytes() != payload.read_bytes():
            raise SystemExit(f"{name}: the output differs from the input")
        return Result(
            name,
            lines,
            payload.stat().st_size,
            elapsed,
            counters["bytes_repaired"],
            counters["gaps_found"],
            peak_rss_mb(collector.pid),
            peak_rss_mb(producer.pid),
        )
    except BaseException:
        for daemon in (producer, collector):
            print(
                f"--- {name}: {daemon.kind} log (end)\n{daemon.output()[-2000:]}", file=sys.stderr
            )
        raise
    finally:
        for daemon in (producer, collector):
            try:
                daemon.stop()
            except AssertionError:
                daemon.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


def report(results: list[Result]) -> None:
    tcp = results[0]
    for r in results:
        print(
            f"  {r.name:24} {r.seconds:7.2f} s {r.lines_per_s:11,.0f} lines/s {r.mb_per_s:8.2f} MB/s"
            f"  {r.lines_per_s / tcp.lines_per_s:6.3f} x tcp;"
            f"  repaired by replay {r.repaired / r.size:6.1%} ({r.gaps} gaps);"
            f"  peak RSS producer {r.producer_rss_mb:.0f} MB, collector {r.collector_rss_mb:.0f} MB",
            flush=True,
        )


def run_payload(
    base: Path,
    nets: NetNamespaces,
    ns: str,
    label: str,
    size: int,
    rates: list[int],
    timeout_s: float,
) -> None:
    payload = base / f"{label}.log"
    payload.write_bytes(make_lines(label, size // LINE_BYTES, LINE_BYTES))
    print(
        f"{label} payload: {payload.stat().st_size / 1e6:.2f} MB, {size // LINE_BYTES:,} lines of {LINE_BYTES} bytes",
        flush=True,
    )
    results = [run_one(base, nets, ns, f"{label}-tcp", payload, None, timeout_s)]
    for kbps in rates:
        results.append(
            run_one(
                base,
                nets,
                ns,
                f"{label}-epgm-{show_rate(kbps).replace(' ', '').replace('/s', '')}",
                payload,
                kbps,
                timeout_s,
            )
        )
    report(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-kb", type=int, default=250, help="the payload run at 100 kbit/s")
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--rates", default="1Gbit,100Mbit", help="epgm rates for the large payload")
    args = parser.parse_args()
    import zmq

    if os.geteuid() != 0 or not zmq.has("pgm"):
        raise SystemExit("needs root and a pyzmq with PGM (scripts/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-mc-"))
    nets = NetNamespaces("zbm")
    try:
        ns = nets.add("lo")
        small = args.small_kb * 1000
        # 100 kbit/s is 12.5 kB/s: the small payload takes size / 12.5 kB s at best.
        run_payload(base, nets, ns, "small", small, [100, 1_000_000], 60 + small / 12_500 * 3)
        large = args.large_mb * 1_000_000
        run_payload(
            base, nets, ns, "large", large, [parse_rate(r) for r in args.rates.split(",")], 600
        )
    finally:
        nets.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
