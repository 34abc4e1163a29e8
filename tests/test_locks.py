"""Two daemons on one state folder or one output folder: the second refuses to start.

Each daemon holds a lock, `.zaggd-lock`, in its state folder, and a collector
one in its output folder too, for as long as it runs. A second daemon on the
same folder exits 78 with one line naming the lock and the PID that holds it,
and the first goes on writing every line exactly once. A reload moving the
output to a locked folder is refused; to a free one, it takes the new lock and
frees the old.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import yaml

from tests.helpers import (
    Daemon,
    free_port,
    numbered_lines,
    producer_config,
    read_output_lines,
    run_refused,
    running_pair,
    stop_all,
    wait_until,
    write_yaml,
)


def refusal(lock: Path, pid: int, what: str) -> str:
    return (
        f"zaggd: {lock}: another zaggd (pid {pid}) holds this {what}; "
        "two daemons cannot share one\n"
    )


def second_collector(first: Daemon, name: str, **changes: object) -> Path:
    """A collector config like `first`'s, with its own state folder, but for `changes`."""
    data = yaml.safe_load(first.config.read_text())
    data["state_dir"] = str(first.config.parent / f"state-{name}")
    data.update(changes)
    return write_yaml(first.config.parent / f"collector-{name}.yaml", data)


def can_lock(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_second_collector_on_one_output_folder_refuses(tmp_path: Path) -> None:
    lines = numbered_lines("o", 0, 400, 80)
    with running_pair(tmp_path) as pair:
        first = pair.collector
        pair.send(lines[:200])
        lock = pair.out / ".zaggd-lock"
        assert lock.read_text() == f"{first.pid}\n"

        code, err = run_refused("collector", second_collector(first, "c2"))
        assert (code, err) == (78, refusal(lock, first.pid, "output folder"))

        pair.send(lines[200:])
        # The lock dies with its holder: after kill -9 the same collector starts again.
        first.kill()
        first.start()
        assert lock.read_text() == f"{first.pid}\n"
        pair.assert_exact()
        assert first.stop() == 0


def test_second_collector_on_one_state_dir_refuses(tmp_path: Path) -> None:
    with running_pair(tmp_path) as pair:
        first = pair.collector
        state_dir = yaml.safe_load(first.config.read_text())["state_dir"]
        config = second_collector(
            first,
            "c2",
            state_dir=state_dir,
            output={"path": str(tmp_path / "out2" / "{topic}" / "{node}.log")},
        )
        code, err = run_refused("collector", config)
        assert (code, err) == (78, refusal(Path(state_dir) / ".zaggd-lock", first.pid, "state_dir"))
        assert not (tmp_path / "out2").exists()  # refused before touching anything

        pair.send(numbered_lines("s", 0, 300, 80))
        pair.assert_exact()
        assert first.stop() == 0


def test_second_producer_on_one_state_dir_refuses(tmp_path: Path) -> None:
    with running_pair(tmp_path) as pair:
        first = pair.producer
        data = yaml.safe_load(first.config.read_text())
        state_dir = Path(data["state_dir"])
        config = producer_config(
            tmp_path,
            "web-02",
            data["sources"],
            {
                "bind": [f"tcp://127.0.0.1:{free_port()}"],
                "replay": f"tcp://127.0.0.1:{free_port()}",
            },
            state_dir=str(state_dir),
        )
        code, err = run_refused("producer", config)
        assert (code, err) == (78, refusal(state_dir / ".zaggd-lock", first.pid, "state_dir"))
        assert first.status()["daemon"] == "producer"  # its control socket untouched

        pair.send(numbered_lines("p", 0, 300, 80))
        pair.assert_exact()
        assert first.stop() == 0


def test_reload_onto_a_locked_output_folder_is_refused_and_a_free_one_moves_the_lock(
    tmp_path: Path,
) -> None:
    out1, out2, out3 = tmp_path / "out1", tmp_path / "out2", tmp_path / "out3"
    lines = numbered_lines("r", 0, 300, 80)
    with running_pair(tmp_path, out1) as pair:
        first = pair.collector
        other = Daemon(
            "collector",
            second_collector(first, "c2", output={"path": str(out2 / "{topic}" / "{node}.log")}),
            tmp_path,
        )
        try:
            other.start()
            pair.send(lines[:100])
            wait_until(lambda: read_output_lines(out2) == lines[:100], timeout_s=30)

            data = yaml.safe_load(first.config.read_text())
            data["output"]["path"] = str(out2 / "{topic}" / "{node}.log")
            write_yaml(first.config, data)
            first.signal(signal.SIGHUP)
            wait_until(lambda: "reload refused" in first.output(), timeout_s=30)
            refused = refusal(out2 / ".zaggd-lock", other.pid, "output folder")
            assert f"reload refused, keeping the running config: {refused[7:]}" in first.output()
            pair.send(lines[100:200])
            wait_until(lambda: read_output_lines(out2) == lines[:200], timeout_s=30)

            data["output"]["path"] = str(out3 / "{topic}" / "{node}.log")
            write_yaml(first.config, data)
            first.signal(signal.SIGHUP)
            wait_until(lambda: f"reloaded {first.config}" in first.output(), timeout_s=30)
            assert (out3 / ".zaggd-lock").read_text() == f"{first.pid}\n"
            assert not can_lock(out3 / ".zaggd-lock")
            assert can_lock(out1 / ".zaggd-lock")  # freed
            pair.send(lines[200:], wait=False)
            wait_until(lambda: read_output_lines(out3) == lines[200:], timeout_s=30)
            assert read_output_lines(out1) == lines[:200]
            assert first.stop() == 0 and other.stop() == 0
            assert read_output_lines(out2) == lines
        finally:
            stop_all(other)
