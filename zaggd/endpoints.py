"""Socket setup: bind or connect, socket options, PGM rates, CURVE keys.

Called by the thread that owns the socket, inside its run(), since ZeroMQ
sockets must stay on one thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

import zmq

from zaggd.config import PgmConfig
from zaggd.errors import ZaggdError
from zaggd.wire import MAX_FRAME_BYTES, MAX_HEADER_BYTES


def is_multicast(endpoint: str) -> bool:
    return endpoint.startswith(("epgm://", "pgm://"))


def apply_pgm(sock: zmq.Socket, pgm: PgmConfig) -> None:  # type: ignore[type-arg]
    sock.setsockopt(zmq.RATE, pgm.rate_kbps)
    sock.setsockopt(zmq.RECOVERY_IVL, int(pgm.recovery_interval_s * 1000))
    sock.setsockopt(zmq.MULTICAST_HOPS, pgm.hops)


def attach(
    sock: zmq.Socket,  # type: ignore[type-arg]
    bind: Iterable[str],
    connect: Iterable[str],
    before_connect: Callable[[int], None] | None = None,
) -> list[str]:
    """Bind and connect `sock`; returns the endpoints actually bound (ports resolved).

    `before_connect(i)` runs before the i-th connect: a CURVE client pins each
    binder's own server key there (libzmq reads it at connect time).
    """
    bound = []
    for endpoint in bind:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ZaggdError(f"cannot bind {endpoint}: {exc.strerror}") from None
        bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    for index, endpoint in enumerate(connect):
        if before_connect is not None:
            before_connect(index)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ZaggdError(f"cannot connect to {endpoint}: {exc.strerror}") from None
    return bound


def limit_incoming(sock: zmq.Socket) -> None:  # type: ignore[type-arg]
    """Refuse frames larger than protocol v1 allows before they are read into memory."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + MAX_HEADER_BYTES)


def advertised(endpoint: str) -> str:
    """The address collectors reach a bound endpoint at: the host name for a wildcard."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return f"tcp://{socket.gethostname()}:{endpoint[len(wildcard) :]}"
    return endpoint
