"""Reload (SIGHUP) under stress and with bad configs: real daemons as subprocesses.

The promise: a reload either applies the whole new config or refuses it with
one error line and keeps the running one (sockets, threads, keys); a storm of
SIGHUPs coalesces and never delays a SIGTERM; lines keep flowing exactly once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    Daemon,
    append_lines,
    numbered_lines,
    stop_all,
    tailing_pair,
    wait_until,
    write_yaml,
)

SIGNAL_GAP_S = 0.005


class Pair:
    """Producer web-01 (binding) tailing logs/app.log, collector c1 connecting."""

    def __init__(self, tmp_path: Path) -> None:
        self.log, self.producer, self.collector = tailing_pair(tmp_path, {})
        self.out = tmp_path / "out-c1" / "app" / "web-01-app.log"
        self.written = 0

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
    pair = Pair(tmp_path).start()
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
    pair = Pair(tmp_path).start()
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
