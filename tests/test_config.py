"""config.load(): real YAML files under tmp_path in, frozen dataclasses or one-line errors out."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zaggd import config
from zaggd.config import (
    CollectorConfig,
    Compression,
    CurveConfig,
    Endpoint,
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
from zaggd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
HAS_PGM = bool(zmq.has("pgm"))
NO_PGM = (
    "this libzmq has no PGM (multicast) support; install Debian's python3-zmq, "
    "or build pyzmq against the system libzmq: "
    "apt-get install libzmq3-dev && pip install --no-binary pyzmq pyzmq"
)
DEFAULT_EXCLUDE = ("*.gz", "*.xz", "*.zst", "*.bz2")

PRODUCER = """\
node: web-01
publish:
  bind: ["tcp://*:7450"]
  replay: "tcp://*:7451"
sources:
  - name: nginx
    topic: nginx.access
    paths: ["/var/log/nginx/*.log"]
"""

COLLECTOR = """\
subscribe:
  connect: ["tcp://web-01:7450"]
output:
  path: "/var/log/zaggd/{topic}/{node}.log"
"""


def write(folder: Path, text: str, name: str = "x.yaml") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(path: str, load: Callable[[str], object] = config.load) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


# --- bad configs: the exact one-line message -----------------------------------------

BAD = {
    "misspelt key": (
        """\
        publish:
          bnid: ["tcp://*:7450"]
        sources: []
        """,
        "2: publish.bnid: unknown key (did you mean 'bind'?)",
    ),
    "unknown key": (
        PRODUCER + "colour: blue\n",
        "9: colour: unknown key",
    ),
    "paths as a string": (
        """\
        publish: {bind: "tcp://*:7450", replay: "tcp://*:7451"}
        sources:
          - name: nginx
            topic: nginx.access
            paths: /var/log/nginx/access.log
        """,
        "5: sources[0].paths: expected a list of globs, got a string",
    ),
    "size with a strange unit": (
        COLLECTOR + "  rotate:\n    keep: 3\n    max_bytes: 10 parsecs\n",
        "7: output.rotate.max_bytes: expected a size such as 100MiB, got '10 parsecs'",
    ),
    "size out of bounds": (
        PRODUCER + "read_bytes: 1KiB\n",
        "9: read_bytes: must be at least 4KiB, got '1KiB'",
    ),
    "unknown placeholder": (
        COLLECTOR.replace("{node}", "{host}"),
        "4: output.path: unknown placeholder '{host}'; use {topic}, {node}, {source} or {date}",
    ),
    "unmatched brace": (
        COLLECTOR.replace("{node}", "{node"),
        "4: output.path: unmatched '{'; braces may only hold the placeholders "
        "{topic}, {node}, {source} and {date}",
    ),
    "output path is a folder": (
        COLLECTOR.replace("{node}.log", ""),
        "4: output.path: must end in a file name, not a folder: '/var/log/zaggd/{topic}/'",
    ),
    "bare yes as a node name": (
        PRODUCER.replace("node: web-01", "node: yes"),
        "1: node: expected a node name, got a boolean (quote it: 'yes')",
    ),
    "bad node name": (
        PRODUCER.replace("node: web-01", "node: web 01"),
        "1: node: expected a node name of 1 to 64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, got 'web 01'",
    ),
    "integer as a string": (
        PRODUCER.replace('  replay: "tcp://*:7451"', '  replay: "tcp://*:7451"\n  send_hwm: "10"'),
        "5: publish.send_hwm: expected an integer, got a string",
    ),
    "integer out of range": (
        PRODUCER.replace(
            '  replay: "tcp://*:7451"', '  replay: "tcp://*:7451"\n  pgm: {hops: 300}'
        ),
        "5: publish.pgm.hops: must be at most 255, got 300",
    ),
    "zero duration": (
        PRODUCER + "rescan_interval: 0s\n",
        "9: rescan_interval: must be more than 0, got '0s'",
    ),
    "duration with a strange unit": (
        PRODUCER + "close_idle: 5 fortnights\n",
        "9: close_idle: expected a duration such as 10s, got '5 fortnights'",
    ),
    "fractional rotation interval": (
        COLLECTOR + "  rotate: {every: 1.5s}\n",
        "5: output.rotate.every: expected a whole number of seconds, got '1.5s'",
    ),
    "bare no as an enum": (
        COLLECTOR + "  fsync: no\n",
        "5: output.fsync: expected one of interval, always, never, got a boolean",
    ),
    "bad enum": (
        PRODUCER + "    start_at: middle\n",
        "9: sources[0].start_at: expected one of beginning, end, got 'middle'",
    ),
    "bad log level": (
        COLLECTOR + "log_level: chatty\n",
        "5: log_level: expected one of debug, info, warning, error, got 'chatty'",
    ),
    "udp endpoint": (
        PRODUCER.replace('bind: ["tcp://*:7450"]', 'bind: ["tcp://*:7450", "udp://*:7450"]'),
        "3: publish.bind[1]: unsupported endpoint 'udp://*:7450'; "
        "use tcp://, ipc://, epgm:// or pgm://",
    ),
    "inproc endpoint": (
        PRODUCER.replace('bind: ["tcp://*:7450"]', "bind: inproc://data"),
        "3: publish.bind: unsupported endpoint 'inproc://data'; "
        "use tcp://, ipc://, epgm:// or pgm://",
    ),
    "port out of range": (
        COLLECTOR.replace("web-01:7450", "web-01:70000"),
        "2: subscribe.connect[0]: expected a port from 1 to 65535, got '70000'",
    ),
    "bad IPv4 address": (
        COLLECTOR.replace("web-01:7450", "10.0.0.300:7450"),
        "2: subscribe.connect[0]: '10.0.0.300' is not an IPv4 address",
    ),
    "connect to the wildcard": (
        COLLECTOR.replace("web-01:7450", "*:7450"),
        "2: subscribe.connect[0]: cannot connect to the wildcard '*'; name a host",
    ),
    "both bind and connect": (
        PRODUCER.replace('  replay: "tcp://*:7451"', '  connect: ["tcp://c:7450"]'),
        "4: publish.connect: give either bind or connect, not both",
    ),
    "neither bind nor connect": (
        PRODUCER.replace('  bind: ["tcp://*:7450"]\n', ""),
        "3: publish: missing 'bind' or 'connect' (the endpoints to use)",
    ),
    "empty bind list": (
        PRODUCER.replace('["tcp://*:7450"]', "[]"),
        "3: publish.bind: expected at least one endpoint, got an empty list",
    ),
    "binding publish without replay": (
        PRODUCER.replace('  replay: "tcp://*:7451"\n', ""),
        "3: publish.replay: missing required key "
        "(the endpoint to serve replays on, as in tcp://*:7451)",
    ),
    "replay on the data port": (
        PRODUCER.replace("tcp://*:7451", "tcp://127.0.0.1:7450"),
        "4: publish.replay: binds the same address as publish.bind[0]",
    ),
    "connecting publish without replay": (
        PRODUCER.replace(
            '  bind: ["tcp://*:7450"]\n  replay: "tcp://*:7451"\n',
            "  connect: [tcp://a:1, tcp://b:1]\n",
        ),
        "3: publish.replay: missing required key "
        "(one collector replay endpoint per connect endpoint)",
    ),
    "too few replay endpoints": (
        PRODUCER.replace(
            '  bind: ["tcp://*:7450"]\n  replay: "tcp://*:7451"\n',
            "  connect: [tcp://a:1, tcp://b:1]\n  replay: tcp://a:2\n",
        ),
        "4: publish.replay: expected 2 endpoints, one per connect endpoint that is not multicast, got 1",
    ),
    "advertise with a wildcard": (
        PRODUCER.replace(
            '  replay: "tcp://*:7451"', '  replay: "tcp://*:7451"\n  advertise: "tcp://*:7451"'
        ),
        "5: publish.advertise: name a host collectors can reach, not the wildcard '*'",
    ),
    "advertise when connecting": (
        """\
        publish:
          connect: tcp://c:7450
          replay: tcp://c:7451
          advertise: tcp://web-01:7451
        sources: [{name: a, topic: t, paths: [x.log]}]
        """,
        "4: publish.advertise: only used when publish binds",
    ),
    "curve binding without allow_dir": (
        PRODUCER.replace(
            '  replay: "tcp://*:7451"', '  replay: "tcp://*:7451"\n  curve:\n    secret_key_file: k'
        ),
        "6: publish.curve.allow_dir: missing required key "
        "(the folder of public keys this side accepts)",
    ),
    "curve binding with server_key_file": (
        PRODUCER.replace(
            '  replay: "tcp://*:7451"',
            '  replay: "tcp://*:7451"\n  curve: {secret_key_file: k, allow_dir: d, server_key_file: s}',
        ),
        "5: publish.curve.server_key_file: only used on the connecting side; "
        "a binding side checks clients against allow_dir",
    ),
    "curve connecting with allow_dir": (
        COLLECTOR.replace(
            '  connect: ["tcp://web-01:7450"]',
            '  connect: ["tcp://web-01:7450"]\n  curve:\n    secret_key_file: k\n    allow_dir: d',
        ),
        "5: subscribe.curve.allow_dir: only used on the binding side; "
        "a connecting side names server_key_file",
    ),
    "one server key for two binders": (
        """\
        subscribe:
          connect: [tcp://web-01:7450, tcp://web-02:7450]
          curve:
            secret_key_file: keys/collector.key_secret
            server_key_file: keys/web-01.key
        output: {path: out.log}
        """,
        "5: subscribe.curve.server_key_file: expected 2 public key files, "
        "one per connect endpoint, got 1",
    ),
    "curve without a secret key": (
        COLLECTOR.replace(
            '  connect: ["tcp://web-01:7450"]',
            '  connect: ["tcp://web-01:7450"]\n  curve: {server_key_file: s}',
        ),
        "3: subscribe.curve.secret_key_file: missing required key (this daemon's secret key file)",
    ),
    "replay when subscribe connects": (
        COLLECTOR.replace(
            '  connect: ["tcp://web-01:7450"]',
            '  connect: ["tcp://web-01:7450"]\n  replay: tcp://*:7451',
        ),
        "3: subscribe.replay: only used when subscribe binds; when it connects, "
        "the producers' heartbeats say where to ask for replays",
    ),
    "binding subscribe without replay": (
        COLLECTOR.replace('  connect: ["tcp://web-01:7450"]', '  bind: ["tcp://*:7450"]'),
        "2: subscribe.replay: missing required key "
        "(the endpoint producers connect their replay to, as in tcp://*:7451)",
    ),
    "topic with a space": (
        PRODUCER.replace("topic: nginx.access", 'topic: "nginx access"'),
        "7: sources[0].topic: a topic cannot contain spaces or control characters, "
        "got 'nginx access'",
    ),
    "topic prefixes as a string": (
        COLLECTOR.replace(
            '  connect: ["tcp://web-01:7450"]', '  connect: ["tcp://web-01:7450"]\n  topics: nginx.'
        ),
        '3: subscribe.topics: expected a list of topic prefixes ("" for all), got a string',
    ),
    "no sources": (
        PRODUCER.split("sources:")[0] + "sources: []\n",
        "5: sources: expected at least one source, got an empty list",
    ),
    "source without a topic": (
        PRODUCER.replace("    topic: nginx.access\n", ""),
        "6: sources[0].topic: missing required key",
    ),
    "duplicate source name": (
        PRODUCER + "  - {name: nginx, topic: nginx.error, paths: [/var/log/nginx/error.log]}\n",
        "9: sources[1].name: duplicate source name 'nginx' (also sources[0])",
    ),
    "duplicate key": (
        PRODUCER + "node: web-02\n",
        "9: node: duplicate key (first given on line 1)",
    ),
    "missing sources": (
        PRODUCER.split("sources:")[0],
        "1: sources: missing required key",
    ),
    "glob for a folder": (
        PRODUCER.replace("/var/log/nginx/*.log", "/var/log/nginx/"),
        "8: sources[0].paths[0]: a glob must match files, not a folder: '/var/log/nginx/'",
    ),
    "python tag": (
        PRODUCER + "state_dir: !!python/object/apply:os.system [ls]\n",
        "9: state_dir: expected a folder path, got a list",
    ),
    "unknown scalar tag": (
        PRODUCER + "state_dir: !secret x\n",
        "9: state_dir: expected a folder path, got a value tagged '!secret'",
    ),
    "invalid YAML": (
        PRODUCER + "  - name: [unclosed\n",
        "10: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    "tab indentation": (
        "publish:\n\tbind: x\n",
        "2: invalid YAML: found character '\\t' that cannot start any token",
    ),
    "a list at the top": (
        "- publish\n- sources\n",
        "1: expected a mapping of settings at the top level",
    ),
    "empty file": (
        "# nothing but a comment\n",
        "1: expected a mapping of settings at the top level",
    ),
    "neither kind": (
        "node: web-01\nstate_dir: /tmp\n",
        "1: cannot tell a producer config from a collector config: "
        "expected 'publish' and 'sources', or 'subscribe' and 'output'",
    ),
    "both kinds": (
        PRODUCER + "output: {path: x.log}\n",
        "1: cannot tell a producer config from a collector config: "
        "expected 'publish' and 'sources', or 'subscribe' and 'output'",
    ),
    "control character in a key": (
        PRODUCER + '"bad\\nkey": 1\n',
        "9: ['bad\\nkey']: unknown key",
    ),
}


@pytest.mark.parametrize("text, expected", BAD.values(), ids=list(BAD))
def test_bad_config_is_refused_with_file_line_key_and_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message == f"{path}:{expected}"
    assert len(message.splitlines()) == 1


def test_error_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, PRODUCER + "colour: blue\n", "given.yaml")
    monkeypatch.chdir(tmp_path)
    assert error_of("given.yaml") == "given.yaml:9: colour: unknown key"


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    assert error_of(missing) == f"{missing}: cannot read: No such file or directory"
    assert error_of(str(tmp_path)) == f"{tmp_path}: not a regular file (a folder)"


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"node: web-01\nstate_dir: /tmp/\xff\n")
    assert error_of(str(path)) == f"{path}:2: invalid YAML: not UTF-8 text (byte 0xff)"


def test_special_character_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, PRODUCER + "state_dir: /tmp/\x07\n")
    assert error_of(path) == f"{path}:9: invalid YAML: special character U+0007 is not allowed"


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * (1 << 20) + "\n")
    assert error_of(path) == f"{path}: cannot read: over 1 MiB, too large for a config file"


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "node: " + "[" * 5000 + "]" * 5000 + "\n")
    assert error_of(path) == f"{path}:1: invalid YAML: nested too deeply"


def test_load_producer_refuses_a_collector_config(tmp_path: Path) -> None:
    path = write(tmp_path, COLLECTOR)
    assert error_of(path, config.load_producer) == (
        f"{path}:1: expected a producer config (with 'publish' and 'sources'), "
        "got a collector config"
    )


def test_load_collector_refuses_a_producer_config(tmp_path: Path) -> None:
    path = write(tmp_path, PRODUCER)
    assert error_of(path, config.load_collector) == (
        f"{path}:1: expected a collector config (with 'subscribe' and 'output'), "
        "got a producer config"
    )


def test_first_error_in_document_order_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        read_bytes: 1 parsec
        publish: {bind: "udp://x:1"}
        sources: []
        """,
    )
    assert error_of(path) == (
        f"{path}:1: read_bytes: expected a size such as 100MiB, got '1 parsec'"
    )


# --- multicast ---------------------------------------------------------------------

MULTICAST = PRODUCER.replace('["tcp://*:7450"]', '["epgm://192.0.2.10;239.192.0.1:7450"]')


@pytest.mark.skipif(not HAS_PGM, reason="this libzmq has no PGM")
def test_multicast_producer_loads(tmp_path: Path) -> None:
    text = MULTICAST.replace(
        '  replay: "tcp://*:7451"',
        '  replay: "tcp://*:7451"\n  pgm: {rate: 100Mbit, recovery_interval: 500ms, hops: 4}',
    )
    loaded = config.load(write(tmp_path, text))
    assert isinstance(loaded, ProducerConfig)
    assert loaded.publish.bind == ("epgm://192.0.2.10;239.192.0.1:7450",)
    assert loaded.publish.pgm == PgmConfig(rate_kbps=100_000, recovery_interval_s=0.5, hops=4)


@pytest.mark.skipif(not HAS_PGM, reason="this libzmq has no PGM")
def test_curve_with_multicast_is_refused(tmp_path: Path) -> None:
    text = MULTICAST.replace(
        '  replay: "tcp://*:7451"',
        '  replay: "tcp://*:7451"\n  curve: {secret_key_file: k, allow_dir: d}',
    )
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}:5: publish.curve: CURVE cannot protect multicast (epgm/pgm) traffic; "
        "use tcp:// endpoints with curve, or remove curve"
    )


@pytest.mark.skipif(not HAS_PGM, reason="this libzmq has no PGM")
def test_multicast_interface_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MULTICAST.replace("192.0.2.10", "eth0"))
    assert error_of(path) == (
        f"{path}:3: publish.bind[0]: 'eth0' looks like an interface name: give the interface's "
        "IP address, not its name (OpenPGM looks names up in DNS)"
    )


@pytest.mark.skipif(HAS_PGM, reason="this libzmq has PGM")
def test_multicast_without_pgm_says_how_to_get_it(tmp_path: Path) -> None:
    path = write(tmp_path, MULTICAST)
    assert error_of(path) == f"{path}:3: publish.bind[0]: {NO_PGM}"


def test_replay_over_multicast_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, PRODUCER.replace('"tcp://*:7451"', '"epgm://192.0.2.10;239.192.0.1:7451"')
    )
    assert error_of(path) == (
        f"{path}:4: publish.replay: replays do not go over multicast; "
        "give a tcp:// or ipc:// endpoint"
    )


# --- good configs ------------------------------------------------------------------


def test_minimal_producer_takes_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, PRODUCER.replace("node: web-01\n", ""))
    assert config.load(path) == ProducerConfig(
        path=path,
        node=socket.gethostname(),
        state_dir="/var/lib/zaggd/producer",
        publish=PublishConfig(bind=("tcp://*:7450",), replay=("tcp://*:7451",)),
        sources=(Source("nginx", "nginx.access", ("/var/log/nginx/*.log",)),),
    )


def test_full_producer_converts_units_and_resolves_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        node: web-01.example
        state_dir: state/producer
        log_level: debug
        rescan_interval: 250ms
        read_bytes: 4MiB
        close_idle: 2m
        max_open_files: 64
        state_interval: 1.5
        publish:
          bind: [tcp://*:7450, ipc://sockets/data.sock]
          replay: tcp://*:7451
          advertise: tcp://web-01.example:7451
          heartbeat_interval: 2s
          send_hwm: 5000
          curve:
            secret_key_file: keys/web-01.key_secret
            allow_dir: keys/allowed/
        sources:
          - name: app
            topic: app.äpfel
            paths: [logs/**/*.log, /var/log/app.log]
            exclude: ["*.old", "*.gz"]
            start_at: end
            max_line_bytes: 64KB
            long_lines: truncate
        """,
    )
    assert config.load(path) == ProducerConfig(
        path=path,
        node="web-01.example",
        state_dir=f"{tmp_path}/state/producer",
        publish=PublishConfig(
            bind=("tcp://*:7450", f"ipc://{tmp_path}/sockets/data.sock"),
            replay=("tcp://*:7451",),
            advertise="tcp://web-01.example:7451",
            heartbeat_interval_s=2.0,
            send_hwm=5000,
            curve=CurveConfig(
                secret_key_file=f"{tmp_path}/keys/web-01.key_secret",
                allow_dir=f"{tmp_path}/keys/allowed",
            ),
        ),
        sources=(
            Source(
                name="app",
                topic="app.äpfel",
                paths=(f"{tmp_path}/logs/**/*.log", "/var/log/app.log"),
                exclude=(*DEFAULT_EXCLUDE, "*.old"),
                start_at=StartAt.END,
                max_line_bytes=64_000,
                long_lines=LongLinePolicy.TRUNCATE,
            ),
        ),
        rescan_interval_s=0.25,
        read_bytes=4 * 1024**2,
        close_idle_s=120.0,
        max_open_files=64,
        state_interval_s=1.5,
        log_level="debug",
    )


def test_producer_connecting_to_collectors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        node: web-01
        publish:
          connect: [tcp://collector-a:7450, tcp://collector-b:7450]
          replay: [tcp://collector-a:7451, tcp://collector-b:7451]
          curve:
            secret_key_file: /etc/zaggd/keys/web-01.key_secret
            server_key_file: [keys/a.key, keys/b.key]
        sources:
          - {name: a, topic: t, paths: [a.log]}
        """,
    )
    loaded = config.load_producer(path)
    assert loaded.publish == PublishConfig(
        connect=("tcp://collector-a:7450", "tcp://collector-b:7450"),
        replay=("tcp://collector-a:7451", "tcp://collector-b:7451"),
        curve=CurveConfig(
            secret_key_file="/etc/zaggd/keys/web-01.key_secret",
            server_key_files=(f"{tmp_path}/keys/a.key", f"{tmp_path}/keys/b.key"),
        ),
    )


def test_yaml_merge_keys_share_settings_between_sources(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        node: web-01
        publish: {bind: "tcp://*:7450", replay: "tcp://*:7451"}
        sources:
          - &nginx {name: access, topic: nginx.access, paths: [/a.log], start_at: end}
          - <<: *nginx
            name: error
            paths: [/e.log]
        """,
    )
    loaded = config.load_producer(path)
    assert [(s.name, s.topic, s.paths, s.start_at) for s in loaded.sources] == [
        ("access", "nginx.access", ("/a.log",), StartAt.END),
        ("error", "nginx.access", ("/e.log",), StartAt.END),
    ]


def test_minimal_collector_takes_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, COLLECTOR)
    assert config.load(path) == CollectorConfig(
        path=path,
        state_dir="/var/lib/zaggd/collector",
        subscribe=SubscribeConfig(connect=("tcp://web-01:7450",)),
        output=OutputConfig(path="/var/log/zaggd/{topic}/{node}.log"),
    )


def test_full_collector_converts_units_and_resolves_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        state_dir: state
        log_level: warning
        subscribe:
          bind: ["tcp://*:7450", "ipc://run/data.sock"]
          replay: "tcp://*:7451"
          topics: ["nginx.", ""]
          start_at: end
          receive_hwm: 10
          max_nodes: 5
          max_streams_per_node: 7
          curve:
            secret_key_file: keys/collector.key_secret
            allow_dir: /etc/zaggd/keys/allowed
        output:
          path: "out/{topic}/{date}/{node}-{source}.jsonl"
          format: jsonl
          fsync: always
          fsync_interval: 100ms
          rotate:
            max_bytes: 1.5GB
            every: 1h
            keep: 24
            max_age: 7d
            max_total_bytes: 1TiB
            compress: gzip
        """,
    )
    assert config.load(path) == CollectorConfig(
        path=path,
        state_dir=f"{tmp_path}/state",
        subscribe=SubscribeConfig(
            bind=("tcp://*:7450", f"ipc://{tmp_path}/run/data.sock"),
            replay="tcp://*:7451",
            topics=("nginx.", ""),
            start_at=StartAt.END,
            receive_hwm=10,
            max_nodes=5,
            max_streams_per_node=7,
            curve=CurveConfig(
                secret_key_file=f"{tmp_path}/keys/collector.key_secret",
                allow_dir="/etc/zaggd/keys/allowed",
            ),
        ),
        output=OutputConfig(
            path=f"{tmp_path}/out/{{topic}}/{{date}}/{{node}}-{{source}}.jsonl",
            format=OutputFormat.JSONL,
            rotate=RotateConfig(
                max_bytes=1_500_000_000,
                every_s=3600,
                keep=24,
                max_age_s=7 * 86400.0,
                max_total_bytes=1024**4,
                compress=Compression.GZIP,
            ),
            fsync=FsyncPolicy.ALWAYS,
            fsync_interval_s=0.1,
        ),
        log_level="warning",
    )


@pytest.mark.parametrize(
    "name", ["producer.yaml", "collector.yaml", "demo/producer.yaml", "demo/collector.yaml"]
)
def test_example_configs_load(name: str) -> None:
    path = str(REPO / "config" / name)
    loaded = config.load(path)
    kind = ProducerConfig if "producer" in name else CollectorConfig
    assert isinstance(loaded, kind)


def test_demo_configs_point_into_the_repo() -> None:
    producer = config.load_producer(str(REPO / "config/demo/producer.yaml"))
    collector = config.load_collector(str(REPO / "config/demo/collector.yaml"))
    assert producer.node == "demo"
    assert producer.state_dir == f"{REPO}/demo/state/producer"
    assert producer.sources[0].paths == (f"{REPO}/demo/logs/*.log",)
    assert producer.publish.bind == ("tcp://127.0.0.1:7450",)
    assert producer.publish.replay == ("tcp://127.0.0.1:7451",)
    assert collector.subscribe.connect == ("tcp://127.0.0.1:7450",)
    assert collector.state_dir == f"{REPO}/demo/state/collector"
    assert collector.output.path == f"{REPO}/demo/out/{{topic}}/{{node}}.log"


def test_installed_configs_use_system_paths() -> None:
    producer = config.load_producer(str(REPO / "config/producer.yaml"))
    collector = config.load_collector(str(REPO / "config/collector.yaml"))
    assert producer.state_dir == "/var/lib/zaggd/producer"
    assert collector.state_dir == "/var/lib/zaggd/collector"
    assert collector.output.path == "/var/log/zaggd/{topic}/{node}.log"
    assert collector.output.rotate == RotateConfig(
        max_bytes=100 * 1024**2, every_s=86400, keep=14, compress=Compression.GZIP
    )


# --- sizes, durations, endpoints ------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("512B", 512),
        ("4KiB", 4096),
        ("4 KiB", 4096),
        ("1KB", 1000),
        ("1kB", 1000),
        ("100MiB", 100 * 1024**2),
        ("100MB", 100_000_000),
        ("1.5GiB", 1536 * 1024**2),
        ("2GB", 2_000_000_000),
        ("1TiB", 1024**4),
        ("3TB", 3 * 1000**4),
        (" 7mib ", 7 * 1024**2),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "expected a size such as 100MiB, got ''"),
        ("10 parsecs", "expected a size such as 100MiB, got '10 parsecs'"),
        ("-1", "expected a size such as 100MiB, got '-1'"),
        (-1, "a size cannot be negative, got -1"),
        ("1.5B", "'1.5B' is not a whole number of bytes"),
        ("MiB", "expected a size such as 100MiB, got 'MiB'"),
        ("1e6", "expected a size such as 100MiB, got '1e6'"),
        ("\u0661\u0660KiB", "expected a size such as 100MiB, got '\u0661\u0660KiB'"),
        (True, "expected a size such as 100MiB, got True"),
    ],
)
def test_parse_size_refuses(text: str | int, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        config.parse_size(text)
    assert str(info.value) == reason


@pytest.mark.parametrize(
    "text, seconds",
    [
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
        ("10", 10.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 3 s ", 3.0),
        (".5h", 1800.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "expected a duration such as 10s, got ''"),
        ("10 years", "expected a duration such as 10s, got '10 years'"),
        ("5M", "expected a duration such as 10s, got '5M'"),
        ("-5s", "expected a duration such as 10s, got '-5s'"),
        (-5, "a duration cannot be negative, got -5"),
        (float("inf"), "expected a finite duration, got inf"),
        (float("nan"), "expected a finite duration, got nan"),
        (10**400, f"a duration of {10**400} seconds is too long"),
        (False, "expected a duration such as 10s, got False"),
    ],
)
def test_parse_duration_refuses(text: str | float, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        config.parse_duration(text)
    assert str(info.value) == reason


@pytest.mark.parametrize(
    "text, endpoint",
    [
        ("tcp://*:7450", Endpoint("tcp", "tcp://*:7450", "*", 7450)),
        ("tcp://10.1.2.3:1", Endpoint("tcp", "tcp://10.1.2.3:1", "10.1.2.3", 1)),
        ("tcp://[::1]:65535", Endpoint("tcp", "tcp://[::1]:65535", "[::1]", 65535)),
        (
            "tcp://web-01.example:7450",
            Endpoint("tcp", "tcp://web-01.example:7450", "web-01.example", 7450),
        ),
        ("ipc:///run/zaggd.sock", Endpoint("ipc", "ipc:///run/zaggd.sock")),
        ("ipc://run/zaggd.sock", Endpoint("ipc", "ipc:///base/run/zaggd.sock")),
        ("ipc://@zaggd", Endpoint("ipc", "ipc://@zaggd")),
        (
            "epgm://192.0.2.1;239.192.0.1:7450",
            Endpoint("epgm", "epgm://192.0.2.1;239.192.0.1:7450", "192.0.2.1", 7450),
        ),
        (
            "pgm://192.0.2.1;224.0.0.251:5",
            Endpoint("pgm", "pgm://192.0.2.1;224.0.0.251:5", "192.0.2.1", 5),
        ),
    ],
)
def test_parse_endpoint(text: str, endpoint: Endpoint) -> None:
    assert config.parse_endpoint(text, "/base") == endpoint
    assert endpoint.is_multicast == text.startswith(("epgm", "pgm"))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("garbage", "expected an endpoint such as tcp://host:7450, got 'garbage'"),
        ("udp://h:1", "unsupported endpoint 'udp://h:1'; use tcp://, ipc://, epgm:// or pgm://"),
        ("inproc://x", "unsupported endpoint 'inproc://x'; use tcp://, ipc://, epgm:// or pgm://"),
        ("tcp://h", "expected tcp://HOST:PORT, got 'tcp://h'"),
        ("tcp://:1", "expected tcp://HOST:PORT, got 'tcp://:1'"),
        ("tcp://h:*", "expected a port from 1 to 65535, got '*'"),
        ("tcp://h:0", "expected a port from 1 to 65535, got '0'"),
        ("tcp://h:+80", "expected a port from 1 to 65535, got '+80'"),
        ("tcp://::1:80", "put an IPv6 address in brackets, as in tcp://[::1]:7450, got '::1'"),
        ("tcp://[nope]:80", "'[nope]' is not an IPv6 address"),
        ("tcp://a b:80", "'a b' is not a host name, an IP address or '*'"),
        ("ipc://", "expected a socket path after ipc://, as in ipc:///run/zaggd/data.sock"),
        ("ipc:///run/", "an ipc:// path names a socket file, not a folder: '/run/'"),
        (
            "epgm://239.192.0.1:7450",
            "expected epgm://ADDRESS;GROUP:PORT, as in epgm://192.0.2.10;239.192.0.1:7450, "
            "got 'epgm://239.192.0.1:7450'",
        ),
        (
            "epgm://lo;239.192.0.1:7450",
            "'lo' looks like an interface name: give the interface's IP address, "
            "not its name (OpenPGM looks names up in DNS)",
        ),
        (
            "pgm://192.0.2.1;10.0.0.1:7450",
            "'10.0.0.1' is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255)",
        ),
        ("pgm://192.0.2.1;239.0.0.1:99999", "expected a port from 1 to 65535, got '99999'"),
    ],
)
def test_parse_endpoint_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        config.parse_endpoint(text, "/base")
    assert str(info.value) == reason


def test_ipc_path_too_long_for_a_socket_is_refused() -> None:
    with pytest.raises(ValueError, match="over the 107 a socket path may have"):
        config.parse_endpoint("ipc:///" + "x" * 120)


# --- fuzzing -----------------------------------------------------------------------


@given(
    st.one_of(
        st.text(max_size=50), st.integers(), st.from_regex(r"\A\d{0,4}(\.\d*)? ?[A-Za-z]{0,3}\Z")
    )
)
def test_parse_size_raises_only_value_error(text: str | int) -> None:
    try:
        size = config.parse_size(text)
    except ValueError:
        return
    assert size >= 0


@given(
    st.one_of(
        st.text(max_size=50),
        st.integers(),
        st.floats(),
        st.from_regex(r"\A\d{0,4}(\.\d*)? ?[a-z]{0,2}\Z"),
    )
)
def test_parse_duration_raises_only_value_error(text: str | float) -> None:
    try:
        seconds = config.parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0


KEYS = [
    "node", "state_dir", "log_level", "rescan_interval", "read_bytes", "close_idle",
    "max_open_files", "state_interval", "publish", "sources", "bind", "connect", "replay",
    "advertise", "heartbeat_interval", "send_hwm", "curve", "pgm", "rate", "recovery_interval",
    "hops", "name", "topic", "paths", "exclude", "start_at", "max_line_bytes", "long_lines",
    "subscribe", "output", "topics", "receive_hwm", "max_nodes", "max_streams_per_node",
    "path", "format", "fsync", "fsync_interval", "rotate", "max_bytes", "every", "keep",
    "max_age", "max_total_bytes", "compress", "secret_key_file", "server_key_file",
    "allow_dir", "<<", "bnid", "",
]  # fmt: skip
VALUES = [
    "tcp://*:7450", "tcp://h:1", "ipc://s.sock", "ipc://", "epgm://10.0.0.1;239.1.1.1:5",
    "pgm://eth0;239.1.1.1:5", "udp://x", "10s", "1d", "0", "-1", "1.5", ".inf", ".nan",
    "100MiB", "10 parsecs", "yes", "~", "", "[]", "{}", "0x1F", "1:30", "2024-01-01",
    "!!int ''", "!!float x", "!!binary x", "!!python/object:os.system x", "!!set {a}",
    "&a x", "*a", "*undefined", "'{topic}/{node}.log'", "'{x}'", "[a, b]", "{a: 1}",
    "gzip", "raw", "beginning", "split", '"\\t"', "'a b'", "[*a]", "&b [*b]", "1Gbit",
]  # fmt: skip

yaml_lines = st.builds(
    lambda indent, dash, key, value: " " * indent + dash + key + ": " + value,
    st.sampled_from([0, 2, 4, 6]),
    st.sampled_from(["", "- "]),
    st.sampled_from(KEYS),
    st.sampled_from(VALUES) | st.text(max_size=12),
)
yaml_texts = st.lists(yaml_lines | st.text(max_size=20), max_size=25).map("\n".join)

scalars = st.one_of(
    st.sampled_from(VALUES),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=10),
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=30,
).map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))

EXAMPLES = [
    (REPO / "config" / name).read_text()
    for name in ("producer.yaml", "collector.yaml", "demo/producer.yaml", "demo/collector.yaml")
]


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + draw(st.text(max_size=8) | st.sampled_from(VALUES)) + text[end:]
    return text


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(yaml_texts, documents, mutated_examples(), st.binary(max_size=200)))
def test_any_input_gives_a_config_or_a_one_line_config_error(
    fuzz_file: Path, text: str | bytes
) -> None:
    if isinstance(text, bytes):
        fuzz_file.write_bytes(text)
    else:
        fuzz_file.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        loaded = config.load(str(fuzz_file))
    except ConfigError as e:
        message = str(e)
        assert message.startswith(f"{fuzz_file}:")
        assert len(message.splitlines()) == 1
        message.encode("utf-8")  # printable as it is
    else:
        assert isinstance(loaded, ProducerConfig | CollectorConfig)
