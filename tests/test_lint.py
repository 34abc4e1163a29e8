"""The code gates STYLE.md asks CI to hold: ruff check, ruff format, mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(
    shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')"
)
def test_ruff_check_and_format_are_clean() -> None:
    check = run("ruff", "check", "zaggd", "tests", "bench")
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = run("ruff", "format", "--check", "zaggd", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout[-3000:]


def test_mypy_strict_is_clean() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-3000:]
