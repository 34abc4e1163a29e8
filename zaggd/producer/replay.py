"""ReplayServer: re-reads byte ranges of streams on a collector's request.

The replay channel follows the data channel: when the producer binds its PUB
socket it binds a ROUTER here; when it connects, it connects one DEALER per
collector replay endpoint and says hello on each, so the collector's ROUTER
knows which peer is which node.

A request names a stream and a range. The file instance is found wherever
rotation moved it (by inode and first bytes); its bytes are cut exactly as
the tailer cut them and sent as data messages. A range that exists nowhere is
answered with "gone". Only files in the registry (files a source matched) are
ever read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from zaggd import wire
from zaggd.config import PublishConfig
from zaggd.endpoints import attach, rebind, send_waiting
from zaggd.errors import ProtocolError
from zaggd.identity import open_instance
from zaggd.metrics import Counters
from zaggd.producer.streams import Registry, ReplayTarget
from zaggd.producer.tailer import read_range
from zaggd.service import Worker

log = logging.getLogger(__name__)

REPLAY_BLOCK_BYTES = 1048576
SEND_TIMEOUT_S = 10.0


class ReplayServer(Worker):
    def __init__(
        self,
        context: zmq.Context,  # type: ignore[type-arg]
        config: PublishConfig,
        node: str,
        instance: str,
        registry: Registry,
        counters: Counters,
        on_crash: Callable[[str], None],
    ) -> None:
        super().__init__("zaggd-replay", on_crash)
        self.context = context
        self.config = config
        self.node = node
        self.instance = instance
        self.registry = registry
        self.counters = counters
        self.started = threading.Event()
        self.error: Exception | None = None
        self.bound: list[str] = []
        self._bad_logged = False
        self.drop_clients = threading.Event()  # set when keys left the allowlist

    def work(self) -> None:
        sockets: list[zmq.Socket] = []  # type: ignore[type-arg]
        try:
            sockets = self._open_sockets()
        except Exception as exc:
            self.error = exc
            for sock in sockets:
                sock.close(linger=0)
            self.started.set()
            return
        self.started.set()
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        next_hello = 0.0
        try:
            while not self.stop_event.is_set():
                self.tick()
                now = time.monotonic()
                if self.config.connect and now >= next_hello:
                    for sock in sockets:
                        self._send(
                            sock, [], wire.encode_hello(wire.Hello(self.node, self.instance))
                        )
                    next_hello = now + self.config.heartbeat_interval_s
                if self.drop_clients.is_set() and self.bound:
                    self.drop_clients.clear()
                    rebind(sockets[0], self.bound)
                for sock, _ in poller.poll(250):
                    self._serve_ready(sock)
        finally:
            for sock in sockets:
                sock.close(linger=0)

    def _open_sockets(self) -> list[zmq.Socket]:  # type: ignore[type-arg]
        sockets = []
        if self.config.bind:
            sock = self.context.socket(zmq.ROUTER)
            sockets.append(sock)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._prepare(sock, server=True)
            self.bound = attach(sock, self.config.replay[:1], ())
        else:
            for index, endpoint in enumerate(self.config.replay):
                sock = self.context.socket(zmq.DEALER)
                sockets.append(sock)
                sock.setsockopt(zmq.ROUTING_ID, f"{self.node}/{self.instance}".encode())
                self._prepare(sock, server=False, index=index)
                attach(sock, (), (endpoint,))
        return sockets

    def _prepare(self, sock: zmq.Socket, server: bool, index: int = 0) -> None:  # type: ignore[type-arg]
        sock.setsockopt(zmq.SNDHWM, 64)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_HEADER_BYTES * 2)
        if self.config.curve is not None:
            from zaggd.security import apply_curve

            apply_curve(sock, self.config.curve, server, index)

    def _serve_ready(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        for _ in range(100):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope: list[bytes] = []
            if sock.socket_type == zmq.ROUTER:
                envelope, frames = frames[:1], frames[1:]
            try:
                msg = wire.decode(frames)
            except ProtocolError as exc:
                self._bad_request(f"bad replay request: {exc}")
                continue
            if not isinstance(msg, wire.ReplayRequest) or msg.node != self.node:
                self._bad_request("replay request for another node or of the wrong kind")
                continue
            self._serve(sock, envelope, msg)

    def _bad_request(self, why: str) -> None:
        self.counters.add("bad_requests")
        if not self._bad_logged:
            log.warning("%s (dropped; further ones are only counted)", why)
            self._bad_logged = True

    def _serve(self, sock: zmq.Socket, envelope: list[bytes], req: wire.ReplayRequest) -> None:  # type: ignore[type-arg]
        target = self.registry.get(req.stream)
        fd = None if target is None else _open_instance(target)
        if target is None or fd is None:
            self._gone(sock, envelope, target, req, req.start, "stream no longer exists")
            return
        self.counters.add("replays_served")
        try:
            pos = req.start
            size = os.fstat(fd).st_size
            if size < req.start:
                self._gone(sock, envelope, target, req, req.start, "file is shorter than the range")
                return
            while pos < req.end:
                block = read_range(
                    fd,
                    req.stream,
                    pos,
                    REPLAY_BLOCK_BYTES,
                    target.max_line_bytes,
                    target.policy,
                    target.floor,
                )
                if block is None:
                    break
                header = wire.DataHeader(
                    self.node,
                    req.stream,
                    target.source,
                    target.path,
                    block.start,
                    block.end,
                    block.lines,
                )
                if not self._send(
                    sock, envelope, wire.encode_data(target.topic, header, block.payload)
                ):
                    return
                self.counters.add("replay_bytes_out", len(block.payload))
                pos = block.end
        finally:
            os.close(fd)

    def _gone(
        self,
        sock: zmq.Socket,  # type: ignore[type-arg]
        envelope: list[bytes],
        target: ReplayTarget | None,
        req: wire.ReplayRequest,
        start: int,
        reason: str,
    ) -> None:
        self.counters.add("replay_gone")
        log.warning(
            "replay range gone: stream %s range %d-%d: %s", req.stream, start, req.end, reason
        )
        topic = target.topic if target is not None else b"-"
        self._send(
            sock,
            envelope,
            wire.encode_gone(topic, wire.Gone(self.node, req.stream, start, req.end, reason)),
        )

    def _send(self, sock: zmq.Socket, envelope: list[bytes], frames: Sequence[Any]) -> bool:  # type: ignore[type-arg]
        """Send, waiting for room; False when the peer is gone or too slow."""
        deadline = time.monotonic() + SEND_TIMEOUT_S

        def keep_waiting() -> bool:
            self.tick()
            return time.monotonic() <= deadline and not self.stop_event.is_set()

        try:
            return send_waiting(sock, [*envelope, *frames], keep_waiting)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise


def _open_instance(target: ReplayTarget) -> int | None:
    """An open handle on the stream's file instance, wherever it was renamed or compressed to."""
    found = open_instance(target.path, target.file_id)
    return None if found is None else found.fd
