"""The declared keys drive everything said about a config: the README tables, the JSON
Schema editors read, and the defaults a loaded config gets. No sockets, no daemons."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from zaggd import cli, config
from zaggd.config import documents, model
from zaggd.config.collector import OUTPUT, ROTATE, SUBSCRIBE
from zaggd.config.network import PGM
from zaggd.config.producer import PUBLISH, SOURCE
from zaggd.config.schema import Key, Section
from zaggd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
DAEMONS = ("producer", "collector")
MINIMAL: dict[str, dict[str, Any]] = {
    "producer": {
        "node": "web-01",
        "publish": {"bind": ["tcp://*:7450"], "replay": "tcp://*:7451"},
        "sources": [{"name": "nginx", "topic": "nginx.access", "paths": ["/var/log/*.log"]}],
    },
    "collector": {
        "subscribe": {"connect": ["tcp://web-01:7450"]},
        "output": {"path": "/var/log/zaggd/{topic}/{node}.log"},
    },
}
BUILT = {
    documents.SECTIONS["producer"]: model.ProducerConfig,
    PUBLISH: model.PublishConfig,
    SOURCE: model.Source,
    PGM: model.PgmConfig,
    documents.SECTIONS["collector"]: model.CollectorConfig,
    SUBSCRIBE: model.SubscribeConfig,
    OUTPUT: model.OutputConfig,
    ROTATE: model.RotateConfig,
}


def readme_table(daemon: str) -> str:
    readme = (REPO / "README.md").read_text()
    start = re.escape(f"<!-- keys: {daemon} ") + r"[^\n]*-->\n"
    match = re.search(f"{start}(.*?)<!-- end keys -->", readme, re.S)
    assert match, f"README.md has no key table marked for {daemon}"
    return match[1]


def table_defaults(table: str) -> dict[str, str]:
    """key path -> default cell, from a Markdown key table."""
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {cells[0].removeprefix("| ").strip("`"): cells[1] for cells in rows}


def write_yaml(folder: Path, data: dict[str, Any], name: str = "x.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def with_defaults(section: Section, mapping: dict[str, Any]) -> None:
    """Every key under `section` not given in `mapping` set to its default, as YAML writes it."""
    for key in section.keys:
        nested = key.type.children()
        if nested is None:
            shown = key.shown_default()
            if shown is not None:
                mapping.setdefault(key.name, shown)
            continue
        if key.name not in mapping and key.default is None:
            continue  # curve: absent means off; its keys have no defaults to write
        joiner, child = nested
        given = mapping.setdefault(key.name, {})
        for item in given if joiner == "[]." else [given]:
            with_defaults(child, item)


def validator(daemon: str) -> jsonschema.Draft7Validator:
    schema = json.loads((REPO / "config" / "schema" / f"{daemon}.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(daemon: str, data: object) -> list[str]:
    return [error.message for error in validator(daemon).iter_errors(data)]


# --- README and shipped files --------------------------------------------------------


@pytest.mark.parametrize("daemon", DAEMONS)
def test_readme_lists_every_key_with_its_default(daemon: str) -> None:
    table = readme_table(daemon)
    declared = {
        path: documents.default_cell(key)
        for path, key in documents.rows(documents.SECTIONS[daemon])
    }
    assert table_defaults(table) == declared, "run: sh scripts/config-docs.sh"
    assert table == documents.markdown_table(daemon), "run: sh scripts/config-docs.sh"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_shipped_schema_is_what_config_schema_prints(
    daemon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config-schema", daemon]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == documents.json_schema(daemon)
    shipped = (REPO / "config" / "schema" / f"{daemon}.json").read_text()
    assert shipped == printed, "run: sh scripts/config-docs.sh"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_config_schema_markdown_prints_the_key_table(
    daemon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config-schema", "--markdown", daemon]) == 0
    assert capsys.readouterr().out == readme_table(daemon)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_examples_name_their_schema_for_editors(daemon: str) -> None:
    installed = (REPO / "config" / f"{daemon}.yaml").read_text().splitlines()[0]
    assert installed == f"# yaml-language-server: $schema={documents.INSTALLED_DIR}/{daemon}.json"
    demo = REPO / "config" / "demo" / f"{daemon}.yaml"
    modeline = next(x for x in demo.read_text().splitlines() if "yaml-language-server" in x)
    relative = modeline.split("$schema=", 1)[1]
    assert (demo.parent / relative).resolve() == REPO / "config" / "schema" / f"{daemon}.json"


def test_packages_install_the_schemas_where_the_examples_say() -> None:
    install = (REPO / "packaging" / "debian" / "zaggd.install").read_text().splitlines()
    spec = (REPO / "packaging" / "rpm" / "zaggd.spec").read_text()
    assert documents.INSTALLED_DIR == "/usr/share/zaggd/schema"
    for daemon in DAEMONS:
        assert f"config/schema/{daemon}.json usr/share/zaggd/schema" in install
        assert f"config/schema/{daemon}.json" in spec
    assert "%{_datadir}/zaggd/schema" in spec


# --- defaults ----------------------------------------------------------------------


@pytest.mark.parametrize("section, built", BUILT.items(), ids=[c.__name__ for c in BUILT.values()])
def test_declared_defaults_are_the_dataclass_defaults(section: Section, built: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(built)}
    filled = {key.field for key in section.keys}
    assert filled <= set(fields)
    assert set(fields) - filled <= {"path"}  # the config file's own path
    for key in section.keys:
        field = fields[key.field]
        if field.default is not dataclasses.MISSING:
            code_default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            code_default = field.default_factory()
        else:
            continue
        if key.default is not None:
            assert key.default == code_default, key.name


@pytest.mark.parametrize("daemon", DAEMONS)
def test_every_default_written_out_loads_as_the_default(tmp_path: Path, daemon: str) -> None:
    """The defaults the README and editors show are values zaggd takes, and mean the default."""
    implicit = config.load(write_yaml(tmp_path, MINIMAL[daemon]))
    explicit = json.loads(json.dumps(MINIMAL[daemon]))
    with_defaults(documents.SECTIONS[daemon], explicit)
    assert len(yaml.safe_dump(explicit).splitlines()) > 20
    assert config.load(write_yaml(tmp_path, explicit)) == implicit
    assert schema_errors(daemon, explicit) == []


# --- the JSON Schema: no false alarm on what zaggd takes, an alarm on what it refuses ---

GOOD = {
    "producer": [
        "node: web-01\npublish: {connect: tcp://c1:7450, replay: tcp://c1:7451}\n"
        "sources: [{name: a, topic: a, paths: [/x/*.log], exclude: ['*.old']}]",
        "publish:\n  bind: 'epgm://192.0.2.10;239.192.0.1:7450'\n  replay: tcp://*:7451\n"
        "  pgm: {rate: 1Gbit, recovery_interval: 500ms, hops: 2}\n"
        "sources: [{name: a, topic: a, paths: [x.log], max_line_bytes: 64KiB}]",
        "publish:\n  bind: [tcp://*:7450]\n  replay: tcp://*:7451\n"
        "  advertise: tcp://web-01:7451\n  heartbeat_interval: 0.5\n"
        "  curve: {secret_key_file: k.key_secret, allow_dir: allowed/}\n"
        "sources: [{name: a, topic: a, paths: [x.log], long_lines: skip}]\n"
        "read_bytes: 1048576\nclose_idle: 1h\nlog_level: debug",
    ],
    "collector": [
        "subscribe: {bind: tcp://*:7450, replay: tcp://*:7451, topics: [a., b.]}\n"
        "output: {path: 'out/{date}/{topic}.log', format: jsonl, fsync: always}",
        "subscribe:\n  connect: [tcp://p1:7450, tcp://p2:7450]\n"
        "  curve: {secret_key_file: c.key_secret, server_key_file: [p1.key, p2.key]}\n"
        "output:\n  path: /var/log/zaggd/{node}.log\n"
        "  rotate: {max_bytes: 1GB, every: 1h, keep: 3, max_age: 30d, compress: gzip}",
    ],
}


@pytest.mark.parametrize("daemon", DAEMONS)
def test_schema_takes_the_examples_and_configs_zaggd_takes(tmp_path: Path, daemon: str) -> None:
    examples = [REPO / "config" / f"{daemon}.yaml", REPO / "config" / "demo" / f"{daemon}.yaml"]
    texts = [path.read_text() for path in examples] + GOOD[daemon]
    for text in texts:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        for name in ("k.key_secret", "c.key_secret"):  # key files are not read by load()
            (tmp_path / name).touch()
        config.load(str(path))
        assert schema_errors(daemon, yaml.safe_load(text)) == [], text


P_PUBLISH = 'publish: {bind: "tcp://*:7450", replay: "tcp://*:7451"}\n'
P_SOURCES = "sources: [{name: a, topic: a, paths: [x.log]}]\n"
C_OUTPUT = "output: {path: out.log}\n"
BAD = {
    "unknown key": ("producer", P_PUBLISH + P_SOURCES + "colour: blue", "'colour' was unexpected"),
    "misspelt nested key": (
        "producer",
        'publish: {bnid: "tcp://*:7450", replay: "tcp://*:7451"}\n' + P_SOURCES,
        "'bnid' was unexpected",
    ),
    "paths as a string": (
        "producer",
        P_PUBLISH + "sources: [{name: a, topic: a, paths: x.log}]",
        "'x.log' is not of type 'array'",
    ),
    "missing source name": (
        "producer",
        P_PUBLISH + "sources: [{topic: a, paths: [x.log]}]",
        "'name' is a required property",
    ),
    "size in a strange unit": (
        "producer",
        P_PUBLISH + P_SOURCES + "read_bytes: 10 parsecs",
        "'10 parsecs'",
    ),
    "duration in a strange unit": (
        "producer",
        P_PUBLISH + P_SOURCES + "close_idle: 5 weeks",
        "'5 weeks'",
    ),
    "choice not offered": (
        "producer",
        P_PUBLISH + "sources: [{name: a, topic: a, paths: [x.log], start_at: middle}]",
        "'middle' is not one of ['beginning', 'end']",
    ),
    "integer out of range": (
        "producer",
        'publish: {bind: "tcp://*:1", replay: "tcp://*:2", pgm: {hops: 300}}\n' + P_SOURCES,
        "300 is greater than the maximum of 255",
    ),
    "node name with a space": ("producer", "node: web 01\n" + P_PUBLISH + P_SOURCES, "'web 01'"),
    "bind and connect": (
        "collector",
        'subscribe: {bind: "tcp://*:1", connect: "tcp://a:1", replay: "tcp://*:2"}\n' + C_OUTPUT,
        "is valid under each of",
    ),
    "neither bind nor connect": (
        "collector",
        "subscribe: {topics: ['']}\n" + C_OUTPUT,
        "is not valid under any",
    ),
    "endpoint without a scheme": (
        "collector",
        "subscribe: {connect: 'web-01:7450'}\n" + C_OUTPUT,
        "'web-01:7450'",
    ),
    "output format": (
        "collector",
        "subscribe: {connect: 'tcp://a:1'}\noutput: {path: out.log, format: xml}",
        "'xml' is not one of",
    ),
}


@pytest.mark.parametrize("daemon, text, said", BAD.values(), ids=list(BAD))
def test_schema_marks_what_zaggd_refuses(tmp_path: Path, daemon: str, text: str, said: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        config.load(str(path))
    errors = schema_errors(daemon, yaml.safe_load(text))
    assert any(said in error for error in errors), errors


# --- the command -------------------------------------------------------------------


def test_config_schema_refuses_an_unknown_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["config-schema", "relay"])
    assert info.value.code == 2
    assert "invalid choice: 'relay'" in capsys.readouterr().err


def test_key_declarations_are_complete() -> None:
    """Every key has a meaning, and a required key no default."""
    for daemon in DAEMONS:
        for path, key in documents.rows(documents.SECTIONS[daemon]):
            assert isinstance(key, Key)
            assert key.meaning and not key.meaning.endswith("."), path
            assert not (key.required and key.default is not None), path
            assert textwrap.shorten(key.meaning, 200) == key.meaning, path
