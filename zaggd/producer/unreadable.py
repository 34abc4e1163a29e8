"""Files the producer may not read: told once each, with who it runs as and the fix.

A watched file the service user cannot open is found again at every rescan;
one warning per file says so, naming the user, its groups, the file's owner,
group and mode, and the unit setting that lets it in
(`SupplementaryGroups=`). The files stay listed for `zaggd status` until one
opens, which is logged too. Bounded: past MAX_FILES, new ones are counted only.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import threading

from zaggd import runas
from zaggd.logs import shown

log = logging.getLogger(__name__)

MAX_FILES = 1000


class Unreadable:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the tailer writes, status reads
        self._files: dict[str, None] = {}
        self.more = 0  # past MAX_FILES

    def denied(self, path: str) -> None:
        with self._lock:
            if path in self._files:
                return
            if len(self._files) >= MAX_FILES:
                self.more += 1
                return
            self._files[path] = None
        log.warning("cannot read %s: Permission denied %s", shown(path), _why(path))

    def opened(self, path: str) -> None:
        with self._lock:
            if path not in self._files:
                return
            del self._files[path]
        log.info("can read %s now", shown(path))

    def paths(self) -> list[str]:
        """The files still there and still unreadable, as far as the last open said."""
        with self._lock:
            for path in [p for p in self._files if not os.path.lexists(p)]:
                del self._files[path]
            return list(self._files)


def _why(path: str) -> str:
    """For whom, what the file is, and how to let the producer in."""
    user = runas.current_user()
    gids = {os.getegid(), *os.getgroups()}
    who = f"for user {user} (groups: {runas.group_names(sorted(gids))})"
    folder = runas.closed_folder(path)
    if folder is not None:
        return f"{who}: folder {shown(folder)} is closed to it; run chmod o+x {shown(folder)}"
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return who
    group = runas.group_names([st.st_gid])
    steps = []
    if st.st_gid == 0:  # never hand the producer group root: Debian's log readers are adm
        steps.append(f"run chgrp adm {shown(path)} and chmod g+r {shown(path)}")
    elif not st.st_mode & stat.S_IRGRP:
        steps.append(f"run chmod g+r {shown(path)}")
    if st.st_gid not in gids and st.st_gid != 0:
        groups = "adm" if group == "adm" else f"adm {group}"
        steps.append(
            f"add group {group} to the unit (systemctl edit zaggd-producer: "
            f"[Service] SupplementaryGroups={groups})"
        )
    fix = " and ".join(steps) or "its mode lets the group read: an ACL or security module denies it"
    return f"{who}: it is {_owner(st.st_uid)}:{group} {stat.S_IMODE(st.st_mode):04o}; {fix}"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# One producer per process: the files its tailer could not open.
UNREADABLE = Unreadable()
