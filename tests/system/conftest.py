"""Fixtures for the system tests: built packages and a booted Debian 12.

Everything here needs root. The packages are built once per session with the
project's own `make deb` / `make rpm` (into a temp dir, not the work tree);
the container is booted once per session (see nspawn.py) with the .deb
installed, and `zaggd_installed` puts the package back for tests that follow
one that purged it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import nspawn

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UNITS = (
    "zaggd-producer.service",
    "zaggd-collector.service",
    "zaggd-producer@.service",
    "zaggd-collector@.service",
)
# What `make deb` and `make rpm` need on the host (Debian package names).
BUILD_TOOLS = {
    "dpkg-buildpackage": "dpkg-dev",
    "dh": "debhelper",
    "dh_python3": "dh-python",
    "lintian": "lintian",
    "fakeroot": "fakeroot",
    "rpmbuild": "rpm",
    "make": "make",
}


def version() -> str:
    """zaggd's version, read the way the Makefile reads it."""
    text = (REPO / "zaggd/__init__.py").read_text()
    match = re.search(r'^__version__ = "(.+)"$', text, re.MULTILINE)
    assert match, "no __version__ in zaggd/__init__.py"
    return match[1]


def run_host(
    argv: list[str], timeout_s: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a host command with system tools only (no pyenv or venv Python first)."""
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.fixture(scope="session")
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("system tests need root (package builds, debootstrap, systemd-nspawn)")


@pytest.fixture(scope="session")
def build_tools(as_root: None) -> None:
    missing = [
        pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool, path=SYSTEM_PATH) is None
    ]
    # The Python build backends the Debian python3 needs (pybuild, make rpm).
    modules = run_host(["python3", "-c", "import build, installer, setuptools, wheel"])
    if modules.returncode != 0:
        missing += ["pybuild-plugin-pyproject", "python3-setuptools", "python3-wheel"]
    assert not missing, f"install the package build tools: apt-get install {' '.join(missing)}"


def make(target: str, out: Path) -> subprocess.CompletedProcess[str]:
    proc = run_host(
        ["make", "-C", str(REPO), target, f"BUILD={out / 'build'}", f"DIST={out / 'dist'}"],
        timeout_s=300,
    )
    assert proc.returncode == 0, (
        f"make {target} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


@pytest.fixture(scope="session")
def deb(build_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    make("deb", out)
    path = out / "dist" / f"zaggd_{version()}_all.deb"
    assert path.is_file(), f"make deb did not leave {path.name} in dist/"
    return path


@pytest.fixture(scope="session")
def rpm(build_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rpm")
    make("rpm", out)
    path = out / "dist" / f"zaggd-{version()}-1.noarch.rpm"
    assert path.is_file(), f"make rpm did not leave {path.name} in dist/"
    return path


@pytest.fixture(scope="session")
def container(as_root: None, deb: Path) -> Iterator[nspawn.Container]:
    """A booted Debian 12 (copy of the cached tree) with the .deb installed."""
    reason = nspawn.missing_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    with nspawn.booted([deb]) as booted:
        print(
            f"container {booted.name} booted, zaggd installed in {time.monotonic() - started:.1f} s"
        )
        yield booted


def is_installed(container: nspawn.Container) -> bool:
    status = container.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", "zaggd"], check=False
    ).stdout
    return status == "installed"


@pytest.fixture
def zaggd_installed(container: nspawn.Container, deb: Path) -> nspawn.Container:
    """The container, with the package installed (again, after a purge test)."""
    if not is_installed(container):
        container.install_deb(deb)
    return container
