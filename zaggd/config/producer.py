"""The producer's config: every key with its type, default and meaning, and ProducerConfig built from them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from zaggd.config.messages import quote
from zaggd.config.model import (
    LongLinePolicy,
    ProducerConfig,
    PublishConfig,
    Source,
    StartAt,
)
from zaggd.config.network import (
    CURVE_KEY,
    PGM_KEY,
    Advertise,
    EndpointList,
    Endpoints,
    check_no_clash,
    direction,
    finish_curve,
    urls,
)
from zaggd.config.nodes import Val, items
from zaggd.config.schema import Key, Section, Values, ValueType
from zaggd.config.units import DAY_S, KIB, MIB
from zaggd.config.values import (
    LOG_LEVEL_KEY,
    MAX_INT32,
    Choice,
    Duration,
    Globs,
    Integer,
    Name,
    Path,
    Size,
    Topic,
    is_name,
)

DEFAULT_EXCLUDE = ("*.gz", "*.xz", "*.zst", "*.bz2")

# --- publish -----------------------------------------------------------------------


def _build_publish(values: Values) -> PublishConfig:
    binds, endpoints = direction(values)
    fields = values.fields()
    fields.update(
        bind=urls(endpoints) if binds else (),
        connect=() if binds else urls(endpoints),
        replay=_publish_replay(values, binds, endpoints),
        advertise=_publish_advertise(values, binds),
        curve=finish_curve(values, binds, endpoints),
    )
    return PublishConfig(**fields)


def _publish_replay(values: Values, binds: bool, endpoints: Endpoints) -> tuple[str, ...]:
    if binds:
        replay: Endpoints = values.require(
            "replay", "the endpoint to serve replays on, as in tcp://*:7451"
        )
        if len(replay) != 1:
            values.vals["replay"].fail(
                f"expected one endpoint when publish binds, got {len(replay)}"
            )
        check_no_clash(endpoints + replay)
        return urls(replay)
    for endpoint, item in endpoints:
        if endpoint.is_multicast:
            # With publish.connect there is no replay endpoint to advertise: gaps could never be repaired.
            item.fail(
                "a multicast endpoint goes under publish.bind, so heartbeats can advertise the replay endpoint"
            )
    unicast = len(endpoints)
    if not values.has("replay"):
        if unicast:
            values.missing("replay", "one collector replay endpoint per connect endpoint")
        return ()
    replay = values.values["replay"]
    for endpoint, item in replay:
        if endpoint.host == "*":
            item.fail("cannot connect to the wildcard '*'; name a host")
    if len(replay) != unicast:
        values.vals["replay"].fail(
            f"expected {unicast} endpoints, one per connect endpoint that is not multicast, got {len(replay)}"
        )
    return urls(replay)


def _publish_advertise(values: Values, binds: bool) -> str | None:
    if not values.has("advertise"):
        return None
    if not binds:
        values.vals["advertise"].fail("only used when publish binds")
    return str(values.values["advertise"].url)


PUBLISH = Section(
    (
        Key(
            "bind",
            EndpointList(),
            "endpoints the data socket binds; collectors connect here "
            "(`epgm://ADDRESS;GROUP:PORT` for multicast)",
        ),
        Key("connect", EndpointList(), "endpoints of collectors that bind, instead of bind"),
        Key(
            "replay",
            EndpointList(replay=True),
            "where collectors ask for lost byte ranges: bound when publish binds; "
            "when it connects, one collector replay endpoint per connect endpoint",
        ),
        Key(
            "advertise",
            Advertise(),
            "where heartbeats tell collectors to ask for replays (publish.bind only)",
            shown="replay endpoint, host name for `*`",
        ),
        Key("heartbeat_interval", Duration(0, 3600), "heartbeat period", default=1.0),
        Key(
            "send_hwm",
            Integer(1, MAX_INT32),
            "blocks queued per collector before tailing pauses (nothing dropped)",
            default=16,
        ),
        Key(
            "laggard_timeout",
            Duration(0.05, DAY_S),
            "a collector that takes nothing holds the others at most this long, "
            "then repairs from the files ([docs/laggards.md](docs/laggards.md))",
            default=1.0,
        ),
        CURVE_KEY,
        PGM_KEY,
    ),
    build=_build_publish,
    one_of=("bind", "connect"),
    one_of_what="the endpoints to use",
)

# --- sources -----------------------------------------------------------------------


def _build_source(values: Values) -> Source:
    fields = values.fields()
    # Given excludes are added to the defaults, not put in their place.
    fields["exclude"] = tuple(dict.fromkeys([*DEFAULT_EXCLUDE, *fields["exclude"]]))
    fields["paths"] = tuple(fields["paths"])
    return Source(**fields)


SOURCE = Section(
    (
        Key(
            "name", Name("a source name"), "the source's name, unique in this config", required=True
        ),
        Key(
            "topic",
            Topic(),
            "the topic its lines are published under; collectors subscribe to topic prefixes",
            required=True,
        ),
        Key(
            "paths",
            Globs(resolve=True, at_least_one=True),
            "globs of the files to tail (`**` matches any number of folders)",
            required=True,
            hint="a list of globs of the files to tail",
        ),
        Key(
            "exclude",
            Globs(resolve=False),
            "globs of file names to skip, added to the defaults (compressed files)",
            default=DEFAULT_EXCLUDE,
        ),
        Key(
            "start_at",
            Choice.of(StartAt),
            "for files found at the very first start: read them from the beginning or the end "
            "(then collectors close the gap before that point with a line saying so)",
            default=StartAt.BEGINNING,
        ),
        Key(
            "max_line_bytes",
            # Well under wire.MAX_BLOCK_BYTES, so a whole long line fits one block.
            Size(KIB, 16 * MIB),
            "longer lines are handled as long_lines says (each counted)",
            default=MIB,
        ),
        Key(
            "long_lines",
            Choice.of(LongLinePolicy),
            "what a line longer than max_line_bytes becomes: parts, its first part, or nothing",
            default=LongLinePolicy.SPLIT,
        ),
    )
)


@dataclass(frozen=True, slots=True)
class Sources(ValueType):
    """The list of sources: at least one, each name once."""

    def read(self, val: Val) -> tuple[Source, ...]:
        given = items(val, "a list of sources")
        if not given:
            val.fail("expected at least one source, got an empty list")
        sources: list[Source] = []
        names: dict[str, str] = {}
        for item in given:
            values = Values(item, SOURCE)
            source = _build_source(values)
            if source.name in names:
                values.vals["name"].fail(
                    f"duplicate source name {source.name!r} (also {names[source.name]})"
                )
            names[source.name] = item.path
            sources.append(source)
        return tuple(sources)

    def json(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": SOURCE.json()}

    def describe(self) -> str:
        return "list of mappings"

    def show(self, value: Any) -> Any:
        return None

    def children(self) -> tuple[str, Section]:
        return "[].", SOURCE


# --- the producer ------------------------------------------------------------------


def _default_node(root: Val) -> str:
    host = socket.gethostname()
    if not is_name(host):
        root.at(root.node, "node").fail(
            f"the host name {quote(host)} is not a valid node name; set node", 1
        )
    return host


def _build_producer(values: Values) -> ProducerConfig:
    fields = values.fields()
    if fields["node"] is None:
        fields["node"] = _default_node(values.val)
    return ProducerConfig(path=os.path.abspath(values.val.file), **fields)


PRODUCER = Section(
    (
        Key(
            "node",
            Name("a node name"),
            "this producer's name in every block and in the collectors' output paths",
            shown="host name",
        ),
        Key(
            "state_dir",
            Path("a folder path"),
            "offset store, instance id, control socket",
            default="/var/lib/zaggd/producer",
        ),
        LOG_LEVEL_KEY,
        Key(
            "rescan_interval",
            Duration(0, DAY_S),
            "rescan for what inotify missed (and the only way files are found when "
            "inotify is unavailable)",
            default=10.0,
        ),
        Key(
            "read_bytes",
            Size(4 * KIB, 64 * MIB),
            "block size: how much is read from a file at a time, cut at its last newline",
            default=256 * KIB,
        ),
        Key(
            "close_idle",
            Duration(0, 365 * DAY_S),
            "idle files are closed, reopened when they grow",
            default=300.0,
        ),
        Key("max_open_files", Integer(16, 1024**2), "bound on open files", default=1024),
        Key(
            "state_interval",
            Duration(0, DAY_S),
            "offset store write period (and always at shutdown)",
            default=1.0,
        ),
        Key("publish", PUBLISH, "the data socket, replays and heartbeats", required=True),
        Key("sources", Sources(), "what to tail, each under its own topic", required=True),
    ),
    build=_build_producer,
)
