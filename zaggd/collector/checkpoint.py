"""Checkpoint: per stream the next expected offset, per open output file its size.

Written atomically, and only after the output files are flushed and fsynced
up to the sizes it records, so the two always agree. On start the collector
truncates each file back to its recorded size and asks for replays from the
recorded offsets: whatever was written after the last checkpoint is written
again, exactly once. Rotation records its intent here before it renames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from zaggd.errors import ZaggdError
from zaggd.statefile import read_state, write_state

KIND = "zaggd-collector-checkpoint"
VERSION = 1


@dataclass(slots=True)
class CheckpointState:
    # "node/stream" -> [expected, topic, source, path]
    streams: dict[str, list[Any]] = field(default_factory=dict)
    # output path -> {"size", "lines", "created_at", "ranges"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)  # nodes heard from
    rotations: list[dict[str, Any]] = field(default_factory=list)  # intents, see rotation.py


class Checkpoint:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "checkpoint.json")

    def load(self) -> CheckpointState | None:
        state = read_state(self.path, KIND, VERSION)
        if state is None:
            return None
        try:
            return CheckpointState(
                streams={str(k): list(v) for k, v in state["streams"].items()},
                files={str(k): dict(v) for k, v in state["files"].items()},
                nodes=[str(n) for n in state["nodes"]],
                rotations=[dict(r) for r in state.get("rotations", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZaggdError(f"{self.path}: damaged checkpoint ({exc}); move it aside") from None

    def save(self, state: CheckpointState) -> None:
        write_state(
            self.path,
            KIND,
            VERSION,
            {
                "streams": state.streams,
                "files": state.files,
                "nodes": state.nodes,
                "rotations": state.rotations,
            },
        )
