"""OffsetStore: per stream, the file identity, its path and how far it was read.

Written atomically (temp file, fsync, rename) to `state_dir/offsets.json`, a
versioned JSON file, on an interval, at shutdown and before the first block of
a new stream; read once at start so the producer resumes every stream where it
left off. Resuming a little behind is harmless: collectors drop duplicates.

Besides the identity and offset, a record keeps the largest size the file was
seen at (to count what a truncation or deletion while stopped lost), the floor
`start_at: end` set, and whether the stream is finished (its file gone, still
announced for a while). The store also keeps the first bytes of recently
retired streams, so a copy of one found after a restart is not read again.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zaggd.errors import ZaggdError
from zaggd.identity import FileId, Fingerprint
from zaggd.statefile import read_state, write_atomically

KIND = "zaggd-producer-offsets"
VERSION = 1


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
        }

    @classmethod
    def from_json(cls, stream: str, raw: dict[str, Any]) -> StreamRecord:
        return cls(
            stream=stream,
            source=str(raw["source"]),
            topic=str(raw["topic"]),
            path=str(raw["path"]),
            file_id=FileId(
                int(raw["device"]), int(raw["inode"]), Fingerprint.from_json(raw["fingerprint"])
            ),
            offset=int(raw["offset"]),
            rotated=bool(raw["rotated"]),
            finished=bool(raw.get("finished", False)),
            last_size=int(raw.get("last_size", raw["offset"])),
            floor=int(raw.get("floor", 0)),
        )


@dataclass(frozen=True, slots=True)
class StoredState:
    instance: str
    saved_at: float  # wall-clock time of the last save
    records: tuple[StreamRecord, ...]
    retired: tuple[Fingerprint, ...] = ()  # first bytes of recently retired streams


class OffsetStore:
    """The offset store file. Saves re-encode only the records that changed since the
    last one: with thousands of idle streams, a save is mostly a join of cached text."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "offsets.json")
        self._encoded: dict[str, tuple[StreamRecord, str]] = {}

    def load(self) -> StoredState | None:
        state = read_state(self.path, KIND, VERSION)
        if state is None:
            return None
        try:
            records = tuple(
                StreamRecord.from_json(sid, raw) for sid, raw in state["streams"].items()
            )
            retired = tuple(Fingerprint.from_json(fp) for fp in state.get("retired", []))
            return StoredState(str(state["instance"]), float(state["saved_at"]), records, retired)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZaggdError(f"{self.path}: damaged offset store ({exc}); move it aside") from None

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
        write_atomically(self.path, f'{head[:-1]},"streams":{{{streams}}}}}'.encode())

    def _encode(self, record: StreamRecord) -> str:
        cached = self._encoded.get(record.stream)
        if cached is not None and (cached[0] is record or cached[0] == record):
            return cached[1]
        text = json.dumps(record.stream) + ":" + json.dumps(record.to_json(), separators=(",", ":"))
        self._encoded[record.stream] = (record, text)
        return text


def new_id() -> str:
    """A stream or instance id: 16 lowercase hex digits."""
    return secrets.token_hex(8)
