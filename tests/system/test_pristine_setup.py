"""The README's set-up and demo on a Debian 12 that has never seen zaggd.

A copy of the system tests' debootstrap tree, with zaggd's Python
dependencies purged, so that its python3 is Debian's as installed: no pip,
no venv module (python3-venv), and pip refusing system-wide installs (PEP
668). This tree, as root, runs `sh scripts/demo.sh` from a copy of the
source tree, as the README says to: the script installs what it needs from
Debian and PyPI (this test needs the package mirrors), sets up a virtual
environment and runs a producer and a collector from it. Nothing is booted:
the demo needs no systemd.

The tree shares the host's network. Where the host reaches PyPI through a
TLS-inspecting proxy, pip inside needs the host's CA bundle: it is copied in
and named by PIP_CERT, as the host's own pip is configured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import nspawn

pytestmark = [pytest.mark.system, pytest.mark.pristine]

REPO = Path(__file__).resolve().parents[2]
# What a source tree never carries (as the Makefile's TREE_EXCLUDES): at its top,
# and anywhere.
NOT_SOURCE_TOP = {".git", ".venv", "build", "dist", "demo"}
NOT_SOURCE = ("__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache")
NOT_SOURCE += (".hypothesis",)
# What the base tree has for the .deb's sake and a fresh Debian lacks.
PURGED = ("python3-zmq", "python3-watchdog", "python3-yaml", "python3-sdnotify")
SETUP_TIMEOUT_S = 600
HOST_CA = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
TREE_CA = "/etc/zaggd-test-host-ca.crt"


@pytest.fixture(scope="module")
def pristine(as_root: None) -> Iterator[Path]:
    reason = nspawn.missing_reason()
    if reason:
        pytest.skip(reason)
    base = nspawn.ensure_base_tree()
    workdir = Path(tempfile.mkdtemp(prefix="zaggd-pristine-", dir="/var/tmp"))
    try:
        root = workdir / "root"
        root.mkdir()
        nspawn.copy_tree(base, root)
        if HOST_CA.is_file():
            shutil.copy(HOST_CA, root / TREE_CA.lstrip("/"))
        inside(
            root,
            f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {' '.join(PURGED)} "
            "&& apt-get autoremove -y -q",
        )
        shutil.copytree(REPO, root / "opt/zaggd", ignore=not_source)
        yield root
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def not_source(folder: str, names: list[str]) -> set[str]:
    ignored = set(shutil.ignore_patterns(*NOT_SOURCE)(folder, names))
    return ignored | (NOT_SOURCE_TOP & set(names) if Path(folder) == REPO else set())


def inside(root: Path, script: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a shell script in the tree as root (nspawn, not booted), sharing the host's network."""
    name = f"zaggd-pristine-{os.getpid()}"
    setenv = [f"--setenv=PIP_CERT={TREE_CA}"] if (root / TREE_CA.lstrip("/")).is_file() else []
    argv = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-M", name, "-D", str(root)]
    try:
        proc = subprocess.run(
            [*argv, *setenv, "--pipe", "/bin/sh", "-c", script],
            env={"PATH": nspawn.CONTAINER_PATH, "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    finally:
        shutil.rmtree(nspawn.PROPAGATE_DIR / name, ignore_errors=True)
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_debian_python_is_as_a_fresh_install_has_it(pristine: Path) -> None:
    """The conditions the set-up must cope with."""
    probe = inside(
        pristine,
        "python3 -c 'import ensurepip' 2>&1 || true; "
        "python3 -m pip --version 2>&1 || true; "
        "python3 -c 'import zmq' 2>&1 || true; "
        "ls /usr/lib/python3.11/EXTERNALLY-MANAGED",
    ).stdout
    assert "No module named 'ensurepip'" in probe or "No module named ensurepip" in probe, probe
    assert "No module named pip" in probe, probe
    assert "No module named 'zmq'" in probe, probe
    assert "EXTERNALLY-MANAGED" in probe


def test_readme_demo_sets_up_a_virtual_environment_and_shows_the_aggregate(
    pristine: Path,
) -> None:
    demo = inside(pristine, "cd /opt/zaggd && sh scripts/demo.sh", timeout_s=SETUP_TIMEOUT_S)
    out = demo.stdout
    lines = out.split("== their lines:\n", 1)[1].split("== producer status:", 1)[0].splitlines()
    assert sorted(line.split(" ", 1)[1] for line in lines) == sorted(
        [f"demo app: request {i} served" for i in range(1, 6)]
        + [f"demo web: GET /page/{i} 200" for i in range(1, 6)]
    ), out
    assert "producer demo:" in out and "10 lines sent" in out, out
    # zaggd and its dependencies went into the virtual environment, not the system.
    where = inside(
        pristine,
        "cd /opt/zaggd && .venv/bin/python -c 'import zaggd, zmq; "
        'print(zaggd.__file__, zmq.has("pgm"))\'; '
        "ls /usr/local/lib/python3.11/dist-packages | wc -l",
    ).stdout.split()
    assert where == ["/opt/zaggd/zaggd/__init__.py", "True", "0"], where
