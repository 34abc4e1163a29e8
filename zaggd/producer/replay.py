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

Every valid request naming this node gets an answer (docs/protocol.md 7):
blocks from `start` on; "gone" for bytes that no longer exist, and for a
start inside a line up to the next line start; and, when the answer stops
short of `end` (or would be empty), one last message saying where the
stream's bytes stop: an empty block [pos, pos), or "gone" for what a
finished stream once had and no longer has.

Each collector (a routing id on the ROUTER, or one DEALER) has its own queue
of requests, answered a few blocks at a turn. A collector whose ZeroMQ queue
is full (stopped, or reading slowly) is set aside with the block it was
refused and retried shortly after, so it never holds the others' replays;
one that takes nothing for SEND_TIMEOUT_S loses its pending answers and asks
again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import zmq

from zaggd import wire
from zaggd.config import PublishConfig
from zaggd.endpoints import MAX_SEND_PAUSE_S, MIN_SEND_PAUSE_S, attach, rebind
from zaggd.errors import ProtocolError
from zaggd.identity import open_instance
from zaggd.metrics import Counters
from zaggd.producer.boundaries import is_block_end, next_line_start
from zaggd.producer.streams import Registry, ReplayTarget
from zaggd.producer.tailer import Block, read_range
from zaggd.service import Worker

log = logging.getLogger(__name__)

REPLAY_BLOCK_BYTES = 1048576
SEND_TIMEOUT_S = 10.0
BLOCKS_PER_TURN = 4  # then the next collector's turn
STALL_LOG_S = 1.0  # a collector's queue full this long is worth a line when it reads again
MAX_REQUESTS_PER_PEER = 64  # a collector keeps 8 in flight


Answer = Generator[list[Any], None, None]  # the messages answering one request


@dataclass(slots=True)
class Peer:
    """One collector on the replay channel: its requests, answered in order."""

    sock: zmq.Socket  # type: ignore[type-arg]
    envelope: list[bytes]
    answers: deque[Answer] = field(default_factory=deque)
    refused: list[Any] | None = None  # the message its full queue refused, sent first
    full_since: float = 0.0
    retry_at: float = 0.0
    pause_s: float = MIN_SEND_PAUSE_S


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
        self._peers: dict[tuple[int, bytes], Peer] = {}
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
                    hello = wire.encode_hello(wire.Hello(self.node, self.instance))
                    for sock in sockets:
                        with contextlib.suppress(zmq.Again):  # a full queue: said again next time
                            sock.send_multipart(hello, zmq.NOBLOCK)
                    next_hello = now + self.config.heartbeat_interval_s
                if self.drop_clients.is_set() and self.bound:
                    self.drop_clients.clear()
                    rebind(sockets[0], self.bound)
                for sock, _ in poller.poll(self._poll_ms(now)):
                    self._serve_ready(sock)
                self._answer(time.monotonic())
        finally:
            for peer in self._peers.values():
                _close_answers(peer)
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
            key = (id(sock), envelope[0] if envelope else b"")
            peer = self._peers.setdefault(key, Peer(sock, envelope))
            if len(peer.answers) >= MAX_REQUESTS_PER_PEER:
                self._bad_request("too many replay requests waiting from one collector")
                continue
            peer.answers.append(self._answers(msg))

    def _bad_request(self, why: str) -> None:
        self.counters.add("bad_requests")
        if not self._bad_logged:
            log.warning("%s (dropped; further ones are only counted)", why)
            self._bad_logged = True

    def _poll_ms(self, now: float) -> int:
        """Wait for requests, but no longer than until some collector's answers can go on."""
        wait_s = 0.25
        for peer in self._peers.values():
            wait_s = min(wait_s, max(0.0, peer.retry_at - now))
        return int(wait_s * 1000)

    def _answer(self, now: float) -> None:
        """Give each collector with answers due a turn; drop those that are done."""
        for key, peer in list(self._peers.items()):
            if peer.retry_at <= now and (peer.answers or peer.refused):
                self._take_turn(peer, now)
            if not peer.answers and peer.refused is None:
                del self._peers[key]

    def _take_turn(self, peer: Peer, now: float) -> None:
        for _ in range(BLOCKS_PER_TURN):
            frames = peer.refused if peer.refused is not None else _next_answer(peer)
            if frames is None:
                return
            try:
                peer.sock.send_multipart([*peer.envelope, *frames], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._set_aside(peer, frames, now)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                _close_answers(peer)  # gone; it asks again if it comes back
                return
            peer.refused = None
            if peer.full_since and now - peer.full_since >= STALL_LOG_S:
                log.info("replays: a collector reads again after %.1f s", now - peer.full_since)
            peer.full_since, peer.pause_s = 0.0, MIN_SEND_PAUSE_S

    def _set_aside(self, peer: Peer, frames: list[Any], now: float) -> None:
        """The collector's queue is full: serve the others, try it again shortly."""
        if not peer.full_since:
            peer.full_since = now
            self.counters.add("replays_deferred")
        elif now - peer.full_since > SEND_TIMEOUT_S:
            log.warning(
                "replays: a collector took nothing for %.0f s; dropping the %d answers it "
                "waits for (it asks again)",
                now - peer.full_since,
                len(peer.answers),
            )
            self.counters.add("replays_dropped", len(peer.answers))
            _close_answers(peer)
            return
        peer.refused = frames
        peer.retry_at = now + peer.pause_s
        peer.pause_s = min(peer.pause_s * 2, MAX_SEND_PAUSE_S)

    def _answers(self, req: wire.ReplayRequest) -> Answer:
        """The messages answering `req`: at least one, whatever the range."""
        target = self.registry.get(req.stream)
        fd = None if target is None else _open_instance(target)
        if target is None or fd is None:
            yield self._gone(target, req, req.start, req.end, "stream no longer exists")
            return
        self.counters.add("replays_served")
        try:
            yield from self._read_answers(target, req, fd)
        finally:
            os.close(fd)

    def _read_answers(self, target: ReplayTarget, req: wire.ReplayRequest, fd: int) -> Answer:
        if os.fstat(fd).st_size < req.start:
            yield self._gone(target, req, req.start, req.end, "file is shorter than the range")
            return
        pos, sent = req.start, False
        if not is_block_end(fd, pos, target.max_line_bytes, target.policy, target.floor):
            line_start = next_line_start(fd, pos)
            if line_start is None:  # the rest of the file is one unfinished line
                yield self._data(target, Block(req.stream, pos, pos, b"", 0))
                return
            yield self._gone(target, req, pos, line_start, "start is inside a line")
            pos, sent = line_start, True
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
            yield self._data(target, block)
            pos, sent = block.end, True
        if pos < req.end or not sent:
            yield self._where_it_stops(target, req, pos)

    def _where_it_stops(self, target: ReplayTarget, req: wire.ReplayRequest, pos: int) -> list[Any]:
        """Nothing more at `pos`: gone for what a finished stream had, else an empty block."""
        end = min(req.end, target.final_end)  # final_end is -1 while the file may grow
        if pos < end:
            return self._gone(target, req, pos, end, "no longer in its file")
        return self._data(target, Block(req.stream, pos, pos, b"", 0))

    def _data(self, target: ReplayTarget, block: Block) -> list[Any]:
        header = wire.DataHeader(
            self.node,
            block.stream,
            target.source,
            target.path,
            block.start,
            block.end,
            block.lines,
            prev=target.prev,
            prev_end=target.prev_end,
        )
        self.counters.add("replay_bytes_out", len(block.payload))
        return wire.encode_data(target.topic, header, block.payload)

    def _gone(
        self,
        target: ReplayTarget | None,
        req: wire.ReplayRequest,
        start: int,
        end: int,
        reason: str,
    ) -> list[Any]:
        self.counters.add("replay_gone")
        log.warning("replay range gone: stream %s range %d-%d: %s", req.stream, start, end, reason)
        topic = target.topic if target is not None else b"-"
        return wire.encode_gone(topic, wire.Gone(self.node, req.stream, start, end, reason))


def _next_answer(peer: Peer) -> list[Any] | None:
    """The next message for `peer`, finishing answers as they run out; None when all are sent."""
    while peer.answers:
        frames = next(peer.answers[0], None)
        if frames is not None:
            return frames
        peer.answers.popleft()
    return None


def _close_answers(peer: Peer) -> None:
    """Forget what `peer` waits for, closing the files its answers had open."""
    for answer in peer.answers:
        answer.close()
    peer.answers.clear()
    peer.refused = None
    peer.full_since = 0.0


def _open_instance(target: ReplayTarget) -> int | None:
    """An open handle on the stream's file instance, wherever it was renamed or compressed to."""
    found = open_instance(target.path, target.file_id)
    return None if found is None else found.fd
