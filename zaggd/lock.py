"""Folder locks: one daemon per state folder, one collector per output folder.

Two daemons on one folder would both append every line, or overwrite each
other's state. So a daemon holds `FOLDER/.zaggd-lock` with
flock(LOCK_EX | LOCK_NB) for as long as it runs, its PID written inside; a
second one is refused with one line naming the lock and that PID (exit 78 at
start, "reload refused" at reload). The kernel drops a lock when its process
dies, kill -9 included, so a file left behind never blocks a restart; it is
emptied, never removed, on release (removing it would let two daemons lock
two different files of one name).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable

from zaggd.errors import StateError
from zaggd.logs import shown

log = logging.getLogger(__name__)

LOCK_NAME = ".zaggd-lock"
OPEN_TRIES = 5


class FolderLock:
    """The lock on one folder, taken by `acquire`, held until `release`."""

    def __init__(self, folder: str, what: str) -> None:
        self.folder = folder
        self.what = what  # "state_dir" or "output folder": said in the refusal
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd = -1

    def acquire(self) -> None:
        """Take the lock; StateError naming the holder's PID when another process has it."""
        for _ in range(OPEN_TRIES):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StateError(
                        f"{shown(self.path)}: another zaggd (pid {holder}) holds this {self.what}; "
                        "two daemons cannot share one"
                    ) from None
                raise StateError(f"{shown(self.path)}: cannot lock: {exc.strerror}") from None
            if _names(self.path, fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return
            os.close(fd)  # the folder was made again meanwhile: lock the file it holds now
        raise StateError(f"{shown(self.path)}: cannot lock: the file keeps being replaced")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        except OSError as exc:
            raise StateError(f"{shown(self.path)}: cannot open the lock: {exc.strerror}") from None

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # an empty lock file: nobody's
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def _names(path: str, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_pid(fd: int) -> str:
    """The PID a lock file holds; its holder may be a moment from writing it."""
    for _ in range(3):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            break
        if text.isdigit():
            return text
        time.sleep(0.05)
    return "unknown"


class Locks:
    """The folders one daemon holds, each locked once even when named twice
    (a state_dir that is also the output folder). Safe from any thread."""

    def __init__(self) -> None:
        self._held: dict[str, FolderLock] = {}  # by real path
        self._mutex = threading.Lock()

    def take(self, folder: str, what: str) -> None:
        """Lock `folder` unless this daemon already holds it; StateError if another does."""
        key = os.path.realpath(folder)
        with self._mutex:
            if key in self._held:
                return
            lock = FolderLock(folder, what)
            lock.acquire()
            self._held[key] = lock

    def keep_only(self, folders: Iterable[str]) -> None:
        """Release every lock but those on `folders` (after a reload moved the output)."""
        keep = {os.path.realpath(f) for f in folders}
        with self._mutex:
            for key in [k for k in self._held if k not in keep]:
                self._held.pop(key).release()

    def retake(self, folder: str) -> None:
        """`folder` was removed and made again: its lock file went with it. Lock the new one."""
        key = os.path.realpath(folder)
        with self._mutex:
            old = self._held.get(key)
            if old is None:
                return
            lock = FolderLock(folder, old.what)
            try:
                lock.acquire()
            except StateError as exc:
                log.error("%s", exc)
                return
            old.release()
            self._held[key] = lock
            log.info("%s locked again", shown(lock.path))

    def release_all(self) -> None:
        self.keep_only(())
