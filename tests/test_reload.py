"""Reload (SIGHUP) under stress and with bad configs: real daemons as subprocesses.

The promise: a reload either applies the whole new config or refuses it with
one error line and keeps the running one (sockets, threads, keys); a storm of
SIGHUPs coalesces and never delays a SIGTERM; lines keep flowing exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    REPO,
    Daemon,
    append_lines,
    numbered_lines,
    stop_all,
    tailing_pair,
    wait_until,
    write_yaml,
)
from tests.test_security import (
    allow,
    collector_binding,
    connecting_producer,
    curve_client,
    make_keys,
)

SIGNAL_GAP_S = 0.005


class Pair:
    """A producer tailing `log`, a collector writing it to `out`."""

    def __init__(self, log: Path, producer: Daemon, collector: Daemon, out: Path) -> None:
        self.log, self.producer, self.collector, self.out = log, producer, collector, out
        self.written = 0

    @classmethod
    def tailing(cls, tmp_path: Path) -> Pair:
        """Producer web-01 binding, collector c1 connecting; no CURVE."""
        log, producer, collector = tailing_pair(tmp_path, {})
        return cls(log, producer, collector, tmp_path / "out-c1" / "app" / "web-01-app.log")

    @classmethod
    def curve(cls, tmp_path: Path) -> Pair:
        """Collector c1 binding with CURVE and allow_dir, producer web-01 connecting to it."""
        keys = make_keys(tmp_path, "collector", "web-01")
        collector, data, replay = collector_binding(
            tmp_path, keys, allow(tmp_path / "allowed", keys, "web-01")
        )
        producer, logs = connecting_producer(
            tmp_path, "web-01", data, replay, curve_client(keys, "web-01", "collector")
        )
        out = tmp_path / "out-c1" / "app" / "web-01-app.log"
        return cls(logs / "a.log", producer, collector, out)

    def start(self) -> Pair:
        self.collector.start()
        self.producer.start()
        return self

    def daemon(self, kind: str) -> Daemon:
        return self.producer if kind == "producer" else self.collector

    def lines_flow(self, count: int = 500, timeout_s: float = 30.0) -> None:
        """Append `count` lines; wait until the output holds every line so far, exactly once."""
        append_lines(self.log, numbered_lines("r", self.written, count))
        self.written += count
        want = self.log.read_bytes()
        wait_until(lambda: self.out.exists() and self.out.stat().st_size >= len(want), timeout_s)
        assert self.out.read_bytes() == want

    def stop(self) -> None:
        stop_all(self.producer, self.collector)


def reloaded_lines(daemon: Daemon) -> int:
    return daemon.output().count(f"reloaded {daemon.config}")


def refusals(daemon: Daemon) -> list[str]:
    return [line for line in daemon.output().splitlines() if "reload refused" in line]


def stop_within(daemon: Daemon, timeout_s: float) -> tuple[int, float]:
    """SIGTERM; the exit status and how long it took."""
    started = time.monotonic()
    status = daemon.stop(timeout_s=timeout_s)
    return status, time.monotonic() - started


def test_two_hundred_sighups_coalesce_and_sigterm_is_served_at_once(tmp_path: Path) -> None:
    pair = Pair.tailing(tmp_path).start()
    try:
        pair.lines_flow()
        for daemon in (pair.producer, pair.collector):
            for _ in range(200):
                daemon.signal(signal.SIGHUP)
                time.sleep(SIGNAL_GAP_S)
            status, took_s = stop_within(daemon, timeout_s=20)
            assert status == 0, daemon.output()[-3000:]
            assert took_s < 10, f"{daemon.kind} took {took_s:.1f} s to stop"
            assert reloaded_lines(daemon) >= 1
        # A producer's reload waits for its tailer (about 250 ms): 200 SIGHUPs in 1 s
        # coalesce into a few. A collector's reload of an unchanged config is quicker
        # than the gap between signals, so it may serve each one.
        assert reloaded_lines(pair.producer) <= 20, reloaded_lines(pair.producer)
        assert pair.out.read_bytes() == pair.log.read_bytes()
    finally:
        pair.stop()


# --- a config path that is not a regular file ----------------------------------------


@pytest.mark.parametrize("kind", ["producer", "collector"])
def test_config_replaced_by_a_fifo_is_refused_at_reload(tmp_path: Path, kind: str) -> None:
    pair = Pair.tailing(tmp_path).start()
    daemon = pair.daemon(kind)
    aside = daemon.config.with_suffix(".aside")
    try:
        pair.lines_flow()
        os.rename(daemon.config, aside)
        os.mkfifo(daemon.config)
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: refusals(daemon), 10)
        assert len(refusals(daemon)) == 1
        assert refusals(daemon)[0].endswith(
            f"reload refused, keeping the running config: {daemon.config}: "
            "not a regular file (a FIFO)"
        )
        pair.lines_flow()
        os.unlink(daemon.config)
        os.rename(aside, daemon.config)
        assert reloaded_lines(daemon) == 0
        assert daemon.stop() == 0
    finally:
        pair.stop()


def edit(config: Path, change: Any) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    write_yaml(config, data)


def test_pending_events_coalesce_and_a_stop_outranks_a_reload() -> None:
    from zaggd.service import Service

    service = Service()
    for _ in range(50):
        service.events.put("hup")
    assert service._next_event() == "hup"
    assert service.events.empty()
    for _ in range(50):
        service.events.put("hup")
    service.events.put("term")
    service.events.put("hup")
    assert service._next_event() == "term"
    service.events.put("term")
    service.crash("zaggd-tailer")
    assert service._next_event() == "crash:zaggd-tailer"


# --- a reload checks every key file before touching anything --------------------------


def refused_and_kept(pair: Pair, daemon: Daemon, problem: str) -> None:
    """One refusal naming `problem`, no "reloaded", lines still flow, and a clean stop."""
    wait_until(lambda: refusals(daemon), 15)
    lines = refusals(daemon)
    assert len(lines) == 1, lines
    assert problem in lines[0], lines[0]
    assert "Traceback" not in daemon.output()
    pair.lines_flow()
    assert reloaded_lines(daemon) == 0
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert [pair.producer.stop(), pair.collector.stop()] == [0, 0]


def without_read_override() -> list[str]:
    """A command prefix running a root process that file permissions apply to."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to take CAP_DAC_OVERRIDE from root")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def refused_reload(pair: Pair, daemon: Daemon, change: Callable[[], None], problem: str) -> None:
    """Start the pair, see lines flow, `change` the files, SIGHUP `daemon`: refused, kept."""
    try:
        pair.start()
        pair.lines_flow()
        change()
        daemon.signal(signal.SIGHUP)
        refused_and_kept(pair, daemon, problem)
    finally:
        pair.stop()


def test_collector_reload_naming_a_secret_key_it_cannot_read_is_refused(tmp_path: Path) -> None:
    pair = Pair.curve(tmp_path)
    pair.collector.prefix = without_read_override()
    keys = tmp_path / "keys"
    unreadable = keys / "other.key_secret"

    def change() -> None:
        shutil.copy(keys / "collector.key_secret", unreadable)
        unreadable.chmod(0)
        curve = {"secret_key_file": str(unreadable)}
        edit(pair.collector.config, lambda c: c["subscribe"]["curve"].update(curve))

    problem = f"{unreadable}: cannot read key file: Permission denied"
    refused_reload(pair, pair.collector, change, problem)


def test_producer_reload_with_a_typo_in_server_key_file_is_refused(tmp_path: Path) -> None:
    pair = Pair.curve(tmp_path)
    typo = tmp_path / "keys" / "colector.key"
    curve = {"server_key_file": str(typo)}
    change = partial(edit, pair.producer.config, lambda c: c["publish"]["curve"].update(curve))
    refused_reload(pair, pair.producer, change, f"{typo}: key file not found")


def test_reload_with_a_typo_in_allow_dir_is_refused(tmp_path: Path) -> None:
    pair = Pair.curve(tmp_path)
    typo = tmp_path / "alowed"
    curve = {"allow_dir": str(typo)}
    change = partial(edit, pair.collector.config, lambda c: c["subscribe"]["curve"].update(curve))
    refused_reload(pair, pair.collector, change, f"{typo}: allow_dir not found")
    assert "allowlist not reloaded" not in pair.collector.output()


def test_reload_with_a_damaged_key_file_and_the_same_config_is_refused(tmp_path: Path) -> None:
    """check-config would refuse it: so does a reload, though the config text is unchanged."""
    pair = Pair.curve(tmp_path)
    secret = tmp_path / "keys" / "web-01.key_secret"
    change = partial(secret.write_text, "not a key\n")
    problem = f"{secret}: malformed key file: no public-key line"
    refused_reload(pair, pair.producer, change, problem)


# --- a failure while applying rolls back to the running config --------------------------


@pytest.mark.parametrize("kind", ["producer", "collector"])
def test_reload_onto_a_port_in_use_rolls_back(tmp_path: Path, kind: str) -> None:
    """The binding side: the producer of a plain pair, the collector of a CURVE pair."""
    pair = Pair.tailing(tmp_path) if kind == "producer" else Pair.curve(tmp_path)
    daemon = pair.daemon(kind)
    section = "publish" if kind == "producer" else "subscribe"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        change = partial(edit, daemon.config, lambda c: c[section].update(bind=[endpoint]))
        refused_reload(pair, daemon, change, f"cannot bind {endpoint}: Address already in use")


# --- `zaggd reload`: what the units' ExecReload= runs ----------------------------------


def zaggd_reload(daemon: Daemon, *extra: str) -> subprocess.CompletedProcess[str]:
    """`zaggd reload -c FILE --pid PID`, as the units run it."""
    return subprocess.run(
        [sys.executable, "-m", "zaggd", "reload", "-c", str(daemon.config), *extra],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )


@pytest.mark.parametrize("kind", ["producer", "collector"])
def test_zaggd_reload_exits_non_zero_when_the_daemon_keeps_its_config(
    tmp_path: Path, kind: str
) -> None:
    """Refused for a reason only the running daemon knows (a port in use, a node renamed):
    the command fails with the daemon's own reason; applied, it says so and exits 0."""
    pair = Pair.tailing(tmp_path).start()
    daemon = pair.daemon(kind)
    pid = str(daemon.pid)
    try:
        applied = zaggd_reload(daemon, "--pid", pid)
        assert (applied.returncode, applied.stdout) == (0, f"reloaded {daemon.config}\n"), (
            applied.stderr
        )
        if kind == "producer":
            edit(daemon.config, lambda c: c.update(node="renamed"))
            problem = "node and state_dir cannot change while running; restart instead"
        else:
            edit(daemon.config, lambda c: c["output"].update(path="/proc/zaggd/{topic}.log"))
            problem = "/proc/zaggd: cannot create the output folder"
        refused = zaggd_reload(daemon, "--pid", pid)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.startswith("zaggd: reload refused, keeping the running config: "), (
            refused.stderr
        )
        assert problem in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert len(refusals(daemon)) == 1
        pair.lines_flow()
    finally:
        pair.stop()


def test_zaggd_reload_of_a_config_that_does_not_load_fails_and_tells_the_daemon(
    tmp_path: Path,
) -> None:
    pair = Pair.tailing(tmp_path).start()
    daemon = pair.producer
    try:
        daemon.config.write_text(daemon.config.read_text() + "bogus: [\n")
        refused = zaggd_reload(daemon, "--pid", str(daemon.pid))
        assert refused.returncode == 2
        assert refused.stderr.startswith(
            f"zaggd: reload refused, keeping the running config: {daemon.config}:"
        ), refused.stderr
        # The daemon heard of it (SIGHUP) and refused it too: its STATUS= says so.
        wait_until(lambda: refusals(daemon), 15)
        assert daemon.notify is not None
        wait_until(
            lambda: daemon.notify.has("STATUS=") and "last reload refused" in last_status(daemon),
            15,
        )
        pair.lines_flow()
    finally:
        pair.stop()


def last_status(daemon: Daemon) -> str:
    assert daemon.notify is not None
    return [m for m in daemon.notify.poll() if m.startswith("STATUS=")][-1]


def test_zaggd_reload_refuses_to_ask_another_daemon(tmp_path: Path) -> None:
    """--pid names the daemon being reloaded: a state_dir that now leads to another
    daemon's control socket is not reloaded in its place."""
    pair = Pair.tailing(tmp_path).start()
    try:
        other = zaggd_reload(pair.producer, "--pid", str(pair.collector.pid))
        assert other.returncode == 2
        assert "state_dir cannot change while running; restart instead" in other.stderr
        assert f"control socket of PID {pair.producer.pid}, not of the daemon" in other.stderr
        assert reloaded_lines(pair.producer) == 0
    finally:
        pair.stop()


# --- CURVE: what the log says at start and at reload ------------------------------------


def reload_and_wait(daemon: Daemon) -> str:
    """SIGHUP; the log lines the reload wrote, once it has ended."""
    before = len(daemon.output())
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: "reloaded" in daemon.output()[before:] or "refused" in daemon.output()[before:], 15
    )
    return daemon.output()[before:]


def test_curve_messages_at_start_and_reload_say_what_is_so(tmp_path: Path) -> None:
    pair = Pair.curve(tmp_path)
    allowed = tmp_path / "allowed"
    collector = pair.collector
    try:
        pair.start()
        pair.lines_flow()
        started = [line for line in collector.output().splitlines() if "collector started" in line]
        assert len(started) == 1 and started[0].endswith(
            f"CURVE on: key {tmp_path / 'keys' / 'collector.key_secret'}, "
            f"1 client keys allowed in {allowed}"
        ), started
        producer_started = [
            line
            for line in pair.producer.output().splitlines()
            if "producer web-01 started" in line
        ]
        assert "CURVE on" in producer_started[0] and "pinning" in producer_started[0]

        # Nothing changed: no allowlist line, and "nothing changed" is true.
        said = reload_and_wait(collector)
        assert "allowlist" not in said and f"reloaded {collector.config}: nothing changed" in said

        # Only the allowlist changed: it says what, and not "nothing changed".
        make_keys(tmp_path, "web-02")
        allow(allowed, tmp_path / "keys", "web-02")
        said = reload_and_wait(collector)
        assert f"allowlist reloaded: {allowed}, 2 keys (added: web-02; removed: none)" in said
        assert "nothing changed" not in said
        assert f"reloaded {collector.config}: the allowlist changed, the config did not" in said

        # CURVE removed: no allowlist is read, and the log says CURVE is off.
        edit(collector.config, lambda c: c["subscribe"].pop("curve"))
        said = reload_and_wait(collector)
        assert "allowlist" not in said, said
        assert "reload: CURVE off (connections neither encrypted nor authenticated)" in said
        assert f"reloaded {collector.config}" in said
    finally:
        pair.stop()
