"""Multicast benchmark: throughput over epgm:// beside tcp://, in the same run.

Everything runs inside one private network namespace made for the run
(loopback only, guarded: no interface but `lo`), so no multicast reaches a
real network. For each case a producer and a collector start in it; once the
collector has heard the producer, a file of numbered 120-byte lines is moved
into the watched folder, and the time until the collector has written every
line (checked byte for byte) is the measure.

- small payload (`--small-kb`, default 250 kB): tcp, epgm at 100 kbit/s
  (libzmq's own ZMQ_RATE default, set explicitly) and epgm at 1 Gbit/s;
- large payload (`--large-mb`, default 200 MB): tcp and epgm at each of
  `--rates` (RATE or RATE@RECOVERY; without @, zaggd's default recovery
  interval).

Each line gives lines/s, MB/s, the ratio to tcp on the same payload, the
share of bytes that came by replay over tcp instead of multicast, and both
daemons' peak RSS: a PGM sender keeps up to rate x recovery interval of sent
data for repairs, which shows in the producer's.

    python bench/multicast.py [--small-kb 250] [--large-mb 200] [--rates 1Gbit,100Mbit,100Mbit@10s]

Needs root, iproute2 and a pyzmq with PGM (`zmq.has("pgm")`; scripts/setup.sh).
Takes about a minute with the defaults.
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
    stop_all,
    wait_until,
)
from zaggd.config import PgmConfig, parse_duration

LINE_BYTES = 120
GROUP = "239.192.77.1"
DATA_PORT, REPLAY_PORT = 7450, 7451  # inside the private namespace: always free
RATE_UNITS = {"Gbit": 1000**2, "Mbit": 1000, "kbit": 1}


@dataclass(frozen=True)
class Case:
    """tcp when rate_kbps is None; else epgm at that rate and recovery interval."""

    rate_kbps: int | None = None
    recovery_s: float = PgmConfig().recovery_interval_s

    @property
    def name(self) -> str:
        if self.rate_kbps is None:
            return "tcp"
        return f"epgm {show_rate(self.rate_kbps)}, recovery {self.recovery_s:g} s"


@dataclass(frozen=True)
class Result:
    case: Case
    lines: int
    size: int
    seconds: float
    repaired: int
    gaps: int
    producer_rss_mb: float
    collector_rss_mb: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def parse_rate(text: str) -> int:
    """kbit/s from 100kbit, 100Mbit, 1Gbit."""
    for unit, factor in RATE_UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    raise SystemExit(f"expected a rate such as 100Mbit, got {text!r}")


def parse_case(text: str) -> Case:
    rate, _, recovery = text.partition("@")
    if recovery:
        return Case(parse_rate(rate), parse_duration(recovery))
    return Case(parse_rate(rate))


def show_rate(kbps: int) -> str:
    for unit, factor in RATE_UNITS.items():
        if kbps >= factor and kbps % factor == 0:
            return f"{kbps // factor} {unit}/s"
    return f"{kbps} kbit/s"


def wiring(case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """publish and subscribe sections; tcp and epgm differ in one endpoint line each."""
    replay = f"tcp://127.0.0.1:{REPLAY_PORT}"
    if case.rate_kbps is None:
        data = f"tcp://127.0.0.1:{DATA_PORT}"
        return {"bind": [data], "replay": replay}, {"connect": [data]}
    data = f"epgm://127.0.0.1;{GROUP}:{DATA_PORT}"
    pgm = {"rate": case.rate_kbps, "recovery_interval": case.recovery_s}
    return {"bind": [data], "replay": replay, "pgm": pgm}, {"connect": [data], "pgm": pgm}


def run_case(
    base: Path, nets: NetNamespaces, ns: str, payload: Path, case: Case, timeout_s: float
) -> Result:
    run_dir = Path(tempfile.mkdtemp(dir=base))
    logs = run_dir / "logs"
    logs.mkdir()
    publish, subscribe = wiring(case)
    source = {"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}
    pcfg = producer_config(run_dir, "bench", [source], publish)
    out = run_dir / "out"
    ccfg = collector_config(run_dir, "c", subscribe, {"path": f"{out}/{{topic}}/{{node}}.log"})
    prefix = nets.prefix(ns)
    producer = Daemon("producer", pcfg, run_dir, prefix=prefix)
    collector = Daemon("collector", ccfg, run_dir, prefix=prefix)
    lines = payload.stat().st_size // LINE_BYTES
    try:
        collector.start()
        producer.start()
        # It has heard a heartbeat, so it knows the producer and where to ask for replays.
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
        if (out / "app" / "bench.log").read_bytes() != payload.read_bytes():
            raise SystemExit(f"{case.name}: the output differs from the input")
        return Result(
            case,
            lines,
            payload.stat().st_size,
            elapsed,
            counters["bytes_repaired"],
            counters["gaps_found"],
            peak_rss_mb(producer.pid),
            peak_rss_mb(collector.pid),
        )
    except BaseException:
        for daemon in (producer, collector):
            print(f"--- {case.name}: {daemon.kind} log\n{daemon.output()[-2000:]}", file=sys.stderr)
        raise
    finally:
        stop_all(producer, collector)
        shutil.rmtree(run_dir, ignore_errors=True)


def run_payload(
    base: Path, nets: NetNamespaces, ns: str, label: str, size: int, cases: list[Case]
) -> None:
    payload = base / f"{label}.log"
    payload.write_bytes(make_lines(label, size // LINE_BYTES, LINE_BYTES))
    print(
        f"{label} payload: {payload.stat().st_size / 1e6:.2f} MB, "
        f"{size // LINE_BYTES:,} lines of {LINE_BYTES} bytes",
        flush=True,
    )
    results: list[Result] = []
    for case in [Case(), *cases]:
        # Give every case three times as long as its rate needs, and a minute more.
        slowest_s = size * 8 / 1000 / case.rate_kbps if case.rate_kbps else 0.0
        results.append(run_case(base, nets, ns, payload, case, 60 + 3 * slowest_s))
        r, tcp = results[-1], results[0]
        print(
            f"  {r.case.name:32} {r.seconds:7.2f} s {r.lines_per_s:11,.0f} lines/s "
            f"{r.mb_per_s:8.2f} MB/s {r.lines_per_s / tcp.lines_per_s:7.3f} x tcp; "
            f"by replay {r.repaired / r.size:6.1%} ({r.gaps} gaps); "
            f"peak RSS producer {r.producer_rss_mb:.0f} MB, collector {r.collector_rss_mb:.0f} MB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-kb", type=int, default=250, help="the payload run at 100 kbit/s")
    parser.add_argument("--large-mb", type=int, default=200)
    parser.add_argument(
        "--rates",
        default="1Gbit,100Mbit,100Mbit@10s",
        help="RATE or RATE@RECOVERY, comma-separated",
    )
    args = parser.parse_args()
    import zmq

    if os.geteuid() != 0 or not zmq.has("pgm"):
        raise SystemExit("needs root and a pyzmq with PGM (scripts/setup.sh)")
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-mc-"))
    nets = NetNamespaces("zbm")
    try:
        ns = nets.add("lo")
        small = [Case(100), Case(1_000_000)]
        run_payload(base, nets, ns, "small", args.small_kb * 1000, small)
        large = [parse_case(text) for text in args.rates.split(",")]
        run_payload(base, nets, ns, "large", args.large_mb * 1_000_000, large)
    finally:
        nets.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
