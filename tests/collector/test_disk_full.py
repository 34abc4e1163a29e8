"""Disk full and unwritable output folders, on real filesystems the test mounts.

The output goes to a 2 MiB tmpfs, which a filler file then fills up: the
collector must stop taking data, log one error, retry by itself, and once the
filler is removed write every line exactly once, rotated and compressed, with
nothing corrupted. A read-only mount stands for a folder the collector may
not write (root ignores permission bits): a clear error at start and at
reload. Mounting needs root; where it is not allowed these tests skip and
say why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import (
    REPO,
    append_lines,
    numbered_lines,
    rotated_output,
    stop_all,
    tailing_pair,
    tmpfs,
    wait_until,
    zaggd_verify,
)
from zaggd.collector.manifest import parse_rotated


def output_bytes(folder: Path) -> bytes:
    if not folder.is_dir():
        return b""
    return b"".join(rotated_output(folder).values())


def unsealed(folder: Path) -> list[str]:
    names = []
    for p in folder.iterdir():
        parsed = parse_rotated(p.name)
        if parsed is not None and parsed.ext in ("", ".gz.tmp"):
            names.append(p.name)
    return names


def test_disk_full_pauses_intake_and_resumes_with_nothing_lost(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "out", "size=2m,mode=0755") as out:
        source, producer, collector = tailing_pair(
            tmp_path,
            {
                "path": str(out / "{topic}" / "{node}.log"),
                "rotate": {"max_bytes": "200KB", "compress": "gzip"},
            },
        )
        lines = numbered_lines("f", 0, 12000, 100)
        expected = b"".join(lines)
        folder = out / "app"
        try:
            producer.start()
            collector.start()
            append_lines(source, lines[:3000])
            wait_until(lambda: output_bytes(folder) == expected[:300_000], timeout_s=30)
            wait_until(lambda: unsealed(folder) == [], timeout_s=30)
            # Now fill the disk but for about 100 KiB, and send 900 KB more.
            free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
            filler = out / "filler"
            filler.write_bytes(b"\0" * (free - 100 * 1024))
            append_lines(source, lines[3000:])
            wait_until(lambda: "disk full" in collector.output(), timeout_s=30)
            wait_until(lambda: collector.status()["counters"]["write_errors"] >= 3, timeout_s=15)
            # Held, not dropped or torn: what is on disk is a clean prefix, and stays one.
            partial = output_bytes(folder)
            assert 300_000 <= len(partial) < len(expected)
            assert expected.startswith(partial)
            assert collector.proc is not None and collector.proc.poll() is None

            filler.unlink()
            wait_until(lambda: output_bytes(folder) == expected, timeout_s=60, interval_s=0.2)
            wait_until(lambda: unsealed(folder) == [], timeout_s=30, interval_s=0.2)
            got = b"".join(rotated_output(folder).values()).splitlines(keepends=True)
            assert len(got) == len(lines) and len(set(got)) == len(got)
            log = collector.output()
            assert log.count("ERROR zaggd-subscriber: disk full") == 1
            assert "writing again after the earlier error" in log
            assert collector.stop() == 0
            assert output_bytes(folder) == expected
            verify = zaggd_verify(out)
            assert verify.returncode == 0, verify.stdout + verify.stderr
        finally:
            stop_all(collector, producer)


def test_unwritable_output_folder_is_a_clear_error_at_start(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        _, _, collector = tailing_pair(tmp_path, {"path": str(ro / "{topic}" / "{node}.log")})
        result = subprocess.run(
            [sys.executable, "-m", "zaggd", "collector", "-c", str(collector.config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert result.returncode != 0
        assert (
            result.stderr.strip() == f"zaggd: {ro}: the output folder is not writable by this user"
        )


def test_reload_to_an_unwritable_folder_is_refused_and_writing_goes_on(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        first = tmp_path / "out"
        source, producer, collector = tailing_pair(
            tmp_path, {"path": str(first / "{topic}" / "{node}.log")}
        )
        lines = numbered_lines("r", 0, 200, 100)
        append_lines(source, lines[:100])
        try:
            producer.start()
            collector.start()
            folder = first / "app"
            wait_until(lambda: output_bytes(folder) == b"".join(lines[:100]), timeout_s=30)
            config = yaml.safe_load(collector.config.read_text())
            config["output"]["path"] = str(ro / "{topic}" / "{node}.log")
            collector.config.write_text(yaml.safe_dump(config))
            collector.signal(signal.SIGHUP)
            wait_until(lambda: "reload refused" in collector.output(), timeout_s=30)
            assert f"{ro}: the output folder is not writable by this user" in collector.output()
            append_lines(source, lines[100:])
            wait_until(lambda: output_bytes(folder) == b"".join(lines), timeout_s=30)
            assert collector.stop() == 0
        finally:
            stop_all(collector, producer)
