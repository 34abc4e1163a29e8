"""The collector's config: every key with its type, default and meaning, and CollectorConfig built from them."""

from __future__ import annotations

import grp
import os
import re
from dataclasses import dataclass
from typing import Any

from yaml.nodes import ScalarNode

from zaggd.config.messages import quote
from zaggd.config.model import (
    CollectorConfig,
    Compression,
    FsyncPolicy,
    OutputConfig,
    OutputFormat,
    RotateConfig,
    StartAt,
    SubscribeConfig,
)
from zaggd.config.network import (
    CURVE_KEY,
    PGM_KEY,
    EndpointList,
    Endpoints,
    check_no_clash,
    direction,
    finish_curve,
    urls,
)
from zaggd.config.nodes import Val, text
from zaggd.config.schema import Key, Section, Values, ValueType
from zaggd.config.units import DAY_S
from zaggd.config.values import (
    LOG_LEVEL_KEY,
    MAX_INT32,
    Choice,
    Duration,
    Integer,
    Path,
    Size,
    TopicPrefixes,
    check_path_text,
)

_HUGE_SIZE = 1000**5

# --- subscribe ---------------------------------------------------------------------


def _build_subscribe(values: Values) -> SubscribeConfig:
    binds, endpoints = direction(values)
    fields = values.fields()
    fields.update(
        bind=urls(endpoints) if binds else (),
        connect=() if binds else urls(endpoints),
        replay=_subscribe_replay(values, binds, endpoints),
        curve=finish_curve(values, binds, endpoints),
    )
    return SubscribeConfig(**fields)


def _subscribe_replay(values: Values, binds: bool, endpoints: Endpoints) -> str | None:
    if not binds:
        if values.has("replay"):
            values.vals["replay"].fail(
                "only used when subscribe binds; when it connects, "
                "the producers' heartbeats say where to ask for replays"
            )
        return None
    replay: Endpoints = values.require(
        "replay", "the endpoint producers connect their replay to, as in tcp://*:7451"
    )
    if len(replay) != 1:
        values.vals["replay"].fail(f"expected one endpoint, got {len(replay)}")
    check_no_clash(endpoints + replay)
    return replay[0][0].url


SUBSCRIBE = Section(
    (
        Key(
            "connect",
            EndpointList(),
            "producers to connect to (`epgm://ADDRESS;GROUP:PORT` for multicast)",
        ),
        Key("bind", EndpointList(), "endpoints producers connect to, instead of connect"),
        Key(
            "replay",
            EndpointList(replay=True),
            "only when subscribe binds: the endpoint producers connect their replay to",
        ),
        Key(
            "topics",
            TopicPrefixes(),
            'topic prefixes to receive; `""` is everything',
            default=("",),
        ),
        Key(
            "start_at",
            Choice.of(StartAt),
            "for producers never heard from: replay what they still have, or only new lines",
            default=StartAt.BEGINNING,
        ),
        Key(
            "receive_hwm",
            Integer(1, MAX_INT32),
            "blocks (up to the producers' read_bytes each) queued before producers are slowed",
            default=4,
        ),
        Key(
            "max_nodes",
            Integer(1, MAX_INT32),
            "bound on producers, against runaway or hostile peers",
            default=1000,
        ),
        Key(
            "max_streams_per_node",
            Integer(1, MAX_INT32),
            "bound on streams per producer, against runaway or hostile peers",
            default=100000,
        ),
        CURVE_KEY,
        PGM_KEY,
    ),
    build=_build_subscribe,
    one_of=("bind", "connect"),
    one_of_what="the endpoints to use",
)

# --- output ------------------------------------------------------------------------

_PLACEHOLDERS = ("topic", "node", "source", "date")
_BRACES_RE = re.compile(r"\{([^{}]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class OutputPath(ValueType):
    """A file path template: placeholders {topic} {node} {source} {date}, ending in a file name."""

    def read(self, val: Val) -> str:
        what = "a file path template such as /var/log/zaggd/{topic}/{node}.log"
        template = text(val, what)
        check_path_text(val, template, what)
        for match in _BRACES_RE.finditer(template):
            if match[1] is None:
                val.fail(
                    f"unmatched {match[0]!r}; braces may only hold the placeholders "
                    "{topic}, {node}, {source} and {date}"
                )
            if match[1] not in _PLACEHOLDERS:
                val.fail(
                    f"unknown placeholder {quote(match[0])}; use {{topic}}, {{node}}, {{source}} or {{date}}"
                )
        if template.endswith("/") or os.path.basename(template) in (".", ".."):
            val.fail(f"must end in a file name, not a folder: {val.shown}")
        return val.resolve(template)

    def json(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "pattern": "[^/]$"}

    def describe(self) -> str:
        return "path template"


_OCTAL_MODE_RE = re.compile(r"0o?([0-7]{3})")


@dataclass(frozen=True, slots=True)
class FileMode(ValueType):
    """An output file's mode, written in octal (0640): the owner reads and writes, nobody
    executes. A number not written in octal is refused rather than guessed at."""

    def read(self, val: Val) -> int:
        what = "an octal file mode such as 0640 (owner rw, group r)"
        node = val.node
        written = str(node.value) if isinstance(node, ScalarNode) else ""
        match = _OCTAL_MODE_RE.fullmatch(written)
        if match is None:
            val.fail(f"expected {what}, got {val.shown}")
        mode = int(match[1], 8)
        if mode & 0o111 or (mode & 0o600) != 0o600:
            val.fail(f"expected {what}: the owner reads and writes, nobody executes; got {written}")
        return mode

    def json(self) -> dict[str, Any]:
        return {"type": ["string", "integer"], "pattern": "^0o?[0-7]{3}$"}

    def describe(self) -> str:
        return "octal mode"

    def show(self, value: Any) -> Any:
        return f"0{value:o}"


@dataclass(frozen=True, slots=True)
class GroupName(ValueType):
    """A group that exists on this host."""

    def read(self, val: Val) -> str:
        name = text(val, "a group name, such as adm")
        try:
            grp.getgrnam(name)
        except KeyError:
            val.fail(f"no group {name!r} on this host")
        return name

    def json(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}

    def describe(self) -> str:
        return "group name"


ROTATE = Section(
    (
        Key(
            "max_bytes",
            Size(1, _HUGE_SIZE),
            "a live file is cut when the next block would take it past this size",
        ),
        Key(
            "every",
            Duration(1, 366 * DAY_S, whole=True),
            "a live file is cut at its first write after each UTC boundary of this period "
            "(a daily file starts at 00:00 UTC)",
        ),
        Key("keep", Integer(1, 1_000_000), "rotated files kept per live file"),
        Key("max_age", Duration(1, 36500 * DAY_S), "rotated files older than this are deleted"),
        Key(
            "max_total_bytes",
            Size(1, _HUGE_SIZE),
            "rotated files of a folder beyond this total are deleted, oldest first",
        ),
        Key(
            "compress",
            Choice.of(Compression),
            "rotated files are gzipped in the background",
            default=Compression.NONE,
        ),
    ),
    build=lambda values: RotateConfig(**values.fields()),
)

OUTPUT = Section(
    (
        Key(
            "path",
            OutputPath(),
            "where lines go: a template with `{topic}`, `{node}`, `{source}`, `{date}` (UTC)",
            required=True,
            hint="the output file template, as in /var/log/zaggd/{topic}/{node}.log",
        ),
        Key(
            "format",
            Choice.of(OutputFormat),
            "`raw` (the file's bytes), `prefixed` (`NODE<TAB>PATH<TAB>LINE`), "
            "`jsonl` (one JSON object per line)",
            default=OutputFormat.RAW,
        ),
        Key(
            "fsync",
            Choice.of(FsyncPolicy),
            "when output is fsynced: every fsync_interval, after every block, or never",
            default=FsyncPolicy.INTERVAL,
        ),
        Key(
            "fsync_interval",
            Duration(0, DAY_S),
            "fsync period when fsync is `interval`",
            default=1.0,
        ),
        Key(
            "rotate",
            ROTATE,
            "rotation by size and time, compression and retention (below)",
            default=RotateConfig(),
        ),
        Key(
            "group",
            GroupName(),
            "group of the output's files and folders, so that its members may read them "
            "(`adm` as shipped); the collector must be in it (units: `SupplementaryGroups=`); "
            "none: the collector's own",
        ),
        Key(
            "mode",
            FileMode(),
            "mode of the output files, in octal; folders get `x` where files get `r`",
            default=0o640,
        ),
    ),
    build=lambda values: OutputConfig(**values.fields()),
)

# --- the collector -----------------------------------------------------------------

COLLECTOR = Section(
    (
        Key(
            "state_dir",
            Path("a folder path"),
            "checkpoint and control socket",
            default="/var/lib/zaggd/collector",
        ),
        LOG_LEVEL_KEY,
        Key(
            "subscribe", SUBSCRIBE, "producers to take blocks from, and which topics", required=True
        ),
        Key("output", OUTPUT, "the files lines are written to", required=True),
    ),
    build=lambda values: CollectorConfig(path=os.path.abspath(values.val.file), **values.fields()),
)
