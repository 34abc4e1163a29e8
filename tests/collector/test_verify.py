"""`zaggd verify DIR`: rotated output checked against its manifests.

Real rotated output is made by the write path (OutputHarness), then damaged
the way disks and people damage files; `zaggd verify` runs as the user runs
it, as a subprocess, and must name each problem and exit non-zero.
"""

from __future__ import annotations

import calendar
import gzip
import io
import os
from pathlib import Path

import pytest

from tests.helpers import OutputHarness, numbered_lines, zaggd_verify
from zaggd.collector.manifest import check_tree, parse_rotated, verify_tree
from zaggd.config import Compression, RotateConfig

T0 = float(calendar.timegm((2025, 3, 1, 12, 0, 0)))


def make_output(tmp_path: Path, compress: Compression, nodes: tuple[str, ...] = ("n1",)) -> Path:
    """Four sealed rotated files per node, plus their live files; the output root."""
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000, compress=compress))
    try:
        for node in nodes:
            lines = numbered_lines(node, 0, 45, 100)
            for i in range(15):
                h.write(lines[3 * i : 3 * i + 3], T0 + i, node=node)
        h.save()
        for _ in range(100):
            if h.rotation.jobs.empty():
                break
            assert h.rotation.seal_one(h.rotation.jobs.get_nowait(), T0, lambda: None)
    finally:
        h.close()
    return tmp_path / "out"


def archives(folder: Path) -> list[Path]:
    found = []
    for p in sorted(folder.iterdir()):
        parsed = parse_rotated(p.name)
        if parsed is not None and parsed.ext in ("", ".gz"):
            found.append(p)
    return found


@pytest.mark.parametrize("compress", [Compression.GZIP, Compression.NONE])
def test_untouched_output_verifies(tmp_path: Path, compress: Compression) -> None:
    root = make_output(tmp_path, compress, nodes=("n1", "n2"))
    result = zaggd_verify(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("8 rotated files checked, 0 problems")


@pytest.mark.parametrize("compress", [Compression.GZIP, Compression.NONE])
def test_verify_catches_a_changed_byte(tmp_path: Path, compress: Compression) -> None:
    root = make_output(tmp_path, compress)
    victim = archives(root / "t")[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    result = zaggd_verify(root)
    assert result.returncode == 1
    assert f"altered: {victim}: SHA-256 differs from the manifest" in result.stdout
    assert result.stdout.count("\n") == 2  # the finding and the summary


@pytest.mark.parametrize("compress", [Compression.GZIP, Compression.NONE])
def test_verify_catches_a_truncated_file(tmp_path: Path, compress: Compression) -> None:
    root = make_output(tmp_path, compress)
    victim = archives(root / "t")[2]
    size = victim.stat().st_size
    os.truncate(victim, size - 7)
    result = zaggd_verify(root)
    assert result.returncode == 1
    assert f"incomplete: {victim}: truncated: {size - 7} of {size} bytes" in result.stdout


@pytest.mark.parametrize("compress", [Compression.GZIP, Compression.NONE])
def test_verify_catches_a_missing_archive(tmp_path: Path, compress: Compression) -> None:
    root = make_output(tmp_path, compress)
    victim = archives(root / "t")[0]
    victim.unlink()
    result = zaggd_verify(root)
    assert result.returncode == 1
    assert f"missing: {victim}: listed in" in result.stdout


def test_verify_catches_an_archive_removed_with_its_manifest(tmp_path: Path) -> None:
    """The chain of `previous` links shows a hole even when no manifest is left to say so."""
    root = make_output(tmp_path, Compression.GZIP)
    folder = root / "t"
    first, second, third, _ = archives(folder)
    base = second.name.removesuffix(".gz")
    second.unlink()
    (folder / f"{base}.manifest.json").unlink()
    result = zaggd_verify(root)
    assert result.returncode == 1
    older = first.name.removesuffix(".gz")
    newer = third.name.removesuffix(".gz")
    assert (
        f"missing: {folder / base}: archive and manifest gone: {newer} follows it, {older} precedes it"
        in result.stdout
    )


def test_oldest_archives_removed_by_retention_are_not_missing(tmp_path: Path) -> None:
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=1000, keep=2, compress=Compression.GZIP))
    try:
        lines = numbered_lines("n1", 0, 45, 100)
        for i in range(15):
            h.write(lines[3 * i : 3 * i + 3], T0 + i)
        h.save()
        while not h.rotation.jobs.empty():
            h.rotation.seal_one(h.rotation.jobs.get_nowait(), T0, lambda: None)
    finally:
        h.close()
    assert len(archives(tmp_path / "out" / "t")) == 2
    out = io.StringIO()
    assert verify_tree(str(tmp_path / "out"), out) == 0, out.getvalue()


def test_verify_reports_unfinished_seals_and_damaged_manifests(tmp_path: Path) -> None:
    root = make_output(tmp_path, Compression.GZIP)
    folder = root / "t"
    first, second, third, _ = archives(folder)
    # A kill between renaming the archive and removing the plain file.
    plain = folder / first.name.removesuffix(".gz")
    plain.write_bytes(gzip.decompress(first.read_bytes()))
    # A kill after the manifest, before the archive's rename.
    os.rename(second, folder / f"{second.name}.tmp")
    (folder / second.name.removesuffix(".gz")).write_bytes(b"plain\n")
    # A manifest someone edited into nonsense.
    (folder / f"{third.name.removesuffix('.gz')}.manifest.json").write_text("{not json")
    report = check_tree(str(root))
    found = sorted((f.problem.value, os.path.basename(f.path)) for f in report.findings)
    assert found == sorted(
        [
            ("incomplete", plain.name),
            ("incomplete", second.name),
            ("altered", f"{third.name.removesuffix('.gz')}.manifest.json"),
        ]
    )
    assert zaggd_verify(root).returncode == 1


def test_verify_ignores_files_zaggd_did_not_write(tmp_path: Path) -> None:
    root = make_output(tmp_path, Compression.GZIP)
    (root / "t" / "notes.txt").write_text("mine\n")
    (root / "t" / "n1.log.1").write_text("logrotate's\n")
    (root / "other").mkdir()
    (root / "other" / "x.log").write_text("x\n")
    result = zaggd_verify(root)
    assert result.returncode == 0, result.stdout


def test_verify_of_a_folder_that_is_not_there_is_a_one_line_error(tmp_path: Path) -> None:
    result = zaggd_verify(tmp_path / "nowhere")
    assert result.returncode != 0
    assert result.stderr.strip() == f"zaggd: {tmp_path / 'nowhere'}: not a folder"
    assert "Traceback" not in result.stderr
