"""Producer: builds the tailer, publisher, replay server and control socket from
the config, starts them, and hands control to the service loop.

READY=1 is sent only after the sockets are bound and the first scan is done.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from zaggd import config as config_mod
from zaggd.config import ProducerConfig, PublishConfig
from zaggd.control import SOCKET_NAME, ControlServer
from zaggd.endpoints import advertised
from zaggd.errors import ZaggdError
from zaggd.lock import Locks
from zaggd.logs import shown
from zaggd.metrics import PRODUCER_COUNTERS, Counters, Rate
from zaggd.producer.journal import StreamJournal, start_state
from zaggd.producer.offsets import OffsetStore
from zaggd.producer.publisher import PublisherThread
from zaggd.producer.replay import ReplayServer
from zaggd.producer.streams import Registry
from zaggd.producer.tailing import TailerThread
from zaggd.security import describe_curve, same_allow_dir
from zaggd.service import Service, Worker, stop_threads
from zaggd.statefile import ensure_dir

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
# How long a reload waits for the tailer to take the new sources, so that it is
# done when `systemctl reload` returns; a tailer waiting on a slow collector
# takes them later, and the main loop must go back to its watchdog pings.
APPLY_WAIT_S = 5.0


class Producer:
    def __init__(self, config: ProducerConfig, service: Service) -> None:
        self.config = config
        self.service = service
        self.counters = Counters(PRODUCER_COUNTERS)
        self.registry = Registry()
        self.rate = Rate()
        self.context: zmq.Context | None = None  # type: ignore[type-arg]
        self.publisher: PublisherThread | None = None
        self.replay: ReplayServer | None = None
        self.tailer: TailerThread | None = None
        self.control: ControlServer | None = None
        self.instance = ""
        self.locks = Locks()

    def start(self) -> None:
        cfg = self.config
        ensure_dir(cfg.state_dir)
        self.locks.take(cfg.state_dir, "state_dir")  # before the state is read
        store = OffsetStore(cfg.state_dir, self.locks.retake)
        self.instance, stored = start_state(store, cfg.state_dir)
        journal = StreamJournal(cfg.state_dir, self.instance, self.locks.retake)
        self.context = zmq.Context()
        self._start_sockets(cfg.publish)
        assert self.publisher is not None
        self.tailer = TailerThread(
            cfg,
            self.instance,
            stored,
            store,
            journal,
            self.registry,
            self.publisher,
            self.counters,
            self.service.crash,
        )
        self.tailer.start()
        if not self.tailer.first_scan_done.wait(START_TIMEOUT_S):
            raise ZaggdError("the first scan of the watched folders did not finish in time")
        self.control = ControlServer(
            os.path.join(cfg.state_dir, SOCKET_NAME),
            self.snapshot,
            self.service.crash,
            self.service.request_reload,
        )
        self.control.start()
        log.info(
            "producer %s started: %d sources, %d streams, publishing on %s; %s",
            cfg.node,
            len(cfg.sources),
            len(self.tailer.manager.tailers),
            ", ".join(self.publisher.bound or cfg.publish.connect),
            describe_curve(cfg.publish.curve, bool(cfg.publish.bind)),
        )

    def _start_sockets(self, publish: PublishConfig) -> None:
        cfg = self.config
        assert self.context is not None
        replay_endpoint = ""
        if publish.bind:
            replay_endpoint = publish.advertise or advertised(publish.replay[0])
        self.publisher = PublisherThread(
            self.context,
            publish,
            cfg.node,
            self.instance,
            replay_endpoint,
            self.counters,
            self.service.crash,
        )
        self.replay = ReplayServer(
            self.context,
            publish,
            cfg.node,
            self.instance,
            self.registry,
            self.counters,
            self.service.crash,
        )
        for thread in (self.publisher, self.replay):
            thread.start()
            if not thread.started.wait(START_TIMEOUT_S):
                raise ZaggdError(f"{thread.name} did not start in time")
            if thread.error is not None:
                raise thread.error

    def workers(self) -> list[Worker]:
        return [
            w for w in (self.tailer, self.publisher, self.replay, self.control) if w is not None
        ]

    def status_line(self) -> str:
        snap = self.tailer.snapshot if self.tailer is not None else {}
        lines_out = self.counters.get("lines_out")
        rate = self.rate.update(lines_out, time.monotonic())
        line = (
            f"{snap.get('streams', 0)} streams ({snap.get('open', 0)} open), "
            f"{rate:.0f} lines/s, lag {snap.get('lag_bytes', 0)} bytes, "
            f"{lines_out} lines sent, lost {self.counters.get('bytes_lost')} bytes"
        )
        audience = self.publisher.audience if self.publisher is not None else None
        if audience is not None:
            line += f", {audience.collectors} collectors subscribed"
        if snap.get("unreadable"):
            line += f", {snap['unreadable']} files unreadable (see zaggd status)"
        watching = snap.get("watching", "inotify")
        return line if watching == "inotify" else f"{line}; watching: {watching}"

    def snapshot(self) -> dict[str, object]:
        snap = dict(self.tailer.fresh_snapshot()) if self.tailer is not None else {}
        return {
            "daemon": "producer",
            "node": self.config.node,
            "instance": self.instance,
            "config": self.config.path,
            "status": self.status_line(),
            "counters": self.counters.snapshot(),
            **snap,
            **self._listeners(),
        }

    def _listeners(self) -> dict[str, object]:
        """Who hears this producer: collectors subscribed, and CURVE clients refused."""
        from zaggd.security import refused_clients

        found: dict[str, object] = {}
        audience = self.publisher.audience if self.publisher is not None else None
        if audience is not None:
            found["collectors"] = audience.collectors
            found["no_collector_for_s"] = round(audience.silent_s(time.monotonic()), 1)
        refused = refused_clients(self.context)
        if refused is not None:
            found["curve_refused"] = refused
        return found

    def reload(self) -> str | None:
        """Apply the config file anew, or refuse it whole and keep the running one.

        Everything check-config checks (key files included) is checked before
        anything changes; new endpoints that cannot be taken roll back to the
        running ones. Either way one line says what happened; a refusal is
        also returned.
        """
        try:
            new = self._checked(self.config.path)
        except ZaggdError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return str(exc)
        old = self.config
        if same_allow_dir(old.publish.curve, new.publish.curve):
            self._reload_allowlist(new)
        if new.publish != old.publish:
            error = self._restart_sockets(new)
            if error is not None:
                log.error("reload refused, keeping the running config: %s", error)
                return str(error)
            if new.publish.curve != old.publish.curve:
                log.info("reload: %s", describe_curve(new.publish.curve, bool(new.publish.bind)))
        self.config = new
        self._apply_sources(new)
        log.info("reloaded %s: %d sources", shown(new.path), len(new.sources))
        return None

    def _checked(self, path: str) -> ProducerConfig:
        """The new config, checked as check-config does; ZaggdError when it cannot be used."""
        from zaggd.security import check_config_keys

        new = config_mod.load_producer(path)
        if new.node != self.config.node or new.state_dir != self.config.state_dir:
            raise ZaggdError("node and state_dir cannot change while running; restart instead")
        check_config_keys(new)
        return new

    def _reload_allowlist(self, new: ProducerConfig) -> None:
        from zaggd.security import reload_allowlist

        # Keys may come and go with the config unchanged.
        removed = reload_allowlist(self.context).removed
        if removed and new.publish == self.config.publish and new.publish.bind:
            log.info("keys left the allowlist: dropping every collector connection")
            for thread in (self.publisher, self.replay):
                if thread is not None:
                    thread.drop_clients.set()

    def _apply_sources(self, new: ProducerConfig) -> None:
        """Hand the new sources to the tailer; wait a while so a reload is done when it returns."""
        assert self.tailer is not None
        applied = threading.Event()
        tailer = self.tailer

        def apply() -> None:
            tailer.apply_config(new)
            applied.set()

        tailer.calls.put(apply)
        if not applied.wait(APPLY_WAIT_S):
            log.warning("reload: the tailer is busy; it takes the new sources when it can")

    def _restart_sockets(self, new: ProducerConfig) -> ZaggdError | None:
        """Drain the old publisher, then bind and connect `new` endpoints.

        When they cannot be taken, the running endpoints are taken again and
        the error is returned; when even those fail, the daemon stops.
        """
        assert self.tailer is not None
        old_publisher = self.publisher
        # Hold the tailer while sockets change hands: it must not queue on a stopping publisher.
        paused = _Pause()
        self.tailer.calls.put(paused.hold)
        paused.wait_held()
        try:
            stop_threads([self.publisher, self.replay], 10.0)
            error = self._start_sockets_or_stop(new.publish)
            if error is not None and self._start_sockets_or_stop(self.config.publish) is not None:
                log.error("reload: cannot take the running endpoints again; stopping")
                self.service.crash("zaggd-publisher")
                return error
            assert self.publisher is not None and old_publisher is not None
            for info in old_publisher.streams.values():
                self.publisher.streams[info.stream] = info
            self.publisher.announce_all()
            self.tailer.publisher = self.publisher
            if error is None:
                log.info(
                    "publish endpoints changed: now %s",
                    ", ".join(self.publisher.bound or new.publish.connect),
                )
            return error
        finally:
            paused.release()

    def _start_sockets_or_stop(self, publish: PublishConfig) -> ZaggdError | None:
        """Start the publisher and replay server on `publish`; on failure, stop what started."""
        try:
            self._start_sockets(publish)
        except ZaggdError as exc:
            stop_threads([self.publisher, self.replay], 10.0)
            return exc
        return None

    def shutdown(self) -> bool:
        # The tailer first, so the publisher drains everything it queued.
        clean = stop_threads([self.tailer], 20.0)
        clean = stop_threads([self.publisher, self.replay, self.control], 10.0) and clean
        if self.context is not None and clean:
            self.context.term()  # would hang on a socket a stuck thread still holds
        if clean:
            self.locks.release_all()  # else the exit releases them, after a stuck thread
        if self.tailer is not None and not self.tailer.final_state_saved:
            log.error("exiting non-zero: the final offset store was not written")
            return False
        return clean


class _Pause:
    """Holds the tailer thread at a safe point until released."""

    def __init__(self) -> None:
        import threading

        self._held = threading.Event()
        self._released = threading.Event()

    def hold(self) -> None:
        self._held.set()
        self._released.wait(60)

    def wait_held(self) -> None:
        self._held.wait(30)

    def release(self) -> None:
        self._released.set()


def run(config: ProducerConfig) -> int:
    service = Service()
    service.install_signals()
    producer = Producer(config, service)
    try:
        producer.start()
    except BaseException:
        producer.shutdown()
        raise
    return service.run(producer)
