"""Collector: recovers output files to the checkpoint, starts the subscriber and
the control socket, and hands control to the service loop.

Recovery comes first: each open output file is cut back to its checkpointed
size (what was written after the checkpoint will be replayed), and any
rotation that was under way is finished, before a single new byte is taken.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq

from zaggd import config as config_mod
from zaggd.collector.checkpoint import Checkpoint, CheckpointState
from zaggd.collector.subscriber import SubscriberThread
from zaggd.collector.writer import Writer
from zaggd.config import CollectorConfig
from zaggd.control import SOCKET_NAME, ControlServer
from zaggd.errors import ZaggdError
from zaggd.metrics import COLLECTOR_COUNTERS, Counters, Rate
from zaggd.service import Service, Worker, stop_threads
from zaggd.statefile import ensure_dir

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


def recover_files(state: CheckpointState) -> None:
    """Cut each output file back to the size the checkpoint vouches for."""
    for path, info in state.files.items():
        size = int(info["size"])
        try:
            actual = os.stat(path).st_size
        except FileNotFoundError:
            if size:
                log.warning(
                    "output file missing since the last checkpoint: %s (%d bytes)", path, size
                )
            continue
        if actual > size:
            with open(path, "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
            log.info("output cut back to its checkpoint: %s %d -> %d bytes", path, actual, size)
        elif actual < size:
            log.warning(
                "output shorter than its checkpoint (lost by the OS?): %s has %d of %d bytes",
                path,
                actual,
                size,
            )


class Collector:
    def __init__(self, config: CollectorConfig, service: Service) -> None:
        self.config = config
        self.service = service
        self.counters = Counters(COLLECTOR_COUNTERS)
        self.rate = Rate()
        self.context: zmq.Context | None = None  # type: ignore[type-arg]
        self.subscriber: SubscriberThread | None = None
        self.control: ControlServer | None = None
        self.rotation: Any = None

    def start(self) -> None:
        ensure_dir(self.config.state_dir)
        Writer(self.config.output).check_writable()
        self.context = zmq.Context()
        self._start_subscriber(self.config)
        assert self.subscriber is not None
        if self.subscriber.error is not None:
            raise self.subscriber.error
        cfg = self.config
        self.control = ControlServer(
            os.path.join(cfg.state_dir, SOCKET_NAME), self.snapshot, self.service.crash
        )
        self.control.start()
        log.info(
            "collector started: %s on %s, topics %s, writing %s",
            "bound" if cfg.subscribe.bind else "connected",
            ", ".join(self.subscriber.bound or cfg.subscribe.connect),
            ", ".join(repr(t) for t in cfg.subscribe.topics),
            cfg.output.path,
        )

    def _make_rotation(self, writer: Writer, restored: CheckpointState | None) -> Any:
        try:
            from zaggd.collector.rotation import Rotation
        except ImportError:
            return None
        rotation = Rotation(self.config.output, writer, self.counters, on_crash=self.service.crash)
        if restored is not None:
            rotation.recover(restored)
        return rotation

    def workers(self) -> list[Worker]:
        workers: list[Worker] = [w for w in (self.subscriber, self.control) if w is not None]
        if self.subscriber is not None and self.subscriber.checkpointer.is_alive():
            workers.append(self.subscriber.checkpointer)
        if self.rotation is not None:
            workers += self.rotation.workers()
        return workers

    def status_line(self) -> str:
        snap = self.subscriber.snapshot if self.subscriber is not None else {}
        written = self.counters.get("lines_written")
        rate = self.rate.update(written, time.monotonic())
        return (
            f"{snap.get('streams', 0)} streams from {snap.get('nodes', 0)} nodes, "
            f"{rate:.0f} lines/s, lag {snap.get('lag_bytes', 0)} bytes, "
            f"gaps {self.counters.get('gaps_found')}, lost {self.counters.get('bytes_lost')} bytes"
        )

    def snapshot(self) -> dict[str, object]:
        snap = dict(self.subscriber.fresh_snapshot()) if self.subscriber is not None else {}
        return {
            "daemon": "collector",
            "config": self.config.path,
            "status": self.status_line(),
            "counters": self.counters.snapshot(),
            **snap,
        }

    def reload(self) -> None:
        try:
            new = config_mod.load_collector(self.config.path)
            if new.state_dir != self.config.state_dir:
                raise ZaggdError("state_dir cannot change while running; restart instead")
            Writer(new.output).check_writable()
        except ZaggdError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if self.config.subscribe.curve is not None:
            from zaggd.security import reload_allowlist

            # Keys may come and go with the config unchanged.
            if reload_allowlist(self.context) and self.config.subscribe.bind and self.subscriber:
                log.info("keys left the allowlist: dropping every producer connection")
                self.subscriber.drop_clients.set()
        if new == self.config:
            log.info("reloaded %s: nothing changed", new.path)
            return
        # Sockets and routes change on the subscriber's own thread, between two messages.
        self._restart_subscriber(new)
        log.info("reloaded %s", new.path)

    def _restart_subscriber(self, new: CollectorConfig) -> None:
        assert self.subscriber is not None and self.context is not None
        old = self.subscriber
        old.stop()
        old.join(timeout=30)
        old.writer.close_all()
        if self.rotation is not None:
            self.rotation.stop()  # its pending seals are in the checkpoint: the new one resumes them
        self.config = new
        try:
            self._start_subscriber(new)
            error = self.subscriber.error
        except ZaggdError as exc:
            error = exc
        if error is not None:
            log.error("reload: the new subscriber failed to start: %s", error)
            self.service.crash("zaggd-subscriber")

    def _start_subscriber(self, cfg: CollectorConfig) -> None:
        """Recover the output to the checkpoint, then start taking messages."""
        assert self.context is not None
        writer = Writer(cfg.output)
        checkpoint = Checkpoint(cfg.state_dir)
        restored = checkpoint.load()
        self.rotation = self._make_rotation(writer, restored)
        if restored is not None:
            recover_files(restored)
        self.subscriber = SubscriberThread(
            self.context,
            cfg,
            self.counters,
            checkpoint,
            restored,
            writer,
            self.service.crash,
            self.rotation,
        )
        self.subscriber.start()
        if not self.subscriber.started.wait(START_TIMEOUT_S):
            raise ZaggdError("the subscriber did not start in time")

    def shutdown(self) -> bool:
        clean = stop_threads([self.subscriber, self.control], 20.0)
        if self.rotation is not None:
            self.rotation.stop()
        if self.subscriber is not None and clean:
            self.subscriber.writer.close_all()
        if self.context is not None and clean:
            self.context.term()  # would hang on a socket a stuck thread still holds
        return clean


def run(config: CollectorConfig) -> int:
    service = Service()
    service.install_signals()
    collector = Collector(config, service)
    try:
        collector.start()
    except BaseException:
        collector.shutdown()
        raise
    return service.run(collector)
