"""Whether any collector hears this producer: said when none has for a while.

Lines read while no collector subscribes go nowhere live (collectors that
come later catch up by replay, as long as the files keep them). A producer
whose collector is stopped, unreachable, or refuses its CURVE key would
otherwise look busy and healthy. So: one warning once no collector has
subscribed for QUIET_HEARTBEATS heartbeat intervals, naming where it
publishes and the likely causes, and one line when a collector is back.
Multicast carries no subscriptions: nothing is said there.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

QUIET_HEARTBEATS = 30


class Audience:
    def __init__(self, heartbeat_interval_s: float, where: str, now: float) -> None:
        self.quiet_after_s = QUIET_HEARTBEATS * heartbeat_interval_s
        self.where = where
        self.collectors = 0
        self.silent_since: float | None = now
        self._warned = False

    def update(self, collectors: int, now: float) -> None:
        """The collectors subscribed now (the publisher's count), at monotonic `now`."""
        self.collectors = collectors
        if collectors > 0:
            if self._warned:
                log.info("a collector listens again: %d subscribed", collectors)
            self.silent_since = None
            self._warned = False
            return
        if self.silent_since is None:
            self.silent_since = now
        elif not self._warned and now - self.silent_since >= self.quiet_after_s:
            self._warned = True
            log.warning(
                "no collector has subscribed for %.0f s (%s): lines are read but heard by "
                "no one, until a collector comes and asks for them by replay; is the "
                "collector running and reachable, and with CURVE, is this node's key in "
                "its allow_dir?",
                now - self.silent_since,
                self.where,
            )

    def silent_s(self, now: float) -> float:
        return 0.0 if self.silent_since is None else now - self.silent_since
