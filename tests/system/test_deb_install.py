"""The .deb installed on a booted Debian 12: command, user, units, purge."""

from __future__ import annotations

import pytest

from tests.system import nspawn
from tests.system.conftest import UNITS, version

pytestmark = pytest.mark.system


def test_zaggd_version_runs_with_debian_python(zaggd_installed: nspawn.Container) -> None:
    proc = zaggd_installed.run("zaggd --version")
    assert version() in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["producer", "collector"])
def test_shipped_config_passes_check_config(zaggd_installed: nspawn.Container, name: str) -> None:
    proc = zaggd_installed.run(["zaggd", "check-config", f"/etc/zaggd/{name}.yaml"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_units_installed_but_neither_enabled_nor_started(
    zaggd_installed: nspawn.Container,
) -> None:
    listed = zaggd_installed.run(
        "systemctl list-unit-files --no-legend --plain 'zaggd-*'"
    ).stdout.split("\n")
    states = {line.split()[0]: line.split()[1] for line in listed if line.strip()}
    assert states == {unit: "disabled" for unit in UNITS}
    for unit in ("zaggd-producer.service", "zaggd-collector.service"):
        active = zaggd_installed.run(["systemctl", "is-active", unit], check=False).stdout
        assert active.strip() == "inactive", unit


def test_zaggd_user_reads_logs_through_adm(zaggd_installed: nspawn.Container) -> None:
    groups = zaggd_installed.run("id -nG zaggd").stdout.split()
    assert set(groups) >= {"zaggd", "adm"}
    shell = zaggd_installed.run("getent passwd zaggd").stdout.strip().split(":")[-1]
    assert shell in ("/usr/sbin/nologin", "/bin/false")


def test_postinst_makes_state_and_log_dirs(zaggd_installed: nspawn.Container) -> None:
    listing = zaggd_installed.run(
        "stat -c '%n %U %G %a' /var/lib/zaggd/producer /var/lib/zaggd/collector /var/log/zaggd"
    ).stdout.splitlines()
    assert listing == [
        "/var/lib/zaggd/producer zaggd zaggd 750",
        "/var/lib/zaggd/collector zaggd zaggd 750",
        "/var/log/zaggd zaggd zaggd 755",
    ]


def test_purge_removes_what_the_package_made(zaggd_installed: nspawn.Container) -> None:
    c = zaggd_installed
    # What a run leaves behind: state, output, an enabled unit.
    c.run("echo state > /var/lib/zaggd/producer/offsets.json")
    c.run("mkdir -p /var/log/zaggd/app && echo line > /var/log/zaggd/app/node.log")
    c.run("systemctl enable zaggd-producer.service")
    c.run("apt-get purge -y zaggd", timeout_s=120)

    leftovers = c.run(
        "ls -d /usr/bin/zaggd /etc/zaggd /var/lib/zaggd /var/log/zaggd "
        "/usr/lib/python3/dist-packages/zaggd /lib/systemd/system/zaggd-* "
        "/etc/systemd/system/multi-user.target.wants/zaggd-* "
        "/var/lib/systemd/deb-systemd-helper-enabled/*zaggd* 2>/dev/null; true"
    ).stdout
    assert leftovers == ""
    status = c.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "zaggd"], check=False)
    assert status.stdout in ("", "not-installed")
    # The system user stays, as Debian keeps system users (no UID reuse).
    assert c.run("getent passwd zaggd", check=False).returncode == 0
