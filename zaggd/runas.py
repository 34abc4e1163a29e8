"""Checks made as the user the services run as, and naming that user in errors.

The units run both daemons as the system user `zaggd`. A check run as root
proves nothing about what that user may read (root reads everything), so
`check-config` run as root repeats its checks in a child process that has
become the service user: the kernel's own permission checks (groups, ACLs)
then answer, not a guess from mode bits.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass

from zaggd.errors import ZaggdError

SERVICE_USER = "zaggd"
MAX_MESSAGE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def lookup(name: str) -> User:
    """The user `name` and every group it belongs to; ZaggdError when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ZaggdError(f"no user {name!r} on this system") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def current_user() -> str:
    """The name of the user this process runs as (its uid when it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def group_names(groups: tuple[int, ...] | list[int]) -> str:
    names = []
    for gid in groups:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return ", ".join(dict.fromkeys(names))


def default_check_user(asked: str | None) -> User | None:
    """Whom check-config checks as: `asked`; as root, the service user when it exists;
    None for this process itself."""
    if asked is not None:
        user = lookup(asked)
        if user.uid == os.geteuid():
            return None
        if os.geteuid() != 0:
            raise ZaggdError(f"checking as user {user.name} needs root")
        return user
    if os.geteuid() != 0:
        return None
    try:
        return lookup(SERVICE_USER)
    except ZaggdError:
        return None


def run_as(user: User, check: Callable[[], object]) -> str | None:
    """Run `check` in a child process that is `user`; None when it passed, else its error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, check, report, exit
        os.close(read_fd)
        message = ""
        try:
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            check()
        except ZaggdError as exc:
            message = str(exc) or "failed"
        except BaseException as exc:  # a bug: still one line for the parent
            message = f"check as user {user.name} failed: {exc!r}"
        os.write(write_fd, message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES])
        os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            message_bytes = pipe.read(MAX_MESSAGE_BYTES + 1)
    finally:
        os.waitpid(pid, 0)
    return message_bytes.decode("utf-8", "replace") or None


def denied(path: str, fix: str) -> str:
    """What to add to "Permission denied" on `path`: for whom, and the command that fixes it.

    `fix` is the command for the file itself ("chown" for a secret key the
    user must own, "chmod a+r" for what anyone may read); when a folder on
    the way is what is closed, the fix is to let the user through it.
    """
    user = current_user()
    folder = closed_folder(path)
    if folder is not None:
        return f"for user {user} (folder {folder} is closed to it); run chmod o+x {folder}"
    if fix == "chown":
        try:
            owned = os.stat(path).st_uid == os.geteuid()
        except OSError:
            owned = False
        return f"for user {user}; run " + (
            f"chmod 600 {path}" if owned else f"chown {user}: {path}"
        )
    return f"for user {user}; run {fix} {path}"


def closed_folder(path: str) -> str | None:
    """The first folder above `path` this process may not pass through, if any."""
    folder = os.path.dirname(os.path.abspath(path))
    chain = []
    while True:
        chain.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for candidate in reversed(chain):
        if not os.access(candidate, os.X_OK):
            return candidate
    return None
