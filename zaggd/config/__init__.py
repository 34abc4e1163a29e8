"""Configuration: YAML -> frozen dataclasses. All validation lives here.

`load()` builds the whole config before anything else changes, so a bad file
is refused at start (exit) and at reload (the running config stays). Errors
are one line: file, line, key, problem.

Code holds ints in bytes and floats in seconds; the YAML may say 100MiB or 1d.
Relative paths in a config (state_dir, globs, output.path, key files, ipc://
endpoints) are taken from the config file's folder and stored absolute.

The package, by concern:

- yamlfile.py: reading the file into YAML nodes, bounded (a regular file,
  its size, its node count with aliases expanded);
- nodes.py: those nodes with file, line and key path, for one-line errors;
- units.py, endpoints.py: sizes, durations and ZeroMQ endpoints, pure;
- schema.py: keys and sections, the checker they drive; values.py and
  network.py: the types of values; producer.py, collector.py: every key of
  each daemon's config, with its default and meaning;
- documents.py: the key tables (README) and JSON Schema (editors) from them;
- model.py: the dataclasses and Enums the daemons are given.
"""

from __future__ import annotations

from zaggd.config.collector import COLLECTOR
from zaggd.config.endpoints import Endpoint, parse_endpoint
from zaggd.config.model import (
    CollectorConfig,
    Compression,
    CurveConfig,
    FsyncPolicy,
    LongLinePolicy,
    OutputConfig,
    OutputFormat,
    PgmConfig,
    ProducerConfig,
    PublishConfig,
    RotateConfig,
    Source,
    StartAt,
    SubscribeConfig,
)
from zaggd.config.nodes import Val, read_root, top_keys
from zaggd.config.producer import PRODUCER
from zaggd.config.units import parse_duration, parse_size

__all__ = [
    "CollectorConfig",
    "Compression",
    "CurveConfig",
    "Endpoint",
    "FsyncPolicy",
    "LongLinePolicy",
    "OutputConfig",
    "OutputFormat",
    "PgmConfig",
    "ProducerConfig",
    "PublishConfig",
    "RotateConfig",
    "Source",
    "StartAt",
    "SubscribeConfig",
    "load",
    "load_collector",
    "load_producer",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
]

_PRODUCER_KEYS = ("publish", "sources")
_COLLECTOR_KEYS = ("subscribe", "output")


def _kind_of(root: Val) -> str | None:
    """'producer', 'collector', or None when the top-level keys do not say."""
    keys = top_keys(root)
    producer = any(key in keys for key in _PRODUCER_KEYS)
    collector = any(key in keys for key in _COLLECTOR_KEYS)
    if producer == collector:
        return None
    return "producer" if producer else "collector"


def _read_producer(root: Val) -> ProducerConfig:
    config: ProducerConfig = PRODUCER.read(root)
    return config


def _read_collector(root: Val) -> CollectorConfig:
    config: CollectorConfig = COLLECTOR.read(root)
    return config


def load(path: str) -> ProducerConfig | CollectorConfig:
    """Read and check a producer or collector config; ConfigError names file, line and key."""
    root = read_root(path)
    kind = _kind_of(root)
    if kind is None:
        root.fail(
            "cannot tell a producer config from a collector config: "
            "expected 'publish' and 'sources', or 'subscribe' and 'output'"
        )
    return _read_producer(root) if kind == "producer" else _read_collector(root)


def load_producer(path: str) -> ProducerConfig:
    root = read_root(path)
    if _kind_of(root) == "collector":
        root.fail(
            "expected a producer config (with 'publish' and 'sources'), got a collector config"
        )
    return _read_producer(root)


def load_collector(path: str) -> CollectorConfig:
    root = read_root(path)
    if _kind_of(root) == "producer":
        root.fail(
            "expected a collector config (with 'subscribe' and 'output'), got a producer config"
        )
    return _read_collector(root)
