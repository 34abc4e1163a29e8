"""Versioned JSON state files, written atomically.

A write goes to a temporary file in the same folder, is fsynced, renamed over
the old file, and the folder is fsynced: after a crash the file holds either
the old state or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from typing import Any

from zaggd.errors import ZaggdError


def write_state(path: str, kind: str, version: int, body: dict[str, Any]) -> None:
    data = json.dumps({"kind": kind, "version": version, **body}, separators=(",", ":"))
    write_atomically(path, data.encode("utf-8"))


def write_atomically(path: str, data: bytes) -> None:
    """Replace `path` with `data`: a temporary file, fsynced, renamed, the folder fsynced."""
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: str, kind: str, version: int) -> dict[str, Any] | None:
    """The state body, or None when no state was ever written."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ZaggdError(f"{path}: cannot read state: {exc.strerror}") from None
    try:
        state = json.loads(raw)
    except ValueError:
        raise ZaggdError(
            f"{path}: state file is not valid JSON; move it aside to start afresh"
        ) from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise ZaggdError(f"{path}: not a {kind} state file")
    if state.get("version") != version:
        raise ZaggdError(
            f"{path}: {kind} state version {state.get('version')!r} is not {version}; "
            "this zaggd cannot read it"
        )
    return state


def ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise ZaggdError(f"{path}: cannot create folder: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ZaggdError(f"{path}: folder is not writable by this user")
