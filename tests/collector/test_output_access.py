"""Who may read the output: output.group and output.mode on every file and folder.

A real producer and collector; the output's folders, live files and gzip
archives are checked with stat, as an administrator would (`ls -l`).
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import Daemon, append_lines, numbered_lines, stop_all, tailing_pair, wait_until
from zaggd import config as config_mod
from zaggd import runas
from zaggd.collector.access import OutputAccess
from zaggd.config import OutputConfig
from zaggd.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to a group needs root")


def readers_group() -> str:
    """A group root is not in by default: adm on Debian."""
    for name in ("adm", "daemon", "nogroup"):
        try:
            if grp.getgrnam(name).gr_gid != os.getegid():
                return name
        except KeyError:
            continue
    pytest.skip("no second group on this host")


def written(collector: Daemon) -> int:
    return int(collector.status()["counters"]["lines_written"])


def access(path: Path) -> tuple[str, str]:
    st = path.stat()
    return grp.getgrgid(st.st_gid).gr_name, f"{stat.S_IMODE(st.st_mode):04o}"


def test_output_files_folders_and_archives_get_the_configured_group_and_mode(
    tmp_path: Path,
) -> None:
    group = readers_group()
    out = tmp_path / "out-c1"
    # A folder made by an earlier version, before output.group existed.
    (out / "app").mkdir(parents=True, mode=0o700)
    output = {
        "path": str(out / "{topic}" / "{node}" / "{source}.log"),
        "group": group,
        "mode": "0644",
        "rotate": {"max_bytes": "20KiB", "compress": "gzip"},
    }
    log, producer, collector = tailing_pair(tmp_path, output)
    try:
        collector.start()
        producer.start()
        folder = out / "app" / "web-01"

        def archived() -> list[Path]:
            return sorted(folder.glob("*.gz"))

        # Blocks of 10,000 bytes, each taken before the next: cuts at 20 KiB.
        for i in range(6):
            append_lines(log, numbered_lines("a", i * 100, 100))
            wait_until(lambda n=(i + 1) * 100: written(collector) >= n, 30)
        wait_until(lambda: len(archived()) >= 2, 30)
        assert access(out) != (group, "0755"), "the output root is systemd's to own"
        assert access(out / "app") == (group, "0755")
        assert access(folder) == (group, "0755")
        assert access(folder / "app.log") == (group, "0644")
        for archive in archived():
            assert access(archive) == (group, "0644"), archive
        manifests = sorted(folder.glob("*.manifest.json"))
        assert manifests and all(access(m)[0] == group for m in manifests)
    finally:
        stop_all(producer, collector)


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("640", "expected an octal file mode such as 0640"),
        ("0755", "nobody executes"),
        ("0440", "the owner reads and writes"),
        ("rw-r-----", "expected an octal file mode"),
    ],
)
def test_an_output_mode_that_is_not_a_file_mode_is_refused(
    tmp_path: Path, mode: str, problem: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"subscribe: {{connect: ['tcp://127.0.0.1:1']}}\noutput: {{path: out/x.log, mode: {mode}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(str(config))
    assert str(info.value).startswith(f"{config}:2: output.mode: ") and problem in str(info.value)


def test_an_unknown_output_group_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "subscribe: {connect: ['tcp://127.0.0.1:1']}\n"
        "output: {path: out/x.log, group: no-such-group}\n"
    )
    with pytest.raises(ConfigError, match=r"output\.group: no group 'no-such-group' on this host"):
        config_mod.load(str(config))


def test_a_group_the_collector_is_not_in_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Checked as user nobody, which is in no group but its own."""
    group = readers_group()
    output = OutputConfig(str(tmp_path / "{topic}.log"), group=group)
    problem = runas.run_as(runas.lookup("nobody"), OutputAccess(output, str(tmp_path)).check)
    groups = runas.group_names(runas.lookup("nobody").groups)
    assert problem == (
        f"output.group: {group}: user nobody is not a member (its groups: {groups}); "
        f"run usermod -a -G {group} nobody, or add SupplementaryGroups={group} to the unit"
    )
