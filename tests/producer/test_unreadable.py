"""A watched file the producer may not read: one warning naming the user, its groups
and the fix, the file listed in `zaggd status` until it can be read.

A real producer, as root without the capabilities that pass file permissions
(setpriv), so that modes apply to it as to the service user.
"""

from __future__ import annotations

import grp
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import stop_all, tailing_pair, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop its file powers")


def test_an_unreadable_file_is_told_once_with_the_fix_and_shown_in_status(
    tmp_path: Path,
) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to take CAP_DAC_OVERRIDE from root")
    log, producer, _collector = tailing_pair(tmp_path, {})
    secret = log.parent / "secret.log"
    secret.write_bytes(b"a line\n")
    daemon_gid = grp.getgrnam("daemon").gr_gid
    os.chown(secret, 0, daemon_gid)
    secret.chmod(0o040)  # group daemon may read; root, not in it, may not
    producer.prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        producer.start()
        wait_until(lambda: producer.status()["unreadable_files"] == [str(secret)], 10)
        time.sleep(3.5)  # three more rescans (rescan_interval 1s)

        def told() -> list[str]:
            return [line for line in producer.output().splitlines() if "cannot read" in line]

        assert len(told()) == 1, told()
        assert " WARNING " in told()[0]
        line = told()[0]
        assert f"cannot read {secret}: Permission denied for user root (groups: root" in line
        assert line.endswith(
            "): it is root:daemon 0040; add group daemon to the unit (systemctl edit "
            "zaggd-producer: [Service] SupplementaryGroups=adm daemon)"
        ), line
        assert "1 files unreadable (see zaggd status)" in str(producer.status()["status"])

        secret.chmod(0o644)
        wait_until(lambda: producer.status()["unreadable_files"] == [], 10)
        assert f"can read {secret} now" in producer.output()
        assert producer.status()["counters"]["lines_out"] == 1
    finally:
        stop_all(producer)
