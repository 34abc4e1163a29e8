"""Reading output files for verify: hashes, line counts and gzip content, safely.

Only regular files are opened (a FIFO or device planted where output belongs
never blocks or feeds a reader forever); gzip content is inflated in chunks of
bounded size, member after member, so a small archive cannot expand into
memory; a stream that stops early or is not gzip is said, not raised.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from zaggd.collector.manifest import HASH_CHUNK_BYTES

GZIP_WBITS = zlib.MAX_WBITS | 16  # a gzip header and trailer around the deflate stream
# A split long line goes in pieces of max_line_bytes (at least this) plus a newline
# the producer adds: the only bytes a raw file holds beyond its ranges.
MIN_SPLIT_PIECE_BYTES = 1024 + 1


@dataclass(slots=True)
class Digest:
    """A file as stored and as its content: what a manifest records."""

    size: int = 0
    sha256: str = ""
    content_size: int = 0
    content_sha256: str = ""
    lines: int = 0
    content_error: str = ""  # why its content could not be had (not a gzip stream, ...)


def digest_archive(path: str, is_gzip: bool) -> Digest:
    """One pass: the stored bytes hashed and, for gzip, decompressed and hashed too."""
    stored = hashlib.sha256()
    content = hashlib.sha256()
    digest = Digest()
    for chunk in content_chunks(path, is_gzip, stored, digest):
        content.update(chunk)
        digest.content_size += len(chunk)
        digest.lines += chunk.count(b"\n")
    digest.sha256 = stored.hexdigest()
    digest.content_sha256 = content.hexdigest()
    return digest


def open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file: a FIFO or a device planted
    where output belongs must not block or feed verify forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def content_chunks(
    path: str, is_gzip: bool, stored: hashlib._Hash, digest: Digest
) -> Iterator[bytes]:
    """The uncompressed content of a file in bounded chunks, hashing what is stored."""
    inflater = Inflater() if is_gzip else None
    with open_regular(path) as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            stored.update(chunk)
            digest.size += len(chunk)
            if inflater is None:
                yield chunk
            elif not digest.content_error:
                try:
                    yield from inflater.feed(chunk)
                except zlib.error as exc:
                    digest.content_error = f"not a whole gzip stream ({exc})"
    if inflater is not None and not digest.content_error and not inflater.is_done:
        digest.content_error = "not a whole gzip stream (it ends early)"


class Inflater:
    """gzip members, one after another, inflated in chunks of bounded size."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(GZIP_WBITS)

    @property
    def is_done(self) -> bool:
        return self._member.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._member.eof:  # another member follows, as `cat a.gz b.gz` makes
                self._member = zlib.decompressobj(GZIP_WBITS)
            out = self._member.decompress(data, HASH_CHUNK_BYTES)
            if out:
                yield out
            data = self._member.unused_data if self._member.eof else self._member.unconsumed_tail


def split_newlines(path: str, is_gzip: bool) -> int:
    """How many newlines a producer may have added: one per line long enough to be a
    piece of a split line. Counted only when a raw file holds more than its ranges."""
    count = 0
    partial = 0  # length of the line begun in an earlier chunk
    stored = hashlib.sha256()
    for chunk in content_chunks(path, is_gzip, stored, Digest()):
        lines = chunk.split(b"\n")
        for line in lines[:-1]:
            if partial + len(line) + 1 >= MIN_SPLIT_PIECE_BYTES:
                count += 1
            partial = 0
        partial += len(lines[-1])
    return count


def prefix_digest(path: str, size: int) -> tuple[int, int, str] | None:
    """(lines, bytes read, SHA-256) of a file's first `size` bytes; None if unreadable."""
    digest = hashlib.sha256()
    lines = done = 0
    try:
        with open_regular(path) as fh:
            while done < size and (chunk := fh.read(min(HASH_CHUNK_BYTES, size - done))):
                digest.update(chunk)
                lines += chunk.count(b"\n")
                done += len(chunk)
    except OSError:
        return None
    return lines, done, digest.hexdigest()
