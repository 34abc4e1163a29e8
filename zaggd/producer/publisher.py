"""PublisherThread: the sole owner of the PUB socket; sends blocks and heartbeats.

The socket is an XPUB with XPUB_NODROP: at the high-water mark a send fails
with EAGAIN instead of dropping, the thread waits for room, its bounded
input queue fills, and the tailer stops reading. The file is the buffer.
A collector that takes nothing holds the others only for
`publish.laggard_timeout`; then it is left behind (laggards.py).

Heartbeats announce, per stream, its topic and the end offset of what was
sent; they go out after the blocks they describe, on the same socket, so a
collector that sees a heartbeat end past what it has knows data is missing.
Every stream is announced at least every HEARTBEAT_ROUNDS heartbeats; those
that moved are announced in the next one.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from zaggd import wire
from zaggd.config import PublishConfig
from zaggd.endpoints import apply_pgm, attach, is_multicast, rebind, send_waiting
from zaggd.metrics import Counters
from zaggd.producer.audience import Audience
from zaggd.producer.laggards import Laggards, send_past_full
from zaggd.producer.streams import Announce, Retire
from zaggd.service import Worker

log = logging.getLogger(__name__)

HEARTBEAT_ROUNDS = 10
MAX_STREAMS_PER_HEARTBEAT = wire.MAX_HEARTBEAT_STREAMS
QUEUE_BLOCKS = 8
DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: bytes
    header: wire.DataHeader
    payload: bytes


Item = Outgoing | Announce | Retire | Callable[[], None]


class PublisherThread(Worker):
    def __init__(
        self,
        context: zmq.Context,  # type: ignore[type-arg]
        config: PublishConfig,
        node: str,
        instance: str,
        replay_endpoint: str,
        counters: Counters,
        on_crash: Callable[[str], None],
    ) -> None:
        super().__init__("zaggd-publisher", on_crash)
        self.context = context
        self.config = config
        self.node = node
        self.instance = instance
        self.replay_endpoint = replay_endpoint
        self.counters = counters
        self.items: queue.Queue[Item] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self.started = threading.Event()
        self.error: Exception | None = None
        self.streams: dict[str, wire.StreamInfo] = {}
        self._changed: set[str] = set()
        self._cursor = 0
        self._joined = False
        self._packed = False  # one frame per message, as multicast needs (wire.pack)
        self._sock: zmq.Socket | None = None  # type: ignore[type-arg]
        self.bound: list[str] = []
        self.drop_clients = threading.Event()  # set when keys left the allowlist
        self.laggards = Laggards(config.laggard_timeout_s, counters)
        self.audience: Audience | None = None  # made once the endpoints are known

    def put(self, item: Item, stop: Callable[[], bool], tick: Callable[[], None]) -> bool:
        """Queue an item, waiting while the queue is full; False when stopping."""
        while True:
            try:
                self.items.put(item, timeout=0.25)
                return True
            except queue.Full:
                self.counters.add("send_waits")
                tick()
                if stop():
                    return False

    def work(self) -> None:
        sock = self.context.socket(zmq.XPUB)
        self._sock = sock
        try:
            self._setup(sock)
        except Exception as exc:
            self.error = exc
            sock.close(linger=0)
            self.started.set()
            return
        self.started.set()
        try:
            self._loop(sock)
        finally:
            sock.close(linger=2000)

    def _setup(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        # Every subscription and every end of one: Laggards counts the collectors.
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        sock.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        sock.setsockopt(zmq.LINGER, 2000)
        if self.config.connect:
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for collectors not there
        self._packed = any(is_multicast(e) for e in (*self.config.bind, *self.config.connect))
        if self._packed:
            apply_pgm(sock, self.config.pgm)
            self.laggards.enabled = False  # one queue for every collector
        before_connect = None
        if self.config.curve is not None:
            from zaggd.security import apply_curve, pin_server_keys

            apply_curve(sock, self.config.curve, self.config.bind != ())
            before_connect = pin_server_keys(sock, self.config.curve)
        self.bound = attach(sock, self.config.bind, self.config.connect, before_connect)
        if not self._packed:  # multicast carries no subscriptions to count
            where = ("bound on " + ", ".join(self.bound)) if self.bound else "connecting to "
            where += ", ".join(self.config.connect)
            self.audience = Audience(self.config.heartbeat_interval_s, where, time.monotonic())

    def _loop(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        interval_s = self.config.heartbeat_interval_s
        next_heartbeat = time.monotonic()
        draining = False
        while True:
            self.tick()
            now = time.monotonic()
            self._drain_subscriptions(sock)
            if self.audience is not None:
                self.audience.update(self.laggards.collectors, now)
            if self._joined:
                # A collector subscribed: tell it every stream's end soon.
                self._joined = False
                self.announce_all()
                next_heartbeat = min(next_heartbeat, now + 0.05)
            if now >= next_heartbeat:
                self._send_heartbeat(sock)
                next_heartbeat = now + interval_s
            if self.stop_event.is_set():
                draining = True
            self._drop_clients_if_asked(sock)
            try:
                item = self.items.get(
                    timeout=0 if draining else min(0.25, max(0.0, next_heartbeat - now))
                )
            except queue.Empty:
                if draining:
                    self._send_heartbeat(sock)
                    return
                continue
            self._handle(sock, item)

    def _handle(self, sock: zmq.Socket, item: Item) -> None:  # type: ignore[type-arg]
        if isinstance(item, Outgoing):
            self._send_block(sock, item)
        elif isinstance(item, Announce):
            self.streams[item.stream] = wire.StreamInfo(
                item.stream, item.topic, item.source, item.path, item.end
            )
            self._changed.add(item.stream)
        elif isinstance(item, Retire):
            self.streams.pop(item.stream, None)
            self._changed.discard(item.stream)
        else:
            item()

    def _send_block(self, sock: zmq.Socket, out: Outgoing) -> None:  # type: ignore[type-arg]
        frames = wire.encode_data(out.topic, out.header, out.payload)
        self._send(sock, frames)
        h = out.header
        self.streams[h.stream] = wire.StreamInfo(h.stream, out.topic, h.source, h.path, h.end)
        self._changed.add(h.stream)
        self.counters.add("lines_out", h.lines)
        self.counters.add("bytes_out", len(out.payload))
        self.counters.add("blocks_out")

    def _send(self, sock: zmq.Socket, frames: Sequence[Any]) -> bool:  # type: ignore[type-arg]
        """Send without dropping: wait for room at the high-water mark.

        A collector that takes nothing for laggard_timeout is left behind (the
        message goes to the others); when stopping, the wait is bounded too:
        what a stuck collector did not take it gets by replay later.
        """
        if self._packed:
            frames = [wire.pack(frames)]
        deadline = 0.0
        refused_at = 0.0
        behind = False

        def keep_waiting() -> bool:
            nonlocal deadline, refused_at, behind
            now = time.monotonic()
            refused_at = refused_at or now
            self.counters.add("send_waits")
            self.tick()
            if self.stop_event.is_set():
                deadline = deadline or now + DRAIN_TIMEOUT_S
                if now > deadline:
                    return False
            self._drain_subscriptions(sock)
            self._drop_clients_if_asked(sock)  # the stuck one may be the revoked one
            behind = self.laggards.is_due(now - refused_at)
            return not behind

        sent = send_waiting(sock, frames, keep_waiting)
        if refused_at:
            now = time.monotonic()
            self.laggards.held(now - refused_at)
            if behind:
                if send_past_full(sock, frames):
                    self.laggards.left_behind(now - refused_at, frames[0], now)
                return True
        return sent

    def _drop_clients_if_asked(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Close every collector connection, so each authenticates again (what it
        misses meanwhile it gets by replay)."""
        if self.drop_clients.is_set():
            self.drop_clients.clear()
            rebind(sock, self.bound)

    def _drain_subscriptions(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Read XPUB's subscription messages, noting when a collector subscribed."""
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._joined = True
            self.laggards.note_subscription(msg)

    def _send_heartbeat(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Announce the changed streams and the next slice of all of them."""
        chosen = dict.fromkeys(self._changed)
        self._changed = set()
        ids = list(self.streams)
        if ids:
            per_round = math.ceil(len(ids) / HEARTBEAT_ROUNDS)
            self._cursor %= len(ids)
            chosen.update(dict.fromkeys(ids[self._cursor : self._cursor + per_round]))
            self._cursor += per_round
        infos = [self.streams[s] for s in chosen if s in self.streams]
        for page in _pages(infos):
            hb = wire.Heartbeat(self.node, self.instance, self.replay_endpoint, tuple(page))
            self._send(sock, wire.encode_heartbeat(hb))
            self.counters.add("heartbeats_out")

    def announce_all(self) -> None:
        """Mark every stream changed so the next heartbeat carries all of them."""
        self._changed = set(self.streams)


def _pages(infos: list[wire.StreamInfo]) -> list[list[wire.StreamInfo]]:
    """Split stream entries so that each heartbeat body stays under the protocol's limit."""
    budget = wire.MAX_HEARTBEAT_BYTES // 2
    pages: list[list[wire.StreamInfo]] = [[]]
    used = 0
    for info in infos:
        size = 64 + len(info.topic) + len(info.source) + 6 * len(info.path)  # JSON worst case
        if pages[-1] and (used + size > budget or len(pages[-1]) >= MAX_STREAMS_PER_HEARTBEAT):
            pages.append([])
            used = 0
        pages[-1].append(info)
        used += size
    return pages
