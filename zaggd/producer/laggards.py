"""Laggards: when one collector stops reading, the others must not stop with it.

The publisher's XPUB refuses a send (XPUB_NODROP) while any collector the
message goes to has a full queue, so one collector that takes nothing would
hold every other one. Pacing is right for a slow collector (the file is the
buffer); holding the others forever is not. So a send refused without a
break for `publish.laggard_timeout` goes out once more with XPUB_NODROP off:
libzmq then delivers it to every queue with room and skips the full ones,
and a queue it skipped stays out of every later send until its collector
has read half of it (libzmq's low-water mark). That collector is left
behind: it sees a gap when it reads again and repairs it from the files by
replay, paced by its own requests, while the others stay live.

Only when there is someone to keep live: a producer whose only collector is
full keeps waiting, as the file buffers for it anyway and leaving it behind
would read the file twice. Collectors are counted by their subscriptions to
the control topic (XPUB_VERBOSER reports each one and each one's end), which
the protocol makes every subscriber take. Multicast has one queue for every
collector, so nothing is ever left behind there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import zmq

from zaggd import wire
from zaggd.metrics import Counters

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
SUBSCRIBE = b"\x01" + wire.CONTROL_TOPIC
UNSUBSCRIBE = b"\x00" + wire.CONTROL_TOPIC


class Laggards:
    """Decides when a refused send leaves a collector behind, and keeps the score."""

    def __init__(self, timeout_s: float, counters: Counters, enabled: bool = True) -> None:
        self.timeout_s = timeout_s
        self.counters = counters
        self.enabled = enabled
        self.collectors = 0
        self._last_log = -LOG_EVERY_S
        self._unlogged = 0

    def note_subscription(self, msg: bytes) -> None:
        """Count collectors from XPUB's (un)subscription messages."""
        if msg == SUBSCRIBE:
            self.collectors += 1
        elif msg == UNSUBSCRIBE:
            self.collectors = max(0, self.collectors - 1)

    def is_due(self, held_s: float) -> bool:
        """Whether a send refused for `held_s` should go on without the full collectors."""
        return self.enabled and self.collectors >= 2 and held_s >= self.timeout_s

    def held(self, held_s: float) -> None:
        self.counters.add("send_held_ms", round(held_s * 1000))

    def left_behind(self, held_s: float, topic: bytes, now: float) -> None:
        self.counters.add("laggards_left_behind")
        self.counters.add("laggard_messages_dropped")
        if now - self._last_log < LOG_EVERY_S:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
        self._last_log, self._unlogged = now, 0
        shown = (
            "control"
            if topic == wire.CONTROL_TOPIC
            else bytes(topic[:64]).decode("utf-8", "replace")
        )
        log.warning(
            "collector left behind: its queue was full for %.1f s (topic %s), holding %d "
            "others; sending on without it, it repairs from the files by replay%s",
            held_s,
            shown,
            self.collectors - 1,
            since,
        )


def send_past_full(sock: zmq.Socket, frames: Sequence[Any]) -> bool:  # type: ignore[type-arg]
    """Send one message to every collector with room, skipping those whose queue is full;
    whether some were skipped.

    Only called after a refused NODROP send, which sent no part of it, so no
    collector gets a torn message. Reading ZMQ_EVENTS first makes libzmq take
    in the "room again" notices of the queues that drained, so that only the
    full ones are skipped.
    """
    sock.getsockopt(zmq.EVENTS)
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        return False
    except zmq.Again:
        pass
    sock.setsockopt(zmq.XPUB_NODROP, 0)
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
    finally:
        sock.setsockopt(zmq.XPUB_NODROP, 1)
    return True
