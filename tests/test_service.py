"""Running as a service: the notify protocol, watchdog pings, reload, stop, status, logging."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    REPO,
    Daemon,
    append_lines,
    collector_config,
    ends_with,
    free_port,
    is_zaggd_own,
    numbered_lines,
    probe_line,
    producer_config,
    stop_all,
    wait_until,
    write_yaml,
)


def bound_pair(
    tmp_path: Path, sources: list[dict[str, object]] | None = None
) -> tuple[Daemon, Daemon, Path]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    port, replay = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "node1",
        sources or [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{replay}"},
    )
    ccfg = collector_config(tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{port}"]})
    return Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path), logs


def kinds(messages: list[str]) -> list[str]:
    """READY/STATUS/WATCHDOG/... in order, each run of repeats folded into one."""
    out: list[str] = []
    for m in messages:
        k = m.split("=", 1)[0]
        if k in ("MONOTONIC_USEC",):
            continue
        if not out or out[-1] != k:
            out.append(k)
    return out


def test_notify_protocol_order(tmp_path: Path) -> None:
    producer, collector, _logs = bound_pair(tmp_path)
    producer.extra_env = {"WATCHDOG_USEC": "2000000"}
    try:
        producer.start()
        assert producer.notify is not None
        wait_until(lambda: producer.notify.has("WATCHDOG=1"), 10)
        producer.signal(signal.SIGHUP)
        wait_until(lambda: producer.notify.has("RELOADING=1"), 10)
        wait_until(lambda: kinds(producer.notify.poll()).count("READY") == 2, 10)
        time.sleep(1.5)
        producer.signal(signal.SIGTERM)
        assert producer.proc is not None
        assert producer.proc.wait(timeout=30) == 0
        seq = kinds(producer.notify.poll())
        assert seq[0] == "READY"
        assert seq[1] == "STATUS"
        assert "WATCHDOG" in seq[: seq.index("RELOADING")]
        reload_at = seq.index("RELOADING")
        assert seq[reload_at + 1] == "READY"
        assert seq[-1] == "STOPPING"
        status = [m for m in producer.notify.messages if m.startswith("STATUS=")]
        assert "streams" in status[0] and "lines/s" in status[0] and "lag" in status[0]
    finally:
        stop_all(producer, collector)


def test_the_status_sent_with_ready_counts_the_streams_of_the_first_scan(
    tmp_path: Path,
) -> None:
    """`systemctl status` right after start shows what the first scan opened."""
    producer, collector, logs = bound_pair(tmp_path)
    for name in ("a.log", "b.log"):
        (logs / name).write_bytes(b"x\n")
    try:
        producer.start()
        assert producer.notify is not None
        wait_until(lambda: producer.notify.has("STATUS="), 10)
        first = next(m for m in producer.notify.poll() if m.startswith("STATUS="))
        assert first.startswith("STATUS=2 streams (2 open), "), first
    finally:
        stop_all(producer, collector)


def test_status_names_a_rotated_stream_where_its_file_is_now(tmp_path: Path) -> None:
    """app.log -> app.log.1 -> app.log.2 -> app.log.2.gz (logrotate's delaycompress):
    `zaggd status` follows it to the compressed copy."""
    producer, collector, logs = bound_pair(tmp_path)
    log = logs / "app.log"
    log.write_bytes(b"first file line\n" * 10)
    try:
        producer.start()

        def paths() -> dict[str, str]:
            return {row["stream"]: row["path"] for row in producer.status()["streams_detail"]}

        (stream,) = wait_until(paths, 10)
        os.rename(log, logs / "app.log.1")
        log.write_bytes(b"second file line\n")
        wait_until(lambda: paths().get(stream) == str(logs / "app.log.1"), 15)
        os.rename(logs / "app.log.1", logs / "app.log.2")
        with open(logs / "app.log.2", "rb") as plain, gzip.open(logs / "app.log.2.gz", "wb") as gz:
            gz.write(plain.read())
        os.unlink(logs / "app.log.2")
        wait_until(lambda: paths().get(stream) == str(logs / "app.log.2.gz"), 15)
    finally:
        stop_all(producer, collector)


def test_ready_only_after_the_first_scan(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    for i in range(300):
        (logs / f"f{i}.log").write_bytes(b"x\n")
    try:
        producer.start()
        # READY=1 has come: the first scan must already know every file.
        assert producer.status()["streams"] == 300
    finally:
        stop_all(producer, collector)


def blocked_in_fifo_open(pid: int) -> bool:
    """Some thread of `pid` waits in the kernel for a FIFO's other end."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if "fifo_open" in (task / "stack").read_text():
                return True
        except OSError:
            continue
    return False


def stuck_reports(daemon: Daemon) -> int:
    """How often the main loop has found the subscriber making no progress (debug log)."""
    return daemon.output().count("thread zaggd-subscriber is not making progress")


def test_no_watchdog_pings_from_a_stuck_worker(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    # An output "file" that is a FIFO with no reader: opening it blocks the writer thread.
    fifo = tmp_path / "out-c1" / "app" / "node1-app.log"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    collector.extra_env = {"WATCHDOG_USEC": "1000000"}
    try:
        collector.start()
        producer.start()
        assert collector.notify is not None
        wait_until(lambda: collector.notify.has("WATCHDOG=1"), 10)
        (logs / "a.log").write_bytes(b"one line\n")
        # The subscriber is stuck in open(), in the kernel, on the FIFO.
        wait_until(lambda: blocked_in_fifo_open(collector.pid), 20)
        wait_until(lambda: stuck_reports(collector) > 0, 10)
        collector.notify.messages.clear()
        seen = stuck_reports(collector)
        # The main loop runs on (it checks the workers about once a second here
        # and names the stuck one) and sends no ping; the process is alive, not exiting.
        wait_until(lambda: stuck_reports(collector) >= seen + 4, 10)
        assert "WATCHDOG=1" not in collector.notify.poll()
        assert collector.proc is not None and collector.proc.poll() is None
        assert not collector.notify.has("STOPPING=1")
        assert blocked_in_fifo_open(collector.pid)
        # Given a reader, the subscriber's open() returns and the line goes
        # through the FIFO: it was this worker, alive and stuck there.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            got = b""
            deadline = time.monotonic() + 20
            while got != b"one line\n" and time.monotonic() < deadline:
                with contextlib.suppress(BlockingIOError):
                    got += os.read(reader, 100)
                time.sleep(0.05)
            assert got == b"one line\n"
        finally:
            os.close(reader)
    finally:
        collector.kill()
        stop_all(producer)


def test_twenty_reloads_during_a_stream_lose_and_double_nothing(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    try:
        collector.start()
        producer.start()
        log = logs / "a.log"
        done = threading.Event()

        def write() -> None:
            with open(log, "ab") as f:
                for i in range(100):
                    f.write(b"".join(numbered_lines("r", i * 1000, 1000)))
                    f.flush()
                    time.sleep(0.08)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        for i in range(20):
            (producer if i % 2 == 0 else collector).signal(signal.SIGHUP)
            time.sleep(0.35)
        writer.join(timeout=60)
        out = tmp_path / "out-c1" / "app" / "node1-app.log"
        probe = probe_line()  # at the end of the output: every line before it was processed
        append_lines(log, [probe])
        want = log.read_bytes()
        wait_until(lambda: ends_with(out, probe), 60, 0.2)
        assert out.read_bytes() == want
        assert producer.output().count("reloaded") >= 10
        assert collector.output().count("reloaded") >= 10
    finally:
        stop_all(producer, collector)


def test_reload_adds_a_source_and_a_bad_config_keeps_the_running_one(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    try:
        collector.start()
        producer.start()
        (logs / "a.log").write_bytes(b"a1\n")
        other = tmp_path / "other"
        other.mkdir()
        (other / "b.txt").write_bytes(b"b1\n")
        cfg = yaml.safe_load(producer.config.read_text())
        good = dict(cfg)
        good["sources"] = [
            *cfg["sources"],
            {"name": "other", "topic": "other", "paths": [f"{other}/*.txt"]},
        ]
        write_yaml(producer.config, good)
        producer.signal(signal.SIGHUP)
        out_b = tmp_path / "out-c1" / "other" / "node1-other.log"
        wait_until(lambda: out_b.exists() and out_b.read_bytes() == b"b1\n", 15)
        # A bad config: refused with one error line, and the running config keeps working.
        producer.config.write_text(producer.config.read_text() + "bogus_key: 1\n")
        producer.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in producer.output(), 10)
        refusal = [line for line in producer.output().splitlines() if "reload refused" in line]
        assert len(refusal) == 1 and "bogus_key" in refusal[0] and "unknown key" in refusal[0]
        with open(other / "b.txt", "ab") as f:
            f.write(b"b2\n")
        wait_until(lambda: out_b.read_bytes() == b"b1\nb2\n", 15)
        assert producer.proc is not None and producer.proc.poll() is None
    finally:
        stop_all(producer, collector)


def test_reload_moves_both_daemons_to_new_endpoints(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    try:
        collector.start()
        producer.start()
        log = logs / "a.log"
        log.write_bytes(b"".join(numbered_lines("e", 0, 1000)))
        out = tmp_path / "out-c1" / "app" / "node1-app.log"
        wait_until(lambda: out.exists() and out.read_bytes() == log.read_bytes(), 15)
        port, replay = free_port(), free_port()
        pcfg = yaml.safe_load(producer.config.read_text())
        pcfg["publish"] = {
            "bind": [f"tcp://127.0.0.1:{port}"],
            "replay": f"tcp://127.0.0.1:{replay}",
        }
        write_yaml(producer.config, pcfg)
        ccfg = yaml.safe_load(collector.config.read_text())
        ccfg["subscribe"] = {"connect": [f"tcp://127.0.0.1:{port}"]}
        write_yaml(collector.config, ccfg)
        producer.signal(signal.SIGHUP)
        collector.signal(signal.SIGHUP)
        with open(log, "ab") as f:
            f.write(b"".join(numbered_lines("e", 1000, 1000)))
        wait_until(lambda: out.read_bytes() == log.read_bytes(), 30)
    finally:
        stop_all(producer, collector)


def test_reload_changes_topics_and_output_and_removes_a_source(tmp_path: Path) -> None:
    """Live changes with no line lost or doubled: the collector takes a new topic
    (its history comes by replay) and writes to a new folder from the reload on;
    the producer stops a removed source."""
    web = tmp_path / "web"
    web.mkdir()
    sources: list[dict[str, object]] = [
        {"name": "app", "topic": "app", "paths": [f"{tmp_path / 'logs'}/*.log"]},
        {"name": "web", "topic": "web", "paths": [f"{web}/*.log"]},
    ]
    producer, collector, logs = bound_pair(tmp_path, sources)
    ccfg = yaml.safe_load(collector.config.read_text())
    ccfg["subscribe"]["topics"] = ["app"]
    write_yaml(collector.config, ccfg)
    app, site = logs / "a.log", web / "w.log"
    a, w = numbered_lines("a", 0, 3000), numbered_lines("w", 0, 3000)
    old_app = tmp_path / "out-c1" / "app" / "node1-app.log"
    new_app = tmp_path / "out2" / "app" / "node1-app.log"
    new_web = tmp_path / "out2" / "web" / "node1-web.log"

    def holds(path: Path, lines: list[bytes]) -> bool:
        return path.exists() and path.read_bytes() == b"".join(lines)

    try:
        collector.start()
        producer.start()
        append_lines(app, a[:1000])
        append_lines(site, w[:1000])
        wait_until(lambda: holds(old_app, a[:1000]), 15)

        ccfg["subscribe"]["topics"] = ["app", "web"]
        ccfg["output"]["path"] = str(tmp_path / "out2" / "{topic}" / "{node}-{source}.log")
        write_yaml(collector.config, ccfg)
        collector.signal(signal.SIGHUP)
        wait_until(lambda: collector.output().count("reloaded") == 1, 15)
        append_lines(app, a[1000:2000])
        append_lines(site, w[1000:2000])
        wait_until(lambda: holds(new_app, a[1000:2000]), 15)
        wait_until(lambda: holds(new_web, w[:2000]), 15)

        pcfg = yaml.safe_load(producer.config.read_text())
        pcfg["sources"] = pcfg["sources"][:1]
        write_yaml(producer.config, pcfg)
        producer.signal(signal.SIGHUP)
        wait_until(lambda: producer.output().count("reloaded") == 1, 15)
        gaps = collector.status()["counters"]["gaps_found"]
        append_lines(site, w[2000:])
        append_lines(app, a[2000:])
        # The producer sees the removed source's lines before the app's, which
        # follow on the same socket: a stray block would be in before them.
        wait_until(lambda: holds(new_app, a[1000:]), 15)
        # Nor does a heartbeat announce the removed stream's new end (which would
        # open a gap and bring its lines by replay).
        heartbeats = collector.status()["counters"]["heartbeats_in"]
        wait_until(lambda: collector.status()["counters"]["heartbeats_in"] >= heartbeats + 2, 15)
        assert collector.status()["counters"]["gaps_found"] == gaps
        assert holds(old_app, a[:1000])
        assert holds(new_app, a[1000:])
        assert holds(new_web, w[:2000])
        out2 = (tmp_path / "out2").iterdir()
        assert sorted(p.name for p in out2 if not is_zaggd_own(p.name)) == ["app", "web"]
    finally:
        stop_all(producer, collector)


def test_sigterm_drains_writes_state_and_exits_zero(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    try:
        collector.start()
        producer.start()
        (logs / "a.log").write_bytes(b"".join(numbered_lines("t", 0, 20_000)))
        wait_until(lambda: producer.status()["counters"]["lines_out"] >= 20_000, 20)
        start = time.monotonic()
        assert producer.stop() == 0
        assert collector.stop() == 0
        assert time.monotonic() - start < 10
        offsets = json.loads((tmp_path / "state-node1" / "offsets.json").read_text())
        assert [s["offset"] for s in offsets["streams"].values()] == [
            (logs / "a.log").stat().st_size
        ]
        checkpoint = json.loads((tmp_path / "state-c1" / "checkpoint.json").read_text())
        assert [v[0] for v in checkpoint["streams"].values()] == [(logs / "a.log").stat().st_size]
    finally:
        stop_all(producer, collector)


def test_status_command_prints_a_table_and_json(tmp_path: Path) -> None:
    producer, collector, logs = bound_pair(tmp_path)
    try:
        collector.start()
        producer.start()
        (logs / "a.log").write_bytes(b"x\n" * 10)
        wait_until(lambda: producer.status()["counters"]["lines_out"] == 10, 10)
        wait_until(lambda: collector.status()["counters"]["lines_written"] == 10, 10)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        table = subprocess.run(
            [sys.executable, "-m", "zaggd", "status", "-c", str(producer.config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert table.returncode == 0, table.stderr
        assert (
            "producer node1" in table.stdout
            and "lines_out" in table.stdout
            and "a.log" in table.stdout
        )
        raw = subprocess.run(
            [sys.executable, "-m", "zaggd", "status", "--json", "-c", str(collector.config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        answer = json.loads(raw.stdout)
        assert answer["daemon"] == "collector" and answer["counters"]["lines_written"] == 10
        sock = tmp_path / "state-node1" / "control.sock"
        assert (sock.stat().st_mode & 0o777) == 0o600
    finally:
        stop_all(producer, collector)


def test_status_without_a_daemon_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-m", "zaggd", "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 2
    assert (
        r.stderr == f"zaggd: {tmp_path / 'none.sock'}: no control socket (is the daemon running?)\n"
    )


def test_journald_priority_prefixes_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = producer_config(
        tmp_path,
        "node1",
        [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}],
        {"bind": [f"tcp://127.0.0.1:{free_port()}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
    )
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, PYTHONPATH=str(REPO), JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "zaggd", "producer", "-c", str(cfg)], stderr=err, env=env
        )
        try:
            wait_until(lambda: b"ready" in err_path.read_bytes(), 20)
            (tmp_path / "logs" / "gone.log").write_bytes(b"")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    lines = err_path.read_text().splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), lines[:5]
    assert any(line.startswith("<6>") and "ready" in line for line in lines)
    # Elsewhere: plain timestamped lines.
    plain = tmp_path / "plain"
    with open(plain, "wb") as err:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("JOURNAL_STREAM", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "zaggd", "producer", "-c", str(cfg), "--log-level", "warning"],
            stderr=err,
            env=env,
        )
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert "ready" not in plain.read_text()  # --log-level warning hides info


def test_bad_config_at_start_is_one_line_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("node: n1\nsources: notalist\npublish: {bind: ['tcp://127.0.0.1:1']}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-m", "zaggd", "producer", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 78  # EX_CONFIG: the units do not restart on it
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"zaggd: {cfg}:")
    assert "Traceback" not in r.stderr


def test_a_port_in_use_at_start_is_one_line_and_exit_2_for_a_restart(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        logs = tmp_path / "logs"
        logs.mkdir()
        cfg = producer_config(
            tmp_path,
            "n1",
            [{"name": "app", "topic": "app", "paths": [str(logs / "*.log")]}],
            {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
        )
        r = subprocess.run(
            [sys.executable, "-m", "zaggd", "producer", "-c", str(cfg)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            timeout=60,
        )
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        f"zaggd: cannot bind tcp://127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="asking as another user needs root")
def test_status_as_another_user_says_permission_denied_and_who_may_ask() -> None:
    """As the packages lay it out: a state folder 0750 and a socket 0600, both root's here
    (zaggd's under the units); asked by user nobody."""
    from zaggd import runas
    from zaggd.cli import find_sockets
    from zaggd.control import query

    root = Path(tempfile.mkdtemp(prefix="zaggd-status-"))
    try:
        root.chmod(0o755)
        (root / "producer").mkdir(mode=0o750)
        (root / "collector").mkdir(mode=0o750)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock = root / "collector" / "control.sock"
        listening.bind(str(sock))
        sock.chmod(0o600)
        nobody = runas.lookup("nobody")
        assert runas.run_as(nobody, lambda: find_sockets(str(root))) == (
            f"{root}/collector: Permission denied: only root and user root "
            "(the daemon's user) may ask; try sudo"
        )
        (root / "collector").chmod(0o755)  # the folder open, the socket still 0600
        assert runas.run_as(nobody, lambda: query(str(sock))) == (
            f"{sock}: Permission denied: only root and user root (the daemon's user) may ask; "
            "try sudo"
        )
        listening.close()
    finally:
        shutil.rmtree(root)
