"""Socket setup: bind or connect, socket options, PGM rates, CURVE keys.

Called by the thread that owns the socket, inside its run(), since ZeroMQ
sockets must stay on one thread.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import zmq

from zaggd.config import PgmConfig
from zaggd.errors import ZaggdError
from zaggd.wire import MAX_FRAME_BYTES, MAX_HEADER_BYTES, MAX_TOPIC_BYTES, PACKED_TRAILER

log = logging.getLogger(__name__)


def is_multicast(endpoint: str) -> bool:
    return endpoint.startswith(("epgm://", "pgm://"))


# The kernel buffer that takes multicast packets while libzmq's I/O thread is
# busy: at 1 Gbit/s the default (208 KiB) fills in 2 ms, 4 MiB in 34 ms, and every
# overflow is a loss PGM must repair. Capped by net.core.rmem_max.
PGM_RCVBUF_BYTES = 4 * 1024 * 1024
RMEM_MAX_PATH = "/proc/sys/net/core/rmem_max"
PGM_IP_PROTOCOL = 113  # IANA: PGM
# Multicast messages are one frame each (wire.pack): topic, header, block, lengths.
MAX_PACKED_BYTES = MAX_TOPIC_BYTES + MAX_HEADER_BYTES + MAX_FRAME_BYTES + PACKED_TRAILER.size


def apply_pgm(sock: zmq.Socket, pgm: PgmConfig) -> None:  # type: ignore[type-arg]
    """PGM settings for a socket with an epgm:// or pgm:// endpoint, set before it attaches.

    The rate is also the receive window's size on a SUB (rate x recovery
    interval), so collectors should give the producers' rate.
    """
    sock.setsockopt(zmq.RATE, pgm.rate_kbps)
    sock.setsockopt(zmq.RECOVERY_IVL, max(1, round(pgm.recovery_interval_s * 1000)))
    sock.setsockopt(zmq.MULTICAST_HOPS, pgm.hops)
    if sock.type == zmq.SUB:
        # libzmq 4.3's PGM receiver breaks once its pipe reaches the high-water
        # mark: it stops reading the group for good, or aborts the process
        # (pgm_receiver.cpp: "Resource temporarily unavailable"). PGM has no
        # back-pressure to give anyway, so never let the pipe fill.
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.RCVBUF, PGM_RCVBUF_BYTES)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_PACKED_BYTES)
        warn_if_rmem_capped(PGM_RCVBUF_BYTES)


def warn_if_rmem_capped(wanted_bytes: int, path: str = RMEM_MAX_PATH) -> None:
    try:
        with open(path) as f:
            rmem_max = int(f.read().strip())
    except (OSError, ValueError):
        return
    if rmem_max < wanted_bytes:
        log.warning(
            "multicast receive buffer capped at %d bytes by net.core.rmem_max: "
            "expect losses (repaired by replay) at high rates; raise it with "
            "sysctl -w net.core.rmem_max=%d",
            rmem_max,
            wanted_bytes,
        )


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
    bind, connect = tuple(bind), tuple(connect)
    for endpoint in (*bind, *connect):
        if endpoint.startswith("pgm://"):
            check_raw_pgm(endpoint)
    bound = []
    for endpoint in bind:
        _bind_when_free(sock, endpoint)
        bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    for index, endpoint in enumerate(connect):
        if before_connect is not None:
            before_connect(index)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ZaggdError(f"cannot connect to {endpoint}: {_why(endpoint, exc)}") from None
    return bound


# libzmq closes a closed socket's listener on its I/O thread, a moment later: a
# reload that binds the same port again waits that moment out.
BIND_IN_USE_WAIT_S = 2.0


def _bind_when_free(sock: zmq.Socket, endpoint: str) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + BIND_IN_USE_WAIT_S
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise ZaggdError(f"cannot bind {endpoint}: {_why(endpoint, exc)}") from None
            time.sleep(0.02)


MIN_SEND_PAUSE_S = 0.0002
MAX_SEND_PAUSE_S = 0.01


def send_waiting(
    sock: zmq.Socket,  # type: ignore[type-arg]
    frames: Sequence[Any],
    keep_waiting: Callable[[], bool],
) -> bool:
    """Send; at the high-water mark wait for room, backing off, while keep_waiting() is True.

    XPUB with NODROP and ROUTER with MANDATORY report POLLOUT even when a send
    would fail with EAGAIN, so waiting in poll() would spin a core.
    """
    pause_s = MIN_SEND_PAUSE_S
    while True:
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            if not keep_waiting():
                return False
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, MAX_SEND_PAUSE_S)


def rebind(sock: zmq.Socket, endpoints: Iterable[str], timeout_s: float = 5.0) -> None:  # type: ignore[type-arg]
    """Unbind and bind again: every connection accepted there is closed.

    Under CURVE each client then authenticates anew, and one whose key left
    the allowlist is refused; ZeroMQ reconnects the others by itself.
    """
    for endpoint in endpoints:
        sock.unbind(endpoint)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock.bind(endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise ZaggdError(
                        f"cannot bind {endpoint} again: {_why(endpoint, exc)}"
                    ) from None
                time.sleep(0.01)


def _why(endpoint: str, exc: zmq.ZMQError) -> str:
    # Without pyzmq's "(addr=...)": the message names the endpoint already.
    text = zmq.strerror(exc.errno) if exc.errno is not None else str(exc.strerror)
    if is_multicast(endpoint) and exc.errno == errno.EINVAL:
        # What libzmq says when the address before ';' is on no interface here.
        return f"{text} (is the address before ';' an IP address of this host?)"
    return text


def check_raw_pgm(endpoint: str) -> None:
    """pgm:// needs raw IP sockets; without CAP_NET_RAW libzmq would abort the process later."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, PGM_IP_PROTOCOL).close()
    except OSError as exc:
        raise ZaggdError(
            f"cannot use {endpoint}: pgm:// sends raw IP packets, which needs CAP_NET_RAW "
            f"({exc.strerror}); use epgm:// (PGM over UDP), or grant the service "
            "AmbientCapabilities=CAP_NET_RAW"
        ) from None


def limit_incoming(sock: zmq.Socket) -> None:  # type: ignore[type-arg]
    """Refuse frames larger than protocol v1 allows before they are read into memory."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + MAX_HEADER_BYTES)


def advertised(endpoint: str) -> str:
    """The address collectors reach a bound endpoint at: the host name for a wildcard."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return f"tcp://{socket.gethostname()}:{endpoint[len(wildcard) :]}"
    return endpoint
