"""A plain `pip install .` (what pipx does, in its own venv) gives a working zaggd.

The venv sees this interpreter's site-packages for pyzmq, watchdog, PyYAML
and sdnotify; zaggd itself is built from the tree as a wheel (pip fetches
the build backend pyproject.toml names, as pipx would) and installed into
the venv, not run from the source folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from zaggd import __version__


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def see_these_dependencies(venv: Path) -> None:
    """Let `venv` import what this interpreter can (when the tests run in a venv of their
    own, as scripts/test.sh runs them, --system-site-packages shows only the base's)."""
    inner = run(
        venv / "bin" / "python",
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
        cwd=venv,
    ).stdout.strip()
    paths = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(inner) / "outer-site.pth").write_text("".join(f"{p}\n" for p in paths))


def test_pip_install_of_the_tree_gives_a_working_zaggd_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    see_these_dependencies(venv)
    pip = run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        REPO,
        cwd=tmp_path,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    where = run(venv / "bin" / "python", "-c", "import zaggd; print(zaggd.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    version = run(venv / "bin" / "zaggd", "--version", cwd=tmp_path)
    assert version.stdout == f"zaggd {__version__}\n", version.stderr
    for example in ("producer.yaml", "collector.yaml"):
        check = run(venv / "bin" / "zaggd", "check-config", REPO / "config" / example, cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
    keygen = run(venv / "bin" / "zaggd", "keygen", tmp_path / "keys", "web-01", cwd=tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "web-01.key",
        "web-01.key_secret",
    ]
