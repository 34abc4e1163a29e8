"""The config's keys for people and editors: Markdown key tables and JSON Schema, from the schema.

`zaggd config-schema producer|collector` prints the JSON Schema (draft 7,
what YAML language servers read); with --markdown, the key table the README
holds. Both come from the same Keys that validate a config, so neither can
drift from what zaggd accepts; tests hold the README and the shipped schema
files equal to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from zaggd.config.collector import COLLECTOR
from zaggd.config.producer import PRODUCER
from zaggd.config.schema import Key, Section

SECTIONS = {"producer": PRODUCER, "collector": COLLECTOR}
_ABOUT = {
    "producer": "tails files on this node and publishes their lines",
    "collector": "subscribes to producers' topics and writes aggregate files",
}
# Where the .deb and the RPM install the schema files.
INSTALLED_DIR = "/usr/share/zaggd/schema"


def json_schema(daemon: str) -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"zaggd {daemon} config",
        "description": (
            f"zaggd {daemon}: {_ABOUT[daemon]}. `zaggd check-config FILE` checks more than "
            "this schema can: sizes and durations against their bounds, endpoints, and "
            "which keys bind or connect needs."
        ),
        **SECTIONS[daemon].json(),
    }


def json_text(daemon: str) -> str:
    return json.dumps(json_schema(daemon), indent=2, ensure_ascii=False) + "\n"


def rows(section: Section, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every key with its full path (publish.pgm.rate, sources[].name), parents first."""
    for key in section.keys:
        path = prefix + key.name
        yield path, key
        nested = key.type.children()
        if nested is not None:
            joiner, child = nested
            yield from rows(child, path + joiner)


def default_cell(key: Key) -> str:
    """The default as the table shows it: `256KiB`, required, host name, — for none."""
    if key.required:
        return "required"
    if key.shown:
        return key.shown
    shown = key.shown_default()
    if shown is None:
        return "" if key.type.children() is not None else "—"
    if isinstance(shown, str) and shown:
        return f"`{shown}`"
    return f"`{json.dumps(shown, ensure_ascii=False)}`"


def markdown_table(daemon: str) -> str:
    lines = ["| key | default | values | meaning |", "|---|---|---|---|"]
    for path, key in rows(SECTIONS[daemon]):
        cells = (f"`{path}`", default_cell(key), key.type.describe(), key.meaning)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
