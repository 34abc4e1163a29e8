"""Who may read the collector's output: the group and modes of its files and folders.

`output.group` and `output.mode` decide it. Folders the collector makes below
the output root get that group and a mode that lets in whoever may read a
file; live files get both when opened, archives copy their live file's, and
state files written into a folder (manifests, indexes) take its group
(statefile). No setgid bit does this for them: the units forbid setting one
(RestrictSUIDSGID=). Folders and files made by an older version are brought
in line when opened again. The output root itself is left alone: systemd's
LogsDirectory= owns /var/log/zaggd and would take back a folder whose group
changed, with everything in it, at the next start.
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat

from zaggd import runas
from zaggd.config import OutputConfig
from zaggd.errors import ZaggdError


def folder_mode(file_mode: int) -> int:
    """A folder's mode for files of `file_mode`: whoever may read a file may enter."""
    return file_mode | (file_mode & 0o444) >> 2


class OutputAccess:
    def __init__(self, output: OutputConfig, root: str) -> None:
        self.root = os.path.normpath(root)
        self.group = output.group
        self.gid = grp.getgrnam(output.group).gr_gid if output.group is not None else None
        self.file_mode = output.mode
        self.folder_mode = folder_mode(output.mode)

    def check(self) -> None:
        """Refuse a group the collector may not give its files (it is not a member)."""
        if self.gid is None or os.geteuid() == 0:
            return
        if self.gid == os.getegid() or self.gid in os.getgroups():
            return
        user = runas.current_user()
        raise ZaggdError(
            f"output.group: {self.group}: user {user} is not a member "
            f"(its groups: {runas.group_names(os.getgroups())}); run usermod -a -G "
            f"{self.group} {user}, or add SupplementaryGroups={self.group} to the unit"
        )

    def make_folders(self, folder: str) -> None:
        """Make `folder` and the missing ones above it (up to the root), each as configured."""
        folder = os.path.normpath(folder)
        below: list[str] = []
        while folder != self.root and os.path.dirname(folder) != folder:
            below.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(folder, exist_ok=True)
        for path in reversed(below):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, self.folder_mode & 0o777)
            self._set(path, self.folder_mode, os.stat(path))

    def set_file(self, fd: int) -> None:
        """Give an open output file the configured group and mode."""
        st = os.fstat(fd)
        if self.gid is not None and st.st_gid != self.gid:
            os.fchown(fd, -1, self.gid)
        if stat.S_IMODE(st.st_mode) != self.file_mode:
            os.fchmod(fd, self.file_mode)

    def _set(self, path: str, mode: int, st: os.stat_result) -> None:
        if self.gid is not None and st.st_gid != self.gid:
            os.chown(path, -1, self.gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)


def keep_access(fd: int, live: os.stat_result) -> None:
    """Give a new archive (open as `fd`) the group and mode of the live file it is cut from."""
    st = os.fstat(fd)
    if st.st_gid != live.st_gid:
        # A group the collector is no longer in: the folder's stands.
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, live.st_gid)
    if stat.S_IMODE(st.st_mode) != stat.S_IMODE(live.st_mode):
        os.fchmod(fd, stat.S_IMODE(live.st_mode))
