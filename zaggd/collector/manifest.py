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
input: every field's type and range is checked, and anything off is one
RecordError line saying which field and what it holds (`load_manifest`,
`load_live_index`), never a traceback.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from zaggd.errors import ZaggdError
from zaggd.statefile import write_state

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
    except RecordError as exc:
        raise ZaggdError(f"{path}: damaged manifest: {exc}") from None


class RecordError(ValueError):
    """What is wrong in a manifest or live index, without its path: `size: expected ...`."""


def load_manifest(path: str) -> Manifest:
    """The manifest at `path`; OSError when it cannot be read, RecordError when it is not one."""
    body = load_record(path, KIND, VERSION)
    expired = body.get("expired", False)
    if not isinstance(expired, bool):
        raise RecordError(f"expired: expected true or false, got {_shown(expired)}")
    fmt = body.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise RecordError(f"format: expected a format name, got {_shown(fmt)}")
    return Manifest(
        file=_want_name(body, "file"),
        live=_want_name(body, "live"),
        compression=_want_choice(body, "compression", ("gzip", "none")),
        size=_want_count(body, "size", "bytes"),
        sha256=_want_digest(body, "sha256"),
        content_size=_want_count(body, "content_size", "bytes"),
        content_sha256=_want_digest(body, "content_sha256"),
        lines=_want_count(body, "lines", "lines"),
        ranges=_want_ranges(body),
        started_at=_want_time(body, "started_at"),
        rotated_at=_want_time(body, "rotated_at"),
        previous=_want_previous(body),
        expired=expired,
        format=fmt,
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
    """The live index at `path`; OSError when it cannot be read, RecordError when it is not one."""
    body = load_record(path, LIVE_INDEX_KIND, LIVE_INDEX_VERSION)
    return LiveIndex(
        file=_want_name(body, "file"),
        size=_want_count(body, "size", "bytes"),
        lines=_want_count(body, "lines", "lines"),
        sha256=_want_digest(body, "sha256"),
        ranges=_want_ranges(body),
        previous=_want_previous(body),
    )


def load_record(path: str, kind: str, version: int) -> dict[str, Any]:
    """The JSON object in a file of `kind`, read whole but bounded in size and depth."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError("not JSON: not UTF-8 text") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise RecordError("not JSON: nested too deeply") from None
    except ValueError as exc:  # bad syntax, or a number too long to convert
        raise RecordError(f"not JSON ({str(exc)[:100]})") from None
    if not isinstance(body, dict) or body.get("kind") != kind:
        raise RecordError(f"not a {kind} file")
    found = body.get("version")
    if type(found) is not int or found != version:
        raise RecordError(f"version {_shown(found, texts=True)} is not {version}")
    return body


# -- field checks: each names the field and shows what it holds ----------------------

_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
MAX_COUNT = 2**63 - 1  # what offsets and sizes can be, on the wire and on disk


def _shown(value: Any, texts: bool = False) -> str:
    """A short picture of a JSON value for a message: its kind, or itself when small."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**20 else "a number out of range"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "a number out of range"
    if isinstance(value, str):
        return repr(value)[:60] if texts else "a string"
    return "a list" if isinstance(value, list) else "an object"


def _field(body: dict[str, Any], key: str) -> Any:
    try:
        return body[key]
    except KeyError:
        raise RecordError(f"{key}: missing") from None


def _want_count(body: dict[str, Any], key: str, unit: str) -> int:
    value = _field(body, key)
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise RecordError(f"{key}: expected a whole number of {unit}, got {_shown(value)}")
    return value


def _want_time(body: dict[str, Any], key: str) -> float:
    value = _field(body, key)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise RecordError(f"{key}: expected a time in seconds, got {_shown(value)}")
    return float(value)


def _want_digest(body: dict[str, Any], key: str) -> str:
    value = _field(body, key)
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise RecordError(f"{key}: expected 64 hex digits, got {_shown(value, texts=True)}")
    return value


def _want_choice(body: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = _field(body, key)
    if value not in choices or not isinstance(value, str):
        allowed = " or ".join(f'"{c}"' for c in choices)
        raise RecordError(f"{key}: expected {allowed}, got {_shown(value, texts=True)}")
    return value


def _want_name(body: dict[str, Any], key: str) -> str:
    value = _field(body, key)
    if not isinstance(value, str):
        raise RecordError(f"{key}: expected a file name, got {_shown(value)}")
    return _plain_name(key, value)


def _want_previous(body: dict[str, Any]) -> str | None:
    value = body.get("previous")
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"previous: expected a file name or null, got {_shown(value)}")
    return _plain_name("previous", value)


def _plain_name(key: str, name: str) -> str:
    # A record names files in its own folder only; never follow one elsewhere.
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise RecordError(f"{key}: expected a file name in its folder, got {_shown(name, True)}")
    return name


def _want_ranges(body: dict[str, Any]) -> dict[str, list[int]]:
    value = _field(body, "ranges")
    if not isinstance(value, dict):
        raise RecordError(f"ranges: expected an object of stream ranges, got {_shown(value)}")
    ranges = {}
    for key, span in value.items():
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(type(v) is int and 0 <= v <= MAX_COUNT for v in span)
            or span[0] > span[1]
        ):
            where = json.dumps(key)[1:-1][:100]
            raise RecordError(f"ranges: {where}: expected [start, end], got {repr(span)[:60]}")
        ranges[key] = [span[0], span[1]]
    return ranges


def mark_expired(path: str, manifest: Manifest) -> None:
    write_manifest(path, replace(manifest, expired=True))
