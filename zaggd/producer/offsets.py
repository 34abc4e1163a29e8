"""OffsetStore: per stream, the file identity, its path and how far it was read.

Written atomically (temp file, fsync, rename) to `state_dir/offsets.json`, a
versioned JSON file, on an interval, at shutdown and before the first block of
a new stream; read once at start so the producer resumes every stream where it
left off. Resuming a little behind is harmless: collectors drop duplicates.
When the store is gone (deleted, moved aside), the stream journal beside it
(journal.py) gives the same streams back, with older offsets.

Besides the identity and offset, a record keeps the largest size the file was
seen at (to count what a truncation or deletion while stopped lost), the floor
`start_at: end` set, whether the stream is finished (its file gone, still
announced for a while), and the stream it succeeds at its path (rotation). The store also keeps the first bytes of recently
retired streams, so a copy of one found after a restart is not read again.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zaggd.errors import StateError
from zaggd.identity import FileId, Fingerprint
from zaggd.statefile import (
    Damaged,
    at,
    dot,
    load_state,
    member,
    want_bool,
    want_count,
    want_list,
    want_object,
    want_str,
    want_time,
    write_in_state_dir,
)
from zaggd.wire import STREAM_RE

KIND = "zaggd-producer-offsets"
VERSION = 1
# What an operator gives up by moving a damaged store aside: without a store, the stream
# journal (journal.py) finds every stream again under its id, from an older offset.
ASIDE_COST = (
    "moving it aside costs a re-read: the stream journal (streams.jsonl beside it) finds "
    "every file again under its stream id, read again from its start (or where the journal "
    "last saw it), and collectors drop what they already have; with that journal gone too, "
    "every watched file is new: sent again from its start (start_at: beginning), which "
    "collectors write a second time, or only from its end (start_at: end), which skips lines not yet sent"
)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    stream: str
    source: str
    topic: str
    path: str
    file_id: FileId
    offset: int
    rotated: bool
    finished: bool = False  # read to its end and gone; announced until retired
    last_size: int = 0  # the largest size the file was seen at
    floor: int = 0  # bytes before it are skipped (start_at: end)
    prev: str = ""  # the stream at its path before it, and that one's offset when it began
    prev_end: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "topic": self.topic,
            "path": self.path,
            "device": self.file_id.device,
            "inode": self.file_id.inode,
            "fingerprint": self.file_id.fingerprint.to_json(),
            "offset": self.offset,
            "rotated": self.rotated,
            "finished": self.finished,
            "last_size": self.last_size,
            "floor": self.floor,
            **({"prev": self.prev} if self.prev else {}),
            **({"prev_end": self.prev_end} if self.prev and self.prev_end >= 0 else {}),
        }

    @classmethod
    def from_json(cls, stream: str, value: object, where: str) -> StreamRecord:
        """The record stored as `value`; Damaged, naming `where`, unless it is whole."""
        raw = want_object(value, where)

        def get(name: str) -> Any:
            return member(raw, name, where)

        offset = want_count(get("offset"), dot(where, "offset"))
        try:
            fingerprint = Fingerprint.from_json(get("fingerprint"))
        except ValueError:
            raise Damaged(f"{dot(where, 'fingerprint')}: not [size, digest]") from None
        return cls(
            stream=stream,
            source=want_str(get("source"), dot(where, "source")),
            topic=want_str(get("topic"), dot(where, "topic")),
            path=want_str(get("path"), dot(where, "path")),
            file_id=FileId(
                want_count(get("device"), dot(where, "device")),
                want_count(get("inode"), dot(where, "inode")),
                fingerprint,
            ),
            offset=offset,
            rotated=want_bool(get("rotated"), dot(where, "rotated")),
            finished=want_bool(raw.get("finished", False), dot(where, "finished")),
            last_size=want_count(raw.get("last_size", offset), dot(where, "last_size")),
            floor=want_count(raw.get("floor", 0), dot(where, "floor")),
            prev=want_id(raw["prev"], dot(where, "prev")) if "prev" in raw else "",
            prev_end=want_count(raw["prev_end"], dot(where, "prev_end"))
            if "prev_end" in raw
            else -1,
        )


@dataclass(frozen=True, slots=True)
class StoredState:
    instance: str
    saved_at: float  # wall-clock time of the last save
    records: tuple[StreamRecord, ...]
    retired: tuple[Fingerprint, ...] = ()  # first bytes of recently retired streams
    from_journal: bool = False  # the offset store was missing: read from the stream journal


class OffsetStore:
    """The offset store file. Saves re-encode only the records that changed since the
    last one: with thousands of idle streams, a save is mostly a join of cached text."""

    def __init__(self, state_dir: str, on_remade: Callable[[str], None] | None = None) -> None:
        self.path = os.path.join(state_dir, "offsets.json")
        self.on_remade = on_remade  # the state folder was removed and made again
        self._encoded: dict[str, tuple[StreamRecord, str]] = {}

    def load(self) -> StoredState | None:
        """The stored state, None at a first start; StateError (one line) when damaged."""
        try:
            state = load_state(self.path, KIND, VERSION)
            return None if state is None else _stored_state(state)
        except Damaged as exc:
            raise StateError(f"{self.path}: damaged offset store: {exc}; {ASIDE_COST}") from None

    def missing(self) -> bool:
        """Whether the file is gone (deleted by hand while running): the next save is due."""
        return not os.path.exists(self.path)

    def save(
        self,
        instance: str,
        saved_at: float,
        records: list[StreamRecord],
        retired: Iterable[Fingerprint] = (),
    ) -> None:
        head = json.dumps(
            {
                "kind": KIND,
                "version": VERSION,
                "instance": instance,
                "saved_at": saved_at,
                "retired": [fp.to_json() for fp in retired],
            },
            separators=(",", ":"),
        )
        streams = ",".join(self._encode(r) for r in records)
        self._encoded = {r.stream: self._encoded[r.stream] for r in records}
        data = f'{head[:-1]},"streams":{{{streams}}}}}'.encode()
        write_in_state_dir(self.path, data, self.on_remade)

    def _encode(self, record: StreamRecord) -> str:
        cached = self._encoded.get(record.stream)
        if cached is not None and (cached[0] is record or cached[0] == record):
            return cached[1]
        text = json.dumps(record.stream) + ":" + json.dumps(record.to_json(), separators=(",", ":"))
        self._encoded[record.stream] = (record, text)
        return text


def _stored_state(state: dict[str, Any]) -> StoredState:
    streams = want_object(member(state, "streams", ""), "streams")
    records = tuple(
        StreamRecord.from_json(want_id(sid, at("streams", sid)), raw, at("streams", sid))
        for sid, raw in streams.items()
    )
    retired = []
    for i, fp in enumerate(want_list(state.get("retired", []), "retired")):
        try:
            retired.append(Fingerprint.from_json(fp))
        except ValueError:
            raise Damaged(f"{at('retired', i)}: not [size, digest]") from None
    return StoredState(
        want_id(member(state, "instance", ""), "instance"),
        want_time(member(state, "saved_at", ""), "saved_at"),
        records,
        tuple(retired),
    )


def want_id(value: object, where: str) -> str:
    """A stream or instance id as new_id makes them (and as the wire requires)."""
    text = want_str(value, where)
    if not STREAM_RE.match(text):
        raise Damaged(f"{where}: not an id of 16 lowercase hex digits")
    return text


def new_id() -> str:
    """A stream or instance id: 16 lowercase hex digits."""
    return secrets.token_hex(8)
