"""CatchUp: says, per producer node, when this collector fell behind the node's
live data and when it caught up again, in the log and the counters.

A producer leaves behind a collector that takes nothing for its
`publish.laggard_timeout` (stopped, a hung or full disk, a stalled network),
so that the other collectors stay live. Such a collector sees gaps once it
reads again, and repairs them from the producer's files by replay while new
blocks keep coming. The same holds after a restart or a reconnect.

The subscriber reports each gap as it opens; whether a node's gaps are all
closed is looked at once a second, from the open gaps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from zaggd.collector.sequencer import StreamState
from zaggd.metrics import Counters

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class HeardNode(Protocol):
    last_heartbeat: float  # monotonic; 0 until heard in this run


class CatchUp:
    def __init__(self, counters: Counters, multicast: bool = False) -> None:
        self.counters = counters
        # On multicast, losses and their repair are ordinary: no warning for them.
        self.multicast = multicast
        self._behind: dict[str, float] = {}  # node -> since (monotonic)
        self._level: set[str] = set()  # nodes heard in this run with no gap open
        self._next_check = 0.0

    def gap_opened(self, st: StreamState, now: float) -> None:
        """A gap opened on `st`; the first one of its node starts an episode."""
        if st.node in self._behind:
            return
        self._behind[st.node] = now
        self.counters.add("left_behind")
        detail = f"stream {st.stream} has {st.expected}, live data is at {st.known_end}"
        if st.node in self._level and not self.multicast:
            log.warning(
                "left behind by node %s (%s); repairing from the files by replay",
                st.node,
                detail,
            )
        else:
            log.info("catching up with node %s (%s) from the files by replay", st.node, detail)

    def check(
        self,
        now: float,
        gapped: set[tuple[str, str]],
        streams: Mapping[tuple[str, str], StreamState],
        nodes: Mapping[str, HeardNode],
    ) -> None:
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL_S
        behind = {
            st.node for key in gapped if (st := streams.get(key)) is not None and st.has_gap()
        }
        for node in [n for n in self._behind if n not in behind]:
            self._caught_up(node, now)
        for name, state in nodes.items():
            if state.last_heartbeat and name not in behind:
                self._level.add(name)

    def _caught_up(self, node: str, now: float) -> None:
        since = self._behind.pop(node)
        self.counters.add("caught_up")
        log.info("caught up with node %s after %.1f s behind", node, now - since)
