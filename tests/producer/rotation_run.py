"""One producer per logrotate mode, all feeding one collector, under a fast writer.

`RotationRun` sets up, per mode, a 0755 log folder, a writer app
(logwriter.py) appending numbered lines, a logrotate config with a private
state file, and a producer; one collector subscribes to every producer. It
runs the real /usr/sbin/logrotate on each mode every ROTATE_EVERY_S while the
writers write, optionally kill -9s and restarts producers, then waits until
the collector holds every line still on disk, and reports per mode what was
written, what is on disk, what was output and what was counted as lost.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import Daemon, collector_config, free_port, producer_config, wait_until

LOGROTATE = "/usr/sbin/logrotate"
ROTATE_EVERY_S = 0.5
WRITE_RATE = 6000  # lines per second per writer, above the 5,000 asked for
KILL_GRACE_S = 60.0
HERE = Path(__file__).resolve().parent

POSTROTATE = "    postrotate\n        kill -HUP {pid}\n    endscript\n"
MODES = {
    "create": "    create\n" + POSTROTATE,
    "dateext": "    create\n    dateext\n    dateformat -%s\n" + POSTROTATE,
    "copytruncate": "    copytruncate\n",
    "delaycompress": "    create\n    compress\n    delaycompress\n" + POSTROTATE,
}
# logrotate's own complaint when two dateext rotations fall in one second: it skips one.
BENIGN_STDERR = re.compile(r"error: destination \S+ already exists, skipping rotation")
LOST_RE = re.compile(r"bytes lost: .*\((\d+) bytes\)")


@dataclass
class ModeRun:
    mode: str
    folder: Path
    producer: Daemon
    port: int
    writer: subprocess.Popen[str] | None = None
    written: int = 0
    rotations: int = 0
    kills: int = 0
    stderr: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs / "app.log"

    def disk_lines(self) -> list[list[int]]:
        """The line numbers of every file in the log folder, file by file, .gz decompressed.

        A copy logrotate took while the app was writing may end in part of a
        line (its rest was truncated away): that is no line, and is left out.
        """
        files = []
        for path in sorted(self.logs.iterdir()):
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            lines = data.splitlines(keepends=True)
            if lines and not lines[-1].endswith(b"\n"):
                assert self.mode == "copytruncate", f"{path}: ends in a partial line"
                lines.pop()
            files.append([line_number(raw) for raw in lines])
        return files


def start_logwriter(path: Path, prefix: str, rate: int) -> subprocess.Popen[str]:
    """logwriter.py appending numbered lines to `path`, once it is ready."""
    writer = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "logwriter.py"),
            str(path),
            *("--prefix", prefix, "--rate", str(rate)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    return writer


def write_logrotate_config(folder: Path, log_path: Path, body: str) -> None:
    """folder/logrotate.conf: rotate `log_path` (1000 copies kept) with `body`'s directives."""
    text = f"{log_path} {{\n    rotate 1000\n    missingok\n    nomail\n{body}}}\n"
    conf = folder / "logrotate.conf"
    conf.write_text(text)
    os.chmod(conf, 0o644)  # logrotate ignores group- or world-writable configs


def logrotate(folder: Path) -> subprocess.CompletedProcess[str]:
    """The real logrotate, forced, on folder/logrotate.conf with a private state file."""
    return subprocess.run(
        [
            LOGROTATE,
            "-s",
            str(folder / "logrotate.state"),
            "-f",
            str(folder / "logrotate.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def line_number(raw: bytes) -> int:
    assert raw.endswith(b"\n"), f"a partial line: {raw[:60]!r}"
    return int(raw.split(b" ", 2)[1])


class RotationRun:
    def __init__(self, tmp_path: Path, modes: list[str]) -> None:
        self.tmp_path = tmp_path
        self.runs: dict[str, ModeRun] = {}
        for index, mode in enumerate(modes):
            folder = tmp_path / f"m{index}"  # short: the control socket path has a limit
            (folder / "logs").mkdir(parents=True)
            os.chmod(folder / "logs", 0o755)  # logrotate refuses world-writable folders
            port = free_port()
            config = producer_config(
                folder,
                mode,
                [{"name": "app", "topic": "app", "paths": [str(folder / "logs" / "*.log")]}],
                {"bind": [f"tcp://127.0.0.1:{port}"], "replay": f"tcp://127.0.0.1:{free_port()}"},
            )
            self.runs[mode] = ModeRun(mode, folder, Daemon("producer", config, folder), port)
        endpoints = [f"tcp://127.0.0.1:{r.port}" for r in self.runs.values()]
        self.collector = Daemon(
            "collector",
            collector_config(tmp_path, "c1", {"connect": endpoints, "topics": [""]}),
            tmp_path,
        )
        self.output = tmp_path / "out-c1" / "app"
        self._stop = threading.Event()
        self._killer: threading.Thread | None = None
        self._errors: list[str] = []
        self._t0 = time.monotonic()

    # -- running ---------------------------------------------------------------

    def start(self) -> None:
        self.collector.start()
        for run in self.runs.values():
            run.producer.start()
            run.writer = start_logwriter(run.log_path, run.mode, WRITE_RATE)
            self._write_logrotate_config(run)

    def _write_logrotate_config(self, run: ModeRun) -> None:
        assert run.writer is not None
        write_logrotate_config(run.folder, run.log_path, MODES[run.mode].format(pid=run.writer.pid))

    def rotate_for(self, seconds: float, kills: int = 0) -> None:
        """Rotate every mode every ROTATE_EVERY_S for `seconds`; kill -9 each producer
        `kills` times meanwhile."""
        self._t0 = time.monotonic()
        if kills:
            self._killer = threading.Thread(target=self._kill_loop, args=(seconds, kills))
            self._killer.start()
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        # Rotation goes on until the last kill and restart are done, if they run late.
        while time.monotonic() < deadline or (
            self._killer is not None
            and self._killer.is_alive()
            and time.monotonic() < deadline + KILL_GRACE_S
        ):
            for run in self.runs.values():
                self._logrotate(run)
            next_at += ROTATE_EVERY_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        self._stop_killer()
        assert not self._errors, self._errors

    def _stop_killer(self) -> None:
        self._stop.set()
        if self._killer is not None:
            self._killer.join(timeout=60)
            assert not self._killer.is_alive(), "the kill loop did not stop"
            self._killer = None

    def _logrotate(self, run: ModeRun) -> None:
        done = logrotate(run.folder)
        unexpected = [
            line for line in done.stderr.splitlines() if line and not BENIGN_STDERR.search(line)
        ]
        if unexpected:
            run.stderr += unexpected
        if done.returncode == 0:
            run.rotations += 1

    def _kill_loop(self, seconds: float, kills: int) -> None:
        """kill -9 and restart each producer `kills` times, spread over the run."""
        try:
            spacing = seconds / (kills + 1)
            runs = list(self.runs.values())
            for round_ in range(kills):
                for index, run in enumerate(runs):
                    at = (round_ + 1) * spacing + index * spacing / (len(runs) + 1)
                    if self._stop.wait(max(0.0, self._t0 + min(at, seconds) - time.monotonic())):
                        return
                    run.producer.kill()
                    run.producer.start()
                    run.kills += 1
        except AssertionError as exc:  # a producer that did not come back
            self._errors.append(str(exc))

    def stop_writers(self) -> None:
        for run in self.runs.values():
            assert run.writer is not None
            run.writer.send_signal(signal.SIGTERM)
            out, _ = run.writer.communicate(timeout=30)
            run.written = int(out.split()[-1])

    def wait_delivered(self, timeout_s: float = 90.0) -> None:
        """Until the collector holds every line that is on disk, for every mode."""

        def complete() -> bool:
            for run in self.runs.values():
                have = set(self.output_numbers(run.mode))
                for lines in run.disk_lines():
                    if not have.issuperset(lines):
                        return False
            return True

        wait_until(complete, timeout_s=timeout_s, interval_s=0.5)

    def stop(self) -> None:
        """Producers first (they write their offset stores), then the collector."""
        self._stop_killer()
        for run in self.runs.values():
            if run.writer is not None and run.writer.poll() is None:
                run.writer.kill()
                run.writer.wait(timeout=10)
            try:
                run.producer.stop()
            except AssertionError:
                run.producer.kill()
        try:
            self.collector.stop()
        except AssertionError:
            self.collector.kill()

    # -- what happened -----------------------------------------------------------

    def output_numbers(self, mode: str) -> list[int]:
        path = self.output / f"{mode}-app.log"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        # The last line may be half written at this instant.
        return [line_number(raw) for raw in data.splitlines(keepends=True) if raw.endswith(b"\n")]

    def lost_bytes(self, mode: str) -> tuple[int, int]:
        """Bytes counted as lost (producer log over all its lives, collector log for this node)."""
        producer = sum(int(m.group(1)) for m in LOST_RE.finditer(self.runs[mode].producer.output()))
        collector = sum(
            int(m.group(1))
            for line in self.collector.output().splitlines()
            if f"node {mode} " in line
            for m in [LOST_RE.search(line)]
            if m is not None
        )
        return producer, collector
