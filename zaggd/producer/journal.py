"""StreamJournal: the instance id and every stream's identity, beside the offset store.

Collectors know a stream by its id and expect its next block where the last
one ended. The offset store (offsets.json) is rewritten whole every second; an
operator may delete it or move a damaged one aside. The journal,
`state_dir/streams.jsonl`, is what lets a producer without its offset store
find every stream again under the same id, so that collectors drop what they
already have instead of writing it a second time.

It is JSON lines: first the instance id, then a line per stream record (as
the offset store writes it) at its birth and whenever its identity changes
(path, device, inode, fingerprint, rotated, finished), and a line when a
stream is retired. A birth is written and fsynced before the stream's first
block goes out: one fsync for all the streams a save brings, never one per
line; other lines are appended without one (after an OS crash the offset
store, fsynced at every save, holds them). The journal is rewritten whole
(temp file, fsync, rename) at the first save after each start, when it was
removed, and when it has grown to many times the streams it holds: retired
streams then leave it, their first bytes kept as the offset store keeps them.

It is read only when the offset store is missing. A damaged line is skipped
(one warning for them all); a torn last line, left by a kill -9 mid-write, is
skipped quietly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from zaggd.identity import FileId, Fingerprint
from zaggd.logs import shown
from zaggd.producer.offsets import OffsetStore, StoredState, StreamRecord, new_id, want_id
from zaggd.statefile import Damaged, brief, member, want_object, write_in_state_dir

log = logging.getLogger(__name__)

NAME = "streams.jsonl"
KIND = "zaggd-producer-journal"
VERSION = 1
# Rewritten once more lines than this, and than several per live stream, were appended.
COMPACT_MIN_LINES = 1000
COMPACT_RATIO = 4

NO_STATE = (
    "no offset store and no stream journal in %s: starting as a new instance (%s). "
    "If this producer ran before with this state_dir (removed or lost since), every watched "
    "file is new to collectors: sent again from its start (start_at: beginning), which "
    "collectors write a second time, or only from its end (start_at: end)"
)
FOUND_AGAIN = (
    "offset store missing: %d streams found again by identity in the journal %s; "
    "re-reading them from their start (or where the journal last saw them), "
    "collectors drop what they have"
)

Identity = tuple[str, FileId, bool, bool]  # path, file id, rotated, finished


def identity_of(record: StreamRecord) -> Identity:
    return (record.path, record.file_id, record.rotated, record.finished)


@dataclass(slots=True)
class _Read:
    """What a journal file holds, line by line: the newest line of a stream wins."""

    instance: str | None = None
    records: dict[str, tuple[int, StreamRecord]] = field(default_factory=dict)
    retired: list[Fingerprint] = field(default_factory=list)
    damaged: int = 0
    first_damage: str = ""

    def damage(self, number: int, what: str) -> None:
        self.damaged += 1
        if not self.first_damage:
            self.first_damage = f"line {number}: {what}"


class StreamJournal:
    """The journal file. Only the tailer thread writes it (`note`), in each offset store save."""

    def __init__(
        self, state_dir: str, instance: str, on_remade: Callable[[str], None] | None = None
    ) -> None:
        self.path = os.path.join(state_dir, NAME)
        self.instance = instance
        self.on_remade = on_remade
        self._journaled: dict[str, tuple[StreamRecord, Identity]] = {}
        self._appended = 0  # lines since the last rewrite
        self._rewrite_due = True  # the first save after a start writes it whole

    # -- writing, in each save ----------------------------------------------------

    def missing(self) -> bool:
        """Whether the file is gone (removed by hand while running): the next save is due."""
        return not os.path.exists(self.path)

    def note(self, records: list[StreamRecord], retired: Iterable[Fingerprint]) -> None:
        """Journal what changed among `records` (what the offset store is about to hold)
        since the last call: births fsynced before they return. OSError when it cannot."""
        if (
            self._rewrite_due
            or self._appended > max(COMPACT_MIN_LINES, COMPACT_RATIO * len(records))
            or self.missing()
        ):
            self.rewrite(records, retired)
            return
        lines: list[bytes] = []
        born = False
        journaled = self._journaled
        for record in records:
            seen = journaled.get(record.stream)
            if seen is not None and seen[0] is record:
                continue
            identity = identity_of(record)
            if seen is None or seen[1] != identity:
                lines.append(_record_line(record))
                born = born or seen is None
            journaled[record.stream] = (record, identity)
        if len(journaled) > len(records):  # streams retired since the last call
            current = {r.stream for r in records}
            for sid in [s for s in journaled if s not in current]:
                lines.append(_retired_line(sid, journaled.pop(sid)[0].file_id.fingerprint))
        if lines:
            self._append(lines, born)

    def rewrite(self, records: list[StreamRecord], retired: Iterable[Fingerprint]) -> None:
        """Write the journal whole: the instance, every stream, the first bytes of retired ones."""
        head = {"kind": KIND, "version": VERSION, "instance": self.instance}
        lines = [_json_line(head)]
        lines += [_json_line({"retired": None, "fingerprint": fp.to_json()}) for fp in retired]
        lines += [_record_line(r) for r in records]
        self._rewrite_due = True  # until it is written
        write_in_state_dir(self.path, b"".join(lines), self.on_remade)
        self._journaled = {r.stream: (r, identity_of(r)) for r in records}
        self._appended = 0
        self._rewrite_due = False

    def _append(self, lines: list[bytes], sync: bool) -> None:
        data = b"".join(lines)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self._rewrite_due = True  # a torn line may end the file now: rewrite it whole
            raise
        self._appended += len(lines)


def _json_line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _record_line(record: StreamRecord) -> bytes:
    return _json_line({"stream": record.stream, **record.to_json()})


def _retired_line(stream: str, fingerprint: Fingerprint) -> bytes:
    return _json_line({"retired": stream, "fingerprint": fingerprint.to_json()})


def _parse(data: bytes) -> _Read:
    read = _Read()
    lines = data.split(b"\n")
    torn = lines.pop()  # what follows the last newline: empty, or a torn last line
    for number, line in enumerate(lines, 1):
        try:
            _take(read, number, _decode(line))
        except Damaged as exc:
            read.damage(number, str(exc))
    if torn:
        try:
            _take(read, len(lines) + 1, _decode(torn))
        except Damaged:
            log.info("stream journal: a torn last line skipped (written when the producer died)")
    return read


def _decode(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise Damaged("not UTF-8 text") from None
    except RecursionError:
        raise Damaged("JSON nested too deeply") from None
    except ValueError:
        raise Damaged(f"not valid JSON ({brief(line)})") from None
    return want_object(value, "the line")


def _take(read: _Read, number: int, value: dict[str, Any]) -> None:
    if "kind" in value:
        if value.get("kind") != KIND or value.get("version") != VERSION:
            raise Damaged(f"not a {KIND} version {VERSION} header")
        read.instance = want_id(member(value, "instance", ""), "instance")
    elif "retired" in value:
        fingerprint = _fingerprint(member(value, "fingerprint", ""))
        sid = value["retired"]
        if sid is not None:
            read.records.pop(want_id(sid, "retired"), None)
        read.retired.append(fingerprint)
    else:
        sid = want_id(member(value, "stream", ""), "stream")
        read.records[sid] = (number, StreamRecord.from_json(sid, value, ""))


def _fingerprint(value: object) -> Fingerprint:
    try:
        return Fingerprint.from_json(value)
    except ValueError:
        raise Damaged("fingerprint: not [size, digest]") from None


def start_state(store: OffsetStore, state_dir: str) -> tuple[str, StoredState | None]:
    """The instance id and the state a producer resumes from: its offset store, else
    its journal (streams found again under their ids), else nothing (said once, loudly)."""
    stored = store.load()
    if stored is not None:
        return stored.instance, stored
    found = load_journal(os.path.join(state_dir, NAME))
    if found is not None:
        return found.instance, found
    instance = new_id()
    log.warning(NO_STATE, shown(state_dir), instance)
    return instance, None


def load_journal(path: str) -> StoredState | None:
    """The streams the journal at `path` holds, newest first, each at the offset of its
    last line, as a StoredState to restore from; None when there is no journal at all."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the stream journal %s: %s", shown(path), exc.strerror)
        return None
    read = _parse(data)
    if read.damaged:
        log.warning(
            "stream journal %s: %d damaged lines skipped (the first at %s); "
            "a file only they named is a new stream to collectors, sent to them again",
            shown(path),
            read.damaged,
            read.first_damage,
        )
    if read.instance is None and not read.records:
        return None
    newest_first = sorted(read.records.values(), key=lambda nr: -nr[0])
    return StoredState(
        read.instance or new_id(),
        mtime,  # the last time the journal heard of its streams
        tuple(record for _, record in newest_first),
        tuple(read.retired),
        from_journal=True,
    )
