"""CURVE benchmark: end-to-end throughput with CurveZMQ beside plain text, in the same run.

A backlog of 120-byte lines (4 files, a few hundred MB in all) is moved into
the watched folder of a running producer; the time until the collector has
written every line is the measure. Both directions are run: the producer
binds (CURVE server with an allowlist of collectors; the collector pins its
key) and the collector binds (CURVE server with an allowlist of producers,
checking every message's node against its key). Plain and CURVE runs
alternate, `--rounds` times each, so that both see the same machine; the
ratio is of the best runs (the least disturbed by other load).
Target: CURVE at least 70% of plain text.

Beside the pipeline, the same run measures libzmq alone (two contexts, so two
I/O threads, one PUSH/PULL pair, 256 KiB messages): the ceiling CURVE sets
on this machine, and its CPU cost per GB, which the pipeline pays on top of
its own work. CPU is reported per daemon and, within it, for the libzmq I/O
threads, where CURVE encrypts and decrypts.

    python bench/curve.py [--mb 300] [--rounds 2] [--binders producer,collector]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zmq
from common import CLOCK_TICKS, cpu_seconds, drop_backlog, make_lines, peak_rss_mb, wait_written

from tests.helpers import Daemon, collector_config, free_port, producer_config
from zaggd.security import keygen

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


NODE = "bench-node"


def make_keys(folder: Path) -> Path:
    """Key pairs for NODE and the collector, and each one's allowlist of the other."""
    keys = folder / "keys"
    keygen(str(keys), NODE)
    keygen(str(keys), "collector")
    for owner, peer in (("producer", "collector"), ("collector", NODE)):
        allowed = keys / f"allowed-by-{owner}"
        allowed.mkdir()
        shutil.copy(keys / f"{peer}.key", allowed / f"{peer}.key")
    return keys


def wiring(binder: str, keys: Path | None) -> tuple[dict[str, object], dict[str, object]]:
    """The publish and subscribe sections: who binds, and CURVE when `keys` is given."""
    data, replay = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    if binder == "producer":
        publish: dict[str, object] = {"bind": [data], "replay": replay}
        subscribe: dict[str, object] = {"connect": [data], "topics": [""]}
    else:
        publish = {"connect": [data], "replay": [replay]}
        subscribe = {"bind": [data], "replay": replay, "topics": [""]}
    if keys is not None:
        server, client = (publish, subscribe) if binder == "producer" else (subscribe, publish)
        server_name, client_name = (
            (NODE, "collector") if binder == "producer" else ("collector", NODE)
        )
        server["curve"] = {
            "secret_key_file": str(keys / f"{server_name}.key_secret"),
            "allow_dir": str(keys / f"allowed-by-{binder}"),
        }
        client["curve"] = {
            "secret_key_file": str(keys / f"{client_name}.key_secret"),
            "server_key_file": str(keys / f"{server_name}.key"),
        }
    return publish, subscribe


def io_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's libzmq I/O threads, where CURVE encrypts and decrypts."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("ZMQbg/IO"):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def run_once(
    base: Path, files: list[Path], total_lines: int, binder: str, keys: Path | None, label: str
) -> dict[str, float]:
    run_dir = base / label
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    publish, subscribe = wiring(binder, keys)
    sources = [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}]
    producer = Daemon("producer", producer_config(run_dir, NODE, sources, publish), run_dir)
    output = {"path": str(run_dir / "out" / "{topic}" / "{node}.log"), "format": "raw"}
    collector = Daemon("collector", collector_config(run_dir, "c", subscribe, output), run_dir)
    collector.start()
    producer.start()
    try:
        cpu0 = (cpu_seconds(producer.pid), cpu_seconds(collector.pid))
        io0 = (io_thread_cpu_s(producer.pid), io_thread_cpu_s(collector.pid))
        start = drop_backlog(files, run_dir, logs)
        end = wait_written(collector, total_lines)
        elapsed = end - start
        size = sum(f.stat().st_size for f in files)
        return {
            "seconds": elapsed,
            "lines_per_s": total_lines / elapsed,
            "mb_per_s": size / elapsed / 1e6,
            "producer_cpu_s": cpu_seconds(producer.pid) - cpu0[0],
            "collector_cpu_s": cpu_seconds(collector.pid) - cpu0[1],
            "producer_io_cpu_s": io_thread_cpu_s(producer.pid) - io0[0],
            "collector_io_cpu_s": io_thread_cpu_s(collector.pid) - io0[1],
            "producer_rss_mb": peak_rss_mb(producer.pid),
            "collector_rss_mb": peak_rss_mb(collector.pid),
        }
    finally:
        producer.stop()
        collector.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()  # the next run must not pay for this one's writeback


def show(label: str, r: dict[str, float]) -> None:
    print(
        f"{label:6}: {r['seconds']:6.2f} s, {r['lines_per_s']:>10,.0f} lines/s, {r['mb_per_s']:5.0f} MB/s; "
        f"CPU producer {r['producer_cpu_s']:.1f} s ({r['producer_io_cpu_s']:.1f} in libzmq I/O), "
        f"collector {r['collector_cpu_s']:.1f} s ({r['collector_io_cpu_s']:.1f}); "
        f"peak RSS producer {r['producer_rss_mb']:.0f} MB, collector {r['collector_rss_mb']:.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=300, help="backlog size in MB")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each kind, alternating")
    parser.add_argument(
        "--binders", default="producer,collector", help="which side binds, one run set each"
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zaggd-bench-curve-"))
    try:
        files, total = make_backlog(base / "source", args.mb)
        os.sync()  # written back now, not during the first run
        keys = make_keys(base)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {FILES} files, {total:,} lines of {LINE_BYTES} bytes, {size_mb:.0f} MB")
        ceiling = {c: libzmq_ceiling(c) for c in (False, True)}
        print(
            f"libzmq alone, 256 KiB messages: plain {ceiling[False][0]:.0f} MB/s "
            f"({ceiling[False][1]:.1f} CPU s/GB), CURVE {ceiling[True][0]:.0f} MB/s "
            f"({ceiling[True][1]:.1f} CPU s/GB, both ends)",
            flush=True,
        )
        for binder in args.binders.split(","):
            print(f"{binder} binds:")
            results: dict[str, list[dict[str, float]]] = {"plain": [], "curve": []}
            for n in range(args.rounds):
                for label in ("plain", "curve"):
                    use = keys if label == "curve" else None
                    r = run_once(base, files, total, binder, use, f"{binder}-{label}{n}")
                    results[label].append(r)
                    show(label, r)
            best = {k: max(v, key=lambda r: r["lines_per_s"]) for k, v in results.items()}
            median = {k: statistics.median(r["lines_per_s"] for r in v) for k, v in results.items()}
            ratio = best["curve"]["lines_per_s"] / best["plain"]["lines_per_s"]
            verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
            print(
                f"{binder} binds: CURVE / plain (best of {args.rounds}): {ratio:.0%} "
                f"({verdict} the {TARGET_RATIO:.0%} target; median ratio "
                f"{median['curve'] / median['plain']:.0%}); CPU seconds per GB: "
                f"plain {cpu_per_gb(best['plain'], size_mb):.1f}, curve {cpu_per_gb(best['curve'], size_mb):.1f}",
                flush=True,
            )
            # Both daemons share this machine's cores: once they are all busy, the ratio
            # can be no better than the quotient of the CPU each mode costs per GB.
            print(
                f"{binder} binds: CPU-bound on one machine, the ratio is at most "
                f"{cpu_per_gb(best['plain'], size_mb) / cpu_per_gb(best['curve'], size_mb):.0%}; "
                f"cores busy: plain {cpu_busy(best['plain']):.2f}, curve {cpu_busy(best['curve']):.2f} "
                f"of {os.cpu_count()}",
                flush=True,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def libzmq_ceiling(
    curve: bool, total_mb: int = 500, message_bytes: int = 262144
) -> tuple[float, float]:
    """MB/s and CPU seconds per GB of one PUSH/PULL pair between two contexts, no Python work."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    contexts = (zmq.Context(), zmq.Context())
    pull, push = contexts[0].socket(zmq.PULL), contexts[1].socket(zmq.PUSH)
    if curve:
        pull.curve_server = True
        pull.curve_secretkey = server_secret
        pull.curve_publickey = server_public
        push.curve_secretkey = client_secret
        push.curve_publickey = client_public
        push.curve_serverkey = server_public
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    count = total_mb * 1_000_000 // message_bytes
    payload = os.urandom(message_bytes)
    push.send(b"start")
    pull.recv()

    def send() -> None:
        for _ in range(count):
            push.send(payload, copy=False)

    sender = threading.Thread(target=send)
    cpu0, start = time.process_time(), time.monotonic()
    sender.start()
    for _ in range(count):
        pull.recv(copy=False)
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
    sender.join()
    for sock in (pull, push):
        sock.close(linger=0)
    for ctx in contexts:
        ctx.term()
    size_gb = count * message_bytes / 1e9
    return count * message_bytes / elapsed / 1e6, cpu / size_gb


def cpu_per_gb(r: dict[str, float], size_mb: float) -> float:
    return (r["producer_cpu_s"] + r["collector_cpu_s"]) / (size_mb / 1000)


def cpu_busy(r: dict[str, float]) -> float:
    """Cores the two daemons kept busy on average during the run."""
    return (r["producer_cpu_s"] + r["collector_cpu_s"]) / r["seconds"]


if __name__ == "__main__":
    main()
