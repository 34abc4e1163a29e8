"""The .deb and the RPM: what they hold, lintian, and the units' own checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.system import nspawn
from tests.system.conftest import UNITS, run_host

pytestmark = pytest.mark.system

CONFIGS = ("/etc/zaggd/producer.yaml", "/etc/zaggd/collector.yaml")
SCHEMAS = ("/usr/share/zaggd/schema/producer.json", "/usr/share/zaggd/schema/collector.json")
DEPENDS = ("python3-zmq", "python3-watchdog", "python3-yaml", "python3-sdnotify", "procps")
MAX_EXPOSURE = 2.0


def deb_paths(deb: Path) -> set[str]:
    proc = run_host(["dpkg-deb", "-c", str(deb)])
    assert proc.returncode == 0, proc.stderr
    # Lines end with the path, "./etc/zaggd/producer.yaml".
    return {line.split()[-1].removeprefix(".").rstrip("/") for line in proc.stdout.splitlines()}


def shipped_files(paths: set[str]) -> set[str]:
    """The paths both packages must have: binary, configs, schemas, units (by name)."""
    wanted = {"/usr/bin/zaggd", *CONFIGS, *SCHEMAS}
    units = {Path(p).name for p in paths if re.search(r"/systemd/system/zaggd-[^/]+\.service$", p)}
    return {p for p in paths if p in wanted} | {f"unit:{u}" for u in units}


def test_make_deb_builds_an_arch_all_package(deb: Path) -> None:
    proc = run_host(["dpkg-deb", "-f", str(deb), "Package", "Architecture"])
    assert proc.stdout.split() == ["Package:", "zaggd", "Architecture:", "all"]


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = run_host(["lintian", "--no-tag-display-limit", str(deb)], timeout_s=300)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deb_installs_binary_units_and_configs(deb: Path) -> None:
    paths = deb_paths(deb)
    for unit in UNITS:
        assert f"/lib/systemd/system/{unit}" in paths
    for path in ("/usr/bin/zaggd", *CONFIGS, *SCHEMAS, "/usr/share/man/man1/zaggd.1.gz"):
        assert path in paths


def test_deb_depends_on_runtime_packages(deb: Path) -> None:
    proc = run_host(["dpkg-deb", "-f", str(deb), "Depends"])
    names = {dep.strip().split()[0] for dep in proc.stdout.split(",")}
    assert set(DEPENDS) <= names, proc.stdout


def test_deb_marks_both_configs_as_conffiles(deb: Path) -> None:
    proc = run_host(["dpkg-deb", "-I", str(deb), "conffiles"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(CONFIGS)


def test_rpm_holds_the_same_binary_units_and_configs(deb: Path, rpm: Path) -> None:
    proc = run_host(["rpm", "-qpl", str(rpm)])
    assert proc.returncode == 0, proc.stderr
    rpm_files = shipped_files(set(proc.stdout.split()))
    assert rpm_files == shipped_files(deb_paths(deb))
    assert len([f for f in rpm_files if f.startswith("unit:")]) == len(UNITS)
    configs = run_host(["rpm", "-qpc", str(rpm)]).stdout.split()
    assert sorted(configs) == sorted(CONFIGS)


def test_units_verify_without_a_word(zaggd_installed: nspawn.Container) -> None:
    """systemd-analyze verify exits 0 even on warnings: any output fails."""
    root = zaggd_installed.root
    for unit in UNITS:
        proc = run_host(
            [
                "systemd-analyze",
                "verify",
                "--man=no",
                f"--root={root}",
                f"/lib/systemd/system/{unit}",
            ]
        )
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), unit


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_at_most_2(unit: str, deb: Path, tmp_path: Path) -> None:
    assert run_host(["dpkg-deb", "-x", str(deb), str(tmp_path)]).returncode == 0
    proc = run_host(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            "--no-pager",
            str(tmp_path / "lib/systemd/system" / unit),
        ]
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match[1]) <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
