"""A booted Debian 12 under systemd-nspawn, for tests against a real systemd.

The base tree (debootstrap minbase plus systemd and zaggd's runtime
dependencies) is built once and cached under CACHE_DIR; a tree is complete
when its marker file names the same package list. Each Container works on its
own copy of that tree, boots it, runs commands in it through nsenter and
always tears it down: SIGTERM to the nspawn it started, its cgroup folders
and nspawn's propagate folder removed. Every wait is bounded, and only the
processes this module started are ever signalled.

This follows /work/shared/RECIPES.md ("A real systemd"): on a host whose PID 1
is not systemd (cgroup v1 hybrid), nspawn needs --register=no --keep-unit and
a launching process moved into cgroups of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CACHE_DIR = Path("/var/cache/zaggd-tests")
BASE_TREE = CACHE_DIR / "bookworm"
MARKER = ".zaggd-tests-complete"
SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "procps",
    "python3-zmq",
    "python3-watchdog",
    "python3-yaml",
    "python3-sdnotify",
)
HOST_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container"}
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
# Upper bound on a container's life, enforced by timeout(1) even if the test
# process dies without tearing down.
MAX_LIFETIME_S = 1800


class NspawnError(RuntimeError):
    """A container could not be built, booted or stopped."""


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll predicate until it is truthy or timeout_s passes; return its last truth."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def missing_reason() -> str | None:
    """Why these tests cannot run here, or None when they can.

    Installs debootstrap and systemd-container with apt-get when missing.
    """
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, cgroups)"
    if not any(root.is_dir() for root in CGROUP_ROOTS):
        return "no name=systemd or unified cgroup hierarchy under /sys/fs/cgroup"
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if not _has_tool(tool)]
    if missing and _has_tool("apt-get"):
        env = {"PATH": CONTAINER_PATH, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        ):
            subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
    still = [tool for tool in HOST_TOOLS if not _has_tool(tool)]
    if still:
        return f"cannot install {', '.join(still)} (apt-get install {' '.join(missing)} failed)"
    return None


def _has_tool(name: str) -> bool:
    return shutil.which(name, path=CONTAINER_PATH) is not None


def debian_mirror() -> str:
    """The Debian mirror the host uses (deb822 sources first, then sources.list)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for line in deb822.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                return words[1]
    return "http://deb.debian.org/debian"


def is_complete(tree: Path) -> bool:
    marker = tree / MARKER
    return marker.is_file() and marker.read_text().split() == list(PACKAGES)


def ensure_base_tree(log: Callable[[str], None] = print) -> Path:
    """Return the cached base tree, building it first when absent or incomplete.

    A lock file serialises concurrent builders; the tree is built beside the
    cache and renamed into place only once complete.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(BASE_TREE):
            return BASE_TREE
        building = CACHE_DIR / f"{BASE_TREE.name}.building"
        for stale in (building, BASE_TREE):
            if stale.exists():
                shutil.rmtree(stale)
        started = time.monotonic()
        log(f"building {BASE_TREE} with debootstrap (once; a few minutes)")
        _debootstrap(building)
        (building / MARKER).write_text("\n".join(PACKAGES) + "\n")
        building.rename(BASE_TREE)
        log(f"built {BASE_TREE} in {time.monotonic() - started:.0f} s")
        return BASE_TREE


def _debootstrap(root: Path) -> None:
    # debootstrap's own resolver cannot follow virtual packages (python3-zmq
    # needs python3-cffi-backend-api-*), so apt installs the packages after.
    env = {"PATH": CONTAINER_PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    _checked(
        ["debootstrap", "--variant=minbase", SUITE, str(root), debian_mirror()],
        env=env,
        timeout_s=900,
    )
    install = (
        "apt-get update -q && apt-get install -y -q --no-install-recommends "
        f"{' '.join(PACKAGES)} && apt-get clean && rm -rf /var/lib/apt/lists/*"
    )
    _checked(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "-D",
            str(root),
            "--pipe",
            "/bin/sh",
            "-c",
            install,
        ],
        env=env,
        timeout_s=900,
    )
    (root / "etc/hostname").write_text("zaggd-test\n")


def _checked(argv: Sequence[str], env: dict[str, str] | None = None, timeout_s: float = 60) -> str:
    proc = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if proc.returncode != 0:
        raise NspawnError(
            f"{shlex.join(argv)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def copy_tree(source: Path, dest: Path) -> None:
    """A private copy of the tree for one session (reflinks where the fs allows)."""
    _checked(["cp", "-a", "--reflink=auto", f"{source}/.", str(dest)], timeout_s=300)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, parent pid, start time) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may hold spaces: the fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[1]), int(fields[19])


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the processes whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append((int(entry.name), stat[0]))
    return found


class Container:
    """One booted copy of the base tree; use as a context manager."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.launcher: subprocess.Popen[bytes] | None = None
        self.nspawn_pid: int | None = None
        self.pid1: int | None = None
        self.pid1_start = 0  # its start time, so a reused PID is never signalled
        self.console_log = root.parent / f"{name}.console.log"

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cgroup_dirs(self) -> list[Path]:
        return [root / self.name for root in CGROUP_ROOTS if root.is_dir()]

    def boot(self, timeout_s: float = 60) -> None:
        cgroups = self._cgroup_dirs()
        for cg in cgroups:
            cg.mkdir(exist_ok=True)
        # The launching shell moves itself into the new cgroups, then becomes
        # timeout(1), whose child is nspawn.
        join = "; ".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))}" for cg in cgroups)
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "-D",
            str(self.root),
            "-M",
            self.name,
            "-b",
            "--console=passive",
        ]
        script = f"{join}; exec timeout --kill-after=20 {MAX_LIFETIME_S} {shlex.join(nspawn)}"
        with open(self.console_log, "wb") as console:
            self.launcher = subprocess.Popen(
                ["/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": CONTAINER_PATH, "LC_ALL": "C"},
            )
        if not wait_until(self._find_pid1, timeout_s=20, interval_s=0.05):
            raise NspawnError(f"container {self.name} did not start: {self.console_tail()}")
        self._wait_running(timeout_s)

    def _find_pid1(self) -> bool:
        assert self.launcher is not None
        if self.launcher.poll() is not None:
            raise NspawnError(
                f"systemd-nspawn exited {self.launcher.returncode}: {self.console_tail()}"
            )
        if self.nspawn_pid is None:
            nspawn = [pid for pid, comm in _children(self.launcher.pid) if comm == "systemd-nspawn"]
            if not nspawn:
                return False
            self.nspawn_pid = nspawn[0]
        systemd = [pid for pid, comm in _children(self.nspawn_pid) if comm == "systemd"]
        stat = _stat(systemd[0]) if systemd else None
        if stat:
            self.pid1, self.pid1_start = systemd[0], stat[2]
        return self.pid1 is not None

    def _is_pid1_alive(self) -> bool:
        stat = _stat(self.pid1) if self.pid1 is not None else None
        return stat is not None and stat[2] == self.pid1_start

    def _wait_running(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            try:
                proc = self.run(
                    "systemctl is-system-running --wait",
                    check=False,
                    timeout_s=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                break
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)  # the bus is not up yet
        raise NspawnError(f"container {self.name} not running after {timeout_s} s: {state!r}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM nspawn (timeout(1) forwards it), wait, make sure, clean up.

        nspawn turns SIGTERM into a clean shutdown of the container; timeout(1)
        SIGKILLs nspawn 20 s later if it is still running. Whatever is left
        after that (a container PID 1 orphaned by a killed nspawn) is
        SIGKILLed, which ends its whole pid namespace.
        """
        launcher, self.launcher = self.launcher, None
        if launcher is not None and launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait(timeout=10)
        if self._is_pid1_alive():
            assert self.pid1 is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
            wait_until(lambda: not self._is_pid1_alive(), timeout_s=10)
        self.pid1 = None
        self.nspawn_pid = None
        for cg in self._cgroup_dirs():
            _remove_cgroup(cg)
        shutil.rmtree(PROPAGATE_DIR / self.name, ignore_errors=True)

    def console_tail(self, n_bytes: int = 3000) -> str:
        try:
            return self.console_log.read_bytes()[-n_bytes:].decode(errors="replace")
        except OSError:
            return ""

    # -- inside the container ----------------------------------------------

    def run(
        self,
        cmd: str | Sequence[str],
        check: bool = True,
        timeout_s: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd (a shell string, or argv) inside the container as root."""
        if self.pid1 is None:
            raise NspawnError("container is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = [
            "nsenter",
            "-t",
            str(self.pid1),
            "-a",
            "env",
            "-i",
            f"PATH={CONTAINER_PATH}",
            "LC_ALL=C.UTF-8",
            "HOME=/root",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            "DEBIAN_FRONTEND=noninteractive",
            *argv,
        ]
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NspawnError(
                f"in {self.name}: {shlex.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the tree (the root is a host folder, shared live)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def install_deb(self, deb: Path) -> str:
        """Copy the .deb under /opt (the container's /tmp is a tmpfs) and install it."""
        inside = f"/opt/{deb.name}"
        shutil.copy2(deb, self.root / inside.lstrip("/"))
        return self.run(
            ["apt-get", "install", "-y", "--no-install-recommends", inside], timeout_s=120
        ).stdout


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup folder and the ones the container's systemd made in it."""
    if not path.is_dir():
        return
    for dirpath, _dirnames, _files in sorted(
        os.walk(path), key=lambda entry: entry[0].count("/"), reverse=True
    ):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


@contextlib.contextmanager
def booted(debs: Sequence[Path] = (), name: str | None = None) -> Iterator[Container]:
    """A fresh copy of the base tree, booted, with debs installed; removed after."""
    base = ensure_base_tree()
    name = name or f"zaggd-test-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp"))
    try:
        root = workdir / "root"
        root.mkdir()
        copy_tree(base, root)
        with Container(root, name) as container:
            for deb in debs:
                container.install_deb(deb)
            yield container
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
