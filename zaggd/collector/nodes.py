"""NodeState: what a collector knows of each producer node and its instances.

A node name is meant to be one producer, but cloned machines keep their host
name (the default node), so two producers may speak as one node. Each keeps
its own instance id (in its state folder), its own streams and its own replay
channel; heartbeats name the instance, so the collector keeps the two apart:
a stream's replays go to the instance that announced it, never to whichever
was heard last.

A new instance of a node is a restart (its state lost) or a second producer
with the same name. It is a second producer once the earlier instance is
heard again after the new one: the node is then in a clash, warned about
once per pair of instances, naming both. A restart is logged once the
earlier instance has stayed silent for RESTART_CONFIRM_S. What a node keeps
is bounded (MAX_INSTANCES, MAX_WARNINGS), against hostile peers.
No threads, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESTART_CONFIRM_S = 10.0
MAX_INSTANCES = 16  # per node; the least recently heard goes first
MAX_ENDPOINTS_SEEN = 4
MAX_WARNINGS = 8  # clash warnings per node


@dataclass(slots=True)
class InstanceState:
    """One producer process lineage: a node's instance id, and how to reach it for replays."""

    instance: str
    replay: str = ""  # its advertised replay endpoint (when it binds)
    routing_id: bytes = b""  # its DEALER's id on our ROUTER (when we bind)
    endpoints_seen: list[str] = field(default_factory=list)
    has_heartbeat: bool = False  # heard by heartbeat, not only by hello
    touched_at: float = 0.0  # monotonic: its last heartbeat or hello

    def describe(self) -> str:
        if self.replay:
            return f"instance {self.instance} (replay {self.replay})"
        if self.routing_id:
            return f"instance {self.instance} (replay channel as {self.routing_id!r})"
        return f"instance {self.instance}"


@dataclass(slots=True)
class NodeState:
    name: str
    instance: str = ""  # the instance heard from last
    instances: dict[str, InstanceState] = field(default_factory=dict)
    clash: bool = False  # two instances are running at once under this name
    last_heartbeat: float = 0.0  # monotonic
    known: bool = False  # heard from before this run, or a heartbeat seen in it
    streams: int = 0
    # A new instance not yet known to be a restart: (earlier instance, new one, since).
    pending_restart: tuple[str, str, float] | None = None
    _warned: set[frozenset[str]] = field(default_factory=set)

    def latest(self) -> InstanceState | None:
        return self.instances.get(self.instance)

    def touch(self, instance: str, now: float) -> tuple[InstanceState, InstanceState | None]:
        """The state of `instance`, made if new; and the one it evicted, if any."""
        state = self.instances.get(instance)
        evicted = None
        if state is None:
            if len(self.instances) >= MAX_INSTANCES:
                oldest = min(
                    (i for i in self.instances.values() if i.instance != self.instance),
                    key=lambda i: i.touched_at,
                )
                evicted = self.instances.pop(oldest.instance)
            state = self.instances[instance] = InstanceState(instance)
        state.touched_at = now
        return state, evicted

    def heard(
        self, instance: str, replay: str, now: float
    ) -> tuple[list[str], InstanceState | None]:
        """A heartbeat of `instance` (announcing `replay`): what to warn about, and
        the instance it evicted, if any."""
        warnings: list[str] = []
        state, evicted = self.touch(instance, now)
        earlier = self.instance
        if not state.has_heartbeat:
            if earlier and earlier != instance and not self.clash:
                self.pending_restart = (earlier, instance, now)
        elif earlier and earlier != instance and earlier in self.instances:
            self.pending_restart = None
            self.clash = True
            warnings += self._warn_clash(earlier, instance)
        state.has_heartbeat = True
        if replay and replay != state.replay:
            if replay in state.endpoints_seen and len(state.endpoints_seen) > 1:
                warnings += self._warn_shared(state, replay)
            else:
                state.endpoints_seen = [*state.endpoints_seen, replay][-MAX_ENDPOINTS_SEEN:]
            state.replay = replay
        self.instance = instance
        return warnings, evicted

    def confirmed_restart(self, now: float) -> tuple[str, str] | None:
        """(earlier, new) once the earlier instance stayed silent long enough."""
        pending = self.pending_restart
        if pending is None or now - pending[2] < RESTART_CONFIRM_S:
            return None
        self.pending_restart = None
        return pending[0], pending[1]

    def _warn_clash(self, a: str, b: str) -> list[str]:
        return self._once(
            frozenset((a, b)),
            f"node name clash: node {self.name} is two producers at once: "
            f"{self.instances[a].describe()} and {self.instances[b].describe()}; "
            "their streams are kept apart by instance, but give each producer its own "
            "node name (the node key)",
        )

    def _warn_shared(self, state: InstanceState, replay: str) -> list[str]:
        return self._once(
            frozenset((state.instance, "shared")),
            f"node name clash: node {self.name} instance {state.instance} speaks from two "
            f"replay endpoints, {state.replay} and {replay}: two producers share one state "
            "folder (a cloned machine?); their streams cannot be told apart: give each "
            "its own node name and state folder",
        )

    def _once(self, key: frozenset[str], warning: str) -> list[str]:
        if key in self._warned or len(self._warned) >= MAX_WARNINGS:
            return []
        self._warned.add(key)
        return [warning]
