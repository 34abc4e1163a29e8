"""Test helpers: real daemons as subprocesses, a real NOTIFY_SOCKET, waiting on conditions."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05
) -> Any:
    """Poll until `predicate()` is truthy; its last value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class NotifySocket:
    """A real systemd notify socket: records what a daemon sends."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        # Read continuously, as systemd does: an unread datagram socket fills after 10 messages.
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.messages.extend(data.decode().splitlines())

    def poll(self) -> list[str]:
        return self.messages

    def has(self, text: str) -> bool:
        return any(m == text or m.startswith(text) for m in self.poll())

    def wait_for(self, text: str, timeout_s: float = 20.0) -> None:
        wait_until(lambda: self.has(text), timeout_s)

    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class Daemon:
    """`zaggd producer|collector -c FILE` as a subprocess, ready when it says READY=1."""

    def __init__(
        self,
        kind: str,
        config: Path,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """`prefix` goes before the command, as in ["ip", "netns", "exec", NS]; it must exec
        the daemon (not fork it), so signals reach it."""
        self.kind = kind
        self.prefix = list(prefix or [])
        self.config = config
        self.workdir = workdir
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.log_path = workdir / f"{kind}-{config.stem}.log"
        self.starts = 0

    def start(self, wait_ready: bool = True, timeout_s: float = 30.0) -> Daemon:
        if self.notify is not None:
            self.notify.close()
        self.notify = NotifySocket(self.workdir)
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env["NOTIFY_SOCKET"] = self.notify.path
        env["PYTHONPATH"] = str(REPO)
        env.update(self.extra_env)
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "zaggd",
                self.kind,
                "-c",
                str(self.config),
                "--log-level",
                "debug",
            ],
            stdout=log,
            stderr=log,
            env=env,
            cwd=str(self.workdir),
        )
        log.close()
        if wait_ready:
            deadline = time.monotonic() + timeout_s
            while not self.notify.has("READY=1"):
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.kind} exited {self.proc.returncode}:\n{self.output()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.kind} not ready in {timeout_s} s:\n{self.output()[-3000:]}"
                    )
                time.sleep(0.02)
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"{self.kind} did not stop in {timeout_s} s") from None
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        return self.proc.returncode

    def status(self) -> dict[str, Any]:
        from zaggd.control import query

        with open(self.config) as f:
            state_dir = yaml.safe_load(f)["state_dir"]
        return query(os.path.join(self.config.parent, state_dir, "control.sock"))


def producer_config(
    folder: Path,
    node: str,
    sources: list[dict[str, Any]],
    publish: dict[str, Any],
    **extra: Any,
) -> Path:
    data: dict[str, Any] = {
        "node": node,
        "state_dir": str(folder / f"state-{node}"),
        "publish": publish,
        "sources": sources,
        "rescan_interval": "1s",
        "state_interval": "200ms",
    }
    data.update(extra)
    return write_yaml(folder / f"producer-{node}.yaml", data)


def collector_config(
    folder: Path,
    name: str,
    subscribe: dict[str, Any],
    output: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    data: dict[str, Any] = {
        "state_dir": str(folder / f"state-{name}"),
        "subscribe": subscribe,
        "output": output
        or {"path": str(folder / f"out-{name}" / "{topic}" / "{node}-{source}.log")},
    }
    data.update(extra)
    return write_yaml(folder / f"collector-{name}.yaml", data)


def append_lines(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


def numbered_lines(prefix: str, start: int, count: int, width: int = 100) -> list[bytes]:
    """Lines like `PREFIX 000123 xxxx...\\n`, each `width` bytes long with its newline."""
    out = []
    for i in range(start, start + count):
        head = f"{prefix} {i:07d} "
        out.append((head + "x" * max(0, width - len(head) - 1) + "\n").encode())
    return out


_probes = itertools.count()


def probe_line(tag: str = "probe") -> bytes:
    """A line no test writes otherwise. Appended after everything else, its arrival
    at the end of the output proves that every line before it in its file was
    processed: a condition to wait for instead of a fixed sleep."""
    return f"{tag} {os.getpid()} {next(_probes)}\n".encode()


def ends_with(path: Path, tail: bytes) -> bool:
    """`path` exists and ends with `tail` (without reading it whole)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < len(tail):
                return False
            f.seek(size - len(tail))
            return f.read() == tail
    except FileNotFoundError:
        return False


def tailing_pair(tmp_path: Path, output: dict[str, Any]) -> tuple[Path, Daemon, Daemon]:
    """Producer web-01 tailing logs/*.log (binding), collector c1 connecting with
    `output`; the log file the test appends to, and the two daemons."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    data_port, replay_port = free_port(), free_port()
    pcfg = producer_config(
        tmp_path,
        "web-01",
        [{"name": "app", "topic": "app", "paths": [str(logs / "*.log")]}],
        {"bind": [f"tcp://127.0.0.1:{data_port}"], "replay": f"tcp://127.0.0.1:{replay_port}"},
    )
    ccfg = collector_config(
        tmp_path, "c1", {"connect": [f"tcp://127.0.0.1:{data_port}"], "topics": [""]}, output
    )
    return logs / "app.log", Daemon("producer", pcfg, tmp_path), Daemon("collector", ccfg, tmp_path)


@dataclass
class Pair:
    """A running tailing_pair and every line sent through it so far."""

    source: Path
    producer: Daemon
    collector: Daemon
    out: Path  # the collector's output folder
    sent: list[bytes] = field(default_factory=list)

    def send(self, lines: list[bytes], wait: bool = True) -> None:
        """Append `lines` to the source; with `wait`, until the output is exactly `sent`."""
        append_lines(self.source, lines)
        self.sent += lines
        if wait:
            wait_until(lambda: read_output_lines(self.out) == self.sent, timeout_s=30)

    def assert_exact(self, settle_s: float = 1.0) -> None:
        """The output is every line sent, once, and stays so (a late double would show)."""
        wait_until(lambda: read_output_lines(self.out) == self.sent, timeout_s=30)
        time.sleep(settle_s)
        assert read_output_lines(self.out) == self.sent


@contextlib.contextmanager
def running_pair(tmp_path: Path, out: Path | None = None, **state_dirs: Path) -> Iterator[Pair]:
    """tailing_pair writing to `out` (tmp_path/out), both started; both stopped after.
    `producer=` or `collector=` gives that daemon's state_dir."""
    out = out or tmp_path / "out"
    source, producer, collector = tailing_pair(
        tmp_path, {"path": str(out / "{topic}" / "{node}.log")}
    )
    for daemon in (producer, collector):
        if daemon.kind in state_dirs:
            data = yaml.safe_load(daemon.config.read_text())
            data["state_dir"] = str(state_dirs[daemon.kind])
            write_yaml(daemon.config, data)
    try:
        producer.start()
        collector.start()
        yield Pair(source, producer, collector, out)
    finally:
        stop_all(collector, producer)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` for the test, unmounted afterwards whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a small tmpfs (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_up(folder: Path) -> Path:
    """A file that takes every free byte of `folder`'s filesystem; remove it to free them."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, chunk):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler


def run_refused(kind: str, config: Path, timeout_s: float = 30.0) -> tuple[int, str]:
    """`zaggd KIND -c CONFIG`, expected to refuse to start: its exit status and stderr.
    One still running after `timeout_s` is killed and fails the test."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("JOURNAL_STREAM", None)
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zaggd", kind, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(config.parent),
    )
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"{kind} did not refuse to start; it ran:\n{err.decode(errors='replace')[-2000:]}"
        ) from None
    return proc.returncode, err.decode(errors="replace")


def zaggd_verify(folder: Path) -> subprocess.CompletedProcess[str]:
    """`zaggd verify FOLDER`, run as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "zaggd", "verify", str(folder)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def is_zaggd_own(name: str) -> bool:
    """zaggd's own files among the output (its lock, its folder marker, a live index, or
    one being written): no lines of it."""
    return name.startswith(".zaggd-") or name.endswith((".index.json", ".index.json.tmp"))


def read_output_lines(folder: Path) -> list[bytes]:
    """Every line under `folder`, file by file in name order (see settled)."""

    def read() -> list[bytes]:
        lines: list[bytes] = []
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not is_zaggd_own(path.name):
                lines += path.read_bytes().splitlines(keepends=True)
        return lines

    return settled(read)


def output_names(folder: Path) -> list[str]:
    """The names of the output files in `folder`, without the collector's bookkeeping."""
    return sorted(p.name for p in folder.iterdir() if not is_zaggd_own(p.name))


def stop_all(*daemons: Daemon) -> None:
    for d in daemons:
        try:
            d.stop()
        except AssertionError:
            d.kill()


# -- collector output: the write path without sockets, and rotated output ---------


class OutputHarness:
    """The subscriber's write path on real files, minus sockets: route, before_write,
    open (checkpointed before its first byte), append; `save()` is its write_checkpoint.

    Time is an argument: every write and check takes `now`.
    """

    def __init__(
        self,
        folder: Path,
        rotate: Any,
        start_worker: bool = False,
        template: str = "out/{topic}/{node}.log",
    ) -> None:
        from zaggd.collector.checkpoint import Checkpoint
        from zaggd.collector.liveindex import Indexer
        from zaggd.collector.rotation import Rotation
        from zaggd.collector.writer import Writer
        from zaggd.config import OutputConfig
        from zaggd.metrics import COLLECTOR_COUNTERS, Counters

        self.folder = folder
        self.template = template
        self.output = OutputConfig(path=str(folder / template), rotate=rotate)
        self.writer = Writer(self.output)
        self.counters = Counters(COLLECTOR_COUNTERS)
        self.checkpoint = Checkpoint(str(folder / "state"))
        os.makedirs(folder / "state", exist_ok=True)
        self.offsets: dict[str, int] = {}
        self.now = 0.0
        self.rotation = Rotation(self.output, self.writer, self.counters, start_worker=start_worker)
        self.rotation.checkpoint = self.save
        self.indexer = Indexer()
        self.restored: Any = None
        self.recovered: Any = None

    def save(self) -> None:
        """The checkpoint, then the live indexes, as the checkpoint thread does."""
        self.save_checkpoint()
        self.save_indexes()
        self.rotation.after_checkpoint(self.now)

    def save_checkpoint(self) -> None:
        from zaggd.collector.checkpoint import CheckpointState
        from zaggd.collector.writer import describe_files

        self.writer.sync(True)
        state = CheckpointState(
            streams={key: [offset, "t", "src", "/p"] for key, offset in self.offsets.items()},
            files=describe_files(self.writer),
            nodes=[],
            rotations=self.rotation.intents(),
        )
        self.checkpoint.save(state)

    def save_indexes(self) -> None:
        self.indexer.write(self.writer.index_jobs(self.rotation.previous_of), complete=True)

    def write(self, lines: list[bytes], now: float, node: str = "n1", stream: str = "s1") -> str:
        """Append one block of `lines` from `node/stream`; the live path it went to."""
        self.now = now
        block = b"".join(lines)
        path = self.writer.route(b"t", node, "src", now)
        path = self.rotation.before_write(path, now, len(block))
        if not self.writer.is_open(path):
            self.writer.open(path)
            checkpoint = self.rotation.checkpoint  # save(), unless a test put a kill there
            assert checkpoint is not None
            checkpoint()
        key = f"{node}/{stream}"
        start = self.offsets.get(key, 0)
        self.writer.append(
            self.writer.files[path], block, len(lines), key, start, start + len(block)
        )
        self.offsets[key] = start + len(block)
        return path

    def restart(self, start_worker: bool = False) -> OutputHarness:
        """A new process's view after kill -9: load the checkpoint (if any), recover, cut
        files back; the offsets are the checkpoint's, or what the output folder says."""
        from zaggd.collector.daemon import recover
        from zaggd.collector.damage import rewind

        self.rotation.stop()
        self.writer.close_all()  # what the OS had; recovery cuts it back
        new = OutputHarness(self.folder, self.output.rotate, False, self.template)
        restored = new.checkpoint.load()
        recovered = recover(new.writer, restored, new.rotation)
        if restored is not None:
            new.offsets = {key: int(value[0]) for key, value in restored.streams.items()}
        for key, end in recovered.floors.items():
            new.offsets.setdefault(key, end)
        for damage in recovered.damaged:
            rewind(damage.ranges, {}, new.offsets)
        if start_worker:
            new.rotation.start_worker()
        new.restored, new.recovered = restored, recovered
        return new

    def close(self) -> None:
        self.rotation.stop()
        self.writer.close_all()


def rotated_output(folder: Path) -> dict[str, bytes]:
    """Per live file name: its archives in name order (gunzipped) and then the live file.

    A rotated file present both plain and compressed would double its lines:
    that is an error here, as it would be for a user concatenating them, once
    the folder has settled: the compressor passes through that state for a moment.
    """
    return settled(lambda: _rotated_output_once(folder))


def rotated_caught_up(folder: Path, want: bytes) -> bool:
    """The output in `folder` (archives, then the live file) is as long as `want` and
    ends with its last line: everything arrived, maybe with doubles (see lines_differ)."""
    import gzip

    try:
        got = b"".join(rotated_output(folder).values())
    except (AssertionError, OSError, EOFError, gzip.BadGzipFile):
        return False  # caught between two steps of a seal
    last = want[want.rfind(b"\n", 0, len(want) - 1) + 1 :]
    return len(got) >= len(want) and got.endswith(last)


def lines_differ(got: bytes, want: bytes) -> str:
    """How `got` differs from `want`, in lines doubled and missing; "" when byte-equal."""
    if got == want:
        return ""
    got_lines, want_lines = got.splitlines(), want.splitlines()
    return (
        f"{len(got_lines)} lines for {len(want_lines)} written; "
        f"{len(got_lines) - len(set(got_lines))} doubled, "
        f"{len(set(want_lines) - set(got_lines))} missing"
    )


def assert_rotated_exactly(folder: Path, want: bytes, timeout_s: float = 60.0) -> None:
    """Wait for the output in `folder` to catch up with `want`, then a moment more (a late
    double would show): one live file whose archives and itself hold `want` byte for
    byte, and no manifest without ranges."""
    from zaggd.collector.manifest import read_manifest

    wait_until(lambda: rotated_caught_up(folder, want), timeout_s, interval_s=0.2)
    time.sleep(1.0)
    got = rotated_output(folder)
    assert len(got) == 1, list(got)
    (data,) = got.values()
    assert data == want, lines_differ(data, want)
    for manifest in folder.glob("*.manifest.json"):
        assert read_manifest(str(manifest)).ranges, f"{manifest.name} holds no ranges"


class Appender:
    """Appends numbered lines to a file, `count` at a time, and keeps what it wrote."""

    def __init__(self, path: Path, prefix: str, width: int = 100) -> None:
        self.path, self.prefix, self.width = path, prefix, width
        self.lines: list[bytes] = []

    def add(self, count: int) -> None:
        lines = numbered_lines(self.prefix, len(self.lines), count, self.width)
        append_lines(self.path, lines)
        self.lines.extend(lines)

    @property
    def data(self) -> bytes:
        return b"".join(self.lines)


class _BothForms(AssertionError):
    pass


T = TypeVar("T")


def settled(read: Callable[[], T], timeout_s: float = 2.0) -> T:
    """read(), again while the folder it reads is caught mid-change: a file renamed,
    compressed or removed between listing and reading it, or a rotated file seen
    plain and compressed at once. Past `timeout_s` the error stands.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return read()
        except (FileNotFoundError, _BothForms):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _rotated_output_once(folder: Path) -> dict[str, bytes]:
    import gzip

    from zaggd.collector.manifest import parse_rotated

    parts: dict[str, list[tuple[str, bytes]]] = {}
    live: dict[str, bytes] = {}
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not is_zaggd_own(p.name))
    bases = set()
    for name in names:
        parsed = parse_rotated(name)
        if parsed is None:
            live[name] = (folder / name).read_bytes()
            continue
        if parsed.ext not in ("", ".gz"):
            continue
        if parsed.base in bases:
            raise _BothForms(f"{parsed.base} is there both plain and compressed")
        bases.add(parsed.base)
        data = (folder / name).read_bytes()
        parts.setdefault(parsed.live, []).append(
            (name, gzip.decompress(data) if parsed.ext else data)
        )
    out = {}
    for name in sorted(set(parts) | set(live)):
        out[name] = b"".join(data for _, data in sorted(parts.get(name, []))) + live.get(name, b"")
    return out


# -- private network namespaces, for multicast -------------------------------------


class NetNamespaces:
    """Network namespaces a test makes, runs daemons in, and deletes (`close()`).

    Multicast never leaves them: `check()` refuses a namespace that has any
    interface other than `lo` and the veth ends made here. Needs root and iproute2.
    """

    def __init__(self, tag: str) -> None:
        self.tag = f"{tag}{os.getpid() % 100000}"
        self.names: list[str] = []
        self.links: set[str] = {"lo"}

    def add(self, suffix: str) -> str:
        """A new namespace with `lo` up; its name."""
        name = f"{self.tag}-{suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
        self.names.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def veth(self, a: str, addr_a: str, b: str, addr_b: str) -> None:
        """A veth pair from namespace `a` to `b`, with addresses like 10.250.0.1/24."""
        end_a, end_b = f"{self.tag}a{len(self.links)}", f"{self.tag}b{len(self.links)}"
        self.links |= {end_a, end_b}
        self.ip(a, "link", "add", end_a, "type", "veth", "peer", "name", end_b, "netns", b)
        for ns, end, addr in ((a, end_a, addr_a), (b, end_b, addr_b)):
            self.ip(ns, "addr", "add", addr, "dev", end)
            self.ip(ns, "link", "set", end, "up")

    def set_veths(self, ns: str, up: bool) -> None:
        """Take this test's veth ends in `ns` down (a cable pulled) or up again."""
        for name in self.interfaces(ns):
            if name != "lo" and name in self.links:
                self.ip(ns, "link", "set", name, "up" if up else "down")

    def ip(self, ns: str, *args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)

    def prefix(self, ns: str) -> list[str]:
        """The command prefix that runs a program in `ns` (after checking `ns`)."""
        self.check(ns)
        return ["ip", "netns", "exec", ns]

    def interfaces(self, ns: str) -> list[str]:
        code = "import socket; print(' '.join(n for _, n in socket.if_nameindex()))"
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.split()

    def check(self, ns: str) -> None:
        """Refuse to go on unless `ns` is ours and holds only `lo` and our veth ends."""
        if ns not in self.names:
            raise AssertionError(f"not a namespace this test made: {ns}")
        foreign = [name for name in self.interfaces(ns) if name not in self.links]
        if foreign:
            raise AssertionError(f"namespace {ns} has interfaces this test did not make: {foreign}")

    def close(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.names.clear()


def subscriber_thread(context: Any, config: Any) -> tuple[Any, list[str]]:
    """A collector's SubscriberThread on `config` (not started), and the list its crashes go to."""
    from zaggd.collector.checkpoint import Checkpoint
    from zaggd.collector.subscriber import SubscriberThread
    from zaggd.collector.writer import Writer
    from zaggd.metrics import COLLECTOR_COUNTERS, Counters

    os.makedirs(config.state_dir, exist_ok=True)
    crashes: list[str] = []
    sub = SubscriberThread(
        context,
        config,
        Counters(COLLECTOR_COUNTERS),
        Checkpoint(config.state_dir),
        None,
        Writer(config.output),
        crashes.append,
    )
    return sub, crashes
