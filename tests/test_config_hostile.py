"""Hostile config files: YAML bombs and paths that are not regular files.

Each is tried as an operator meets it, through `zaggd check-config` and a
daemon's start, as a subprocess with a bounded address space: one line, exit
78, little CPU, no hang. The same files are refused at reload (tests/test_reload.py).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from zaggd import config
from zaggd.config import yamlfile
from zaggd.errors import ConfigError

# Far more than zaggd needs to refuse a bad file, far less than a bomb takes.
ADDRESS_SPACE_BYTES = 768 * 1024 * 1024
COMMAND_TIMEOUT_S = 30.0
MAX_CPU_S = 2.0

PRODUCER_HEAD = """\
node: web-01
state_dir: state
publish: {bind: ["tcp://127.0.0.1:7450"], replay: "tcp://127.0.0.1:7451"}
sources: [{name: app, topic: app, paths: ["logs/*.log"]}]
"""


def merge_bomb(levels: int, copies: int = 10) -> str:
    """A mapping merged `copies` times per level, nested `levels` deep: copies**levels keys."""

    def level(n: int) -> str:
        if n == 0:
            return "{rescan_interval: 1s}"
        return f"{{<<: [&a{n} {level(n - 1)}" + f", *a{n}" * (copies - 1) + "]}"

    return PRODUCER_HEAD + "<<: " + level(levels) + "\n"


def laughs_bomb(levels: int = 9) -> str:
    """The billion laughs: lists of aliases of lists, no merge key; 9**9 strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    head = PRODUCER_HEAD.split("sources:")[0]
    return head + "\n".join(lines) + f"\nsources: [{{name: a, topic: a, paths: *l{levels - 1}}}]\n"


BOMBS = {
    "merge keys, 7 levels": merge_bomb(7),
    "merge keys, 8 levels": merge_bomb(8),
    "a merge of itself": PRODUCER_HEAD + "<<: &x {<<: [" + ", ".join(["*x"] * 10) + "]}\n",
    "billion laughs": laughs_bomb(),
    "a list holding itself": PRODUCER_HEAD.replace("paths: [", "paths: &p [*p, "),
}


def run_bounded(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m zaggd ARGS` in a bounded address space; the result and its CPU seconds."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, "-m", "zaggd", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=COMMAND_TIMEOUT_S,
        preexec_fn=limit,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, cpu_s


def assert_refused(result: subprocess.CompletedProcess[str], path: Path, problem: str) -> None:
    assert result.returncode == 78, result.stderr[-2000:]
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"zaggd: {path}"), lines[0]
    assert problem in lines[0], lines[0]


@pytest.mark.parametrize("text", BOMBS.values(), ids=list(BOMBS))
@pytest.mark.parametrize("command", ["check-config", "producer"])
def test_yaml_bomb_is_refused_fast_in_one_line(tmp_path: Path, text: str, command: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert len(text) < 1000  # the whole attack fits in a small file
    args = ["check-config", str(path)] if command == "check-config" else [command, "-c", str(path)]
    result, cpu_s = run_bounded(args)
    assert_refused(result, path, f"more than {yamlfile.MAX_YAML_NODES} values")
    assert cpu_s < MAX_CPU_S


def test_many_plain_values_are_refused_before_they_are_all_parsed(tmp_path: Path) -> None:
    """A 1 MB file of one-character list items: the node bound stops the parse early."""
    path = tmp_path / "flat.yaml"
    items = ",".join(["1"] * 400_000)
    path.write_text(PRODUCER_HEAD + f"read_bytes: [{items}]\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    elapsed_s = time.monotonic() - started
    assert str(caught.value) == (
        f"{path}: more than {yamlfile.MAX_YAML_NODES} values (YAML nodes, aliases expanded): "
        "too many for a config file"
    )
    assert elapsed_s < 10  # a full parse takes about 15 s here


def test_a_config_with_anchors_and_merges_in_reason_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    sources = "  - &first {name: s0, topic: app, start_at: end, paths: [logs0/*.log]}\n" + "".join(
        f"  - {{<<: *first, name: s{i}, paths: [logs{i}/*.log]}}\n" for i in range(1, 500)
    )
    path.write_text(PRODUCER_HEAD.split("sources:")[0] + "sources:\n" + sources)
    cfg = config.load_producer(str(path))
    assert len(cfg.sources) == 500
    assert {s.start_at for s in cfg.sources} == {config.StartAt.END}


# --- paths that are not regular files ----------------------------------------------


def special_file(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A config path naming something other than a regular file, and what the error calls it."""
    if kind == "fifo":
        path = tmp_path / "fifo.yaml"
        os.mkfifo(path)
        return path, "not a regular file (a FIFO)"
    if kind == "folder":
        path = tmp_path / "folder.yaml"
        path.mkdir()
        return path, "not a regular file (a folder)"
    if kind == "device":
        return Path("/dev/zero"), "not a regular file (a character device)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
@pytest.mark.parametrize("command", ["check-config", "producer", "collector", "status"])
def test_config_that_is_not_a_regular_file_is_one_line(
    tmp_path: Path, kind: str, command: str
) -> None:
    path, problem = special_file(tmp_path, kind)
    args = [command, str(path)] if command == "check-config" else [command, "-c", str(path)]
    result, _ = run_bounded(args)
    if command == "status":
        assert result.returncode != 0
        assert result.stderr == f"zaggd: {path}: {problem}\n"
        return
    assert_refused(result, path, problem)
    assert result.stderr == f"zaggd: {path}: {problem}\n"


def test_key_file_that_is_a_fifo_is_one_line(tmp_path: Path) -> None:
    """check-config reads every key file: one that is a FIFO must not block it."""
    from zaggd import security

    keys = tmp_path / "keys"
    security.keygen(str(keys), "web-01")
    fifo = tmp_path / "collector.key"
    os.mkfifo(fifo)
    path = tmp_path / "p.yaml"
    path.write_text(
        PRODUCER_HEAD.replace(
            'publish: {bind: ["tcp://127.0.0.1:7450"], replay: "tcp://127.0.0.1:7451"}',
            'publish: {connect: ["tcp://127.0.0.1:7450"], replay: ["tcp://127.0.0.1:7451"], '
            f'curve: {{secret_key_file: "{keys}/web-01.key_secret", server_key_file: "{fifo}"}}}}',
        )
    )
    result, _ = run_bounded(["check-config", str(path)])
    assert result.returncode == 78
    assert result.stderr == f"zaggd: {fifo}: not a regular file\n"
