"""Multicast (epgm://) end to end, inside private network namespaces the tests make.

No multicast packet leaves them: every daemon runs under `ip netns exec` in a
namespace made here, after a guard checked that it holds no interface but
`lo` and the veth ends made here (NetNamespaces.check). Two shapes:

- one namespace, loopback only: endpoints `epgm://127.0.0.1;GROUP:PORT`;
- two namespaces joined by a veth pair, as two hosts: producers in one,
  collectors in the other, replays over tcp to the producers' veth address.

Ports inside a fresh namespace are all free, so these tests use fixed ones.
They need root (CI runs as root) and a pyzmq with PGM, which scripts/setup.sh
installs: without PGM they fail rather than skip.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import (
    REPO,
    Daemon,
    NetNamespaces,
    append_lines,
    collector_config,
    ends_with,
    is_zaggd_own,
    numbered_lines,
    probe_line,
    producer_config,
    stop_all,
    wait_until,
)
from zaggd import wire
from zaggd.config import PgmConfig
from zaggd.endpoints import MAX_PACKED_BYTES, PGM_RCVBUF_BYTES, apply_pgm, warn_if_rmem_capped
from zaggd.errors import ProtocolError

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make network namespaces (CI runs as root)"
)


@pytest.fixture
def nets() -> Iterator[NetNamespaces]:
    if not zmq.has("pgm"):
        pytest.fail(
            "this pyzmq has no PGM: run scripts/setup.sh (pyzmq built against Debian's libzmq)"
        )
    if shutil.which("ip") is None:
        pytest.fail("needs iproute2's ip(8): run scripts/setup.sh")
    made = NetNamespaces("zmt")
    try:
        yield made
    finally:
        made.close()


# -- building blocks ---------------------------------------------------------------


def sources_of(logs: Path, node: str) -> list[dict[str, Any]]:
    """Two sources per node, one file each, so each output file mirrors one input file."""
    return [
        {"name": name, "topic": f"mc.{name}", "paths": [str(logs / f"{node}-{name}.log")]}
        for name in ("app", "web")
    ]


def inputs_of(logs: Path, nodes: list[str]) -> dict[str, Path]:
    """Output file (relative to a collector's output folder) -> the input file it mirrors."""
    return {
        f"mc.{name}/{node}-{name}.log": logs / f"{node}-{name}.log"
        for node in nodes
        for name in ("app", "web")
    }


def write_lines(inputs: dict[str, Path], start: int, count: int, chunk: int = 2000) -> None:
    """Append `count` numbered lines to every input, in chunks, interleaving the files."""
    for offset in range(0, count, chunk):
        for key, path in inputs.items():
            n = min(chunk, count - offset)
            append_lines(path, numbered_lines(key, start + offset, n))


def mismatches(out: Path, inputs: dict[str, Path]) -> list[str]:
    """What differs between a collector's output folder and the inputs (empty: exact)."""
    problems = []
    for rel, src in inputs.items():
        got = (out / rel).read_bytes() if (out / rel).exists() else b""
        want = src.read_bytes()
        if got != want:
            problems.append(f"{rel}: {len(got)} bytes, want {len(want)}")
    extra = {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not is_zaggd_own(p.name)
    } - set(inputs)
    problems += [f"unexpected output file {name}" for name in sorted(extra)]
    return problems


def wait_exact(
    collector: Daemon, out: Path, inputs: dict[str, Path], timeout_s: float = 45.0
) -> int:
    """Every output file byte-equal to its input. A probe line is appended to each
    input first: once each output ends with it, every line before it was
    processed, so the comparison is final. Returns the probes' bytes."""
    probes = {rel: probe_line(rel) for rel in inputs}
    for rel, src in inputs.items():
        append_lines(src, [probes[rel]])
    with contextlib.suppress(AssertionError):  # what differs is said below
        wait_until(lambda: all(ends_with(out / rel, p) for rel, p in probes.items()), timeout_s)
    problems = mismatches(out, inputs)
    if problems:
        raise AssertionError(f"{collector.config.name}: {problems}\n{collector.output()[-3000:]}")
    return sum(len(p) for p in probes.values())


def counters(daemon: Daemon) -> dict[str, int]:
    return dict(daemon.status()["counters"])


def output_of(collector: Daemon) -> Path:
    """The output folder collector_config() gives a collector."""
    return collector.workdir / f"out-{collector.config.stem.removeprefix('collector-')}"


def check_came_by_multicast(collector: Daemon, since: dict[str, int] | None = None) -> None:
    """Some bytes written since the counters `since` (of the same process life)
    came over the group, not by replay, and no message was malformed: frames
    of different senders never mixed."""
    c = counters(collector)
    before = since or {}
    written = c["bytes_written"] - before.get("bytes_written", 0)
    repaired = c["bytes_repaired"] - before.get("bytes_repaired", 0)
    assert written - repaired > 0, (c, before)
    assert c["messages_dropped"] == 0, c


def switch_line(path: Path, old: str, new: str) -> None:
    """Replace the one line of `path` that holds `old`, and check that one line changed."""
    before = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(before) if old in line]
    assert len(hits) == 1, f"{path}: {old!r} on {len(hits)} lines"
    after = list(before)
    after[hits[0]] = before[hits[0]].replace(old, new)
    path.write_text("".join(after))
    changed = [d for d in difflib.ndiff(before, after) if d.startswith(("- ", "+ "))]
    assert len(changed) == 2, changed  # one line out, one line in


# -- one namespace, loopback only --------------------------------------------------


@needs_root
def test_two_producers_and_two_collectors_share_a_group_on_loopback(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    ns = nets.add("lo")
    group = "epgm://127.0.0.1;239.192.80.1:7450"
    logs = tmp_path / "logs"
    logs.mkdir()
    nodes = ["node1", "node2"]
    inputs = inputs_of(logs, nodes)
    write_lines(inputs, 0, 5000)  # history, there before the producers start
    prefix = nets.prefix(ns)
    collectors = [
        Daemon(
            "collector",
            collector_config(tmp_path, name, {"connect": [group]}),
            tmp_path,
            prefix=prefix,
        )
        for name in ("c1", "c2")
    ]
    producers = [
        Daemon(
            "producer",
            producer_config(
                tmp_path,
                node,
                sources_of(logs, node),
                {"bind": [group], "replay": f"tcp://127.0.0.1:{7460 + i}"},
            ),
            tmp_path,
            prefix=prefix,
        )
        for i, node in enumerate(nodes)
    ]
    try:
        for daemon in (*collectors, *producers):
            daemon.start()
        write_lines(inputs, 5000, 20000)  # appended while everything runs
        for collector in collectors:
            wait_exact(collector, output_of(collector), inputs)
            check_came_by_multicast(collector)
    finally:
        stop_all(*producers, *collectors)


@needs_root
def test_a_tcp_pair_becomes_a_multicast_pair_by_one_endpoint_line_each(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    ns = nets.add("lo")
    logs = tmp_path / "logs"
    logs.mkdir()
    inputs = inputs_of(logs, ["web-01"])
    tcp = "tcp://127.0.0.1:7450"
    pcfg = producer_config(
        tmp_path,
        "web-01",
        sources_of(logs, "web-01"),
        {"bind": [tcp], "replay": "tcp://127.0.0.1:7451"},
    )
    ccfg = collector_config(tmp_path, "c1", {"connect": [tcp]})
    out = tmp_path / "out-c1"
    prefix = nets.prefix(ns)
    producer = Daemon("producer", pcfg, tmp_path, prefix=prefix)
    collector = Daemon("collector", ccfg, tmp_path, prefix=prefix)
    try:
        # The tcp pair works...
        collector.start()
        producer.start()
        write_lines(inputs, 0, 10000)
        wait_exact(collector, out, inputs)
        stop_all(producer, collector)
        # ...and one endpoint line in each config makes it a multicast pair,
        # which goes on where the tcp pair stopped.
        group = "epgm://127.0.0.1;239.192.82.1:7450"
        switch_line(pcfg, f"- {tcp}", f"- {group}")
        switch_line(ccfg, f"- {tcp}", f"- {group}")
        collector.start()
        producer.start()
        write_lines(inputs, 10000, 10000)
        wait_exact(collector, out, inputs)
        check_came_by_multicast(collector)
        assert f"connected on {group}" in collector.output()
    finally:
        stop_all(producer, collector)


# -- two namespaces joined by a veth pair, as two hosts -----------------------------


@needs_root
def test_two_hosts_over_veth_and_a_late_collector_gets_the_history_by_replay(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    hosts_a, hosts_b = nets.add("a"), nets.add("b")
    nets.veth(hosts_a, "10.250.81.1/24", hosts_b, "10.250.81.2/24")
    group = "239.192.81.1:7450"
    logs = tmp_path / "logs"
    logs.mkdir()
    nodes = ["node1", "node2"]
    inputs = inputs_of(logs, nodes)
    write_lines(inputs, 0, 5000)
    producers = [
        Daemon(
            "producer",
            producer_config(
                tmp_path,
                node,
                sources_of(logs, node),
                {
                    "bind": [f"epgm://10.250.81.1;{group}"],
                    "replay": f"tcp://10.250.81.1:{7460 + i}",
                    # A late collector learns of idle streams from heartbeats,
                    # which name every stream once per 10 intervals.
                    "heartbeat_interval": "200ms",
                },
            ),
            tmp_path,
            prefix=nets.prefix(hosts_a),
        )
        for i, node in enumerate(nodes)
    ]

    def collector(name: str) -> Daemon:
        subscribe = {"connect": [f"epgm://10.250.81.2;{group}"], "start_at": "beginning"}
        config = collector_config(tmp_path, name, subscribe)
        return Daemon("collector", config, tmp_path, prefix=nets.prefix(hosts_b))

    collectors = [collector("c1"), collector("c2")]
    late = collector("c3")
    try:
        for daemon in (*collectors, *producers):
            daemon.start()
        write_lines(inputs, 5000, 20000)
        for c in collectors:
            wait_exact(c, output_of(c), inputs)
            check_came_by_multicast(c)
        # Nothing more is written: all that c3 has, it got by replay over tcp.
        late.start()
        total = sum(path.stat().st_size for path in inputs.values())
        probes = wait_exact(late, output_of(late), inputs)
        # The probes were written after it joined: they may come either way.
        assert total <= counters(late)["bytes_repaired"] <= total + probes, counters(late)
    finally:
        stop_all(*producers, *collectors, late)


# -- losses: PGM repairs within its window, replay beyond it -------------------------


def two_hosts_pair(tmp_path: Path, nets: NetNamespaces) -> tuple[Daemon, Daemon, dict[str, Path]]:
    """A producer on host a, a collector on host b, joined by a veth pair."""
    host_a, host_b = nets.add("a"), nets.add("b")
    nets.veth(host_a, "10.250.86.1/24", host_b, "10.250.86.2/24")
    logs = tmp_path / "logs"
    logs.mkdir()
    publish = {"bind": ["epgm://10.250.86.1;239.192.86.1:7450"], "replay": "tcp://10.250.86.1:7451"}
    pcfg = producer_config(tmp_path, "web-01", sources_of(logs, "web-01"), publish)
    ccfg = collector_config(tmp_path, "c1", {"connect": ["epgm://10.250.86.2;239.192.86.1:7450"]})
    producer = Daemon("producer", pcfg, tmp_path, prefix=nets.prefix(host_a))
    collector = Daemon("collector", ccfg, tmp_path, prefix=nets.prefix(host_b))
    return producer, collector, inputs_of(logs, ["web-01"])


@needs_root
def test_a_collector_frozen_while_16_mb_go_past_gets_them_from_pgm_repairs(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    """Its 4 MiB socket buffer overflows; the producer's window (100 Mbit/s x 2 s,
    the defaults: 25 MB) still holds what was lost, so PGM repairs it: more
    comes over the group than the buffer could have kept. (Some of it, 2-5 MB
    here, still comes by replay over tcp: PGM does not repair it all.)"""
    producer, collector, inputs = two_hosts_pair(tmp_path, nets)
    try:
        collector.start()
        producer.start()
        write_lines(inputs, 0, 1000)
        wait_exact(collector, output_of(collector), inputs)
        before = counters(collector)
        collector.signal(signal.SIGSTOP)
        try:
            write_lines(inputs, 1000, 80000)
            wait_until(lambda: counters(producer)["lines_out"] >= 162000, 30)
            time.sleep(1.0)
        finally:
            collector.signal(signal.SIGCONT)
        wait_exact(collector, output_of(collector), inputs, timeout_s=60)
        after = counters(collector)
        written = after["bytes_written"] - before["bytes_written"]
        by_replay = after["bytes_repaired"] - before["bytes_repaired"]
        assert written - by_replay > PGM_RCVBUF_BYTES, (written, by_replay)
        check_came_by_multicast(collector, since=before)
    finally:
        stop_all(producer, collector)


@needs_root
def test_what_a_collector_missed_on_the_group_comes_by_replay_over_tcp(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    """PGM keeps nothing for a receiver that was not there: a collector killed
    while lines go past gets them by replay when it is back, from its
    checkpoint, and takes the group again for what follows."""
    producer, collector, inputs = two_hosts_pair(tmp_path, nets)
    try:
        collector.start()
        producer.start()
        write_lines(inputs, 0, 1000)
        wait_exact(collector, output_of(collector), inputs)
        collector.kill()
        write_lines(inputs, 1000, 20000)
        wait_until(lambda: counters(producer)["lines_out"] >= 42000, 30)
        collector.start()
        wait_exact(collector, output_of(collector), inputs)
        missed = 2 * 20000 * 100  # two files of 20,000 lines of 100 bytes
        assert counters(collector)["bytes_repaired"] >= missed, counters(collector)
        before = counters(collector)
        write_lines(inputs, 21000, 1000)
        wait_exact(collector, output_of(collector), inputs)
        check_came_by_multicast(collector, since=before)
    finally:
        stop_all(producer, collector)


@needs_root
def test_a_collector_cut_off_past_its_deafness_limit_resubscribes_and_misses_nothing(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    """Its link down for longer than DEAF_AFTER_S: it reopens its subscription
    (libzmq's PGM receiver may never hear again after such a loss), and once
    the link is back, what went past comes by replay and what follows by the group."""
    producer, collector, inputs = two_hosts_pair(tmp_path, nets)
    host_b = nets.names[1]
    try:
        collector.start()
        producer.start()
        write_lines(inputs, 0, 1000)
        wait_exact(collector, output_of(collector), inputs)
        nets.set_veths(host_b, up=False)
        try:
            write_lines(inputs, 1000, 5000)
            wait_until(lambda: "reopening the subscription" in collector.output(), 30)
        finally:
            nets.set_veths(host_b, up=True)
        write_lines(inputs, 6000, 1000)
        wait_exact(collector, output_of(collector), inputs, timeout_s=60)
        assert counters(collector)["bytes_repaired"] >= 2 * 5000 * 100, counters(collector)
        assert collector.proc is not None and collector.proc.poll() is None
        before = counters(collector)
        write_lines(inputs, 7000, 1000)
        wait_exact(collector, output_of(collector), inputs)
        check_came_by_multicast(collector, since=before)
    finally:
        stop_all(producer, collector)


# -- a collector that cannot write for a while --------------------------------------


@needs_root
def test_a_multicast_collector_paused_by_a_full_disk_takes_everything_after(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    """While the disk is full the collector reads nothing; libzmq keeps taking
    packets from the group. A PGM receiver whose queue reaches its high-water
    mark stops for good or aborts (libzmq 4.3): apply_pgm must prevent it."""
    if shutil.which("mount") is None:
        pytest.fail("needs mount(8) for a small tmpfs")
    ns = nets.add("lo")
    group = "epgm://127.0.0.1;239.192.83.1:7450"
    logs = tmp_path / "logs"
    logs.mkdir()
    inputs = inputs_of(logs, ["web-01"])
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(out)], check=True, timeout=30
    )
    try:
        pcfg = producer_config(
            tmp_path,
            "web-01",
            sources_of(logs, "web-01"),
            {"bind": [group], "replay": "tcp://127.0.0.1:7451"},
        )
        ccfg = collector_config(
            tmp_path,
            "c1",
            {"connect": [group]},
            {"path": str(out / "{topic}" / "{node}-{source}.log")},
        )
        prefix = nets.prefix(ns)
        producer = Daemon("producer", pcfg, tmp_path, prefix=prefix)
        collector = Daemon("collector", ccfg, tmp_path, prefix=prefix)
        try:
            collector.start()
            producer.start()
            write_lines(inputs, 0, 1000)
            wait_exact(collector, out, inputs)
            filler = out / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"],
                capture_output=True,
                timeout=30,
            )
            # 8 MB while the collector cannot write: far over its receive_hwm of 16 blocks.
            write_lines(inputs, 1000, 40000)
            wait_until(lambda: counters(collector)["write_errors"] > 0, 20)
            wait_until(lambda: counters(producer)["lines_out"] >= 82000, 30)
            time.sleep(1.0)
            filler.unlink()
            write_lines(inputs, 41000, 1000)  # and the group still carries new lines
            wait_exact(collector, out, inputs, timeout_s=60)
        finally:
            stop_all(producer, collector)
    finally:
        if subprocess.run(["umount", str(out)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(out)], capture_output=True, timeout=30)


# -- socket options and clear errors (no namespace needed) --------------------------


def test_apply_pgm_sets_rate_recovery_hops_and_an_unbounded_receive_queue() -> None:
    context = zmq.Context()
    pub, sub = context.socket(zmq.XPUB), context.socket(zmq.SUB)
    try:
        pgm = PgmConfig(rate_kbps=250_000, recovery_interval_s=1.5, hops=3)
        for sock in (pub, sub):
            sock.setsockopt(zmq.RCVHWM, 16)
            apply_pgm(sock, pgm)
            assert sock.getsockopt(zmq.RATE) == 250_000
            assert sock.getsockopt(zmq.RECOVERY_IVL) == 1500
            assert sock.getsockopt(zmq.MULTICAST_HOPS) == 3
        assert sub.getsockopt(zmq.RCVHWM) == 0
        assert sub.getsockopt(zmq.RCVBUF) == PGM_RCVBUF_BYTES
        assert sub.getsockopt(zmq.MAXMSGSIZE) == MAX_PACKED_BYTES
        assert pub.getsockopt(zmq.RCVHWM) == 16
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        context.term()


def test_a_low_rmem_max_is_named_with_the_sysctl_to_raise_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    low.write_text("212992\n")
    high.write_text(f"{PGM_RCVBUF_BYTES}\n")
    warn_if_rmem_capped(PGM_RCVBUF_BYTES, str(high))
    assert caplog.records == []
    warn_if_rmem_capped(PGM_RCVBUF_BYTES, str(low))
    [record] = caplog.records
    assert "212992" in record.getMessage()
    assert f"sysctl -w net.core.rmem_max={PGM_RCVBUF_BYTES}" in record.getMessage()


@pytest.mark.parametrize(
    ("publish", "expected"),
    [
        (
            {"bind": ["epgm://eth0;239.192.0.1:7450"], "replay": "tcp://*:7451"},
            "'eth0' looks like an interface name: give the interface's IP address",
        ),
        (
            {
                "bind": ["epgm://192.0.2.10;239.192.0.1:7450"],
                "replay": "tcp://*:7451",
                "curve": {"secret_key_file": "k.key_secret", "allow_dir": "allowed"},
            },
            "CURVE cannot protect multicast (epgm/pgm) traffic",
        ),
    ],
)
def test_check_config_refuses_multicast_mistakes_in_one_line(
    tmp_path: Path, publish: dict[str, Any], expected: str
) -> None:
    config = producer_config(tmp_path, "web-01", sources_of(tmp_path, "web-01"), publish)
    result = subprocess.run(
        [sys.executable, "-m", "zaggd", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
    assert len((result.stderr + result.stdout).strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def run_to_exit(daemon: Daemon, timeout_s: float = 30.0) -> str:
    """Start a daemon that should refuse to run; its one-line error (OpenPGM's
    own "Warn:" lines about loopback interfaces aside)."""
    daemon.start(wait_ready=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(timeout=timeout_s)
    assert code != 0
    assert daemon.notify is not None and not daemon.notify.has("READY=1")
    lines = [
        line
        for line in daemon.output().splitlines()
        if line
        and not line.startswith(("---", "Warn: Interface"))
        # A first start says it starts as a new instance (a warning, not the refusal).
        and "no offset store and no stream journal" not in line
    ]
    assert len(lines) == 1, lines
    return lines[0]


@needs_root
def test_pgm_without_cap_net_raw_is_refused_in_one_line_not_aborted(
    tmp_path: Path, nets: NetNamespaces
) -> None:
    if shutil.which("setpriv") is None:
        pytest.fail("needs setpriv(1) from util-linux")
    ns = nets.add("lo")
    publish = {"bind": ["pgm://127.0.0.1;239.192.84.1:7450"], "replay": "tcp://127.0.0.1:7451"}
    config = producer_config(tmp_path, "web-01", sources_of(tmp_path, "web-01"), publish)
    no_raw = [*nets.prefix(ns), "setpriv", "--bounding-set=-net_raw"]
    line = run_to_exit(Daemon("producer", config, tmp_path, prefix=no_raw))
    assert "pgm://127.0.0.1;239.192.84.1:7450" in line
    assert "needs CAP_NET_RAW" in line and "use epgm://" in line


@needs_root
def test_an_address_on_no_interface_gets_a_hint(tmp_path: Path, nets: NetNamespaces) -> None:
    ns = nets.add("lo")
    subscribe = {"connect": ["epgm://192.0.2.10;239.192.85.1:7450"]}
    config = collector_config(tmp_path, "c1", subscribe)
    line = run_to_exit(Daemon("collector", config, tmp_path, prefix=nets.prefix(ns)))
    assert line == (
        "zaggd: cannot connect to epgm://192.0.2.10;239.192.85.1:7450: Invalid argument "
        "(is the address before ';' an IP address of this host?)"
    )


# -- one frame per multicast message ----------------------------------------------------

topics = st.binary(min_size=1, max_size=wire.MAX_TOPIC_BYTES)
headers = st.binary(max_size=wire.MAX_HEADER_BYTES)
bodies = st.binary(max_size=4096)


@given(topics, headers, bodies)
def test_pack_then_unpack_gives_the_three_frames_back(
    topic: bytes, head: bytes, body: bytes
) -> None:
    packed = wire.pack([topic, head, body])
    assert packed.startswith(topic)  # so SUB prefix filtering still selects by topic
    assert [bytes(f) for f in wire.unpack(packed)] == [topic, head, body]


def test_packed_messages_decode_like_their_frames() -> None:
    header = wire.DataHeader("web-01", "0123456789abcdef", "app", "/var/log/app.log", 0, 8, 2)
    frames = wire.encode_data(b"app", header, b"one\ntwo\n")
    heartbeat = wire.encode_heartbeat(wire.Heartbeat("web-01", "0123456789abcdef", "tcp://h:1", ()))
    for message in (frames, heartbeat):
        assert wire.decode(wire.unpack(wire.pack(message))) == wire.decode(message)


@given(st.binary(max_size=64))
def test_a_malformed_one_frame_message_is_a_protocol_error(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):  # anything else is a bug
        wire.decode(wire.unpack(frame))


@pytest.mark.parametrize(
    "frame",
    [b"", b"abc", b"\x00\x05\x00\x00", b"topic" + wire.PACKED_TRAILER.pack(5, 1)],
)
def test_one_frame_messages_too_short_for_their_lengths_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        wire.unpack(frame)
