"""File identity: device and inode, plus a fingerprint of the first bytes.

Inodes are reused as soon as a file is deleted, so device and inode alone
would make a new file look like an old one. The fingerprint (a hash of up to
FINGERPRINT_BYTES leading bytes, with their count) catches that, and lets a
copy of a file (copytruncate) be found by its content. A file shorter than
FINGERPRINT_BYTES has a shorter fingerprint that grows with it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

FINGERPRINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Fingerprint:
    size: int  # how many leading bytes were hashed
    digest: str  # sha256 hex of those bytes

    def to_json(self) -> list[object]:
        return [self.size, self.digest]

    @classmethod
    def from_json(cls, value: object) -> Fingerprint:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or type(value[0]) is not int
            or not isinstance(value[1], str)
        ):
            raise ValueError("fingerprint: expected [size, digest]")
        return cls(value[0], value[1])


@dataclass(frozen=True, slots=True)
class FileId:
    device: int
    inode: int
    fingerprint: Fingerprint

    def is_same_inode(self, st: os.stat_result) -> bool:
        return self.device == st.st_dev and self.inode == st.st_ino


def fingerprint_of_fd(fd: int, size: int = FINGERPRINT_BYTES) -> Fingerprint:
    head = os.pread(fd, size, 0)
    return Fingerprint(len(head), hashlib.sha256(head).hexdigest())


def file_id_of_fd(fd: int) -> FileId:
    st = os.fstat(fd)
    return FileId(st.st_dev, st.st_ino, fingerprint_of_fd(fd))


def has_prefix(fd: int, fingerprint: Fingerprint) -> bool:
    """Whether the file's first `fingerprint.size` bytes are the fingerprinted ones."""
    head = os.pread(fd, fingerprint.size, 0)
    if len(head) != fingerprint.size:
        return False
    return hashlib.sha256(head).hexdigest() == fingerprint.digest


def path_has_prefix(path: str, fingerprint: Fingerprint) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return has_prefix(fd, fingerprint)
    finally:
        os.close(fd)
