"""A short fixed-seed torture sweep: crashes, rotations, outages and reloads.

Each schedule of bench/torture.py ends with a comparison of every source line
with the output (each exactly once, in order per file), both daemons stopped
with exit 0, and `zaggd verify` exit 0. The seeds are chosen so that together
they exercise every action and every logrotate mode; the longer run is

    python bench/torture.py --minutes 10 --seed 1
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO


def load_torture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torture", REPO / "bench" / "torture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["torture"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


torture = load_torture()

# 139, 7 and 11 together hold every action, logrotate mode and fsync policy;
# 103 and 70 kill the collector just after output cuts and rotate the sources
# several times during outages.
SEEDS = (139, 7, 11, 103, 70)
STEPS = 8


def features(seed: int) -> set[str]:
    p = torture.plan(seed, STEPS)
    found = {f"action {kind}" for kind in p.kinds()} | {f"fsync {p.fsync}"}
    for action in p.actions:
        if action.kind == "logrotate":
            found.add(f"logrotate {action.mode}")
        for mode, _files in action.rotations:
            found |= {f"logrotate {mode}", "logrotate while down"}
    return found


def test_the_sweep_exercises_every_action() -> None:
    every = (
        {f"action {kind}" for kind in torture.KINDS}
        | {f"logrotate {mode}" for mode in torture.ROTATE_MODES}
        | {f"fsync {policy}" for policy in ("interval", "always", "never")}
        | {"logrotate while down"}
    )
    covered = set().union(*(features(seed) for seed in SEEDS))
    assert covered == every, every - covered


def test_a_schedule_is_the_same_for_the_same_seed() -> None:
    assert torture.plan(139, STEPS) == torture.plan(139, STEPS)
    assert torture.plan(139, STEPS) != torture.plan(140, STEPS)


def test_the_judge_finds_lines_missing_doubled_and_out_of_order(tmp_path: Path) -> None:
    """What the sweep relies on: a hand-made output with one line of each fault."""
    line = torture.line
    folder = tmp_path / "t.a"
    folder.mkdir()
    archive = [line("f", 0), line("f", 1), line("f", 2)]
    live = [line("f", 2), line("f", 4), line("f", 3), line("f", 6), b"stray\n"]
    (folder / "node-a.log.20260101T000000.000000Z.gz").write_bytes(gzip.compress(b"".join(archive)))
    (folder / "node-a.log").write_bytes(b"".join(live))
    j = torture.judge(tmp_path, {"f": 7})
    assert j.missing == [("f", 5)]
    assert j.doubled == [("f", 2, 1)]
    assert j.out_of_order == [("f", 3, 4)]
    assert j.foreign == [b"stray\n"]
    assert j.copies_in[("f", 2)] == [
        "t.a/node-a.log.20260101T000000.000000Z.gz",
        "t.a/node-a.log",
    ]
    assert not j.exact
    assert set(j.classes()) == {"doubled", "missing", "out-of-order:within-a-copy", "foreign"}
    # With logrotate's cut between lines 3 and 4, line 3 belongs to an older copy.
    j = torture.judge(tmp_path, {"f": 7}, {"f": [4]})
    assert "out-of-order:across-copies" in j.classes()
    # A copy made and rotated away while the producer was stopped has no order
    # promised against the others (README): line 3 alone in copy 1 here.
    j = torture.judge(tmp_path, {"f": 7}, {"f": [3, 4]}, {"f": {1}})
    assert j.out_of_order == []
    exact = {"f": 7}
    (folder / "node-a.log").write_bytes(b"".join(line("f", i) for i in range(3, 7)))
    assert torture.judge(tmp_path, exact).exact


# Open bug (issue 12, order across rotation): a file the producer was reading that
# grows and is rotated while the producer is down can have its successor's lines
# written before its unread tail after the restart. These seeds hit it sometimes.
REORDER_WHILE_DOWN = pytest.mark.xfail(
    reason="order across a rotation while the producer was down (open bug)", strict=False
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed",
    [pytest.param(s, marks=REORDER_WHILE_DOWN) if s in (139, 11) else s for s in SEEDS],
)
def test_a_torture_schedule_loses_doubles_and_reorders_nothing(tmp_path: Path, seed: int) -> None:
    if shutil.which("logrotate") is None:
        pytest.fail("needs logrotate(8): run scripts/setup.sh")
    result = torture.run_schedule(seed, STEPS, tmp_path / f"seed-{seed}", time_limit_s=120.0)
    assert result.ok, result.report()
