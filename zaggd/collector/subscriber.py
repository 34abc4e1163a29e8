"""SubscriberThread: owns the SUB sockets and the replay sockets; validates,
sequences and writes every block, asks for replays, writes checkpoints.

Under CURVE every message is bound to a node: through the User-Id of the key
that authenticated it when the collector binds, and through the pinned server
key of the one SUB per producer endpoint when it connects.

Every frame is checked by wire.decode; a bad one is dropped and counted, and
only its first occurrence is logged. Blocks in order go straight to the
writer on this thread (no hand-off on the hot path). A block after a gap is
dropped and the gap is filled by a replay from the expected offset, asked of
the producer over the replay channel, a window at a time so that memory
stays bounded; the producer's heartbeats reveal a lost tail.

When the disk is full the thread stops reading its sockets (ZeroMQ's queues
fill, TCP pushes back, producers pause) and retries the held block once a
second, resuming by itself when space returns.

Streams their producers retired are forgotten after FORGET_AFTER_S, so the
checkpoint stays bounded on hosts that rotate for years.

A stream the checkpoint does not hold (none was found, or it was forgotten)
resumes where the output folder says it stands (`floors`, recovery.py), not
from zero. At each periodic checkpoint the open output files are compared with
their paths: one deleted or truncated by hand has its streams rewound and
asked for again (damage.py).

Replays of a stream go to the producer instance whose heartbeat announced it
(two producers may share a node name: see nodes.py), and a "gone" counts only
from the peer that was asked. A stream that succeeds another at its path
(`prev` in its blocks) is written only once that one reached `prev_end`:
until then its blocks are dropped and asked again later, so the lines of
rotated copies keep their order without buffering. An empty block that
covers bytes is taken only as a replay answer, and an empty block [pos, pos)
in one says the producer has nothing past pos: a known end beyond it was
wrong (a forged or stale claim) and is lowered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from zaggd import wire
from zaggd.collector.catchup import CatchUp
from zaggd.collector.checkpoint import Checkpoint, Checkpointer, CheckpointState
from zaggd.collector.damage import Damage, repair_open_files, rewind
from zaggd.collector.nodes import InstanceState, NodeState
from zaggd.collector.recovery import Recovered
from zaggd.collector.sequencer import StreamState, Verdict, is_waiting, judge, trim
from zaggd.collector.writer import Writer, describe_files, is_disk_full
from zaggd.config import CollectorConfig, FsyncPolicy, StartAt
from zaggd.endpoints import apply_pgm, attach, is_multicast, limit_incoming, rebind
from zaggd.errors import ProtocolError, ZaggdError
from zaggd.logs import shown
from zaggd.metrics import Counters
from zaggd.security import (
    apply_curve,
    apply_curve_for,
    message_node,
    node_of_key,
    pin_server_keys,
    pinned_nodes,
)
from zaggd.service import Worker

log = logging.getLogger(__name__)

REPLAY_WINDOW_BYTES = 8 * 1048576
REPLAY_TIMEOUT_S = 10.0
MAX_REPLAYS_IN_FLIGHT = 8
MAINTENANCE_INTERVAL_S = 0.1
DEAF_AFTER_S = 10.0
# A producer announces each of its streams every few heartbeats until it retires
# it (its file read to the end and gone, some minutes before), and never again
# after. A stream its node, still heartbeating, has not announced for this long
# is retired: dropping it keeps the checkpoint and max_streams_per_node bounded
# on hosts that rotate for years.
FORGET_AFTER_S = 6 * 3600.0
FORGET_CHECK_INTERVAL_S = 60.0
RETRY_INTERVAL_S = 1.0
# Forgotten streams remembered (their next offset) should they come back: a bound on memory.
MAX_FLOORS = 100_000
BATCH_MESSAGES = 256


class SubscriberThread(Worker):
    def __init__(
        self,
        context: zmq.Context,  # type: ignore[type-arg]
        config: CollectorConfig,
        counters: Counters,
        checkpoint: Checkpoint,
        restored: CheckpointState | None,
        writer: Writer,
        on_crash: Callable[[str], None],
        rotation: Any = None,
        recovered: Recovered | None = None,
    ) -> None:
        super().__init__("zaggd-subscriber", on_crash)
        self.context = context
        self.config = config
        self.counters = counters
        self.checkpoint = checkpoint
        self.checkpointer = Checkpointer(checkpoint, on_crash)
        self.writer = writer
        self.rotation = rotation
        if rotation is not None:
            rotation.checkpoint = self.write_checkpoint  # a rotation records its intent first
        self.started = threading.Event()
        self.error: Exception | None = None
        self._bound_on: dict[zmq.Socket, list[str]] = {}  # type: ignore[type-arg]
        self.drop_clients = threading.Event()  # set when keys left the allowlist
        self.streams: dict[tuple[str, str], StreamState] = {}
        self.nodes: dict[str, NodeState] = {}
        self.gapped: set[tuple[str, str]] = set()
        self.topics = tuple(t.encode("utf-8") for t in config.subscribe.topics)
        self._multicast = any(
            is_multicast(e) for e in (*config.subscribe.bind, *config.subscribe.connect)
        )
        self._last_sub_message = 0.0
        self.catchup = CatchUp(counters, self._multicast)  # left behind / caught up, per node
        self._dealers: dict[str, zmq.Socket] = {}  # type: ignore[type-arg]
        self._dealer_endpoints: dict[zmq.Socket, str] = {}  # type: ignore[type-arg]
        self._hello_nodes: dict[bytes, str] = {}  # routing id on our ROUTER -> node of its hello
        self._router: zmq.Socket | None = None  # type: ignore[type-arg]
        self._subs: list[zmq.Socket] = []  # type: ignore[type-arg]
        self._poller = zmq.Poller()
        # Under CURVE with allow_dir: the node a message's key may speak as (None: no one).
        self.key_node: Callable[[zmq.Frame], str | None] | None = None
        # Under CURVE when connecting: sockets that reach one binder, pinned to its
        # key, and the node that key is named after; only it may speak there.
        self._pinned: dict[zmq.Socket, str] = {}  # type: ignore[type-arg]
        self._logged_bad: set[str] = set()
        self._held: tuple[wire.Message, bytes | None] | None = None
        self._blocked_until = 0.0
        self._write_error_logged = False
        self.final_checkpoint_failed = False
        self._next_checkpoint = 0.0
        self._gap_logged: dict[tuple[str, str], float] = {}
        # Per open gap: where it began, and its bytes since: replayed, lost, never sent.
        self._gap_fill: dict[tuple[str, str], list[int]] = {}
        self.calls: list[Callable[[], None]] = []
        self.snapshot: dict[str, Any] = {}
        self.forget_after_s = FORGET_AFTER_S
        self._next_forget_check = 0.0
        # "node/stream" -> the end of what the output holds, for streams not in self.streams
        self.floors: dict[str, int] = {}
        if restored is not None:
            self._restore(restored)
        if recovered is not None:
            self._restore_floors(recovered)

    @property
    def bound(self) -> list[str]:
        """The endpoints bound, ports resolved: the SUB's, then the replay ROUTER's."""
        return [e for endpoints in self._bound_on.values() for e in endpoints]

    # -- start ---------------------------------------------------------------

    def _restore(self, state: CheckpointState) -> None:
        now = time.monotonic()
        for key, (expected, topic, source, path) in state.streams.items():
            node, sid = key.split("/", 1)
            self.streams[(node, sid)] = StreamState(
                node,
                sid,
                str(topic).encode("utf-8"),
                str(source),
                str(path),
                int(expected),
                int(expected),
                last_mentioned=now,
            )
        for name in state.nodes:
            self.nodes[name] = NodeState(name, known=True)
        for st in self.streams.values():
            if st.node in self.nodes:
                self.nodes[st.node].streams += 1

    def _keep_floor(self, key: str, offset: int) -> None:
        self.floors[key] = offset
        if len(self.floors) > MAX_FLOORS:
            del self.floors[next(iter(self.floors))]  # the oldest: retired longest ago

    def _restore_floors(self, recovered: Recovered) -> None:
        """What the output folder says, for streams the checkpoint does not hold."""
        self.floors = {
            key: end
            for key, end in recovered.floors.items()
            if tuple(key.split("/", 1)) not in self.streams
        }
        for name in recovered.nodes:
            if name not in self.nodes:
                self.nodes[name] = NodeState(name, known=True)
        for damage in recovered.damaged:
            self._ask_again(damage)

    def work(self) -> None:
        try:
            self._open_sockets()
        except Exception as exc:
            self.error = exc
            self._close_sockets()
            self.started.set()
            return
        self.checkpointer.start()
        self.started.set()
        try:
            self._loop()
        finally:
            try:
                self.write_checkpoint()
            except (OSError, ZaggdError) as exc:
                log.error("cannot write the final checkpoint: %s", exc)
                self.final_checkpoint_failed = True  # the exit status says so
            self.checkpointer.stop()
            self.checkpointer.join(timeout=30)
            self._close_sockets()

    def _open_sockets(self) -> None:
        cfg = self.config.subscribe
        self._open_subs()
        if cfg.bind and cfg.replay:
            router = self.context.socket(zmq.ROUTER)
            self._router = router
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A producer reconnecting under its id takes over from its half-open old connection.
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            limit_incoming(router)
            if cfg.curve is not None:
                apply_curve(router, cfg.curve, True)
            self._bound_on[router] = attach(router, (cfg.replay,), ())
            self._poller.register(router, zmq.POLLIN)

    def _open_subs(self) -> None:
        """One SUB for every endpoint, or under CURVE one per binder it connects to.

        A SUB cannot tell which connection a message came in on, so a collector
        that pins each producer's own key binds node ids with a SUB per producer.
        """
        cfg = self.config.subscribe
        if cfg.curve is None or cfg.bind:
            self._open_sub(cfg.bind, cfg.connect, 0)
            return
        unbound = []
        for index, (endpoint, node) in enumerate(
            zip(cfg.connect, pinned_nodes(cfg.curve, cfg.connect), strict=True)
        ):
            sub = self._open_sub((), (endpoint,), index)
            if node is None:
                unbound.append(endpoint)
            else:
                self._pinned[sub] = node
        if unbound:
            log.warning(
                "subscribe.curve: node ids from %s are not bound to a key: its server key is "
                "shared, or not named after a node (web-01.key)",
                ", ".join(unbound),
            )

    def _open_sub(
        self, bind: tuple[str, ...], connect: tuple[str, ...], first_index: int
    ) -> zmq.Socket:  # type: ignore[type-arg]
        cfg = self.config.subscribe
        sub: zmq.Socket = self.context.socket(zmq.SUB)  # type: ignore[type-arg]
        self._subs.append(sub)
        sub.setsockopt(zmq.RCVHWM, cfg.receive_hwm)
        sub.setsockopt(zmq.LINGER, 0)
        limit_incoming(sub)
        if self._multicast:
            apply_pgm(sub, cfg.pgm)
        before_connect = None
        if cfg.curve is not None:
            apply_curve(sub, cfg.curve, bind != ())
            pin = pin_server_keys(sub, cfg.curve)

            def before_connect(index: int) -> None:
                pin(first_index + index)

            if bind:
                self.key_node = node_of_key(self.context)
        sub.setsockopt(zmq.SUBSCRIBE, wire.CONTROL_TOPIC)
        for topic in self.topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        self._bound_on[sub] = attach(sub, bind, connect, before_connect)
        self._poller.register(sub, zmq.POLLIN)
        self._last_sub_message = time.monotonic()
        return sub

    def _reopen_if_deaf(self, now: float) -> None:
        """libzmq's PGM receiver can go silent for good after a large loss: start it afresh.

        Heartbeats arrive every second from every producer, so a multicast SUB
        that hears nothing for DEAF_AFTER_S, after producers were heard, is deaf.
        """
        if not self._multicast or not self.nodes or not self._subs:
            return
        silent_s = now - self._last_sub_message
        if silent_s < DEAF_AFTER_S:
            return
        log.warning(
            "no multicast traffic for %.0f s; reopening the subscription (replays fill the gap)",
            silent_s,
        )
        for sub in self._subs:
            self._poller.unregister(sub)
            self._bound_on.pop(sub, None)
            sub.close(linger=0)
        self._subs.clear()
        self._open_subs()

    def _close_sockets(self) -> None:
        for sock in [*self._subs, self._router, *self._dealers.values()]:
            if sock is not None:
                sock.close(linger=0)
        self._dealers.clear()

    # -- main loop -----------------------------------------------------------

    def _loop(self) -> None:
        next_maintenance = 0.0
        while not self.stop_event.is_set():
            self.tick()
            while self.calls:
                self.calls.pop(0)()
            now = time.monotonic()
            if now < self._blocked_until:
                time.sleep(min(0.2, self._blocked_until - now))
                continue
            if self._held is not None:
                msg, origin = self._held
                self._held = None
                if not self._handle(msg, origin):
                    continue
                self._resume_after_error()
            timeout_ms = max(0, int((next_maintenance - now) * 1000))
            for sock, _ in self._poller.poll(min(timeout_ms, 100)):
                self._receive(sock)
                if self._held is not None:
                    break
            now = time.monotonic()
            if self.drop_clients.is_set():
                # Producers reconnect and authenticate again; what they sent meanwhile comes by replay.
                self.drop_clients.clear()
                for sock, endpoints in self._bound_on.items():
                    rebind(sock, endpoints)
            if now >= next_maintenance:
                self._log_restarts(now)
                self._ask_replays(now)
                self._reopen_if_deaf(now)
                self._forget_retired(now)
                self.catchup.check(now, self.gapped, self.streams, self.nodes)
                next_maintenance = now + MAINTENANCE_INTERVAL_S
            if self._held is None:
                self._maybe_checkpoint(now)

    def _receive(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        is_router = sock is self._router
        from_replay = sock not in self._subs
        pinned = self._pinned.get(sock)
        for _ in range(BATCH_MESSAGES):
            key_node = pinned
            try:
                if self.key_node is None:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                else:
                    # The User-Id is on any frame the peer sent (not on a ROUTER's own
                    # routing id); the body is received as bytes, as without CURVE.
                    parts = [sock.recv(zmq.NOBLOCK, copy=False)]
                    if is_router and sock.getsockopt(zmq.RCVMORE):
                        parts.append(sock.recv(copy=False))
                    key_node = self.key_node(parts[-1])
                    frames = [part.bytes for part in parts]
                    while sock.getsockopt(zmq.RCVMORE):
                        frames.append(sock.recv())
            except zmq.Again:
                return
            if not from_replay:
                self._last_sub_message = time.monotonic()
            routing_id = b""
            if is_router:
                routing_id, frames = frames[0], frames[1:]
            try:
                # Only the data channel packs a message into one frame (multicast).
                packed = len(frames) == 1 and not from_replay
                msg = wire.decode(wire.unpack(frames[0]) if packed else frames)
            except ProtocolError as exc:
                self._drop("malformed message", str(exc))
                continue
            if (self.key_node is not None or pinned is not None) and not self._is_own_node(
                msg, key_node
            ):
                continue
            if isinstance(msg, wire.Hello):
                if is_router:
                    self._hello(msg, routing_id)
                else:
                    self._drop("hello off the replay channel", msg.node)
                continue
            origin = self._origin(sock, routing_id) if from_replay else None
            if is_router and self._hello_nodes.get(routing_id) != message_node(msg):
                self._drop(
                    "replay answer from a peer that said no hello as its node", str(msg)[:100]
                )
                continue
            if not self._handle(msg, origin):
                return

    def _origin(self, sock: zmq.Socket, routing_id: bytes) -> bytes:  # type: ignore[type-arg]
        """Which replay peer a message came from: its routing id, or our DEALER's endpoint."""
        if sock is self._router:
            return routing_id
        return self._dealer_endpoints.get(sock, "").encode()

    def _is_own_node(self, msg: wire.Message, key_node: str | None) -> bool:
        """Under CURVE a producer speaks only as the node its key is named after."""
        node = message_node(msg)
        if node == key_node:
            return True
        self.counters.add("node_key_mismatches")
        self._drop(
            "node id not bound to the sender's key",
            f"key {key_node or '(revoked)'} sent as node {node}",
        )
        return False

    def _handle(self, msg: wire.Message, origin: bytes | None) -> bool:
        """Handle one message, from the data channel (`origin` None) or a replay peer;
        False when it is held for a retry (disk full)."""
        try:
            if isinstance(msg, wire.Data):
                self._data(msg, origin)
            elif isinstance(msg, wire.Heartbeat) and origin is None:
                self._heartbeat(msg)
            elif isinstance(msg, wire.Gone) and origin is not None:
                self._gone(msg, origin)
            else:
                self._drop("unexpected message kind", type(msg).__name__)
        except OSError as exc:
            self._hold(msg, origin, exc)
            return False
        except ZaggdError as exc:
            self._drop("unroutable message", str(exc))  # e.g. a path outside the output folder
        return True

    # -- data ----------------------------------------------------------------

    def _stream_for(
        self, node_name: str, sid: str, topic: bytes, source: str, path: str, start: int
    ) -> StreamState | None:
        key = (node_name, sid)
        st = self.streams.get(key)
        if st is not None:
            return st
        node = self._node(node_name)
        if node is None:
            return None
        if node.streams >= self.config.subscribe.max_streams_per_node:
            self._drop("too many streams", f"node {node_name} has {node.streams}")
            return None
        expected = 0
        if self.config.subscribe.start_at is StartAt.END and not node.known:
            expected = start
        floor = self.floors.pop(f"{node_name}/{sid}", None)
        if floor is not None:
            expected = floor  # the output already holds it up to there
        st = StreamState(
            node_name, sid, topic, source, path, expected, expected, last_mentioned=time.monotonic()
        )
        self.streams[key] = st
        node.streams += 1
        log.info(
            "stream new: node %s stream %s %s (topic %s) from offset %d",
            node_name,
            sid,
            shown(path),
            topic.decode(),
            expected,
        )
        return st

    def _node(self, name: str) -> NodeState | None:
        node = self.nodes.get(name)
        if node is None:
            if len(self.nodes) >= self.config.subscribe.max_nodes:
                self._drop("too many nodes", f"node {name} refused")
                return None
            node = NodeState(name)
            self.nodes[name] = node
            log.info("node new: %s", name)
        return node

    def _is_subscribed(self, topic: bytes) -> bool:
        return any(topic.startswith(t) for t in self.topics)

    def _data(self, msg: wire.Data, origin: bytes | None) -> None:
        h = msg.header
        if not self._is_subscribed(msg.topic):
            self._drop("data off the subscribed topics", msg.topic.decode("utf-8", "replace"))
            return
        st = self._stream_for(h.node, h.stream, msg.topic, h.source, h.path, h.start)
        if st is None:
            return
        block = bytes(msg.block)
        st.last_mentioned = time.monotonic()
        self.counters.add("blocks_in")
        self.counters.add("bytes_in", len(block))
        self.counters.add("lines_in", h.lines)
        if h.path != st.path:
            st.path = h.path
        st.path_bytes = h.path_bytes
        if h.prev:
            st.prev, st.prev_end = h.prev, h.prev_end
        if origin is not None and h.start == h.end:
            self._nothing_past(st, h.start)
            return
        exact = len(block) == h.end - h.start
        verdict = judge(st.expected, h.start, h.end, exact)
        if verdict is Verdict.DUPLICATE:
            self.counters.add("duplicates_dropped")
            return
        if verdict is Verdict.GAP or (origin is None and not block):
            # An empty block moves a stream without a byte to show for it: that is
            # taken only from the producer's own answer to a replay request.
            self._note_gap(st, h.end)
            return
        if self._waits_for_prev(st, create=True):
            self._hold_for_prev(st, h.end)
            return
        start, lines = h.start, h.lines
        if verdict is Verdict.OVERLAP:
            block, lines = trim(block, h.start, st.expected)
            start = st.expected
            self.counters.add("overlaps_trimmed")
        self._write(st, block, lines, start, h.end, exact)
        if origin is not None:
            self.counters.add("bytes_repaired", len(block))
        if (filling := self._gap_fill.get((st.node, st.stream))) is not None:
            filling[1 if block else 3] += len(block) if block else h.end - start
        st.expected = h.end
        st.known_end = max(st.known_end, h.end)
        if st.has_gap():
            if st.expected >= st.replay_until:
                self._ask_replay(st, time.monotonic())
        else:
            self._gap_closed(st)

    def _write(
        self, st: StreamState, block: bytes, lines: int, start: int, end: int, exact: bool
    ) -> None:
        now = time.time()
        path = self.writer.route(st.topic, st.node, st.source, now)
        if self.rotation is not None:
            path = self.rotation.before_write(path, now, len(block))
        if not self.writer.is_open(path):
            self.writer.open(path)
            # A file must be in the checkpoint before its first byte, or a crash could double it.
            try:
                self.write_checkpoint()
            except BaseException:
                self.writer.unopen(path)  # so the retry opens it and checkpoints again
                raise
        out = self.writer.files[path]
        data = self.writer.format(block, st.node, st.path, st.topic, start, exact, st.path_bytes)
        self.writer.append(out, data, lines, st.key(), start, end)
        self.counters.add("lines_written", lines)
        self.counters.add("bytes_written", len(data))
        if self.config.output.fsync is FsyncPolicy.ALWAYS:
            self._next_checkpoint = 0.0

    def _note_gap(self, st: StreamState, end: int) -> None:
        if end > st.known_end:
            st.known_end = end
        key = (st.node, st.stream)
        if key not in self.gapped:
            self.gapped.add(key)
            self._gap_fill[key] = [st.expected, 0, 0, 0]
            self.counters.add("gaps_found")
            now = time.monotonic()
            self.catchup.gap_opened(st, now)
            if now - self._gap_logged.get(key, 0.0) > 10.0:
                self._gap_logged[key] = now
                log.info(
                    "gap found: node %s stream %s %s range %d-%d, asking for a replay",
                    st.node,
                    st.stream,
                    shown(st.path),
                    st.expected,
                    st.known_end,
                )

    def _gap_closed(self, st: StreamState) -> None:
        key = (st.node, st.stream)
        if key in self.gapped:
            self.gapped.discard(key)
            st.replay_until = 0
            start, filled, lost, unsent = self._gap_fill.pop(key, [st.expected, 0, 0, 0])
            log.info(
                "gap closed: node %s stream %s %s range %d-%d: %s",
                st.node,
                st.stream,
                shown(st.path),
                start,
                st.expected,
                gap_filled_by(filled, lost, unsent),
            )

    def _gone(self, msg: wire.Gone, origin: bytes) -> None:
        st = self.streams.get((msg.node, msg.stream))
        if st is None or not msg.start <= st.expected < msg.end:
            return
        if origin != st.replay_peer:
            # Only the producer asked may say its bytes are gone (two may share a node name).
            log.debug("gone from a peer not asked: node %s stream %s", msg.node, msg.stream)
            return
        lost = msg.end - st.expected
        self.counters.add("bytes_lost", lost)
        if (filling := self._gap_fill.get((st.node, st.stream))) is not None:
            filling[2] += lost
        log.warning(
            "bytes lost: node %s stream %s %s range %d-%d (%d bytes): %s",
            st.node,
            st.stream,
            shown(st.path),
            st.expected,
            msg.end,
            lost,
            msg.reason,
        )
        st.expected = msg.end
        st.known_end = max(st.known_end, msg.end)
        st.replay_until = 0
        if not st.has_gap():
            self._gap_closed(st)

    # -- heartbeats and replays ----------------------------------------------

    def _heartbeat(self, hb: wire.Heartbeat) -> None:
        self.counters.add("heartbeats_in")
        node = self._node(hb.node)
        if node is None:
            return
        now = node.last_heartbeat = time.monotonic()
        warnings, evicted = node.heard(hb.instance, hb.replay, now)
        for warning in warnings:
            log.warning("%s", warning)
        self._forget_routing_id(evicted)
        if hb.replay and not self.config.subscribe.bind:
            self._connect_replay(node, hb.replay)
        for info in hb.streams:
            if not self._is_subscribed(info.topic):
                continue
            st = self.streams.get((hb.node, info.stream))
            if st is None:
                st = self._stream_for(
                    hb.node, info.stream, info.topic, info.source, info.path, info.end
                )
                if st is None:
                    continue
            st.last_mentioned = now
            st.instance = hb.instance
            if info.end > st.known_end:
                st.known_end = info.end
            if st.has_gap():
                self._note_gap(st, info.end)
        node.known = True

    def _forget_retired(self, now: float) -> None:
        """Drop the streams their producers retired (see FORGET_AFTER_S).

        Only a positive sign counts: the node's heartbeats went on without the
        stream. A node that fell silent (down, cut off) keeps all its streams,
        and so does a stream still waiting for a replay.
        """
        if now < self._next_forget_check:
            return
        self._next_forget_check = now + min(FORGET_CHECK_INTERVAL_S, self.forget_after_s / 4)
        for key, st in list(self.streams.items()):
            node = self.nodes.get(st.node)
            if node is None or st.has_gap():
                continue
            if node.last_heartbeat - st.last_mentioned > self.forget_after_s:
                del self.streams[key]
                self._keep_floor(st.key(), st.expected)  # should it come back, not from zero
                node.streams -= 1
                self.gapped.discard(key)
                self._gap_logged.pop(key, None)
                self._gap_fill.pop(key, None)
                self.counters.add("streams_forgotten")
                log.info(
                    "stream forgotten: node %s stream %s %s, retired by its producer "
                    "(not announced for %.0f s) at offset %d",
                    st.node,
                    st.stream,
                    shown(st.path),
                    node.last_heartbeat - st.last_mentioned,
                    st.expected,
                )

    def _log_restarts(self, now: float) -> None:
        for node in self.nodes.values():
            if node.pending_restart is None:
                continue
            restart = node.confirmed_restart(now)
            if restart is not None:
                log.info("producer restarted: node %s instance %s -> %s", node.name, *restart)

    def _connect_replay(self, node: NodeState, endpoint: str) -> None:
        if endpoint not in self._dealers:
            if len(self._dealers) >= self.config.subscribe.max_nodes:
                return
            dealer = self.context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.RCVHWM, 64)
            limit_incoming(dealer)
            try:
                if self.config.subscribe.curve is not None:
                    pinned = apply_curve_for(
                        dealer,
                        self.config.subscribe.curve,
                        endpoint,
                        self.config.subscribe.connect,
                        node.name,
                    )
                    if pinned is not None:
                        self._pinned[dealer] = pinned
                dealer.connect(endpoint)
            except (zmq.ZMQError, ZaggdError) as exc:
                dealer.close(linger=0)
                self._drop("bad replay endpoint", f"{endpoint}: {exc}")
                return
            self._dealers[endpoint] = dealer
            self._dealer_endpoints[dealer] = endpoint
            self._poller.register(dealer, zmq.POLLIN)
            log.info("replay channel: node %s at %s", node.name, endpoint)

    def _hello(self, hello: wire.Hello, routing_id: bytes) -> None:
        node = self._node(hello.node)
        if node is None:
            return
        instance, evicted = node.touch(hello.instance, time.monotonic())
        self._forget_routing_id(evicted)
        if instance.routing_id != routing_id:
            self._forget_routing_id(instance)
            instance.routing_id = routing_id
            log.info("replay channel: node %s instance %s connected", hello.node, hello.instance)
        self._hello_nodes[routing_id] = hello.node

    def _forget_routing_id(self, instance: InstanceState | None) -> None:
        if instance is not None and instance.routing_id:
            self._hello_nodes.pop(instance.routing_id, None)

    def _ask_replays(self, now: float) -> None:
        in_flight = 0
        for key in list(self.gapped):
            st = self.streams.get(key)
            if st is None or not st.has_gap():
                self.gapped.discard(key)
                self._gap_fill.pop(key, None)
                continue
            if st.replay_until > st.expected and now - st.replay_asked_at < REPLAY_TIMEOUT_S:
                in_flight += 1
        for key in list(self.gapped):
            if in_flight >= MAX_REPLAYS_IN_FLIGHT:
                return
            st = self.streams.get(key)
            if st is None:
                continue
            if st.replay_until > st.expected and now - st.replay_asked_at < REPLAY_TIMEOUT_S:
                continue
            if self._ask_replay(st, now):
                in_flight += 1

    def _ask_replay(self, st: StreamState, now: float) -> bool:
        node = self.nodes.get(st.node)
        if node is None or self._waits_for_prev(st):
            return False
        end = min(st.known_end, st.expected + REPLAY_WINDOW_BYTES)
        req = wire.encode_replay_request(wire.ReplayRequest(st.node, st.stream, st.expected, end))
        peer = self._send_request(node, st, req)
        if peer is None:
            return False
        st.replay_peer = peer
        st.replay_until = end
        st.replay_asked_at = now
        self.counters.add("replays_asked")
        return True

    def _send_request(self, node: NodeState, st: StreamState, req: list[bytes]) -> bytes | None:
        """Send to the instance that announced the stream; the peer it went to, or None.

        A stream no heartbeat has named yet waits for one. When its instance is
        gone for good (a restart that lost the state), the node's current one is
        asked, unless two run at once under its name.
        """
        owner = node.instances.get(st.instance)
        if owner is None:
            return None
        candidates = [owner]
        latest = node.latest()
        if latest is not None and latest is not owner and not node.clash:
            candidates.append(latest)
        for instance in candidates:
            peer = self._send_to(instance, req)
            if peer is not None:
                return peer
        return None

    def _send_to(self, instance: InstanceState, req: list[bytes]) -> bytes | None:
        try:
            if self._router is not None:
                if not instance.routing_id:
                    return None
                self._router.send_multipart([instance.routing_id, *req], zmq.NOBLOCK)
                return instance.routing_id
            dealer = self._dealers.get(instance.replay)
            if dealer is None:
                return None
            dealer.send_multipart(req, zmq.NOBLOCK)
            return instance.replay.encode()
        except zmq.ZMQError:
            return None

    # -- order across rotation, and claims the producer does not back ------------

    def _waits_for_prev(self, st: StreamState, create: bool = False) -> bool:
        """Whether `st` must wait for the stream it succeeds to reach `prev_end`.

        `create`: a predecessor never heard of is taken in (from offset 0, or
        where `start_at: end` starts a new node) and asked for by replay.
        """
        if not st.prev:
            return False
        prev = self.streams.get((st.node, st.prev))
        if prev is None:
            if not create:
                return False
            prev = self._stream_for(st.node, st.prev, st.topic, st.source, st.path, st.prev_end)
            if prev is None:
                return False
        if not prev.instance:
            prev.instance = st.instance  # one producer's streams: its replays go there too
        if not is_waiting(st, prev):
            return False
        if prev.known_end < st.prev_end:
            self._note_gap(prev, st.prev_end)
        return True

    def _hold_for_prev(self, st: StreamState, end: int) -> None:
        """Drop a block of `st` for now: it is asked for again once its predecessor is complete."""
        st.known_end = max(st.known_end, end)
        st.replay_until = 0
        key = (st.node, st.stream)
        if key not in self.gapped:
            self.gapped.add(key)
            log.debug(
                "stream %s waits for stream %s to reach %d (the file before it at %s)",
                st.stream,
                st.prev,
                st.prev_end,
                shown(st.path),
            )

    def _nothing_past(self, st: StreamState, pos: int) -> None:
        """A replay answer [pos, pos): the producer has no line at `pos` for now."""
        if pos != st.expected or st.known_end <= pos:
            return
        log.info(
            "known end lowered: node %s stream %s %s has nothing past %d, not %d as announced",
            st.node,
            st.stream,
            shown(st.path),
            pos,
            st.known_end,
        )
        st.known_end = pos
        st.replay_until = 0
        self._gap_closed(st)

    # -- checkpoints and errors ---------------------------------------------

    def _maybe_checkpoint(self, now: float) -> None:
        if now < self._next_checkpoint:
            return
        policy = self.config.output.fsync
        failed = self.checkpointer.error is not None
        self._check_outputs()
        try:
            # After a failure, wait for the retry: intake stays paused until one succeeds.
            self.write_checkpoint(wait=failed or policy is FsyncPolicy.ALWAYS)
        except OSError as exc:
            self._note_write_error(exc)
            self._next_checkpoint = self._blocked_until = now + RETRY_INTERVAL_S
            return
        if failed:
            self._resume_after_error()
        interval = self.config.output.fsync_interval_s
        self._next_checkpoint = now + (interval if policy is not FsyncPolicy.ALWAYS else 0.0)

    def write_checkpoint(self, wait: bool = True) -> None:
        """Record offsets and sizes that match the output, once the output is on disk.

        The checkpointer thread fsyncs and saves; `wait` blocks until it has.
        """
        if self.config.output.fsync is FsyncPolicy.NEVER:
            self.writer.sync(False)
            fds: list[int] = []
        else:
            fds = self.writer.take_dirty()
        rotation = self.rotation
        jobs = self.writer.index_jobs(rotation.previous_of if rotation is not None else None)
        state = CheckpointState(
            streams={
                st.key(): [st.expected, st.topic.decode("utf-8", "replace"), st.source, st.path]
                for st in self.streams.values()
            },
            files=describe_files(self.writer),
            nodes=sorted(n.name for n in self.nodes.values() if n.known),
            rotations=self.rotation.intents() if self.rotation is not None else [],
        )
        if self.checkpointer.is_alive():
            complete = rotation is not None and rotation.wants_complete_index
            seq = self.checkpointer.submit(state, fds, jobs, complete)
            if wait:
                self.checkpointer.wait(seq)
        else:
            self.checkpointer.save_now(state, fds, jobs)
        self.counters.add("checkpoints")
        if self.rotation is not None:
            self.rotation.after_checkpoint()
        self._refresh_snapshot()

    # -- output files changed by hand ----------------------------------------

    def _check_outputs(self) -> None:
        for damage in repair_open_files(self.writer, self.rotation):
            self._ask_again(damage)

    def _ask_again(self, damage: Damage) -> None:
        """Rewind the streams a damaged file held, so replay brings their bytes again."""
        live = {st.key(): st for st in self.streams.values()}
        for step in rewind(damage.ranges, live, self.floors):
            if step.lost:
                self.counters.add("bytes_lost", step.end - step.start)
                log.warning(
                    "bytes lost: stream %s range %d-%d (%d bytes) was in %s, and the stream "
                    "went on in other output since",
                    step.key,
                    step.start,
                    step.end,
                    step.end - step.start,
                    shown(damage.path),
                )
                continue
            st = live.get(step.key)
            if st is not None and st.has_gap():
                self._note_gap(st, st.known_end)

    def _hold(self, msg: wire.Message, origin: bytes | None, exc: OSError) -> None:
        self._held = (msg, origin)
        self._blocked_until = time.monotonic() + RETRY_INTERVAL_S
        self._note_write_error(exc)

    def _note_write_error(self, exc: OSError) -> None:
        self.counters.add("write_errors")
        if not self._write_error_logged:
            what = "disk full" if is_disk_full(exc) else "write failed"
            log.error(
                "%s: %s (%s); pausing intake and retrying every %.0f s",
                what,
                shown(exc.filename or self.writer.root),
                exc.strerror,
                RETRY_INTERVAL_S,
            )
            self._write_error_logged = True

    def _resume_after_error(self) -> None:
        if self._write_error_logged:
            log.info("writing again after the earlier error; nothing was lost")
            self._write_error_logged = False

    def _drop(self, what: str, detail: str) -> None:
        self.counters.add("messages_dropped")
        if what not in self._logged_bad:
            self._logged_bad.add(what)
            log.warning(
                "message dropped: %s: %s (further ones are only counted)", what, detail[:200]
            )

    def fresh_snapshot(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """A snapshot taken by this thread now (or the last one, if it is busy)."""
        done = threading.Event()

        def take() -> None:
            self._refresh_snapshot()
            done.set()

        self.calls.append(take)
        done.wait(timeout_s)
        return self.snapshot

    def _refresh_snapshot(self) -> None:
        lag = sum(max(0, st.known_end - st.expected) for st in self.streams.values())
        self.snapshot = {
            "streams": len(self.streams),
            "nodes": len(self.nodes),
            "lag_bytes": lag,
            "gaps_open": len(self.gapped),
            "files": len(self.writer.files),
            "streams_detail": [
                {
                    "stream": st.stream,
                    "node": st.node,
                    "topic": st.topic.decode("utf-8", "replace"),
                    "path": st.path,
                    "expected": st.expected,
                    "known_end": st.known_end,
                }
                for st in list(self.streams.values())[:1000]
            ],
        }


def gap_filled_by(filled_bytes: int, lost_bytes: int, unsent_bytes: int) -> str:
    """How a gap closed, for its log line."""
    parts = []
    if filled_bytes:
        parts.append(f"{filled_bytes} bytes filled by replay")
    if unsent_bytes:
        parts.append(
            f"{unsent_bytes} bytes the producer never sent (before where it started "
            "reading, start_at: end; or lines it skipped)"
        )
    if lost_bytes:
        parts.append(f"{lost_bytes} bytes lost (see above)")
    return "; ".join(parts) or "nothing was missing"
