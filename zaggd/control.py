"""The local control socket: `zaggd status` asks a running daemon for its state.

A UNIX stream socket in the daemon's state folder, mode 0600 so only its user
(and root) may ask. One request per connection, a word: `status`, answered
with one JSON object of counters and streams, or `reload`, answered once the
reload that started after it has ended: {"reload": "done"} or {"reload":
"refused", "error": why}, so that `zaggd reload` (the units' ExecReload=)
fails when the daemon kept its running config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import time
from collections.abc import Callable
from typing import NoReturn

from zaggd.errors import ZaggdError
from zaggd.service import ReloadRequest, Worker

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 64
# A status answer holds a row per stream: a few MB for a busy collector.
MAX_ANSWER_BYTES = 32 << 20
MAX_ANSWER_DEPTH = 8
QUERY_TIMEOUT_S = 5.0
# Under systemd's default 90 s for ExecReload=: a reload stops and starts threads.
RELOAD_TIMEOUT_S = 80.0
_TEXT_KEYS = ("daemon", "node", "instance", "config", "status")


class ControlServer(Worker):
    def __init__(
        self,
        path: str,
        snapshot: Callable[[], dict[str, object]],
        on_crash: Callable[[str], None],
        reload: Callable[[], ReloadRequest] | None = None,
    ) -> None:
        super().__init__("zaggd-control", on_crash)
        self.path = path
        self.snapshot = snapshot
        self.reload = reload
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ZaggdError(
                f"{path}: cannot replace the control socket: {exc.strerror or exc}"
            ) from None
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(path)
        except OSError as exc:
            raise ZaggdError(
                f"{path}: cannot bind the control socket: {exc.strerror or exc}"
            ) from None
        finally:
            os.umask(old_umask)
        self._sock.listen(8)
        self._sock.settimeout(0.5)

    def work(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.tick()
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._answer(conn)
        finally:
            self._sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        try:
            request = conn.recv(MAX_REQUEST_BYTES).strip()
            if request == b"status":
                answer = {**self.snapshot(), "pid": os.getpid()}
            elif request == b"reload" and self.reload is not None:
                answer = self._reload()
            else:
                answer = {"error": "unknown request"}
            conn.sendall(json.dumps(answer, default=str).encode() + b"\n")
        except OSError as exc:
            log.debug("control connection failed: %s", exc)

    def _reload(self) -> dict[str, object]:
        """Ask the main loop for a reload and wait for its outcome, still ticking."""
        assert self.reload is not None
        request = self.reload()
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while not request.done.wait(0.5):
            self.tick()
            if self.stop_event.is_set():
                return {"reload": "refused", "error": "the daemon is stopping", "pid": os.getpid()}
            if time.monotonic() > deadline:
                return {"reload": "unknown", "error": "still reloading", "pid": os.getpid()}
        if request.refusal is None:
            return {"reload": "done", "pid": os.getpid()}
        return {"reload": "refused", "error": request.refusal, "pid": os.getpid()}


def query(path: str, timeout_s: float = QUERY_TIMEOUT_S) -> dict[str, object]:
    """Ask the daemon behind `path` for its status: a JSON object of checked shape.

    The answer is bounded in size, time and nesting, whatever answers on the
    socket; ZaggdError (one line, naming the socket) otherwise.
    """
    answer = _parse(path, _ask(path, timeout_s))
    _check_shape(path, answer)
    return answer


def ask_reload(path: str, timeout_s: float = RELOAD_TIMEOUT_S + 5) -> tuple[str | None, int]:
    """Have the daemon behind `path` reload: (None, its PID) once applied, or (why not, PID)."""
    answer = _parse(path, _ask(path, timeout_s, b"reload"))
    outcome, error, pid = answer.get("reload"), answer.get("error"), answer.get("pid")
    if not isinstance(pid, int) or outcome not in ("done", "refused", "unknown"):
        raise ZaggdError(f"{path}: the daemon does not take reloads over its control socket")
    if outcome == "done":
        return None, pid
    return str(error), pid


def _ask(path: str, timeout_s: float, request: bytes = b"status") -> bytes:
    deadline = time.monotonic() + timeout_s
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    data = bytearray()
    try:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.sendall(request + b"\n")
        while chunk := _recv_until(sock, deadline):
            data += chunk
            if len(data) > MAX_ANSWER_BYTES:
                raise ZaggdError(
                    f"{path}: the daemon's answer is over {MAX_ANSWER_BYTES >> 20} MiB"
                )
    except TimeoutError:
        raise ZaggdError(f"{path}: no complete answer within {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise ZaggdError(f"{path}: no control socket (is the daemon running?)") from None
    except PermissionError:
        raise ZaggdError(f"{path}: Permission denied: {who_may_ask(path)}") from None
    except OSError as exc:
        raise ZaggdError(f"{path}: cannot ask the daemon: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return bytes(data)


def who_may_ask(path: str) -> str:
    """Who may use the control socket at `path` (or in the folder `path` names)."""
    owner = "its owner"
    for candidate in (path, os.path.dirname(path)):
        try:
            uid = os.stat(candidate).st_uid
        except OSError:
            continue
        try:
            owner = f"user {pwd.getpwuid(uid).pw_name}"
        except KeyError:
            owner = f"uid {uid}"
        break
    return f"only root and {owner} (the daemon's user) may ask; try sudo"


def _recv_until(sock: socket.socket, deadline: float) -> bytes:
    left_s = deadline - time.monotonic()
    if left_s <= 0:
        raise TimeoutError
    sock.settimeout(left_s)
    return sock.recv(65536)


def _parse(path: str, raw: bytes) -> dict[str, object]:
    try:
        answer = json.loads(raw)
    except RecursionError:
        raise ZaggdError(f"{path}: the daemon's answer is nested too deeply") from None
    except ValueError:
        raise ZaggdError(f"{path}: the daemon's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ZaggdError(f"{path}: the daemon's answer is not a JSON object")
    if _depth_over(answer, MAX_ANSWER_DEPTH):
        raise ZaggdError(f"{path}: the daemon's answer is nested too deeply")
    return answer


def _depth_over(value: object, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` deep."""
    level: list[object] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


def _check_shape(path: str, answer: dict[str, object]) -> None:
    """The keys `zaggd status` prints have the types it prints."""

    def bad(where: str, what: str, value: object) -> NoReturn:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ZaggdError(
            f"{path}: the daemon's answer is malformed: {where}: expected {what}, got {shown}"
        )

    for key in _TEXT_KEYS:
        if not isinstance(answer.get(key), str | None):
            bad(key, "a string", answer[key])
    counters = answer.get("counters", {})
    if not isinstance(counters, dict):
        bad("counters", "an object", counters)
    for name, value in counters.items():
        if not _is_number(value):
            bad(_join("counters", name), "a number", value)
    streams = answer.get("streams_detail", [])
    if not isinstance(streams, list):
        bad("streams_detail", "a list", streams)
    for i, row in enumerate(streams):
        if not isinstance(row, dict):
            bad(f"streams_detail[{i}]", "an object", row)
        for name, value in row.items():
            if not (_is_number(value) or isinstance(value, str | bool | None)):
                where = _join(f"streams_detail[{i}]", name)
                bad(where, "a number, a string, a boolean or null", value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]"
