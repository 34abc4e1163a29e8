"""File identity: device and inode, plus a fingerprint of the first bytes.

Inodes are reused as soon as a file is deleted, so device and inode alone
would make a new file look like an old one. The fingerprint (a hash of up to
FINGERPRINT_BYTES leading bytes, with their count) catches that, and lets a
copy of a file (copytruncate) be found by its content. A file shorter than
FINGERPRINT_BYTES has a shorter fingerprint that grows with it; an empty file
has an empty one, which matches any content (reading it from 0 loses nothing).

This module also answers where a file instance's bytes are now
(`open_instance`): at its path, renamed within its folder (same inode, same
first bytes), in a copy of it (copytruncate: same rotation root, same first
bytes), or, once logrotate compressed it, inside a compressed sibling whose
decompressed first bytes are its fingerprint. A compressed copy is decompressed into an unlinked
temporary file, so callers read every instance the same way, with `pread`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, cast

FINGERPRINT_BYTES = 1024


def _open_gzip(path: str) -> IO[bytes]:
    return cast(IO[bytes], gzip.GzipFile(path, "rb"))


def _open_bz2(path: str) -> IO[bytes]:
    return bz2.BZ2File(path, "rb")


def _open_xz(path: str) -> IO[bytes]:
    return lzma.LZMAFile(path, "rb")


# Compressed files are never tailed; these are the ones whose content can still be had.
_OPENERS: dict[str, Callable[[str], IO[bytes]]] = {
    ".gz": _open_gzip,
    ".bz2": _open_bz2,
    ".xz": _open_xz,
}
COMPRESSED_SUFFIXES = (".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip", ".Z")
DECOMPRESS_CHUNK_BYTES = 1048576


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
            or not 0 <= value[0] <= FINGERPRINT_BYTES
            or not isinstance(value[1], str)
        ):
            raise ValueError("fingerprint: expected [size, digest]")
        return cls(value[0], value[1])

    def matches(self, head: bytes) -> bool:
        """Whether `head` (a file's first bytes) starts with the fingerprinted bytes."""
        if len(head) < self.size:
            return False
        return hashlib.sha256(head[: self.size]).hexdigest() == self.digest


def fingerprint_of(head: bytes) -> Fingerprint:
    head = head[:FINGERPRINT_BYTES]
    return Fingerprint(len(head), hashlib.sha256(head).hexdigest())


@dataclass(frozen=True, slots=True)
class FileId:
    device: int
    inode: int
    fingerprint: Fingerprint

    def is_same_inode(self, st: os.stat_result) -> bool:
        return self.device == st.st_dev and self.inode == st.st_ino

    def with_inode(self, st: os.stat_result) -> FileId:
        """The same content under another inode: a copy, or a decompressed one."""
        return FileId(st.st_dev, st.st_ino, self.fingerprint)


def fingerprint_of_fd(fd: int, size: int = FINGERPRINT_BYTES) -> Fingerprint:
    return fingerprint_of(os.pread(fd, size, 0))


def file_id_of_fd(fd: int) -> FileId:
    st = os.fstat(fd)
    return FileId(st.st_dev, st.st_ino, fingerprint_of_fd(fd))


def has_prefix(fd: int, fingerprint: Fingerprint) -> bool:
    """Whether the file's first `fingerprint.size` bytes are the fingerprinted ones."""
    if fingerprint.size == 0:
        return True
    return fingerprint.matches(os.pread(fd, fingerprint.size, 0))


def path_has_prefix(path: str, fingerprint: Fingerprint) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return has_prefix(fd, fingerprint)
    finally:
        os.close(fd)


def is_compressed(path: str) -> bool:
    return path.endswith(COMPRESSED_SUFFIXES)


def can_decompress(path: str) -> bool:
    return os.path.splitext(path)[1] in _OPENERS


def compressed_head(path: str, size: int = FINGERPRINT_BYTES) -> bytes | None:
    """The first `size` decompressed bytes of a compressed file, or None if unreadable."""
    opener = _OPENERS.get(os.path.splitext(path)[1])
    if opener is None:
        return None
    try:
        with opener(path) as f:
            return f.read(size)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None


def decompress_to_fd(path: str) -> int | None:
    """An fd on an unlinked temporary file holding the decompressed `path`, or None."""
    opener = _OPENERS.get(os.path.splitext(path)[1])
    if opener is None:
        return None
    out = tempfile.TemporaryFile(prefix="zaggd-")  # noqa: SIM115 - the fd outlives the object
    try:
        with opener(path) as src:
            shutil.copyfileobj(src, out, DECOMPRESS_CHUNK_BYTES)
        out.flush()
        fd = os.dup(out.fileno())
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None
    finally:
        out.close()
    return fd


@dataclass(frozen=True, slots=True)
class Instance:
    """Where a file instance is now, and an open handle on its bytes."""

    path: str
    fd: int
    file_id: FileId  # of what `fd` reads: a temporary file when decompressed
    decompressed: bool


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


def _open_if(path: str, file_id: FileId) -> int | None:
    """An fd on `path` when it is the same inode with the same first bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if file_id.is_same_inode(os.fstat(fd)) and has_prefix(fd, file_id.fingerprint):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def open_instance(
    path: str,
    file_id: FileId,
    names: Iterable[str] | None = None,
    compressed: bool = True,
) -> Instance | None:
    """Open the file instance last seen at `path`, wherever its folder holds it now.

    `names` is the folder's listing when the caller has it. A compressed copy
    is considered only for a non-empty fingerprint (an empty one matches all).
    """
    fd = _open_if(path, file_id)
    if fd is not None:
        return Instance(path, fd, file_id, False)
    folder = os.path.dirname(path)
    if names is None:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            return None
    siblings = [os.path.join(folder, n) for n in names]
    plain = [p for p in siblings if p != path and not is_compressed(p)]
    for candidate in plain:
        st = _stat(candidate)
        if st is None or not file_id.is_same_inode(st):
            continue
        fd = _open_if(candidate, file_id)
        if fd is not None:
            return Instance(candidate, fd, file_id, False)
    if file_id.fingerprint.size == 0:
        return None
    found = open_plain_copy(path, file_id.fingerprint, plain)
    if found is None and compressed:
        found = open_compressed_copy(file_id.fingerprint, siblings)
    return found


def open_plain_copy(path: str, fingerprint: Fingerprint, paths: Iterable[str]) -> Instance | None:
    """The newest copy of the file at `path` (copytruncate): same rotation root, same first bytes."""
    root = rotation_root(os.path.basename(path))
    found: list[tuple[float, str]] = []
    for candidate in paths:
        if rotation_root(os.path.basename(candidate)) != root:
            continue
        st = _stat(candidate)
        if st is not None and stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, candidate))
    for _, candidate in sorted(found, reverse=True):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        if has_prefix(fd, fingerprint):
            st = os.fstat(fd)
            return Instance(candidate, fd, FileId(st.st_dev, st.st_ino, fingerprint), False)
        os.close(fd)
    return None


def rotation_root(name: str) -> str:
    """`app.log` for `app.log.2`, `app.log-20261127`, `app.log.1.gz`: the name rotated."""
    while True:
        cut = max(name.rfind("."), name.rfind("-"), name.rfind("_"))
        if cut <= 0:
            return name
        rest = name[cut:]
        if not (any(c.isdigit() for c in rest) or rest in COMPRESSED_SUFFIXES):
            return name
        name = name[:cut]


def open_compressed_copy(fingerprint: Fingerprint, paths: Iterable[str]) -> Instance | None:
    """The newest compressed file among `paths` that starts with `fingerprint`, decompressed."""
    found: list[tuple[float, str]] = []
    for candidate in paths:
        if not can_decompress(candidate):
            continue
        st = _stat(candidate)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        head = compressed_head(candidate, fingerprint.size)
        if head is not None and fingerprint.matches(head):
            found.append((st.st_mtime, candidate))
    for _, candidate in sorted(found, reverse=True):
        fd = decompress_to_fd(candidate)
        if fd is not None:
            return Instance(candidate, fd, FileId(0, 0, fingerprint).with_inode(os.fstat(fd)), True)
    return None
