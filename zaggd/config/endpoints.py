"""ZeroMQ endpoints as a config names them: tcp://, ipc://, epgm:// and pgm://.

parse_endpoint() checks the text the way libzmq would refuse it, but earlier
and in one line: a host that is no host, a port out of range, an ipc:// path
too long for a socket, a multicast group that is not one, an interface given
by name (OpenPGM would look it up in DNS). A relative ipc:// path is taken
from the config file's folder. Errors are ValueError.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from zaggd.config.messages import quote

_SCHEMES = ("tcp", "ipc", "epgm", "pgm")
_WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]")
_HOST_NAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?",
    re.ASCII,
)
_INTERFACE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:@-]*", re.ASCII)
_DOTTED_RE = re.compile(r"[0-9.]+", re.ASCII)
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
# sun_path holds 108 bytes, the last one a NUL.
_MAX_IPC_PATH_BYTES = 107
NO_PGM = (
    "this libzmq has no PGM (multicast) support; install Debian's python3-zmq, "
    "or build pyzmq against the system libzmq: "
    "apt-get install libzmq3-dev && pip install --no-binary pyzmq pyzmq"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked ZeroMQ endpoint. `url` is what to bind or connect (ipc paths absolute)."""

    scheme: str  # tcp, ipc, epgm or pgm
    url: str
    host: str = ""  # tcp: the host as written ('*', an address or a name); pgm: the interface
    port: int = 0  # tcp and pgm; 0 for ipc

    @property
    def is_multicast(self) -> bool:
        return self.scheme in ("epgm", "pgm")

    @property
    def is_wildcard(self) -> bool:
        """A tcp endpoint on every interface, which others cannot connect to."""
        return self.scheme == "tcp" and self.host in _WILDCARD_HOSTS


def parse_endpoint(text: str, base_dir: str | None = None) -> Endpoint:
    """Check an endpoint; a relative ipc:// path is taken from base_dir (default: cwd)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an endpoint such as tcp://host:7450, got {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"expected an endpoint such as tcp://host:7450, got {quote(text)}")
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported endpoint {quote(text)}; use tcp://, ipc://, epgm:// or pgm://"
        )
    if scheme == "tcp":
        return _parse_tcp(text, rest)
    if scheme == "ipc":
        return _parse_ipc(rest, base_dir)
    return _parse_pgm(text, scheme, rest)


def _parse_tcp(text: str, rest: str) -> Endpoint:
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected tcp://HOST:PORT, got {quote(text)}")
    _check_tcp_host(host)
    return Endpoint("tcp", text, host, _parse_port(port))


def _check_tcp_host(host: str) -> None:
    if host == "*":
        return
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{quote(host)} is not an IPv6 address") from None
        return
    if ":" in host:
        raise ValueError(
            f"put an IPv6 address in brackets, as in tcp://[::1]:7450, got {quote(host)}"
        )
    if _DOTTED_RE.fullmatch(host):
        _parse_ipv4(host)
    elif not _HOST_NAME_RE.fullmatch(host):
        raise ValueError(f"{quote(host)} is not a host name, an IP address or '*'")


def _parse_ipv4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{quote(text)} is not an IPv4 address") from None


def _parse_port(text: str) -> int:
    if not _PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {quote(text)}")
    return int(text)


def _parse_ipc(rest: str, base_dir: str | None) -> Endpoint:
    if not rest:
        raise ValueError("expected a socket path after ipc://, as in ipc:///run/zaggd/data.sock")
    if "\0" in rest:
        raise ValueError("an ipc:// path cannot contain a NUL character")
    if rest.startswith("@"):  # Linux abstract namespace: a name, not a path
        path = rest
    elif rest.endswith("/"):
        raise ValueError(f"an ipc:// path names a socket file, not a folder: {quote(rest)}")
    else:
        path = os.path.normpath(os.path.join(base_dir or os.getcwd(), rest))
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > _MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"the ipc:// path is {size} bytes long, over the {_MAX_IPC_PATH_BYTES} "
            f"a socket path may have: {quote(path)}"
        )
    return Endpoint("ipc", "ipc://" + path)


def _parse_pgm(text: str, scheme: str, rest: str) -> Endpoint:
    address, sep, tail = rest.partition(";")
    group, sep2, port = tail.rpartition(":")
    if not sep or not sep2 or not address or not group:
        raise ValueError(
            f"expected {scheme}://ADDRESS;GROUP:PORT, as in "
            f"{scheme}://192.0.2.10;239.192.0.1:7450, got {quote(text)}"
        )
    if not _DOTTED_RE.fullmatch(address) and _INTERFACE_NAME_RE.fullmatch(address):
        raise ValueError(
            f"{quote(address)} looks like an interface name: give the interface's IP address, "
            "not its name (OpenPGM looks names up in DNS)"
        )
    _parse_ipv4(address)
    if not _DOTTED_RE.fullmatch(group) or not _parse_ipv4(group).is_multicast:
        raise ValueError(
            f"{quote(group)} is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255)"
        )
    return Endpoint(scheme, text, address, _parse_port(port))


def has_pgm() -> bool:
    import zmq  # lazily: config checks need no libzmq unless multicast is asked for

    return bool(zmq.has("pgm"))
