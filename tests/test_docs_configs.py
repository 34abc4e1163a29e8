"""The shipped configs and the docs' examples agree with what zaggd accepts.

The shipped configs (config/*.yaml, installed as /etc/zaggd/*.yaml) use one
shape, producers bind and collectors connect, and carry the other one and
both CURVE variants as comments; docs/security.md shows both shapes. Each
commented alternative, uncommented as an operator would, and each YAML block
of the doc, put in a shipped config, must be a valid config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO
from zaggd import config
from zaggd.config import CollectorConfig, ProducerConfig

SHIPPED = REPO / "config"


def swapped(text: str, drop: list[str], uncomment: list[str]) -> str:
    """`text` with the `drop` lines removed and the `uncomment` lines uncommented."""
    lines = text.splitlines(keepends=True)
    for line in drop:
        assert lines.count(line + "\n") == 1, line
        lines.remove(line + "\n")
    for line in uncomment:
        commented = line.replace(line.lstrip(), "#" + line.lstrip(), 1) + "\n"
        assert lines.count(commented) == 1, commented
        lines[lines.index(commented)] = line + "\n"
    return "".join(lines)


def dump(data: dict[str, Any]) -> str:
    """YAML for `data`, output.mode written in octal as the shipped config has it."""
    output = data.get("output", {})
    if isinstance(output.get("mode"), int):
        output["mode"] = f"0{output['mode']:o}"
    return yaml.safe_dump(data)


def load_text(tmp_path: Path, name: str, text: str) -> ProducerConfig | CollectorConfig:
    path = tmp_path / name
    path.write_text(text)
    return config.load(str(path))


def test_the_producer_ships_the_connecting_shape_as_a_comment(tmp_path: Path) -> None:
    text = swapped(
        (SHIPPED / "producer.yaml").read_text(),
        drop=['  bind: ["tcp://*:7450"]', '  replay: "tcp://*:7451"'],
        uncomment=[
            '  connect: ["tcp://collector.example.org:7450"]',
            '  replay: ["tcp://collector.example.org:7451"]',
        ],
    )
    loaded = load_text(tmp_path, "producer.yaml", text)
    assert isinstance(loaded, ProducerConfig)
    assert loaded.publish.connect == ("tcp://collector.example.org:7450",)
    assert loaded.publish.replay == ("tcp://collector.example.org:7451",)


def test_the_collector_ships_the_binding_shape_as_a_comment(tmp_path: Path) -> None:
    text = swapped(
        (SHIPPED / "collector.yaml").read_text(),
        drop=['  connect: ["tcp://localhost:7450"]'],
        uncomment=['  bind: ["tcp://*:7450"]', '  replay: "tcp://*:7451"'],
    )
    loaded = load_text(tmp_path, "collector.yaml", text)
    assert isinstance(loaded, CollectorConfig)
    assert loaded.subscribe.bind == ("tcp://*:7450",)


def commented_curves(text: str) -> list[str]:
    """Each commented `#curve:` block of a shipped config, uncommented."""
    blocks = re.findall(r"^  #curve:\n(?:  #  .*\n)+", text, re.MULTILINE)
    return [block.replace("  #", "  ") for block in blocks]


@pytest.mark.parametrize(
    ("name", "connect_side"),
    [("producer.yaml", "publish"), ("collector.yaml", "subscribe")],
)
def test_each_commented_curve_block_fits_one_of_the_shapes(
    tmp_path: Path, name: str, connect_side: str
) -> None:
    shipped = (SHIPPED / name).read_text()
    blocks = commented_curves(shipped)
    assert len(blocks) == 2, blocks
    kinds = set()
    for block in blocks:
        data = yaml.safe_load(shipped)
        curve = yaml.safe_load(block.replace("  ", "", 1))["curve"]
        section = data[connect_side]
        for key in ("bind", "connect", "replay"):
            section.pop(key, None)
        if "allow_dir" in curve:  # the binding side's
            section.update(bind=["tcp://*:7450"], replay="tcp://*:7451")
        else:
            section["connect"] = ["tcp://binder.example.org:7450"]
            if connect_side == "publish":
                section["replay"] = ["tcp://binder.example.org:7451"]
        section["curve"] = curve
        loaded = load_text(tmp_path, name, dump(data))
        got = loaded.publish.curve if isinstance(loaded, ProducerConfig) else loaded.subscribe.curve
        assert got is not None
        kinds.add("binding" if got.allow_dir else "connecting")
    assert kinds == {"binding", "connecting"}


def doc_yaml_blocks() -> list[str]:
    text = (REPO / "docs" / "security.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


@pytest.mark.parametrize("index", range(len(doc_yaml_blocks())))
def test_each_yaml_block_of_security_md_is_a_valid_section(tmp_path: Path, index: int) -> None:
    """Put in place of the same section of the shipped config, it loads."""
    block = yaml.safe_load(doc_yaml_blocks()[index])
    (section,) = block
    name = "producer.yaml" if section == "publish" else "collector.yaml"
    data = yaml.safe_load((SHIPPED / name).read_text())
    data[section] = block[section]
    loaded = load_text(tmp_path, name, dump(data))
    got = loaded.publish if isinstance(loaded, ProducerConfig) else loaded.subscribe
    assert got.curve is not None


def test_security_md_says_which_shape_the_shipped_configs_use() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    assert "The shipped configs" in text
