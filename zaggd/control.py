"""The local control socket: `zaggd status` asks a running daemon for its state.

A UNIX stream socket in the daemon's state folder, mode 0600 so only its user
(and root) may ask. One request per connection: the word `status`; the answer
is one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable

from zaggd.errors import ZaggdError
from zaggd.service import Worker

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 64


class ControlServer(Worker):
    def __init__(
        self, path: str, snapshot: Callable[[], dict[str, object]], on_crash: Callable[[str], None]
    ) -> None:
        super().__init__("zaggd-control", on_crash)
        self.path = path
        self.snapshot = snapshot
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
            if request != b"status":
                conn.sendall(b'{"error": "unknown request"}\n')
                return
            conn.sendall(json.dumps(self.snapshot(), default=str).encode() + b"\n")
        except OSError as exc:
            log.debug("control connection failed: %s", exc)


def query(path: str, timeout_s: float = 5.0) -> dict[str, object]:
    """Ask the daemon behind `path` for its status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
        sock.sendall(b"status\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except FileNotFoundError:
        raise ZaggdError(f"{path}: no control socket (is the daemon running?)") from None
    except OSError as exc:
        raise ZaggdError(f"{path}: cannot ask the daemon: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ZaggdError(f"{path}: the daemon's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ZaggdError(f"{path}: the daemon's answer is not a JSON object")
    return answer
