"""Rotated output: names, integrity manifests and live indexes, read with care.

A live output file `NAME` is rotated to `NAME.<UTC stamp>` (e.g.
`web-01.log.20250301T000002.123456Z`), compressed to `<that>.gz` when
configured. Stamps are fixed-width, so name order is rotation order, and
they strictly increase per live file, so names never collide.

Beside each rotated file lies `<base>.manifest.json`: what zaggd wrote there
(file name, stored size and SHA-256, the uncompressed size, SHA-256 and line
count, the stream byte ranges it holds) and the base name of the archive cut
before it from the same live file. The manifest is written (temp, fsync,
rename) before the archive takes its final name, so a finished archive always
has one. A manifest is also zaggd's mark of ownership: retention deletes only
files that have one.

Manifests written from now on also record the output `format`: in `raw` the
file holds the streams' own bytes, so its size can be checked against its
ranges (see verify.py).

Beside each live output file `NAME` lies its live index `NAME.index.json`: the
size, line count, SHA-256 and stream ranges of its first `size` bytes, and the
base name of the archive cut before it. Both records are read as untrusted
input, with statefile's checks: every field's type and range, and anything off
is one Damaged line saying which field and what it holds (`load_manifest`,
`load_live_index`), never a traceback.
"""

from __future__ import annotations

import calendar
import errno
import os
import re
import stat
import time
from dataclasses import dataclass, field, replace
from typing import Any

from zaggd.errors import StateError, ZaggdError
from zaggd.statefile import (
    Damaged,
    brief,
    load_state,
    member,
    want_bool,
    want_count,
    want_ranges,
    want_str,
    want_time,
    write_state,
)

KIND = "zaggd-manifest"
VERSION = 1
LIVE_INDEX_KIND = "zaggd-live-index"
LIVE_INDEX_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
INDEX_SUFFIX = ".index.json"
MAX_RECORD_BYTES = 64 * 1048576  # far above any real manifest or index; bounds what is read
GZIP_SUFFIX = ".gz"
TEMP_SUFFIX = ".tmp"
HASH_CHUNK_BYTES = 1048576

_STAMP_FORMAT = "%Y%m%dT%H%M%S"
_ROTATED = re.compile(
    r"^(?P<live>.+)\.(?P<stamp>\d{8}T\d{6}\.\d{6}Z)"
    r"(?P<ext>\.gz|\.gz\.tmp|\.manifest\.json|\.manifest\.json\.tmp)?$"
)


def format_stamp(stamp_us: int) -> str:
    """`20250301T000002.123456Z` for a time in microseconds since the epoch (UTC)."""
    seconds, micros = divmod(stamp_us, 1_000_000)
    return time.strftime(_STAMP_FORMAT, time.gmtime(seconds)) + f".{micros:06d}Z"


def parse_stamp(stamp: str) -> int:
    """The inverse of `format_stamp`."""
    whole, micros = stamp[:-1].split(".")
    return calendar.timegm(time.strptime(whole, _STAMP_FORMAT)) * 1_000_000 + int(micros)


def rotated_base(live_path: str, stamp_us: int) -> str:
    return f"{live_path}.{format_stamp(stamp_us)}"


def manifest_path(base: str) -> str:
    return base + MANIFEST_SUFFIX


@dataclass(frozen=True, slots=True)
class RotatedName:
    live: str  # the live file's name, without folder
    stamp: str
    ext: str  # "", ".gz", ".gz.tmp", ".manifest.json" or ".manifest.json.tmp"

    @property
    def base(self) -> str:
        return f"{self.live}.{self.stamp}"

    @property
    def stamp_us(self) -> int:
        return parse_stamp(self.stamp)


def parse_rotated(name: str) -> RotatedName | None:
    """The parts of a rotated file's name (no folder), or None for any other name."""
    match = _ROTATED.match(name)
    if match is None:
        return None
    try:
        time.strptime(match["stamp"][:15], _STAMP_FORMAT)
    except ValueError:
        return None
    return RotatedName(match["live"], match["stamp"], match["ext"] or "")


@dataclass(frozen=True, slots=True)
class Manifest:
    file: str  # the archive's name, in the manifest's folder
    live: str  # the live file it was cut from, without folder
    compression: str  # "gzip" or "none"
    size: int  # bytes as stored
    sha256: str  # of the bytes as stored
    content_size: int  # bytes once uncompressed: what the live file held
    content_sha256: str
    lines: int
    ranges: dict[str, list[int]] = field(default_factory=dict)  # "node/stream" -> [start, end]
    started_at: float = 0.0  # when the live file took its first byte
    rotated_at: float = 0.0  # when it was cut
    previous: str | None = None  # base name of the archive cut before it from the same live file
    expired: bool = False  # retention is deleting it
    format: str | None = None  # the output format it was written in; None before it was recorded

    def body(self) -> dict[str, Any]:
        body = {
            "file": self.file,
            "live": self.live,
            "compression": self.compression,
            "size": self.size,
            "sha256": self.sha256,
            "content_size": self.content_size,
            "content_sha256": self.content_sha256,
            "lines": self.lines,
            "ranges": self.ranges,
            "started_at": self.started_at,
            "rotated_at": self.rotated_at,
            "previous": self.previous,
            "expired": self.expired,
        }
        if self.format is not None:
            body["format"] = self.format
        return body


def write_manifest(path: str, manifest: Manifest) -> None:
    """Atomically: after a crash the manifest is whole or absent."""
    write_state(path, KIND, VERSION, manifest.body())


def read_manifest(path: str) -> Manifest:
    """The manifest at `path`; ZaggdError when it is absent, unreadable or not one."""
    try:
        return load_manifest(path)
    except FileNotFoundError:
        raise ZaggdError(f"{path}: no such manifest") from None
    except OSError as exc:
        raise ZaggdError(f"{path}: cannot read: {exc.strerror}") from None
    except Damaged as exc:
        raise ZaggdError(f"{path}: damaged manifest: {exc}") from None


def load_manifest(path: str) -> Manifest:
    """The manifest at `path`; OSError when it cannot be read, Damaged when it is not one."""
    body = load_record(path, KIND, VERSION)
    return Manifest(
        file=_want_name(body, "file"),
        live=_want_name(body, "live"),
        compression=_want_choice(body, "compression", ("gzip", "none")),
        size=want_count(member(body, "size", ""), "size"),
        sha256=_want_digest(body, "sha256"),
        content_size=want_count(member(body, "content_size", ""), "content_size"),
        content_sha256=_want_digest(body, "content_sha256"),
        lines=want_count(member(body, "lines", ""), "lines"),
        ranges=want_ranges(member(body, "ranges", ""), "ranges"),
        started_at=want_time(member(body, "started_at", ""), "started_at"),
        rotated_at=want_time(member(body, "rotated_at", ""), "rotated_at"),
        previous=_want_previous(body),
        expired=want_bool(body.get("expired", False), "expired"),
        format=None if body.get("format") is None else want_str(body["format"], "format"),
    )


@dataclass(frozen=True, slots=True)
class LiveIndex:
    """What a collector vouches for in its live file: exactly its first `size` bytes."""

    file: str  # the live file's name, in the index's folder
    size: int
    lines: int
    sha256: str  # of the first `size` bytes
    ranges: dict[str, list[int]]  # "node/stream" -> [start, end]
    previous: str | None  # base name of the last archive cut from this live file


def live_index_path(live_path: str) -> str:
    return live_path + INDEX_SUFFIX


def load_live_index(path: str) -> LiveIndex:
    """The live index at `path`; OSError when it cannot be read, Damaged when it is not one."""
    body = load_record(path, LIVE_INDEX_KIND, LIVE_INDEX_VERSION)
    return LiveIndex(
        file=_want_name(body, "file"),
        size=want_count(member(body, "size", ""), "size"),
        lines=want_count(member(body, "lines", ""), "lines"),
        sha256=_want_digest(body, "sha256"),
        ranges=want_ranges(member(body, "ranges", ""), "ranges"),
        previous=_want_previous(body),
    )


def load_record(path: str, kind: str, version: int) -> dict[str, Any]:
    """The JSON object of a manifest or live index; OSError when it cannot be read, Damaged
    when it is not one (of this version). Its size is bounded before it is read."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read
        raise Damaged("not a regular file")
    if st.st_size > MAX_RECORD_BYTES:
        raise Damaged(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        body = load_state(path, kind, version)
    except StateError as exc:  # unreadable, or another version: said without the path again
        raise Damaged(str(exc).removeprefix(f"{path}: ")) from None
    if body is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    return body


# -- fields of records: statefile's want_* checks, and the ones only records have -------

_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


def _want_digest(body: dict[str, Any], key: str) -> str:
    value = want_str(member(body, key, ""), key)
    if not _DIGEST.match(value):
        raise Damaged(f"{key}: not 64 hex digits ({brief(value)})")
    return value


def _want_choice(body: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = want_str(member(body, key, ""), key)
    if value not in choices:
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise Damaged(f"{key}: not {allowed} ({brief(value)})")
    return value


def _want_name(body: dict[str, Any], key: str) -> str:
    return _plain_name(key, want_str(member(body, key, ""), key))


def _want_previous(body: dict[str, Any]) -> str | None:
    value = body.get("previous")
    if value is None:
        return None
    if not isinstance(value, str):
        raise Damaged(f"previous: not a file name or null ({brief(value)})")
    return _plain_name("previous", value)


def _plain_name(key: str, name: str) -> str:
    # A record names files in its own folder only; never follow one elsewhere.
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise Damaged(f"{key}: not a file name in its folder ({brief(name)})")
    return name


def mark_expired(path: str, manifest: Manifest) -> None:
    write_manifest(path, replace(manifest, expired=True))
