"""`zaggd verify DIR`: rotated output checked against its manifests.

Real rotated output is made by the write path (OutputHarness), then damaged
the way disks and people damage files; `zaggd verify` runs as the user runs
it, as a subprocess, and must name each problem and exit non-zero.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import io
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    OutputHarness,
    append_lines,
    numbered_lines,
    rotated_output,
    stop_all,
    tailing_pair,
    wait_until,
    zaggd_verify,
)
from zaggd.collector.manifest import format_stamp, parse_rotated
from zaggd.collector.rotation import seal
from zaggd.collector.verify import check_tree, verify_tree
from zaggd.config import Compression, RotateConfig
from zaggd.statefile import write_state

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
    index_live_files(tmp_path / "state")
    return tmp_path / "out"


def archives(folder: Path, exts: tuple[str, ...] = ("", ".gz")) -> list[Path]:
    """Rotated files in cut order: by default the archives, plain or compressed."""
    found = []
    for p in sorted(folder.iterdir()):
        parsed = parse_rotated(p.name)
        if parsed is not None and parsed.ext in exts:
            found.append(p)
    return found


def listed(ranges: dict[str, list[int]]) -> str:
    """Stream ranges as verify lists them: `n/s [a, b), ...`, in key order."""
    return ", ".join(f"{k} [{a}, {b})" for k, (a, b) in sorted(ranges.items()))


@pytest.mark.parametrize("compress", [Compression.GZIP, Compression.NONE])
def test_untouched_output_verifies(tmp_path: Path, compress: Compression) -> None:
    root = make_output(tmp_path, compress, nodes=("n1", "n2"))
    result = zaggd_verify(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{root}: 8 rotated files and 2 live files checked, 0 problems"
    ]


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
    write_state(str(root / "t" / ".zaggd-output"), "zaggd-output", 1, {"written_by": "x"})
    (root / "t" / "notes.txt").write_text("mine\n")
    (root / "t" / "n1.log.1").write_text("logrotate's\n")
    (root / "other").mkdir()
    (root / "other" / "x.log").write_text("x\n")
    result = zaggd_verify(root)
    assert result.returncode == 0, result.stdout
    # In a folder marked as zaggd's, files put there by hand are said, not failed.
    assert [line.split(": ")[0:2] for line in result.stdout.splitlines()[:-1]] == [
        ["warning", str(root / "t" / "n1.log.1")],
        ["warning", str(root / "t" / "notes.txt")],
    ]


def test_verify_of_a_folder_that_is_not_there_is_a_one_line_error(tmp_path: Path) -> None:
    result = zaggd_verify(tmp_path / "nowhere")
    assert result.returncode != 0
    assert result.stderr.strip() == f"zaggd: {tmp_path / 'nowhere'}: not a folder"
    assert "Traceback" not in result.stderr


# -- doubles and holes, on output a real collector wrote ---------------------------

LINE = 100  # bytes per numbered line
LIVE_INDEX_KIND = "zaggd-live-index"


@dataclass(frozen=True)
class Tree:
    root: Path  # the output root, DIR for zaggd verify
    folder: Path  # out/app: the archives and the live file
    live: Path
    keys: dict[str, str]  # source file name -> its stream key, "node/stream"


def output_lines(folder: Path) -> int:
    try:
        return sum(len(v.splitlines()) for v in rotated_output(folder).values())
    except (AssertionError, OSError, EOFError, gzip.BadGzipFile):
        return 0  # caught between two steps of a seal


def write_live_index(live: Path, ranges: dict[str, list[int]], previous: str | None) -> None:
    """The live index a collector keeps beside `live`, describing all of it."""
    data = live.read_bytes()
    body = {
        "file": live.name,
        "size": len(data),
        "lines": data.count(b"\n"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "ranges": ranges,
        "previous": previous,
    }
    write_state(f"{live}.index.json", LIVE_INDEX_KIND, 1, body)


def index_live_files(state_dir: Path) -> None:
    """Live indexes from a stopped collector's last checkpoint, where it wrote none."""
    state = json.loads((state_dir / "checkpoint.json").read_text())
    carried = {i["path"]: i.get("ranges", {}) for i in state["rotations"] if i.get("op") == "live"}
    for path, info in state["files"].items():
        live = Path(path)
        if Path(f"{path}.index.json").exists() or not live.exists():
            continue
        ranges = {k: list(v) for k, v in carried.get(path, {}).items()}
        for key, (start, end) in info["ranges"].items():
            span = ranges.get(key)
            ranges[key] = [start, end] if span is None else [min(span[0], start), max(span[1], end)]
        sealed = [parse_rotated(p.name) for p in archives(live.parent, (".manifest.json",))]
        mine = [r.base for r in sealed if r is not None and r.live == live.name]
        write_live_index(live, ranges, mine[-1] if mine else None)


def build_real_tree(base: Path) -> Tree:
    """Two source files through a real producer and collector that rotates every 20 KB."""
    out = base / "out"
    source, producer, collector = tailing_pair(
        base,
        {
            "path": str(out / "{topic}" / "{node}.log"),
            "rotate": {"max_bytes": "20KB", "compress": "gzip"},
        },
    )
    other = source.parent / "other.log"
    folder = out / "app"
    lines_a = numbered_lines("a", 0, 700, LINE)
    lines_b = numbered_lines("b", 0, 350, LINE)
    try:
        producer.start()
        collector.start()
        for i in range(7):
            append_lines(source, lines_a[100 * i : 100 * (i + 1)])
            append_lines(other, lines_b[50 * i : 50 * (i + 1)])
            wait_until(lambda n=150 * (i + 1): output_lines(folder) == n, timeout_s=30)
        wait_until(lambda: archives(folder, ("",)) == [], timeout_s=30)
        assert collector.stop() == 0
    finally:
        stop_all(collector, producer)
    index_live_files(base / "state-c1")
    streams = json.loads((base / "state-c1" / "checkpoint.json").read_text())["streams"]
    keys = {Path(value[3]).name: key for key, value in streams.items()}
    live = folder / "web-01.log"
    assert live.stat().st_size > 0, "the test wants a live file with lines in it"
    assert len(archives(folder, (".gz",))) >= 4
    return Tree(out, folder, live, keys)


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return build_real_tree(tmp_path_factory.mktemp("real"))


@pytest.fixture
def tree(real_tree: Tree, tmp_path: Path) -> Tree:
    """A fresh copy of the real tree, to damage."""
    root = tmp_path / "out"
    shutil.copytree(real_tree.root, root)
    folder = root / real_tree.folder.relative_to(real_tree.root)
    return Tree(root, folder, folder / real_tree.live.name, real_tree.keys)


def manifest_of(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".gz") + ".manifest.json")


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def remake(archive: Path, content: bytes, ranges: dict[str, list[int]] | None = None) -> None:
    """Replace a gzip archive's content and make its manifest agree, as a careful forger would."""
    stored = gzip.compress(content, mtime=0)
    archive.write_bytes(stored)
    mpath = manifest_of(archive)
    manifest = read_json(mpath)
    manifest.update(
        size=len(stored),
        sha256=hashlib.sha256(stored).hexdigest(),
        content_size=len(content),
        content_sha256=hashlib.sha256(content).hexdigest(),
        lines=content.count(b"\n"),
    )
    if ranges is not None:
        manifest["ranges"] = ranges
    mpath.write_text(json.dumps(manifest))


def ranges_of(archive: Path) -> dict[str, list[int]]:
    ranges: dict[str, list[int]] = read_json(manifest_of(archive))["ranges"]
    return ranges


def consecutive_holders(tree: Tree, key: str) -> tuple[Path, Path]:
    """Two consecutive archives that both hold `key`, the second going on where the first ends."""
    found = archives(tree.folder)
    for older, newer in itertools.pairwise(found):
        a, b = ranges_of(older).get(key), ranges_of(newer).get(key)
        if a is not None and b is not None and a[1] == b[0]:
            return older, newer
    raise AssertionError(f"no two consecutive archives hold {key}: {[ranges_of(p) for p in found]}")


def lines_of(content: bytes, prefix: bytes) -> list[int]:
    """Offsets in `content` of the lines that start with `prefix`."""
    offsets, pos = [], 0
    for line in content.splitlines(keepends=True):
        if line.startswith(prefix):
            offsets.append(pos)
        pos += len(line)
    return offsets


def verify_fails_with(root: Path, *expected: str) -> str:
    result = zaggd_verify(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for line in expected:
        assert line in result.stdout.splitlines(), f"{line!r} not in:\n{result.stdout}"
    return result.stdout


def test_real_tree_verifies(tree: Tree) -> None:
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(archives(tree.folder))
    assert result.stdout.splitlines() == [
        f"{tree.root}: {count} rotated files and 1 live file checked, 0 problems"
    ]
    assert {read_json(manifest_of(p)).get("format") for p in archives(tree.folder)} == {"raw"}


def test_doubled_line_in_the_live_file(tree: Tree) -> None:
    data = tree.live.read_bytes()
    index = read_json(Path(f"{tree.live}.index.json"))
    cut = data.index(b"\n", len(data) // 2) + 1
    line_end = data.index(b"\n", cut) + 1
    tree.live.write_bytes(data[:cut] + data[cut:line_end] + data[cut:])
    held = listed(index["ranges"])
    verify_fails_with(
        tree.root,
        f"altered: {tree.live}: its first {len(data)} bytes differ from its live index; "
        f"it holds {held}",
    )


def test_doubled_line_in_an_archive_with_a_remade_manifest(tree: Tree) -> None:
    victim = archives(tree.folder)[1]
    content = gzip.decompress(victim.read_bytes())
    first = content.index(b"\n") + 1
    remake(victim, content[:first] + content)  # its first line twice
    ranges = ranges_of(victim)
    held = listed(ranges)
    verify_fails_with(
        tree.root,
        f"doubled: {victim}: holds {len(content) + first} bytes, {first} more than "
        f"its stream ranges cover: {held}",
    )


def test_removed_block_leaves_a_hole(tree: Tree) -> None:
    key = tree.keys["app.log"]
    older, newer = consecutive_holders(tree, key)
    content = gzip.decompress(older.read_bytes())
    last = lines_of(content, b"a ")[-1]
    ranges = ranges_of(older)
    end = ranges[key][1]
    ranges[key] = [ranges[key][0], end - LINE]
    remake(older, content[:last] + content[last + LINE :], ranges)
    verify_fails_with(
        tree.root,
        f"missing: {newer}: stream {key}: hole [{end - LINE}, {end}) "
        f"between {older.name} and {newer.name}",
    )


def test_removed_block_without_a_new_manifest_is_altered(tree: Tree) -> None:
    victim = archives(tree.folder)[2]
    content = gzip.decompress(victim.read_bytes())
    victim.write_bytes(gzip.compress(content[: 10 * LINE] + content[20 * LINE :]))
    held = listed(ranges_of(victim))
    size = read_json(manifest_of(victim))["size"]
    verify_fails_with(
        tree.root,
        f"altered: {victim}: {victim.stat().st_size} bytes where the manifest says {size}; "
        f"it holds {held}",
    )


def test_archive_holding_lines_without_ranges(tree: Tree) -> None:
    """What a crash used to leave: bytes no range accounts for, replayed into the next file."""
    victim = archives(tree.folder)[1]
    mpath = manifest_of(victim)
    manifest = read_json(mpath)
    manifest["ranges"] = {}
    mpath.write_text(json.dumps(manifest))
    out = verify_fails_with(
        tree.root, f"unindexed: {victim}: holds {manifest['lines']} lines but no stream ranges"
    )
    assert len(out.splitlines()) == 2, out  # that line and the summary


def test_overlapping_ranges_across_two_archives(tree: Tree) -> None:
    """The last line of a stream in one archive, replayed again into the next."""
    key = tree.keys["app.log"]
    older, newer = consecutive_holders(tree, key)
    old_content = gzip.decompress(older.read_bytes())
    last = lines_of(old_content, b"a ")[-1]
    line = old_content[last : last + LINE]
    ranges = ranges_of(newer)
    start = ranges[key][0]
    ranges[key] = [start - LINE, ranges[key][1]]
    remake(newer, line + gzip.decompress(newer.read_bytes()), ranges)
    out = verify_fails_with(
        tree.root,
        f"doubled: {newer}: stream {key}: bytes [{start - LINE}, {start}) also in {older.name}",
    )
    assert len(out.splitlines()) == 2, out


def test_archive_removed_with_its_manifest_leaves_holes(tree: Tree) -> None:
    found = archives(tree.folder)
    older, victim, newer = found[1], found[2], found[3]
    ranges = ranges_of(victim)
    victim.unlink()
    manifest_of(victim).unlink()
    out = verify_fails_with(tree.root)
    for key, (start, end) in ranges.items():
        assert any(
            line.startswith("missing: ")
            and f": stream {key}: hole [{start}, {end}) between " in line
            for line in out.splitlines()
        ), out
    base = victim.name.removesuffix(".gz")
    assert (
        f"missing: {tree.folder / base}: archive and manifest gone: "
        f"{newer.name.removesuffix('.gz')} follows it, {older.name.removesuffix('.gz')} precedes it"
    ) in out.splitlines()


def test_live_file_truncated_below_its_index(tree: Tree) -> None:
    size = tree.live.stat().st_size
    os.truncate(tree.live, size - 30)
    ranges = read_json(Path(f"{tree.live}.index.json"))["ranges"]
    held = listed(ranges)
    verify_fails_with(
        tree.root,
        f"incomplete: {tree.live}: truncated: {size - 30} of {size} bytes; it holds {held}",
    )


def test_live_ranges_overlapping_an_archive(tree: Tree) -> None:
    """Bytes an archive holds written again into the live file, its index saying so."""
    index = read_json(Path(f"{tree.live}.index.json"))
    key, start = next(iter(sorted((k, v[0]) for k, v in index["ranges"].items())))
    holder = next(p for p in archives(tree.folder) if ranges_of(p).get(key, [0, -1])[1] == start)
    held = ranges_of(holder)[key]
    ranges = dict(index["ranges"], **{key: [held[0], index["ranges"][key][1]]})
    write_live_index(tree.live, ranges, index["previous"])
    verify_fails_with(
        tree.root,
        f"doubled: {tree.live}: stream {key}: bytes [{held[0]}, {held[1]}) also in {holder.name}",
    )


def test_bytes_past_the_live_index_are_noted_not_failed(tree: Tree) -> None:
    """A running collector writes before it indexes: normal, and said."""
    with open(tree.live, "ab") as f:
        f.write(b"a 9999999 not yet indexed\n")
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout
    assert (
        f"note: {tree.live}: 26 bytes past its live index are not yet indexed "
        "(a running collector indexes them at its next checkpoint; "
        "a restarted one cuts them back and has them replayed)"
    ) in result.stdout.splitlines()


def test_live_file_without_its_index(tree: Tree) -> None:
    Path(f"{tree.live}.index.json").unlink()
    (tree.folder / ".zaggd-output").unlink(missing_ok=True)  # as a collector before markers
    size = tree.live.stat().st_size
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout
    assert (
        f"warning: {tree.live}: {size} bytes of live output without a live index; "
        "their stream ranges are not checked"
    ) in result.stdout.splitlines()
    # Where the folder is marked as zaggd's output, that is a problem.
    write_state(
        str(tree.folder / ".zaggd-output"), "zaggd-output", 1, {"written_by": "zaggd collector"}
    )
    verify_fails_with(
        tree.root, f"unindexed: {tree.live}: {size} bytes of live output without a live index"
    )


def test_live_index_that_skips_an_archive(tree: Tree) -> None:
    index_path = Path(f"{tree.live}.index.json")
    index = read_json(index_path)
    found = archives(tree.folder)
    older = found[-2].name.removesuffix(".gz")
    newest = found[-1].name.removesuffix(".gz")
    write_live_index(tree.live, index["ranges"], older)
    verify_fails_with(
        tree.root,
        f"altered: {index_path}: says the live file follows {older}, but {newest} was cut after it",
    )


def test_live_index_written_before_a_cut_is_not_a_problem(tree: Tree) -> None:
    """kill -9 after a cut, before the next checkpoint: the index still describes the cut file."""
    index = read_json(Path(f"{tree.live}.index.json"))
    newest = archives(tree.folder)[-1]
    stamp = parse_rotated(newest.name)
    assert stamp is not None
    base = tree.folder / f"{tree.live.name}.{format_stamp(stamp.stamp_us + 1_000_000)}"
    os.rename(tree.live, base)
    intent = {
        "base": str(base),
        "live": str(tree.live),
        "compress": "gzip",
        "format": "raw",
        "ranges": index["ranges"],
        "since": T0,
        "cut_at": T0 + 1,
        "previous": index["previous"],
    }
    seal(intent, lambda: None)
    append_lines(tree.live, numbered_lines("a", 9000, 3, LINE))
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout
    assert (
        f"note: {tree.live}: its live index describes {base.name}, cut since; "
        f"{3 * LINE} bytes not yet indexed"
    ) in result.stdout.splitlines()


# -- damaged manifests and live indexes: one line each, never a traceback -------------

DEEP = "[" * 100_000


def edit_json_text(path: Path, key: str, raw: str) -> None:
    """Set `key` to the JSON text `raw`, as written (so `1e999` stays `1e999`)."""
    body = read_json(path)
    body[key] = "@@"
    path.write_text(json.dumps(body).replace('"@@"', raw))


@pytest.mark.parametrize(
    ("key", "raw", "what"),
    [
        ("size", "1e999", "size: not a whole number >= 0 (inf)"),
        ("size", '"big"', "size: not a whole number >= 0 ('big')"),
        ("size", "-1", "size: not a whole number >= 0 (-1)"),
        ("size", "[]", "size: not a whole number >= 0 ([])"),
        ("size", "true", "size: not a whole number >= 0 (True)"),
        ("content_size", "1.5", "content_size: not a whole number >= 0 (1.5)"),
        ("lines", "-3", "lines: not a whole number >= 0 (-3)"),
        ("sha256", "5", "sha256: not a string (5)"),
        ("file", "null", "file: not a string (None)"),
        ("file", '"../x"', "file: not a file name in its folder ('../x')"),
        ("ranges", "[]", "ranges: not an object ([])"),
        ("ranges", '{"n/s": [1]}', 'ranges["n/s"]: not [start, end] with start <= end ([1])'),
        ("ranges", '{"n/s": [5, 1]}', 'ranges["n/s"]: not [start, end] with start <= end ([5, 1])'),
        (
            "ranges",
            '{"n/s": ["a", 2]}',
            "ranges[\"n/s\"]: not [start, end] with start <= end (['a', 2])",
        ),
        (
            "ranges",
            '{"n/s": [0, 1e999]}',
            'ranges["n/s"]: not [start, end] with start <= end ([0, inf])',
        ),
        ("started_at", '"noon"', "started_at: not a time ('noon')"),
        ("started_at", "NaN", "started_at: not a time (nan)"),
        ("previous", "7", "previous: not a file name or null (7)"),
        ("compression", '"zip"', 'compression: not "gzip" or "none" (\'zip\')'),
    ],
)
def test_manifest_with_a_wrong_value_is_one_line(
    tmp_path: Path, key: str, raw: str, what: str
) -> None:
    root = make_output(tmp_path, Compression.GZIP)
    mpath = manifest_of(archives(root / "t")[1])
    edit_json_text(mpath, key, raw)
    result = zaggd_verify(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[:-1] == [f"altered: {mpath}: damaged manifest: {what}"]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param(DEEP, "JSON nested too deeply", id="deep-list"),
        pytest.param(
            '{"kind": "zaggd-manifest", "version": 1, "size": ' + DEEP[:5000] + "}",
            "JSON nested too deeply",
            id="deep-size",
        ),
        ("{not json", "not valid JSON (line 1 column 2: "),
        ("[1, 2]", "not a zaggd-manifest state file"),
        ('{"kind": "zaggd-manifest", "version": 7}', "zaggd-manifest state version 7 is not 1"),
        ('{"kind": "zaggd-manifest", "version": 1}', "file: missing"),
        pytest.param("\udcff\udcfe", "not UTF-8 text", id="not-utf8"),
    ],
)
def test_manifest_that_is_not_one_is_one_line(tmp_path: Path, text: str, what: str) -> None:
    root = make_output(tmp_path, Compression.GZIP)
    mpath = manifest_of(archives(root / "t")[1])
    mpath.write_text(text, errors="surrogateescape")
    result = zaggd_verify(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith(f"altered: {mpath}: damaged manifest: {what}"), lines[0]


@pytest.mark.parametrize(
    ("key", "raw", "what"),
    [
        ("size", "1e999", "size: not a whole number >= 0 (inf)"),
        ("size", '"big"', "size: not a whole number >= 0 ('big')"),
        ("lines", "-1", "lines: not a whole number >= 0 (-1)"),
        ("sha256", '"abc"', "sha256: not 64 hex digits ('abc')"),
        ("ranges", '{"n/s": {}}', 'ranges["n/s"]: not [start, end] with start <= end ({})'),
        ("previous", "[]", "previous: not a file name or null ([])"),
        ("file", '"other.log"', "file: names other.log, not web-01.log"),
    ],
)
def test_live_index_with_a_wrong_value_is_one_line(
    tree: Tree, key: str, raw: str, what: str
) -> None:
    index_path = Path(f"{tree.live}.index.json")
    edit_json_text(index_path, key, raw)
    result = zaggd_verify(tree.root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[:-1] == [f"altered: {index_path}: damaged live index: {what}"]


def test_live_index_nested_deeply_is_one_line(tree: Tree) -> None:
    index_path = Path(f"{tree.live}.index.json")
    index_path.write_text(DEEP)
    result = zaggd_verify(tree.root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[:-1] == [
        f"altered: {index_path}: damaged live index: JSON nested too deeply"
    ]


def write_block(h: OutputHarness, data: bytes, start: int, end: int, now: float) -> None:
    """Append what the subscriber appends for a block of `data` claiming [start, end)."""
    path = h.rotation.before_write(h.writer.route(b"t", "n1", "src", now), now, len(data))
    if not h.writer.is_open(path):
        h.writer.open(path)
        h.save()
    h.writer.append(h.writer.files[path], data, data.count(b"\n"), "n1/s1", start, end)
    h.offsets["n1/s1"] = end


@pytest.mark.parametrize("doubled", [False, True])
def test_split_long_lines_are_not_doubles(tmp_path: Path, doubled: bool) -> None:
    """A producer splits a long line into pieces of max_line_bytes plus a newline it adds:
    a raw file then holds a byte more than its range per piece, and that is no double."""
    h = OutputHarness(tmp_path, RotateConfig(max_bytes=2000, compress=Compression.GZIP))
    try:
        pos = 0
        for i in range(3):  # each block goes to a file of its own
            line = numbered_lines("n", i, 1, 100)[0]
            piece = b"y" * 1024  # a piece of a long line, cut at max_line_bytes = 1024
            data = line + piece + b"\n" + (line if doubled and i == 1 else b"")
            write_block(h, data, pos, pos + len(line) + len(piece), T0 + i)
            pos += len(line) + len(piece)
        h.save()
        while not h.rotation.jobs.empty():
            assert h.rotation.seal_one(h.rotation.jobs.get_nowait(), T0, lambda: None)
    finally:
        h.close()
    index_live_files(tmp_path / "state")
    second = archives(tmp_path / "out" / "t")[1]
    if not doubled:
        result = zaggd_verify(tmp_path / "out")
        assert result.returncode == 0, result.stdout
        return
    verify_fails_with(
        tmp_path / "out",
        f"doubled: {second}: holds 1225 bytes, 101 more than its stream ranges cover: "
        "n1/s1 [1124, 2248)",
    )


def test_fifos_and_devices_where_output_belongs_never_block(tmp_path: Path) -> None:
    root = make_output(tmp_path, Compression.GZIP, nodes=("n1", "n2"))
    folder = root / "t"
    fifo, device = archives(folder)[1:3]
    fifo.unlink()
    os.mkfifo(fifo)
    device.unlink()
    device.symlink_to("/dev/zero")
    live = folder / "n1.log"
    live.unlink()
    os.mkfifo(live)
    manifest = manifest_of(archives(folder)[3])
    manifest.unlink()
    os.mkfifo(manifest)
    index = folder / "n2.log.index.json"
    index.unlink()
    os.mkfifo(index)
    result = zaggd_verify(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[:-1] == [
        f"unreadable: {fifo}: cannot read: not a regular file",
        f"unreadable: {device}: cannot read: not a regular file",
        f"altered: {manifest}: damaged manifest: not a regular file",
        f"unreadable: {live}: not a regular file; its live index describes one",
        f"altered: {index}: damaged live index: not a regular file",
    ]


def cut_by_hand(tree: Tree) -> tuple[Path, dict[str, Any]]:
    """What a collector does at a cut: the live file renamed, its index going with it,
    the live path starting empty with an index naming the cut. The rotated file, not sealed."""
    index = read_json(Path(f"{tree.live}.index.json"))
    stamp = parse_rotated(archives(tree.folder)[-1].name)
    assert stamp is not None
    base = tree.folder / f"{tree.live.name}.{format_stamp(stamp.stamp_us + 1_000_000)}"
    os.rename(tree.live, base)
    write_live_index(base, index["ranges"], index["previous"])
    Path(f"{tree.live}.index.json").unlink()
    tree.live.write_bytes(b"")
    write_live_index(tree.live, {}, base.name)
    return base, index


def test_cut_not_sealed_yet_is_accounted_for_by_its_index(tree: Tree) -> None:
    base, _ = cut_by_hand(tree)
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[:-1] == [
        f"note: {base}: rotated, not sealed yet; its index accounts for it "
        "(the collector seals it now, or at its next start)"
    ]


def test_doubled_line_in_a_cut_not_sealed_yet(tree: Tree) -> None:
    base, index = cut_by_hand(tree)
    data = base.read_bytes()
    first = data.index(b"\n") + 1
    base.write_bytes(data[:first] + data)
    verify_fails_with(
        tree.root,
        f"altered: {base}: its first {len(data)} bytes differ from its index; "
        f"it holds {listed(index['ranges'])}",
    )


def test_index_left_beside_a_sealed_cut_is_ignored(tree: Tree) -> None:
    base, index = cut_by_hand(tree)
    intent = {
        "base": str(base),
        "live": str(tree.live),
        "compress": "gzip",
        "format": "raw",
        "ranges": index["ranges"],
        "since": T0,
        "cut_at": T0 + 1,
        "previous": index["previous"],
    }
    kept = Path(f"{base}.index.json").read_bytes()
    seal(intent, lambda: None)
    Path(f"{base}.index.json").write_bytes(kept)  # a kill before the seal removed it
    result = zaggd_verify(tree.root)
    assert result.returncode == 0, result.stdout
    assert len(result.stdout.splitlines()) == 1, result.stdout
