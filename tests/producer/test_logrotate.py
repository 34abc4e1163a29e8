"""The real logrotate, in each of its modes, while an app writes 6,000 lines/s.

All four modes run at once (one producer each, one collector for all), for
ROTATE_FOR_S seconds with logrotate every 0.5 s; once with the producers left
alone, once with each producer killed (kill -9) and restarted 5 times. Then,
per mode: every line on disk at the end (live file, rotated copies, .gz
decompressed) is in the collector's output exactly once, in its file's order;
a line missing from the output is missing from the disk too (only
copytruncate's race loses lines; the producer counts those it saw before the
truncation). create, dateext and delaycompress lose nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.producer.rotation_run import LOGROTATE, MODES, RotationRun

ROTATE_FOR_S = 10.5
ZERO_LOSS = ("create", "dateext", "delaycompress")
LINE_BYTES = 100

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(LOGROTATE).exists(), reason="needs logrotate (scripts/setup.sh)"),
]


@pytest.fixture
def rotation(tmp_path: Path) -> Iterator[RotationRun]:
    run = RotationRun(tmp_path, list(MODES))
    try:
        yield run
    finally:
        run.stop()


def check_mode(run: RotationRun, mode: str) -> None:
    mode_run = run.runs[mode]
    assert not mode_run.stderr, f"{mode}: logrotate said {mode_run.stderr[:3]}"
    # Every 0.5 s; dateext's names have seconds, so logrotate skips every other one.
    least = 8 if mode == "dateext" else 15
    assert mode_run.rotations >= least, f"{mode}: only {mode_run.rotations} rotations"
    written = set(range(mode_run.written))
    disk_files = mode_run.disk_lines()
    on_disk = {n for lines in disk_files for n in lines}
    output = run.output_numbers(mode)
    position = {n: i for i, n in enumerate(output)}

    assert len(position) == len(output), f"{mode}: lines delivered twice"
    assert set(output) <= written, f"{mode}: lines never written were delivered"
    missing_from_output = on_disk - set(output)
    assert not missing_from_output, (
        f"{mode}: on disk, never delivered: {sorted(missing_from_output)[:5]}"
    )
    for lines in disk_files:  # each file's lines in the order they had in it
        places = [position[n] for n in lines]
        assert places == sorted(places), f"{mode}: lines out of their file's order"

    lost_lines = written - set(output)
    producer_lost, collector_lost = run.lost_bytes(mode)
    if mode in ZERO_LOSS:
        assert not lost_lines, f"{mode}: {len(lost_lines)} lines lost"
        assert on_disk == written
    else:
        # copytruncate's own race: lines written between logrotate's copy and its
        # truncation exist nowhere. The producer counts those it saw in the file
        # before the truncation; the others it never saw, so it cannot (see the
        # report of issue 3). It never counts more than was lost.
        assert producer_lost <= len(lost_lines) * LINE_BYTES
    print(
        f"{mode}: written {mode_run.written}, rotations {mode_run.rotations}, kills {mode_run.kills},"
        f" on disk {len(on_disk)}, output {len(output)}, lost lines {len(lost_lines)}"
        f" ({len(lost_lines) * LINE_BYTES} bytes), counted lost {producer_lost} (producer)"
        f" + {collector_lost} (collector) bytes"
    )


def run_modes(run: RotationRun, kills: int) -> None:
    run.start()
    run.rotate_for(ROTATE_FOR_S, kills=kills)
    run.stop_writers()
    run.wait_delivered()
    run.stop()
    for mode in MODES:
        check_mode(run, mode)


def test_every_rotation_mode_delivers_each_line_on_disk_once(rotation: RotationRun) -> None:
    run_modes(rotation, kills=0)


def test_every_rotation_mode_with_producers_killed_five_times(rotation: RotationRun) -> None:
    run_modes(rotation, kills=5)
    assert all(r.kills == 5 for r in rotation.runs.values())
