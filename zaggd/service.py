"""The main loop: signals, sdnotify, watchdog pings, reload and stop.

Signal handlers only enqueue. The main loop wakes on that queue or once a
second and takes every pending event at once: a stop drops a pending reload,
and the SIGHUPs received during a reload make one more reload, not one each.
It dispatches the event, refreshes STATUS= and sends WATCHDOG=1 only when
every worker thread is alive and has made progress since the last ping.
The SystemdNotifier is used from this loop alone.

A reload asked for through `request_reload` (the control socket's `reload`,
what the units' ExecReload= uses) learns how it ended: applied, or refused
and why, so that `systemctl reload` fails when the daemon kept its config.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

import sdnotify

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0
NOTIFY_TIMEOUT_S = 0.5


class Worker(threading.Thread):
    """A daemon thread whose loop calls `tick()` each turn; a crash stops the daemon."""

    def __init__(self, name: str, on_crash: Callable[[str], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.progress = 0
        self._on_crash = on_crash
        self.stop_event = threading.Event()

    def tick(self) -> None:
        self.progress += 1

    def run(self) -> None:
        try:
            self.work()
        except Exception:
            log.error("thread %s crashed (a bug):\n%s", self.name, traceback.format_exc())
            self._on_crash(self.name)

    def work(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stop_event.set()


class Daemon(Protocol):
    def workers(self) -> list[Worker]: ...
    def status_line(self) -> str: ...
    def reload(self) -> str | None:
        """Apply the config file anew; None when applied, else why it was refused."""
        ...

    def shutdown(self) -> bool: ...


class ReloadRequest:
    """One asker waiting for a reload that starts after it asked, and its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.refusal: str | None = None

    def finish(self, refusal: str | None) -> None:
        self.refusal = refusal
        self.done.set()


class Service:
    """Carries a started daemon through its life until SIGTERM, then stops it."""

    def __init__(self) -> None:
        # SimpleQueue.put is reentrant: safe from a signal handler that interrupts get().
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.notifier = sdnotify.SystemdNotifier()
        # A notify socket nobody reads must not stall the main loop (sends fail instead).
        sock = getattr(self.notifier, "socket", None)
        if sock is not None:
            sock.settimeout(NOTIFY_TIMEOUT_S)
        self._watchdog_s = watchdog_interval_s()
        self._next_ping = 0.0
        self._last_progress: dict[str, int] = {}
        self._crashed = False
        self._reload_lock = threading.Lock()
        self._reload_requests: list[ReloadRequest] = []
        self._refused_reload: str | None = None

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.events.put("term"))
        signal.signal(signal.SIGINT, lambda *_: self.events.put("term"))
        signal.signal(signal.SIGHUP, lambda *_: self.events.put("hup"))

    def crash(self, thread_name: str) -> None:
        self.events.put(f"crash:{thread_name}")

    def notify(self, text: str) -> None:
        self.notifier.notify(text)

    def request_reload(self) -> ReloadRequest:
        """A reload like SIGHUP's, whose outcome the returned request receives (any thread)."""
        request = ReloadRequest()
        with self._reload_lock:
            self._reload_requests.append(request)
        self.events.put("hup")
        return request

    def _take_reload_requests(self) -> list[ReloadRequest]:
        with self._reload_lock:
            taken, self._reload_requests = self._reload_requests, []
        return taken

    def _status(self, daemon: Daemon) -> str:
        line = daemon.status_line()
        if self._refused_reload is not None:
            line += f"; last reload refused: {self._refused_reload}"
        return f"STATUS={line}"

    def run(self, daemon: Daemon) -> int:
        """Send READY=1 and loop until stopped; returns the exit status."""
        self.notify("READY=1")
        self.notify(self._status(daemon))
        log.info("ready")
        next_status = time.monotonic() + STATUS_INTERVAL_S
        while True:
            event = self._next_event()
            if event == "term":
                break
            if event.startswith("crash:"):
                self._crashed = True
                break
            if event == "hup":
                self._reload(daemon)
            now = time.monotonic()
            if now >= next_status:
                self.notify(self._status(daemon))
                next_status = now + STATUS_INTERVAL_S
            if self._watchdog_s is not None and now >= self._next_ping:
                if self._workers_progressing(daemon):
                    self.notify("WATCHDOG=1")
                # Twice per watchdog period, as sd_watchdog_enabled(3) advises; never faster than the loop.
                self._next_ping = now + max(self._watchdog_s / 2 - 0.1, 0.9)
        self.notify("STOPPING=1")
        for request in self._take_reload_requests():
            request.finish("the daemon is stopping")
        log.info("stopping: draining and writing state")
        clean = daemon.shutdown()
        log.info("stopped")
        return 0 if clean and not self._crashed else 1

    def _next_event(self) -> str:
        """The most urgent of the pending events ("" after a quiet second).

        Everything pending is taken at once: a crash or a stop outranks a
        reload, which is dropped, and any number of SIGHUPs is one reload.
        """
        try:
            pending = {self.events.get(timeout=1.0)}
        except queue.Empty:
            return ""
        while True:
            try:
                pending.add(self.events.get_nowait())
            except queue.Empty:
                break
        for event in sorted(pending):
            if event.startswith("crash:"):
                return event
        if "term" in pending:
            return "term"
        return "hup" if "hup" in pending else ""

    def _reload(self, daemon: Daemon) -> None:
        # Those who asked before this reload started get its outcome; later ones, the next.
        requests = self._take_reload_requests()
        self.notify("RELOADING=1")
        self.notify(f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        refusal: str | None = "the reload failed (a bug); the daemon is stopping"
        try:
            refusal = daemon.reload()
        except Exception:
            # Expected problems are refused inside reload(); this is a bug: stop cleanly.
            log.error("reload failed (a bug):\n%s", traceback.format_exc())
            self.crash("reload")
        finally:
            self._refused_reload = refusal
            for request in requests:
                request.finish(refusal)
            self.notify("READY=1")
            self.notify(self._status(daemon))

    def _workers_progressing(self, daemon: Daemon) -> bool:
        healthy = True
        for worker in daemon.workers():
            last = self._last_progress.get(worker.name, -1)
            if not worker.is_alive() or worker.progress == last:
                healthy = False
                log.debug("thread %s is not making progress", worker.name)
            self._last_progress[worker.name] = worker.progress
        return healthy


def stop_threads(threads: list[Worker | None], timeout_s: float) -> bool:
    """Stop and join threads in order; False when one of them would not stop."""
    clean = True
    for thread in threads:
        if thread is None or not thread.is_alive():
            continue
        thread.stop()
        thread.join(timeout=timeout_s)
        if thread.is_alive():
            log.error(
                "thread %s did not stop within %.0f s; exiting without it", thread.name, timeout_s
            )
            clean = False
    return clean


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 1e6 if usec and usec.isdigit() else None
