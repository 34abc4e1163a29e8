"""inotify limits: the watches this process holds, and whether the user has any left.

inotify instances and watches are counted per user
(fs.inotify.max_user_instances, 128 by default; fs.inotify.max_user_watches)
and shared by all of the user's programs, so a busy host can leave none.
watchdog raises when it gets no instance, or no watch for the folder it was
asked to watch, but watchdog >= 4 skips the folders below it silently. So
the watches this process holds are counted (/proc/self/fdinfo) against the
folders watchdog should watch, and a shortfall is confirmed by asking the
kernel for one more watch.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable

# What an exhausted limit looks like: the errno, and the sysctl that raises it.
LIMITS = {
    errno.EMFILE: ("instances", "fs.inotify.max_user_instances"),
    errno.ENOSPC: ("watches", "fs.inotify.max_user_watches"),
}
_IN_CREATE = 0x100
_IN_CLOEXEC = 0o2000000


def watches_held() -> int | None:
    """The inotify watches this process holds, or None when /proc does not tell."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    total = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                total += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:
            continue
    return total


def watches_needed(roots: Iterable[tuple[str, bool]]) -> int:
    """The watches watchdog takes for these roots: each root and, below a recursive
    one, every folder not reached through a link (each real folder once)."""
    keys: set[tuple[int, int]] = set()
    for root, recursive in roots:
        try:
            st = os.stat(root)
        except OSError:
            continue
        keys.add((st.st_dev, st.st_ino))
        if not recursive:
            continue
        for top, dirs, _ in os.walk(root):
            for name in dirs:
                try:
                    st = os.lstat(os.path.join(top, name))
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    keys.add((st.st_dev, st.st_ino))
    return len(keys)


def refusal(path: str) -> int | None:
    """EMFILE or ENOSPC when the kernel refuses one more inotify instance or watch
    (on `path`) for lack of them; None when it grants them, or cannot tell."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init1(_IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        return err if err == errno.EMFILE else None
    try:
        if add_watch(fd, os.fsencode(path), _IN_CREATE) < 0:
            err = ctypes.get_errno()
            return err if err == errno.ENOSPC else None
        return None
    finally:
        os.close(fd)
