"""Collector: recovers output files to the checkpoint, starts the subscriber and
the control socket, and hands control to the service loop.

Recovery comes first: any rotation that was under way is finished, and each
live output file is cut back to its checkpointed size, or without a
checkpoint to its live index (what was written after will be replayed),
before a single new byte is taken (recovery.py). A final checkpoint that
cannot be written makes the exit status non-zero.
"""

from __future__ import annotations

import logging
import os
import time

import zmq

from zaggd import config as config_mod
from zaggd.collector.checkpoint import Checkpoint, CheckpointState
from zaggd.collector.recovery import Recovered, recover_output
from zaggd.collector.rotation import Rotation
from zaggd.collector.subscriber import SubscriberThread
from zaggd.collector.writer import Writer, output_root
from zaggd.config import CollectorConfig
from zaggd.control import SOCKET_NAME, ControlServer
from zaggd.errors import ZaggdError
from zaggd.lock import Locks
from zaggd.logs import shown
from zaggd.metrics import COLLECTOR_COUNTERS, Counters, Rate
from zaggd.security import AllowlistChange, describe_curve, reload_allowlist, same_allow_dir
from zaggd.service import Service, Worker, stop_threads
from zaggd.statefile import ensure_dir

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


def recover(
    writer: Writer, restored: CheckpointState | None, rotation: Rotation | None
) -> Recovered:
    """Finish interrupted cuts, then cut the output back to what is vouched for."""
    try:
        if rotation is not None and restored is not None:
            rotation.recover(restored)
        return recover_output(writer, restored, rotation)
    except OSError as exc:
        where = shown(exc.filename or writer.root)
        raise ZaggdError(f"{where}: cannot recover the output: {exc.strerror or exc}") from None


class Collector:
    def __init__(self, config: CollectorConfig, service: Service) -> None:
        self.config = config
        self.service = service
        self.counters = Counters(COLLECTOR_COUNTERS)
        self.rate = Rate()
        self.context: zmq.Context | None = None  # type: ignore[type-arg]
        self.subscriber: SubscriberThread | None = None
        self.control: ControlServer | None = None
        self.rotation: Rotation | None = None
        self.locks = Locks()

    def start(self) -> None:
        # Both locks before the checkpoint is read or an output file cut back.
        ensure_dir(self.config.state_dir)
        self.locks.take(self.config.state_dir, "state_dir")
        Writer(self.config.output).check_writable()
        self.locks.take(output_root(self.config.output.path), "output folder")
        self.context = zmq.Context()
        self._start_subscriber(self.config)
        assert self.subscriber is not None
        if self.subscriber.error is not None:
            raise self.subscriber.error
        cfg = self.config
        self.control = ControlServer(
            os.path.join(cfg.state_dir, SOCKET_NAME),
            self.snapshot,
            self.service.crash,
            self.service.request_reload,
        )
        self.control.start()
        log.info(
            "collector started: %s on %s, topics %s, writing %s; %s",
            "bound" if cfg.subscribe.bind else "connected",
            ", ".join(self.subscriber.bound or cfg.subscribe.connect),
            ", ".join(repr(t) for t in cfg.subscribe.topics),
            shown(cfg.output.path),
            describe_curve(cfg.subscribe.curve, bool(cfg.subscribe.bind)),
        )

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
            f"gaps {snap.get('gaps_open', 0)} open ({self.counters.get('gaps_found')} found), "
            f"lost {self.counters.get('bytes_lost')} bytes"
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

    def reload(self) -> str | None:
        """Apply the config file anew, or refuse it whole and keep the running one.

        Everything check-config checks (key files included) and the output's
        folders are checked before anything changes; a new subscriber that
        cannot start gives way to the running config's again. A refusal is
        logged and returned.
        """
        try:
            return self._reload()
        finally:
            # A new output folder's lock was taken before the switch; the one not in use goes.
            self.locks.keep_only((self.config.state_dir, output_root(self.config.output.path)))

    def _reload(self) -> str | None:
        try:
            new = self._checked(self.config.path)
        except ZaggdError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return str(exc)
        old = self.config
        allowlist = AllowlistChange()
        if same_allow_dir(old.subscribe.curve, new.subscribe.curve):
            # Keys may come and go with the config unchanged.
            allowlist = reload_allowlist(self.context)
            if allowlist.removed and old.subscribe.bind and self.subscriber:
                log.info("keys left the allowlist: dropping every producer connection")
                self.subscriber.drop_clients.set()
        if new == old:
            what = "the allowlist changed, the config did not" if allowlist else "nothing changed"
            log.info("reloaded %s: %s", shown(new.path), what)
            return None
        # Sockets and routes change on the subscriber's own thread, between two messages.
        error = self._restart_subscriber(new)
        if error is not None:
            log.error("reload refused, keeping the running config: %s", error)
            return str(error)
        if new.subscribe.curve != old.subscribe.curve:
            log.info("reload: %s", describe_curve(new.subscribe.curve, bool(new.subscribe.bind)))
        log.info("reloaded %s", shown(new.path))
        return None

    def _checked(self, path: str) -> CollectorConfig:
        """The new config, checked as check-config does; ZaggdError when it cannot be used."""
        from zaggd.security import check_config_keys

        new = config_mod.load_collector(path)
        if new.state_dir != self.config.state_dir:
            raise ZaggdError("state_dir cannot change while running; restart instead")
        check_config_keys(new)
        Writer(new.output).check_writable()
        self.locks.take(output_root(new.output.path), "output folder")
        return new

    def _restart_subscriber(self, new: CollectorConfig) -> Exception | None:
        """Stop the subscriber and start one on `new`; when it cannot start, start the
        running config's again and return why (when even that fails, the daemon stops)."""
        self._stop_subscriber()
        error = self._start_subscriber_or_stop(new)
        if error is None:
            self.config = new
            return None
        if self._start_subscriber_or_stop(self.config) is not None:
            log.error("reload: cannot start the subscriber on the running config again; stopping")
            self.service.crash("zaggd-subscriber")
        return error

    def _stop_subscriber(self) -> None:
        assert self.subscriber is not None
        self.subscriber.stop()
        self.subscriber.join(timeout=30)
        self.subscriber.writer.close_all()
        if self.rotation is not None:
            self.rotation.stop()  # its pending seals are in the checkpoint: the next one resumes them

    def _start_subscriber_or_stop(self, cfg: CollectorConfig) -> Exception | None:
        try:
            self._start_subscriber(cfg)
            assert self.subscriber is not None
            error = self.subscriber.error
        except ZaggdError as exc:
            error = exc
        if error is not None and self.subscriber is not None:
            self._stop_subscriber()
        return error

    def _start_subscriber(self, cfg: CollectorConfig) -> None:
        """Recover the output to the checkpoint, then start taking messages."""
        assert self.context is not None
        writer = Writer(cfg.output)
        checkpoint = Checkpoint(cfg.state_dir, self.locks.retake)
        restored = checkpoint.load()
        self.rotation = Rotation(
            cfg.output, writer, self.counters, on_crash=self.service.crash, start_worker=False
        )
        recovered = recover(writer, restored, self.rotation)
        self.rotation.start_worker()
        self.subscriber = SubscriberThread(
            self.context,
            cfg,
            self.counters,
            checkpoint,
            restored,
            writer,
            self.service.crash,
            self.rotation,
            recovered,
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
        if clean:
            self.locks.release_all()  # else the exit releases them, after a stuck thread
        if self.subscriber is not None and self.subscriber.final_checkpoint_failed:
            log.error("exiting non-zero: the final checkpoint was not written")
            return False
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
