"""No inotify left (instances or watches): the producer starts, rescans, and says so once.

The limits are per user and shared by all of the user's programs. Each test
runs the producer in a user namespace of its own whose limit it lowers
(/proc/sys/user/max_inotify_*): the host's limits and other programs are
untouched, and the exhaustion is real (inotify_init1 fails with EMFILE,
inotify_add_watch with ENOSPC).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import append_lines, numbered_lines
from tests.producer.watched import Pair, log_lines


def limited(setting: str, value: int) -> list[str]:
    """A command prefix: what follows runs with the user namespace's `setting` at `value`."""
    script = f'echo {value} > /proc/sys/user/{setting} && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"]


PROBE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0:
    sys.exit(10)
sys.exit(11 if libc.inotify_add_watch(fd, b".", 2) < 0 else 0)
"""


def probe(setting: str, value: int) -> int:
    try:
        done = subprocess.run(
            [*limited(setting, value), sys.executable, "-c", PROBE], capture_output=True, timeout=30
        )
    except FileNotFoundError:
        pytest.skip("needs unshare (util-linux)")
    return done.returncode


@pytest.fixture(scope="module")
def user_namespaces() -> None:
    if probe("max_inotify_instances", 0) != 10 or probe("max_inotify_watches", 0) != 11:
        pytest.skip("cannot lower inotify limits in a user namespace here")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    for sub in ("a", "b", "c"):
        (logs / sub).mkdir(parents=True)
    return logs


@contextmanager
def run_pair(tmp_path: Path, logs: Path, setting: str, value: int) -> Iterator[Pair]:
    pair = Pair(tmp_path, [str(logs / "**" / "*.log")], producer_prefix=limited(setting, value))
    try:
        yield pair
    finally:
        pair.stop()


def check_rescans_and_says_so(pair: Pair, logs: Path, sysctl: str, what: str) -> None:
    pair.start()
    expected: list[bytes] = []
    for step in range(3):
        for sub in ("a", "b", "c"):
            lines = numbered_lines(sub, step * 50, 50)
            append_lines(logs / sub / "app.log", lines)
        expected = [
            line for sub in ("a", "b", "c") for line in numbered_lines(sub, 0, (step + 1) * 50)
        ]
        pair.wait_for(expected, quiet_s=0.5)
    said = log_lines(pair.producer, sysctl)
    assert len(said) == 1, said
    assert "WARNING" in said[0] and what in said[0]
    watching = str(pair.producer.status().get("watching"))
    assert what in watching and sysctl in watching, watching
    assert f"watching: {watching}" in pair.status_table()


@pytest.mark.usefixtures("user_namespaces")
def test_no_inotify_instance_left(tmp_path: Path, logs: Path) -> None:
    with run_pair(tmp_path, logs, "max_inotify_instances", 0) as pair:
        check_rescans_and_says_so(
            pair, logs, "fs.inotify.max_user_instances", "inotify instances exhausted"
        )


@pytest.mark.parametrize("watches", [0, 2], ids=["none", "some"])
@pytest.mark.usefixtures("user_namespaces")
def test_no_inotify_watch_left(tmp_path: Path, logs: Path, watches: int) -> None:
    """None at all, or fewer than the folders (the root and one of its three folders)."""
    with run_pair(tmp_path, logs, "max_inotify_watches", watches) as pair:
        check_rescans_and_says_so(
            pair, logs, "fs.inotify.max_user_watches", "inotify watches exhausted"
        )
