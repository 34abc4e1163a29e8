"""Configuration: YAML -> frozen dataclasses. All validation lives here.

`load()` builds the whole config before anything else changes, so a bad file
is refused at start (exit) and at reload (the running config stays). Errors
are one line: file, line, key, problem.

Code holds ints in bytes and floats in seconds; the YAML may say 100MiB or 1d.
Relative paths in a config (state_dir, globs, output.path, key files, ipc://
endpoints) are taken from the config file's folder and stored absolute.

Public: load(), load_producer(), load_collector(), parse_size(),
parse_duration(), parse_endpoint() -> Endpoint. configfile.py reads the file
and composes it into nodes (bounded: a regular file, its size, its node count
with aliases expanded); line numbers come from those nodes, so nothing of the
YAML is constructed but plain scalars.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any, NoReturn, TypeVar, cast

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from zaggd import configfile
from zaggd.configfile import fail_file as _fail_file
from zaggd.configfile import one_line as _one_line
from zaggd.errors import ConfigError


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


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    path: str  # the config file this came from
    state_dir: str
    subscribe: SubscribeConfig
    output: OutputConfig
    log_level: str = "info"


# --- sizes and durations ----------------------------------------------------

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_NUMBER_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)", re.ASCII)
# Longer texts are refused before any arithmetic, so no input is slow or huge.
_MAX_NUMBER_TEXT = 40


def parse_size(text: str | int) -> int:
    """Bytes from a plain integer or a number and unit: 512, 4KiB, 1.5GB, 100MiB."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"expected a size such as 100MiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    match = _split_number_unit(text)
    unit = match[1].lower() if match else ""
    if match is None or (match[1] and unit not in _SIZE_UNITS):
        raise ValueError(f"expected a size such as 100MiB, got {_quote(text)}")
    size = Fraction(match[0]) * _SIZE_UNITS.get(unit, 1)
    if size.denominator != 1:
        raise ValueError(f"{_quote(text)} is not a whole number of bytes")
    return int(size)


def parse_duration(text: str | int | float) -> float:
    """Seconds from a plain number of seconds or a number and unit: 250ms, 10s, 5m, 1h, 1d."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a duration such as 10s, got {text!r}")
    if isinstance(text, str):
        return _parse_duration_text(text)
    try:
        seconds = float(text)
    except OverflowError:
        raise ValueError(f"a duration of {text} seconds is too long") from None
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {text}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {text}")
    return seconds


def _parse_duration_text(text: str) -> float:
    match = _split_number_unit(text)
    if match is None or (match[1] and match[1] not in _DURATION_UNITS):
        raise ValueError(f"expected a duration such as 10s, got {_quote(text)}")
    return float(Fraction(match[0]) * _DURATION_UNITS.get(match[1], Fraction(1)))


def _split_number_unit(text: str) -> tuple[str, str] | None:
    if len(text) > _MAX_NUMBER_TEXT:
        return None
    match = _NUMBER_UNIT_RE.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


def _show_size(size: int) -> str:
    for name in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
        unit = _SIZE_UNITS[name.lower()]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return str(size)


def _show_duration(seconds: float) -> str:
    for name in ("d", "h", "m", "s", "ms"):
        count = Fraction(seconds) / _DURATION_UNITS[name]
        if count >= 1 and count.denominator == 1:
            return f"{count}{name}"
    return f"{seconds:g}s"


# --- endpoints ---------------------------------------------------------------

_SCHEMES = ("tcp", "ipc", "epgm", "pgm")
_WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]")
_HOST_NAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?",
    re.ASCII,
)
_INTERFACE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:@-]*", re.ASCII)
_DOTTED_RE = re.compile(r"[0-9.]+", re.ASCII)
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
# sun_path holds 108 bytes, the last one a NUL.
_MAX_IPC_PATH_BYTES = 107
_NO_PGM = (
    "this libzmq has no PGM (multicast) support; install Debian's python3-zmq, "
    "or build pyzmq against the system libzmq: "
    "apt-get install libzmq3-dev && pip install --no-binary pyzmq pyzmq"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked ZeroMQ endpoint. `url` is what to bind or connect (ipc paths absolute)."""

    scheme: str  # tcp, ipc, epgm or pgm
    url: str
    host: str = ""  # tcp: the host as written ('*', an address or a name); pgm: the interface
    port: int = 0  # tcp and pgm; 0 for ipc

    @property
    def is_multicast(self) -> bool:
        return self.scheme in ("epgm", "pgm")

    @property
    def is_wildcard(self) -> bool:
        """A tcp endpoint on every interface, which others cannot connect to."""
        return self.scheme == "tcp" and self.host in _WILDCARD_HOSTS


def parse_endpoint(text: str, base_dir: str | None = None) -> Endpoint:
    """Check an endpoint; a relative ipc:// path is taken from base_dir (default: cwd)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an endpoint such as tcp://host:7450, got {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"expected an endpoint such as tcp://host:7450, got {_quote(text)}")
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported endpoint {_quote(text)}; use tcp://, ipc://, epgm:// or pgm://"
        )
    if scheme == "tcp":
        return _parse_tcp(text, rest)
    if scheme == "ipc":
        return _parse_ipc(rest, base_dir)
    return _parse_pgm(text, scheme, rest)


def _parse_tcp(text: str, rest: str) -> Endpoint:
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected tcp://HOST:PORT, got {_quote(text)}")
    _check_tcp_host(host)
    return Endpoint("tcp", text, host, _parse_port(port))


def _check_tcp_host(host: str) -> None:
    if host == "*":
        return
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{_quote(host)} is not an IPv6 address") from None
        return
    if ":" in host:
        raise ValueError(
            f"put an IPv6 address in brackets, as in tcp://[::1]:7450, got {_quote(host)}"
        )
    if _DOTTED_RE.fullmatch(host):
        _parse_ipv4(host)
    elif not _HOST_NAME_RE.fullmatch(host):
        raise ValueError(f"{_quote(host)} is not a host name, an IP address or '*'")


def _parse_ipv4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{_quote(text)} is not an IPv4 address") from None


def _parse_port(text: str) -> int:
    if not _PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {_quote(text)}")
    return int(text)


def _parse_ipc(rest: str, base_dir: str | None) -> Endpoint:
    if not rest:
        raise ValueError("expected a socket path after ipc://, as in ipc:///run/zaggd/data.sock")
    if "\0" in rest:
        raise ValueError("an ipc:// path cannot contain a NUL character")
    if rest.startswith("@"):  # Linux abstract namespace: a name, not a path
        path = rest
    elif rest.endswith("/"):
        raise ValueError(f"an ipc:// path names a socket file, not a folder: {_quote(rest)}")
    else:
        path = os.path.normpath(os.path.join(base_dir or os.getcwd(), rest))
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > _MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"the ipc:// path is {size} bytes long, over the {_MAX_IPC_PATH_BYTES} "
            f"a socket path may have: {_quote(path)}"
        )
    return Endpoint("ipc", "ipc://" + path)


def _parse_pgm(text: str, scheme: str, rest: str) -> Endpoint:
    address, sep, tail = rest.partition(";")
    group, sep2, port = tail.rpartition(":")
    if not sep or not sep2 or not address or not group:
        raise ValueError(
            f"expected {scheme}://ADDRESS;GROUP:PORT, as in "
            f"{scheme}://192.0.2.10;239.192.0.1:7450, got {_quote(text)}"
        )
    if not _DOTTED_RE.fullmatch(address) and _INTERFACE_NAME_RE.fullmatch(address):
        raise ValueError(
            f"{_quote(address)} looks like an interface name: give the interface's IP address, "
            "not its name (OpenPGM looks names up in DNS)"
        )
    _parse_ipv4(address)
    if not _DOTTED_RE.fullmatch(group) or not _parse_ipv4(group).is_multicast:
        raise ValueError(
            f"{_quote(group)} is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255)"
        )
    return Endpoint(scheme, text, address, _parse_port(port))


def _has_pgm() -> bool:
    import zmq  # lazily: config checks need no libzmq unless multicast is asked for

    return bool(zmq.has("pgm"))


# --- reading YAML with line numbers -----------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_KINDS = {
    _STR: "a string",
    _INT: "an integer",
    _FLOAT: "a decimal number",
    _BOOL: "a boolean",
    _NULL: "an empty value",
    _TIMESTAMP: "a date",
}
_MAX_MERGE_DEPTH = 16
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Val:
    """A YAML node with what an error about it needs: file, line and key path."""

    file: str  # as given, for messages
    folder: str  # absolute; relative paths in the config are taken from here
    node: Node
    path: str
    line: int

    def at(self, node: Node, path: str) -> _Val:
        return _Val(self.file, self.folder, node, path, _line_of(node))

    def item(self, index: int, node: Node) -> _Val:
        return self.at(node, f"{self.path}[{index}]")

    def fail(self, problem: str, line: int | None = None) -> NoReturn:
        where = f"{self.file}:{self.line if line is None else line}"
        text = f"{where}: {self.path}: {problem}" if self.path else f"{where}: {problem}"
        raise ConfigError(_one_line(text))

    @property
    def shown(self) -> str:
        """The value as a message quotes it: strings quoted, numbers bare."""
        node = self.node
        if not isinstance(node, ScalarNode):
            return _kind(node)
        return _quote(node.value) if node.tag == _STR else _short(str(node.value))

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.folder, path))


def _line_of(node: Node) -> int:
    mark = node.start_mark
    return mark.line + 1 if mark is not None else 1


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(text: str) -> str:
    return repr(_short(text))


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
    return _KINDS.get(node.tag, f"a value tagged {_quote(tag)}")


def _join(path: str, key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        return f"{path}[{_quote(key)}]"
    return f"{path}.{key}" if path else key


def _read_root(path: str) -> _Val:
    node = configfile.compose(path)
    if not isinstance(node, MappingNode):
        _fail_file(path, 1, "expected a mapping of settings at the top level")
    folder = os.path.dirname(os.path.abspath(path))
    return _Val(path, folder, node, "", 1)


def _mapping_pairs(val: _Val) -> list[tuple[Node, Node]]:
    """The mapping's key/value pairs in document order, with `<<` merges spliced in."""
    pairs: list[tuple[Node, Node]] = val.node.value
    explicit = {k.value for k, _ in pairs if isinstance(k, ScalarNode) and k.tag != _MERGE}
    result: list[tuple[Node, Node]] = []
    merged: set[str] = set()
    for key, value in pairs:
        if isinstance(key, ScalarNode) and key.tag == _MERGE:
            for mkey, mvalue in _merge_source(val.at(value, _join(val.path, "<<")), 0):
                if mkey.value not in explicit and mkey.value not in merged:
                    merged.add(mkey.value)
                    result.append((mkey, mvalue))
        else:
            result.append((key, value))
    return result


def _merge_source(val: _Val, depth: int) -> list[tuple[Node, Node]]:
    if depth > _MAX_MERGE_DEPTH:
        val.fail("merges nested too deeply")
    nodes = val.node.value if isinstance(val.node, SequenceNode) else [val.node]
    pairs: list[tuple[Node, Node]] = []
    for node in nodes:
        if not isinstance(node, MappingNode):
            val.fail(f"expected a mapping (or a list of mappings) to merge, got {_kind(node)}")
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                val.at(key, val.path).fail(f"expected a key name, got {_kind(key)}")
            if key.tag == _MERGE:
                pairs.extend(_merge_source(val.at(value, val.path), depth + 1))
            else:
                pairs.append((key, value))
    return pairs


Reader = Callable[[_Val], Any]


class _Section:
    """One mapping of settings, each value checked by its reader, in document order."""

    def __init__(self, val: _Val, readers: dict[str, Reader]) -> None:
        if not isinstance(val.node, MappingNode):
            val.fail(f"expected a mapping of settings, got {_kind(val.node)}")
        self.val = val
        self.values: dict[str, Any] = {}
        self.vals: dict[str, _Val] = {}
        for key_node, value_node in _mapping_pairs(val):
            key = self._key(key_node)
            sub = val.at(value_node, _join(val.path, key))
            if key in self.vals:
                sub.fail(
                    f"duplicate key (first given on line {self.vals[key].line})", _line_of(key_node)
                )
            reader = readers.get(key)
            if reader is None:
                sub.fail(_unknown_key(key, readers), _line_of(key_node))
            self.vals[key] = sub
            self.values[key] = reader(sub)

    def _key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            self.val.at(node, self.val.path).fail(f"expected a key name, got {_kind(node)}")
        return str(node.value)

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: T) -> T:
        return cast(T, self.values.get(key, default))

    def require(self, key: str, what: str = "") -> Any:
        if key not in self.values:
            self.missing(key, what)
        return self.values[key]

    def missing(self, key: str, what: str = "") -> NoReturn:
        problem = f"missing required key ({what})" if what else "missing required key"
        self.val.at(self.val.node, _join(self.val.path, key)).fail(problem, self.val.line)


def _unknown_key(key: str, known: dict[str, Reader]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


# --- value readers -------------------------------------------------------------


def _expected(val: _Val, what: str, hint: bool = False) -> NoReturn:
    """Refuse a value of the wrong type; `hint` suggests quotes for a bare yes, 1.0 or 2024-01-01."""
    node = val.node
    problem = f"expected {what}, got {_kind(node)}"
    if hint and isinstance(node, ScalarNode) and node.style is None and node.tag in _QUOTABLE:
        problem += f" (quote it: {_quote(node.value)})"
    val.fail(problem)


_QUOTABLE = (_BOOL, _INT, _FLOAT, _TIMESTAMP)


def _text(val: _Val, what: str = "a string", hint: bool = True) -> str:
    node = val.node
    if not (isinstance(node, ScalarNode) and node.tag == _STR):
        _expected(val, what, hint)
    return str(node.value)


def _items(val: _Val, what: str) -> list[_Val]:
    node = val.node
    if not isinstance(node, SequenceNode):
        _expected(val, what)
    return [val.item(i, child) for i, child in enumerate(node.value)]


def _text_or_items(val: _Val, what: str) -> list[_Val]:
    """A single string, or a list of them, as a list of items."""
    if isinstance(val.node, ScalarNode) and val.node.tag == _STR:
        return [val]
    return _items(val, what)


def _yaml_int(text: str) -> int:
    """YAML 1.1 integers as PyYAML reads them (0x, 0b, 0 octal, 1:30 base 60)."""
    value = text.replace("_", "")
    sign = -1 if value.startswith("-") else 1
    value = value[1:] if value[:1] in ("+", "-") else value
    if value.startswith("0b"):
        return sign * int(value[2:], 2)
    if value.startswith("0x"):
        return sign * int(value[2:], 16)
    if value.startswith("0") and value != "0":
        return sign * int(value, 8)
    if ":" in value:
        total = 0
        for part in value.split(":"):
            total = total * 60 + int(part)
        return sign * total
    return sign * int(value)


def _yaml_float(text: str) -> float:
    value = text.replace("_", "").lower()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value[1:] if value[:1] in ("+", "-") else value
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    if ":" in value:
        total = 0.0
        for part in value.split(":"):
            total = total * 60 + float(part)
        return sign * total
    return sign * float(value)


def _number(val: _Val, what: str) -> int | float:
    node = val.node
    if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
        _expected(val, what)
    if len(node.value) > _MAX_NUMBER_TEXT:
        val.fail(f"{_quote(node.value)} is too long for a number")
    try:
        return _yaml_int(node.value) if node.tag == _INT else _yaml_float(node.value)
    except (ValueError, OverflowError):
        val.fail(f"cannot read {_quote(node.value)} as a number")


def _check_range(val: _Val, value: float, lo: float, hi: float, show: Callable[[Any], str]) -> None:
    if lo == 0 and value <= 0:
        val.fail(f"must be more than 0, got {val.shown}")
    if value < lo:
        val.fail(f"must be at least {show(lo)}, got {val.shown}")
    if value > hi:
        val.fail(f"must be at most {show(hi)}, got {val.shown}")


def _integer(lo: int, hi: int) -> Callable[[_Val], int]:
    def read(val: _Val) -> int:
        node = val.node
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            _expected(val, "an integer")
        value = _number(val, "an integer")
        _check_range(val, value, lo, hi, str)
        return int(value)

    return read


def _size(lo: int, hi: int) -> Callable[[_Val], int]:
    def read(val: _Val) -> int:
        node = val.node
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT, _STR):
            _expected(val, "a size such as 100MiB")
        raw = int(_number(val, "an integer")) if node.tag == _INT else str(node.value)
        try:
            size = parse_size(raw)
        except ValueError as e:
            val.fail(str(e))
        _check_range(val, size, lo, hi, _show_size)
        return size

    return read


def _duration(lo: float, hi: float) -> Callable[[_Val], float]:
    def read(val: _Val) -> float:
        node = val.node
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT, _STR):
            _expected(val, "a duration such as 10s")
        raw = str(node.value) if node.tag == _STR else _number(val, "a duration such as 10s")
        try:
            seconds = parse_duration(raw)
        except ValueError as e:
            val.fail(str(e))
        _check_range(val, seconds, lo, hi, _show_duration)
        return seconds

    return read


E = TypeVar("E", bound=Enum)


def _choice(cls: type[E]) -> Callable[[_Val], E]:
    names = [str(member.value) for member in cls]
    what = "one of " + ", ".join(names)

    def read(val: _Val) -> E:
        text = _text(val, what, hint=False)
        for member in cls:
            if member.value == text:
                return member
        val.fail(f"expected {what}, got {val.shown}")

    return read


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(val: _Val) -> str:
    what = "one of " + ", ".join(_LOG_LEVELS)
    text = _text(val, what, hint=False)
    if text not in _LOG_LEVELS:
        val.fail(f"expected {what}, got {val.shown}")
    return text


def _path(what: str) -> Callable[[_Val], str]:
    def read(val: _Val) -> str:
        text = _text(val, what)
        _check_path_text(val, text, what)
        return val.resolve(text)

    return read


def _check_path_text(val: _Val, text: str, what: str) -> None:
    if not text:
        val.fail(f"expected {what}, got an empty string")
    if "\0" in text:
        val.fail("a path cannot contain a NUL character")


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _name(what: str) -> Callable[[_Val], str]:
    def read(val: _Val) -> str:
        text = _text(val, what)
        if not _NAME_RE.fullmatch(text):
            val.fail(f"expected {what} of {_NAME_RULE}, got {val.shown}")
        return text

    return read


_MAX_TOPIC_BYTES = 255


def _topic_problem(text: str) -> str | None:
    if not text.isprintable() or any(c.isspace() for c in text):
        return "a topic cannot contain spaces or control characters"
    if len(text.encode("utf-8")) > _MAX_TOPIC_BYTES:
        return f"a topic is at most {_MAX_TOPIC_BYTES} bytes of UTF-8"
    return None


def _topic(val: _Val) -> str:
    text = _text(val, "a topic")
    if not text:
        val.fail("expected a topic, got an empty string")
    problem = _topic_problem(text)
    if problem:
        val.fail(f"{problem}, got {val.shown}")
    return text


def _topic_prefix(val: _Val) -> str:
    text = _text(val, 'a topic prefix ("" for all)')
    problem = _topic_problem(text)
    if problem:
        val.fail(f"{problem}, got {val.shown}")
    return text


# --- endpoints in the config -----------------------------------------------------

Endpoints = list[tuple[Endpoint, _Val]]


def _endpoint(val: _Val) -> Endpoint:
    text = _text(val, "an endpoint such as tcp://host:7450", hint=False)
    try:
        return parse_endpoint(text, val.folder)
    except ValueError as e:
        val.fail(str(e))


def _endpoint_list(val: _Val) -> Endpoints:
    endpoints: Endpoints = []
    seen: dict[str, _Val] = {}
    for item in _text_or_items(val, "an endpoint or a list of endpoints"):
        endpoint = _endpoint(item)
        if endpoint.url in seen:
            item.fail(f"duplicate endpoint (also {seen[endpoint.url].path})")
        seen[endpoint.url] = item
        endpoints.append((endpoint, item))
    return endpoints


def _data_endpoints(val: _Val) -> Endpoints:
    """bind or connect: any scheme; multicast needs a libzmq with PGM."""
    endpoints = _endpoint_list(val)
    if not endpoints:
        val.fail("expected at least one endpoint, got an empty list")
    for endpoint, item in endpoints:
        if endpoint.is_multicast and not _has_pgm():
            item.fail(_NO_PGM)
    return endpoints


def _replay_endpoints(val: _Val) -> Endpoints:
    endpoints = _endpoint_list(val)
    for endpoint, item in endpoints:
        if endpoint.is_multicast:
            item.fail("replays do not go over multicast; give a tcp:// or ipc:// endpoint")
    return endpoints


def _advertise(val: _Val) -> Endpoint:
    endpoint = _endpoint(val)
    if endpoint.is_multicast:
        val.fail("replays do not go over multicast; give a tcp:// or ipc:// endpoint")
    if endpoint.is_wildcard:
        val.fail(f"name a host collectors can reach, not the wildcard {endpoint.host!r}")
    return endpoint


def _direction(section: _Section) -> tuple[bool, Endpoints]:
    """(binds, endpoints) from exactly one of bind and connect."""
    if section.has("bind") and section.has("connect"):
        section.vals["connect"].fail("give either bind or connect, not both")
    if section.has("bind"):
        return True, section.values["bind"]
    if section.has("connect"):
        endpoints: Endpoints = section.values["connect"]
        for endpoint, item in endpoints:
            if endpoint.host == "*":
                item.fail("cannot connect to the wildcard '*'; name a host")
        return False, endpoints
    section.val.fail("missing 'bind' or 'connect' (the endpoints to use)")


def _check_no_clash(bound: Endpoints) -> None:
    """Endpoints a daemon binds must not take the same address twice."""
    for i, (endpoint, item) in enumerate(bound):
        for other, other_item in bound[:i]:
            if _is_clash(endpoint, other):
                item.fail(f"binds the same address as {other_item.path}")


def _is_clash(a: Endpoint, b: Endpoint) -> bool:
    if a.url == b.url:
        return True
    if a.scheme != "tcp" or b.scheme != "tcp" or a.port != b.port:
        return False
    return a.host == b.host or a.is_wildcard or b.is_wildcard


def _urls(endpoints: Endpoints) -> tuple[str, ...]:
    return tuple(endpoint.url for endpoint, _ in endpoints)


# --- curve and pgm -------------------------------------------------------------

_CURVE_MULTICAST = (
    "CURVE cannot protect multicast (epgm/pgm) traffic; "
    "use tcp:// endpoints with curve, or remove curve"
)


def _read_curve(val: _Val) -> _Section:
    section = _Section(
        val,
        {
            "secret_key_file": _path("a key file path"),
            "server_key_file": _server_key_files,
            "allow_dir": _path("a folder path"),
        },
    )
    section.require("secret_key_file", "this daemon's secret key file")
    return section


def _server_key_files(val: _Val) -> list[str]:
    read = _path("a key file path")
    items = _text_or_items(val, "a key file path or a list of them")
    if not items:
        val.fail("expected at least one key file, got an empty list")
    return [read(item) for item in items]


def _finish_curve(owner: _Section, binds: bool, endpoints: Endpoints) -> CurveConfig | None:
    if not owner.has("curve"):
        return None
    curve: _Section = owner.values["curve"]
    if any(endpoint.is_multicast for endpoint, _ in endpoints):
        owner.vals["curve"].fail(_CURVE_MULTICAST)
    if binds:
        if curve.has("server_key_file"):
            curve.vals["server_key_file"].fail(
                "only used on the connecting side; a binding side checks clients against allow_dir"
            )
        allow_dir = curve.require("allow_dir", "the folder of public keys this side accepts")
        return CurveConfig(curve.values["secret_key_file"], (), allow_dir)
    if curve.has("allow_dir"):
        curve.vals["allow_dir"].fail(
            "only used on the binding side; a connecting side names server_key_file"
        )
    keys: list[str] = curve.require("server_key_file", "the binder's public key file")
    if len(keys) != len(endpoints):
        curve.vals["server_key_file"].fail(
            f"expected {len(endpoints)} public key files, one per connect endpoint, got {len(keys)}"
        )
    return CurveConfig(curve.values["secret_key_file"], tuple(keys), None)


_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMG])bit(?:/s)?", re.ASCII)
_RATE_UNITS = {"k": 1, "K": 1, "M": 1000, "G": 1000**2}
_MAX_RATE_KBPS = 100 * 1000**2


def _rate(val: _Val) -> int:
    node = val.node
    what = "a rate such as 100Mbit, or an integer of kbit/s"
    if isinstance(node, ScalarNode) and node.tag == _INT:
        kbps = int(_number(val, what))
    elif isinstance(node, ScalarNode) and node.tag == _STR:
        match = _RATE_RE.fullmatch(node.value.strip()) if len(node.value) <= 40 else None
        if match is None:
            val.fail(f"expected {what}, got {val.shown}")
        rate = Fraction(match[1]) * _RATE_UNITS[match[2]]
        if rate.denominator != 1:
            val.fail(f"expected a whole number of kbit/s, got {val.shown}")
        kbps = int(rate)
    else:
        _expected(val, what)
    if not 1 <= kbps <= _MAX_RATE_KBPS:
        val.fail(f"must be from 1kbit to 100Gbit, got {val.shown}")
    return kbps


def _read_pgm(val: _Val) -> PgmConfig:
    section = _Section(
        val,
        {
            "rate": _rate,
            "recovery_interval": _duration(0.001, 3600),
            "hops": _integer(1, 255),
        },
    )
    default = PgmConfig()
    return PgmConfig(
        rate_kbps=section.get("rate", default.rate_kbps),
        recovery_interval_s=section.get("recovery_interval", default.recovery_interval_s),
        hops=section.get("hops", default.hops),
    )


# --- producer --------------------------------------------------------------------

_DAY = 86400.0
_MAX_INT32 = 2**31 - 1
_HUGE_SIZE = 1000**5
_DEFAULT_EXCLUDE = Source("", "", ()).exclude


def _read_publish(val: _Val) -> PublishConfig:
    section = _Section(
        val,
        {
            "bind": _data_endpoints,
            "connect": _data_endpoints,
            "replay": _replay_endpoints,
            "advertise": _advertise,
            "heartbeat_interval": _duration(0, 3600),
            "send_hwm": _integer(1, _MAX_INT32),
            "curve": _read_curve,
            "pgm": _read_pgm,
            "laggard_timeout": _duration(0.05, _DAY),
        },
    )
    binds, endpoints = _direction(section)
    replay = _publish_replay(section, binds, endpoints)
    advertise = _publish_advertise(section, binds)
    default = PublishConfig()
    return PublishConfig(
        bind=_urls(endpoints) if binds else (),
        connect=() if binds else _urls(endpoints),
        replay=replay,
        advertise=advertise,
        heartbeat_interval_s=section.get("heartbeat_interval", default.heartbeat_interval_s),
        send_hwm=section.get("send_hwm", default.send_hwm),
        curve=_finish_curve(section, binds, endpoints),
        pgm=section.get("pgm", default.pgm),
        laggard_timeout_s=section.get("laggard_timeout", default.laggard_timeout_s),
    )


def _publish_replay(section: _Section, binds: bool, endpoints: Endpoints) -> tuple[str, ...]:
    if binds:
        replay: Endpoints = section.require(
            "replay", "the endpoint to serve replays on, as in tcp://*:7451"
        )
        if len(replay) != 1:
            section.vals["replay"].fail(
                f"expected one endpoint when publish binds, got {len(replay)}"
            )
        _check_no_clash(endpoints + replay)
        return _urls(replay)
    for endpoint, item in endpoints:
        if endpoint.is_multicast:
            # With publish.connect there is no replay endpoint to advertise: gaps could never be repaired.
            item.fail(
                "a multicast endpoint goes under publish.bind, so heartbeats can advertise the replay endpoint"
            )
    unicast = len(endpoints)
    if not section.has("replay"):
        if unicast:
            section.missing("replay", "one collector replay endpoint per connect endpoint")
        return ()
    replay = section.values["replay"]
    for endpoint, item in replay:
        if endpoint.host == "*":
            item.fail("cannot connect to the wildcard '*'; name a host")
    if len(replay) != unicast:
        section.vals["replay"].fail(
            f"expected {unicast} endpoints, one per connect endpoint that is not multicast, got {len(replay)}"
        )
    return _urls(replay)


def _publish_advertise(section: _Section, binds: bool) -> str | None:
    if not section.has("advertise"):
        return None
    if not binds:
        section.vals["advertise"].fail("only used when publish binds")
    endpoint: Endpoint = section.values["advertise"]
    return endpoint.url


def _glob(resolve: bool) -> Callable[[_Val], str]:
    def read(val: _Val) -> str:
        text = _text(val, "a glob (a string)")
        _check_path_text(val, text, "a glob")
        if text.endswith("/"):
            val.fail(f"a glob must match files, not a folder: {val.shown}")
        return val.resolve(text) if resolve else text

    return read


def _globs(val: _Val, resolve: bool) -> list[str]:
    read = _glob(resolve)
    return [read(item) for item in _items(val, "a list of globs")]


def _paths(val: _Val) -> list[str]:
    paths = _globs(val, resolve=True)
    if not paths:
        val.fail("expected at least one glob, got an empty list")
    return paths


def _exclude(val: _Val) -> list[str]:
    return _globs(val, resolve=False)


def _read_source(val: _Val) -> tuple[Source, _Val]:
    """The source, and where its name was given (for the duplicate-name check)."""
    section = _Section(
        val,
        {
            "name": _name("a source name"),
            "topic": _topic,
            "paths": _paths,
            "exclude": _exclude,
            "start_at": _choice(StartAt),
            # Well under wire.MAX_BLOCK_BYTES, so a whole long line fits one block.
            "max_line_bytes": _size(1024, 16 * 1024**2),
            "long_lines": _choice(LongLinePolicy),
        },
    )
    name = section.require("name")
    topic = section.require("topic")
    paths = section.require("paths", "a list of globs of the files to tail")
    default = Source(name, topic, ())
    exclude = tuple(dict.fromkeys([*_DEFAULT_EXCLUDE, *section.get("exclude", [])]))
    source = Source(
        name=name,
        topic=topic,
        paths=tuple(paths),
        exclude=exclude,
        start_at=section.get("start_at", default.start_at),
        max_line_bytes=section.get("max_line_bytes", default.max_line_bytes),
        long_lines=section.get("long_lines", default.long_lines),
    )
    return source, section.vals["name"]


def _read_sources(val: _Val) -> tuple[Source, ...]:
    items = _items(val, "a list of sources")
    if not items:
        val.fail("expected at least one source, got an empty list")
    sources: list[Source] = []
    names: dict[str, str] = {}
    for item in items:
        source, name_val = _read_source(item)
        if source.name in names:
            name_val.fail(f"duplicate source name {source.name!r} (also {names[source.name]})")
        names[source.name] = item.path
        sources.append(source)
    return tuple(sources)


def _default_node(root: _Val) -> str:
    host = socket.gethostname()
    if not _NAME_RE.fullmatch(host):
        root.at(root.node, "node").fail(
            f"the host name {_quote(host)} is not a valid node name; set node", 1
        )
    return host


def _read_producer(root: _Val) -> ProducerConfig:
    section = _Section(
        root,
        {
            "node": _name("a node name"),
            "state_dir": _path("a folder path"),
            "log_level": _log_level,
            "rescan_interval": _duration(0, _DAY),
            "read_bytes": _size(4 * 1024, 64 * 1024**2),
            "close_idle": _duration(0, 365 * _DAY),
            "max_open_files": _integer(16, 1024**2),
            "state_interval": _duration(0, _DAY),
            "publish": _read_publish,
            "sources": _read_sources,
        },
    )
    publish = section.require("publish")
    sources = section.require("sources")
    node = section.values["node"] if section.has("node") else _default_node(root)
    return ProducerConfig(
        path=os.path.abspath(root.file),
        node=node,
        state_dir=section.get("state_dir", "/var/lib/zaggd/producer"),
        publish=publish,
        sources=sources,
        rescan_interval_s=section.get("rescan_interval", 10.0),
        read_bytes=section.get("read_bytes", 262144),
        close_idle_s=section.get("close_idle", 300.0),
        max_open_files=section.get("max_open_files", 1024),
        state_interval_s=section.get("state_interval", 1.0),
        log_level=section.get("log_level", "info"),
    )


# --- collector -------------------------------------------------------------------

_PLACEHOLDERS = ("topic", "node", "source", "date")
_BRACES_RE = re.compile(r"\{([^{}]*)\}|[{}]")


def _read_subscribe(val: _Val) -> SubscribeConfig:
    section = _Section(
        val,
        {
            "bind": _data_endpoints,
            "connect": _data_endpoints,
            "replay": _replay_endpoints,
            "topics": _topics,
            "start_at": _choice(StartAt),
            "receive_hwm": _integer(1, _MAX_INT32),
            "max_nodes": _integer(1, _MAX_INT32),
            "max_streams_per_node": _integer(1, _MAX_INT32),
            "curve": _read_curve,
            "pgm": _read_pgm,
        },
    )
    binds, endpoints = _direction(section)
    default = SubscribeConfig()
    return SubscribeConfig(
        bind=_urls(endpoints) if binds else (),
        connect=() if binds else _urls(endpoints),
        replay=_subscribe_replay(section, binds, endpoints),
        topics=section.get("topics", default.topics),
        start_at=section.get("start_at", default.start_at),
        receive_hwm=section.get("receive_hwm", default.receive_hwm),
        max_nodes=section.get("max_nodes", default.max_nodes),
        max_streams_per_node=section.get("max_streams_per_node", default.max_streams_per_node),
        curve=_finish_curve(section, binds, endpoints),
        pgm=section.get("pgm", default.pgm),
    )


def _subscribe_replay(section: _Section, binds: bool, endpoints: Endpoints) -> str | None:
    if not binds:
        if section.has("replay"):
            section.vals["replay"].fail(
                "only used when subscribe binds; when it connects, "
                "the producers' heartbeats say where to ask for replays"
            )
        return None
    replay: Endpoints = section.require(
        "replay", "the endpoint producers connect their replay to, as in tcp://*:7451"
    )
    if len(replay) != 1:
        section.vals["replay"].fail(f"expected one endpoint, got {len(replay)}")
    _check_no_clash(endpoints + replay)
    return replay[0][0].url


def _topics(val: _Val) -> tuple[str, ...]:
    items = _items(val, 'a list of topic prefixes ("" for all)')
    if not items:
        val.fail('expected at least one topic prefix ("" for all), got an empty list')
    return tuple(_topic_prefix(item) for item in items)


def _output_path(val: _Val) -> str:
    what = "a file path template such as /var/log/zaggd/{topic}/{node}.log"
    text = _text(val, what)
    _check_path_text(val, text, what)
    for match in _BRACES_RE.finditer(text):
        if match[1] is None:
            val.fail(
                f"unmatched {match[0]!r}; braces may only hold the placeholders "
                "{topic}, {node}, {source} and {date}"
            )
        if match[1] not in _PLACEHOLDERS:
            val.fail(
                f"unknown placeholder {_quote(match[0])}; use {{topic}}, {{node}}, {{source}} or {{date}}"
            )
    if text.endswith("/") or os.path.basename(text) in (".", ".."):
        val.fail(f"must end in a file name, not a folder: {val.shown}")
    return val.resolve(text)


def _whole_seconds(lo: float, hi: float) -> Callable[[_Val], int]:
    read_duration = _duration(lo, hi)

    def read(val: _Val) -> int:
        seconds = read_duration(val)
        if seconds != int(seconds):
            val.fail(f"expected a whole number of seconds, got {val.shown}")
        return int(seconds)

    return read


def _read_rotate(val: _Val) -> RotateConfig:
    section = _Section(
        val,
        {
            "max_bytes": _size(1, _HUGE_SIZE),
            "every": _whole_seconds(1, 366 * _DAY),
            "keep": _integer(1, 1_000_000),
            "max_age": _duration(1, 36500 * _DAY),
            "max_total_bytes": _size(1, _HUGE_SIZE),
            "compress": _choice(Compression),
        },
    )
    return RotateConfig(
        max_bytes=section.get("max_bytes", None),
        every_s=section.get("every", None),
        keep=section.get("keep", None),
        max_age_s=section.get("max_age", None),
        max_total_bytes=section.get("max_total_bytes", None),
        compress=section.get("compress", Compression.NONE),
    )


def _read_output(val: _Val) -> OutputConfig:
    section = _Section(
        val,
        {
            "path": _output_path,
            "format": _choice(OutputFormat),
            "fsync": _choice(FsyncPolicy),
            "fsync_interval": _duration(0, _DAY),
            "rotate": _read_rotate,
        },
    )
    path = section.require(
        "path", "the output file template, as in /var/log/zaggd/{topic}/{node}.log"
    )
    default = OutputConfig(path)
    return OutputConfig(
        path=path,
        format=section.get("format", default.format),
        rotate=section.get("rotate", default.rotate),
        fsync=section.get("fsync", default.fsync),
        fsync_interval_s=section.get("fsync_interval", default.fsync_interval_s),
    )


def _read_collector(root: _Val) -> CollectorConfig:
    section = _Section(
        root,
        {
            "state_dir": _path("a folder path"),
            "log_level": _log_level,
            "subscribe": _read_subscribe,
            "output": _read_output,
        },
    )
    return CollectorConfig(
        path=os.path.abspath(root.file),
        state_dir=section.get("state_dir", "/var/lib/zaggd/collector"),
        subscribe=section.require("subscribe"),
        output=section.require("output"),
        log_level=section.get("log_level", "info"),
    )


# --- loading -----------------------------------------------------------------------

_PRODUCER_KEYS = ("publish", "sources")
_COLLECTOR_KEYS = ("subscribe", "output")


def _kind_of(root: _Val) -> str | None:
    """'producer', 'collector', or None when the top-level keys do not say."""
    keys = {str(key.value) for key, _ in root.node.value if isinstance(key, ScalarNode)}
    producer = any(key in keys for key in _PRODUCER_KEYS)
    collector = any(key in keys for key in _COLLECTOR_KEYS)
    if producer == collector:
        return None
    return "producer" if producer else "collector"


def load(path: str) -> ProducerConfig | CollectorConfig:
    """Read and check a producer or collector config; ConfigError names file, line and key."""
    root = _read_root(path)
    kind = _kind_of(root)
    if kind is None:
        root.fail(
            "cannot tell a producer config from a collector config: "
            "expected 'publish' and 'sources', or 'subscribe' and 'output'"
        )
    return _read_producer(root) if kind == "producer" else _read_collector(root)


def load_producer(path: str) -> ProducerConfig:
    root = _read_root(path)
    if _kind_of(root) == "collector":
        root.fail(
            "expected a producer config (with 'publish' and 'sources'), got a collector config"
        )
    return _read_producer(root)


def load_collector(path: str) -> CollectorConfig:
    root = _read_root(path)
    if _kind_of(root) == "producer":
        root.fail(
            "expected a collector config (with 'subscribe' and 'output'), got a producer config"
        )
    return _read_collector(root)
