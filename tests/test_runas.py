"""Files the services' user must read: check-config checks them as that user.

Run as root, `check-config` becomes the service user in a child process and
lets the kernel say what that user may read; `keygen --owner` writes a key
pair for it. Here the service user is `nobody` (given with --user, since this
host has no `zaggd` user), the files live in a folder anyone may enter, and
every command runs as an operator would type it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, write_yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")

USER = "nobody"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (pytest's own temp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="zaggd-runas-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def zaggd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zaggd", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )


def curve_producer(folder: Path, keys: Path) -> Path:
    """A producer config binding with CURVE, readable by anyone."""
    allowed = keys / "allowed"
    allowed.mkdir(exist_ok=True)
    config = write_yaml(
        folder / "producer.yaml",
        {
            "node": "web-01",
            "state_dir": str(folder / "state"),
            "publish": {
                "bind": [f"tcp://127.0.0.1:{free_port()}"],
                "replay": f"tcp://127.0.0.1:{free_port()}",
                "curve": {
                    "secret_key_file": str(keys / "web-01.key_secret"),
                    "allow_dir": str(allowed),
                },
            },
            "sources": [{"name": "app", "topic": "app", "paths": [str(folder / "*.log")]}],
        },
    )
    config.chmod(0o644)
    return config


def test_check_config_as_root_checks_the_secret_key_as_the_service_user(open_dir: Path) -> None:
    keys = open_dir / "keys"
    made = zaggd("keygen", str(keys), "web-01")
    secret = keys / "web-01.key_secret"
    assert made.returncode == 0, made.stderr
    config = curve_producer(open_dir, keys)

    check = zaggd("check-config", "--user", USER, str(config))
    assert (check.returncode, check.stderr) == (
        78,
        f"zaggd: {secret}: cannot read key file: Permission denied for user {USER}; "
        f"run chown {USER}: {secret}\n",
    )
    os.chown(secret, pwd.getpwnam(USER).pw_uid, -1)  # the fix it named
    check = zaggd("check-config", "--user", USER, str(config))
    assert (check.returncode, check.stdout) == (
        0,
        f"{config}: valid producer config, readable by user {USER}\n",
    ), check.stderr


def test_check_config_names_a_folder_the_service_user_cannot_enter(open_dir: Path) -> None:
    keys = open_dir / "keys"
    assert zaggd("keygen", "--owner", USER, str(keys), "web-01").returncode == 0
    config = curve_producer(open_dir, keys)
    keys.chmod(0o700)
    secret = keys / "web-01.key_secret"
    check = zaggd("check-config", "--user", USER, str(config))
    assert (check.returncode, check.stderr) == (
        78,
        f"zaggd: {secret}: cannot read key file: Permission denied for user {USER} "
        f"(folder {keys} is closed to it); run chmod o+x {keys}\n",
    )
    keys.chmod(0o701)
    assert zaggd("check-config", "--user", USER, str(config)).returncode == 0


def test_keygen_owner_writes_the_pair_for_the_service_user(open_dir: Path) -> None:
    made = zaggd("keygen", "--owner", USER, str(open_dir), "web-01")
    assert made.returncode == 0, made.stderr
    assert made.stdout == (
        f"wrote {open_dir}/web-01.key and {open_dir}/web-01.key_secret for user {USER}\n"
    )
    nobody = pwd.getpwnam(USER)
    for name, mode in (("web-01.key", 0o644), ("web-01.key_secret", 0o600)):
        st = (open_dir / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            nobody.pw_uid,
            nobody.pw_gid,
            mode,
        ), name


def test_keygen_owner_refuses_an_unknown_user_and_writes_nothing(open_dir: Path) -> None:
    made = zaggd("keygen", "--owner", "no-such-user-here", str(open_dir / "keys"), "web-01")
    assert (made.returncode, made.stderr) == (
        2,
        "zaggd: no user 'no-such-user-here' on this system\n",
    )
    assert not (open_dir / "keys").exists()
