"""hypothesis: real files written, renamed, copied, truncated, compressed and deleted in
random order, against StreamManager and Tailer directly, with kills and restarts.

The model is the set of numbered lines written. After every settle: no line
is delivered twice; every line still on disk (any file, decompressing .gz) is
delivered; lines are delivered in their file's order; and what was never
delivered is counted as lost (by the producer, or as "gone" by the collector
emulated in harness.Sink), no more and (without kills) no less.

Events are handed over in batches, in any order, as discovery does; writes
are seen at once (inotify tells of them before anything else can happen).
Runs on tmpfs (reproducible) and on the disk (inode reuse).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tests.producer.harness import Harness

WIDTH = 40
# tmpfs does not reuse inode numbers, so every run of an example behaves the same and
# hypothesis can shrink it. The disk (ext4 here) hands a freed inode to the next file
# at once: a second, smaller run there explores inode reuse, less reproducibly.
TMPFS_DIR = os.environ.get("ZAGGD_MACHINE_DIR") or (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)
EXAMPLES = int(os.environ.get("ZAGGD_MACHINE_EXAMPLES", "500"))
NAMES = st.sampled_from(["a.log", "b.log"])


class FileLife(RuleBasedStateMachine):
    machine_dir: str | None = TMPFS_DIR

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="zaggd-machine-", dir=self.machine_dir))
        self.h: Harness | None = None
        self.next_line = 0
        self.next_rotation = 0
        self.written: set[int] = set()
        self.touched: list[str] = []
        self.renamed: set[str] = set()  # rotated by rename: the app may still write there
        self.cut_unseen: set[str] = set()  # truncated since the manager last looked
        self.killed = False

    @initialize(max_open=st.sampled_from([16, 1024]), close_idle=st.sampled_from([0.0, 300.0]))
    def start(self, max_open: int, close_idle: float) -> None:
        self.h = Harness(self.folder, max_open_files=max_open, close_idle_s=close_idle)

    @property
    def harness(self) -> Harness:
        assert self.h is not None
        return self.h

    def _exists(self, name: str) -> bool:
        return self.harness.path(name).exists()

    def _files(self, plain_only: bool = False) -> list[str]:
        names = sorted(os.listdir(self.harness.logs))
        return [n for n in names if not (plain_only and n.endswith(".gz"))]

    def _rotated_name(self, name: str) -> str:
        self.next_rotation += 1
        return f"{name}.{self.next_rotation}"

    def _tell(self, *names: str) -> None:
        """inotify: told at once, handled in the next pump."""
        self.touched += names

    # -- what happens to files -------------------------------------------------

    @rule(name=NAMES, count=st.integers(1, 5))
    def write(self, name: str, count: int) -> None:
        numbers = range(self.next_line, self.next_line + count)
        self.next_line += count
        self.harness.append(name, numbers, WIDTH)
        self.written.update(numbers)
        # The write event is handled right away: the manager notes the size.
        self.harness.tell(name)

    @rule(data=st.data())
    def write_rotated(self, data: st.DataObject) -> None:
        """An app that has not reopened yet writes on into its renamed file."""
        renamed = sorted(n for n in self.renamed if self._exists(n))
        if renamed:
            self.write_to(data.draw(st.sampled_from(renamed)))

    def write_to(self, name: str) -> None:
        self.harness.append(name, [self.next_line], WIDTH)
        self.written.add(self.next_line)
        self.next_line += 1
        self.harness.tell(name)

    @rule(name=NAMES)
    def rotate_by_rename(self, name: str) -> None:
        if self._exists(name):
            new = self._rotated_name(name)
            os.rename(self.harness.path(name), self.harness.path(new))
            if name not in self.cut_unseen:
                # A closed file cut back and renamed before a look is not followed
                # (StreamManager._is_inode_reused): its app writes elsewhere then.
                self.renamed.add(new)
            self._tell(name, new)

    @rule(name=NAMES)
    def copytruncate(self, name: str) -> None:
        if self._exists(name):
            new = self._rotated_name(name)
            shutil.copyfile(self.harness.path(name), self.harness.path(new))
            os.truncate(self.harness.path(name), 0)
            self.cut_unseen.add(name)
            self._tell(new, name)

    @rule(name=NAMES)
    def truncate(self, name: str) -> None:
        if self._exists(name):
            os.truncate(self.harness.path(name), 0)
            self.cut_unseen.add(name)
            self._tell(name)

    @rule(name=NAMES, count=st.integers(1, 40))
    def truncate_and_regrow(self, name: str, count: int) -> None:
        """Cut back and written past the old size before anyone looks."""
        if self._exists(name):
            os.truncate(self.harness.path(name), 0)
            self.cut_unseen.add(name)
            numbers = range(self.next_line, self.next_line + count)
            self.next_line += count
            self.harness.append(name, numbers, WIDTH)
            self.written.update(numbers)
            # One event, handled after both: the look sees the regrown file only.
            self.harness.tell(name)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        files = self._files()
        if files:
            name = data.draw(st.sampled_from(files))
            os.unlink(self.harness.path(name))
            self._tell(name)

    @rule(data=st.data())
    def compress(self, data: st.DataObject) -> None:
        """logrotate's compress of a rotated copy: the plain file gives way to NAME.gz."""
        rotated = [n for n in self._files(plain_only=True) if n not in ("a.log", "b.log")]
        if rotated:
            name = data.draw(st.sampled_from(rotated))
            plain = self.harness.path(name)
            packed = Path(f"{plain}.gz")
            packed.write_bytes(gzip.compress(plain.read_bytes()))
            times = plain.stat()
            os.utime(packed, ns=(times.st_atime_ns, times.st_mtime_ns))  # as gzip does
            os.unlink(plain)
            self._tell(name, f"{name}.gz")

    # -- what the producer does ------------------------------------------------

    @rule(data=st.data())
    def pump(self, data: st.DataObject) -> None:
        """Discovery hands over the paths, in no particular order; the tailer reads."""
        order = data.draw(st.permutations(sorted(set(self.touched))))
        self.touched = []
        self.cut_unseen.clear()
        self.harness.pump(*order)

    @rule()
    def rescan(self) -> None:
        self.harness.rescan()

    @rule()
    def housekeep(self) -> None:
        self.harness.housekeep(later_s=2.0)

    @rule()
    def retire(self) -> None:
        """Long after streams finished; collectors heard from us meanwhile (the promise
        covers outages shorter than the retire delay, see streams.RETIRE_AFTER_S)."""
        self.harness.sink.release()
        self.harness.housekeep(later_s=self.harness.manager.retire_after_s + 1)

    @rule()
    def save(self) -> None:
        self.harness.save()

    @rule(hold=st.booleans())
    def publish(self, hold: bool) -> None:
        """The publisher sends what is queued, then queues (hold) or sends at once."""
        self.harness.sink.release()
        self.harness.sink.hold = hold

    @rule()
    def kill_and_restart(self) -> None:
        if self.harness.saved is None:
            self.harness.save()  # the tailer thread saves before its first read
        self.killed = True
        self.touched = []  # events of a dead process are gone with it
        self.harness.kill_and_restart()

    # -- what must hold --------------------------------------------------------

    @rule()
    def check(self) -> None:
        h = self.harness
        h.sink.release()
        h.sink.hold = False
        self.pump_all()
        h.settle()
        delivered = h.sink.delivered
        assert len(delivered) == len(set(delivered)), "a line was delivered twice"
        assert set(delivered) <= self.written
        on_disk = set(h.disk_numbers())
        missing = on_disk - set(delivered)
        assert not missing, f"lines on disk never delivered: {sorted(missing)[:10]}"
        for view in h.sink.streams.values():
            assert view.lines == sorted(view.lines), "a stream's lines out of order"
        undelivered_bytes = WIDTH * len(self.written - set(delivered))
        if self.killed:
            # A loss the producer counted after its last save, a collector may count again.
            assert h.lost() <= undelivered_bytes and h.sink.gone_bytes <= undelivered_bytes
        else:
            lost = h.lost() + h.sink.gone_bytes
            assert lost == undelivered_bytes, "lines lost and counted differ"

    def pump_all(self) -> None:
        self.cut_unseen.clear()
        self.harness.pump(*sorted(set(self.touched)))
        self.touched = []

    def teardown(self) -> None:
        try:
            if self.h is not None:
                self.check()
        finally:
            if self.h is not None:
                self.h.close()
            shutil.rmtree(self.folder, ignore_errors=True)


class FileLifeOnDisk(FileLife):
    machine_dir = None  # the default temporary folder: a disk file system


def machine_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


FileLife.TestCase.settings = machine_settings(EXAMPLES)
FileLifeOnDisk.TestCase.settings = machine_settings(max(1, EXAMPLES // 2))
TestFileLife = FileLife.TestCase
TestFileLifeOnDisk = FileLifeOnDisk.TestCase
