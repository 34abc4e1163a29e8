"""What the daemons are given: the config as frozen dataclasses, and its policies as Enums.

Values are in code units: bytes, seconds, kbit/s; paths absolute. Defaults
here serve code that builds a config directly; a loaded config takes every
value from the schema (producer.py, collector.py), whose defaults a test
holds equal to these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class StartAt(Enum):
    BEGINNING = "beginning"
    END = "end"


class LongLinePolicy(Enum):
    SPLIT = "split"
    TRUNCATE = "truncate"
    SKIP = "skip"


class OutputFormat(Enum):
    RAW = "raw"
    PREFIXED = "prefixed"
    JSONL = "jsonl"


class FsyncPolicy(Enum):
    INTERVAL = "interval"
    ALWAYS = "always"
    NEVER = "never"


class Compression(Enum):
    GZIP = "gzip"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CurveConfig:
    secret_key_file: str
    # Connecting side: the binder's public key, one per connect endpoint.
    server_key_files: tuple[str, ...] = ()
    # Binding side: the folder of public keys it accepts (NAME.key).
    allow_dir: str | None = None


@dataclass(frozen=True, slots=True)
class PgmConfig:
    # 100 Mbit/s for 2 s: a producer keeps rate x interval (25 MB) for repairs;
    # replays over tcp repair the rest. Why: docs/multicast.md.
    rate_kbps: int = 100_000
    recovery_interval_s: float = 2.0
    hops: int = 1


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    topic: str
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ("*.gz", "*.xz", "*.zst", "*.bz2")
    start_at: StartAt = StartAt.BEGINNING
    max_line_bytes: int = 1048576
    long_lines: LongLinePolicy = LongLinePolicy.SPLIT


@dataclass(frozen=True, slots=True)
class PublishConfig:
    bind: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()
    # Bound when publish binds (one endpoint); connected when it connects (one per collector).
    replay: tuple[str, ...] = ()
    advertise: str | None = None
    heartbeat_interval_s: float = 1.0
    send_hwm: int = 16  # messages; a block is up to read_bytes
    curve: CurveConfig | None = None
    pgm: PgmConfig = field(default_factory=PgmConfig)
    # How long a collector that takes nothing may hold the others before it is
    # left behind to repair from the files (docs/protocol.md, section 12).
    laggard_timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    path: str  # the config file this came from
    node: str
    state_dir: str
    publish: PublishConfig
    sources: tuple[Source, ...]
    rescan_interval_s: float = 10.0
    read_bytes: int = 262144
    close_idle_s: float = 300.0
    max_open_files: int = 1024
    state_interval_s: float = 1.0
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class SubscribeConfig:
    bind: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()
    # Needed only when subscribe binds: the endpoint producers connect their replay to.
    replay: str | None = None
    topics: tuple[str, ...] = ("",)
    start_at: StartAt = StartAt.BEGINNING
    receive_hwm: int = 4  # messages; a block is up to read_bytes
    max_nodes: int = 1000
    max_streams_per_node: int = 100000
    curve: CurveConfig | None = None
    pgm: PgmConfig = field(default_factory=PgmConfig)


@dataclass(frozen=True, slots=True)
class RotateConfig:
    max_bytes: int | None = None
    every_s: int | None = None
    keep: int | None = None
    max_age_s: float | None = None
    max_total_bytes: int | None = None
    compress: Compression = Compression.NONE


@dataclass(frozen=True, slots=True)
class OutputConfig:
    path: str  # template with {topic} {node} {source} {date}
    format: OutputFormat = OutputFormat.RAW
    rotate: RotateConfig = field(default_factory=RotateConfig)
    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    fsync_interval_s: float = 1.0
    # Who may read the output: the group its files and folders get (None: the
    # collector's own), and the files' mode (folders get x where files get r).
    group: str | None = None
    mode: int = 0o640


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    path: str  # the config file this came from
    state_dir: str
    subscribe: SubscribeConfig
    output: OutputConfig
    log_level: str = "info"
