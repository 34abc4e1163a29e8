"""CurveZMQ for zaggd: key files, CURVE socket options and the ZAP allowlist.

What this module promises:

- `keygen` writes a key pair in the format of pyzmq's `zmq.auth`
  (`NAME.key`, `NAME.key_secret`), the secret one 0600, and never overwrites.
- Key files are checked before any socket uses them: a missing, malformed or
  mismatched key, or a secret key file open to group or others, is a one-line
  `KeyFileError` naming the file.
- `apply_curve` (and `apply_curve_for`) configure a socket on its owning
  thread, before bind/connect. The binding side is the CURVE server; the
  connecting side pins the binder's public key.
- A CURVE server never runs without its allowlist: one `Authenticator` (ZAP
  handler thread) per `zmq.Context` is started and bound before the first
  server socket binds, the sockets demand it (ZAP domain, enforced where
  libzmq supports that), and if it dies the process exits rather than
  accept unauthenticated clients.
- Only public keys found in `allow_dir` are accepted; each key's file name
  (`web-01.key`) is its name, handed back as the ZAP User-Id, so a receiver
  can bind the node a message claims to the key that authenticated it
  (`node_of_key`). The allowlist is re-read on reload (`reload_allowlist`);
  a key removed from it stops being accepted for new connections, and
  `node_of_key` stops vouching for messages already on open ones.
- An unknown key is refused by leaving its ZAP request unanswered: the
  handshake times out (HANDSHAKE_TIMEOUT_MS) and the client tries again, so a
  key added later and reloaded gets in without restarting the client (libzmq
  clients answered with an error never retry).
- Refusals are logged with key and address, once per peer and interval, and
  handshake failures (plain-text clients, clients holding the wrong server
  key) once per socket, reason and interval, never once per attempt.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from zaggd import runas, wire
from zaggd.config import CollectorConfig, CurveConfig, ProducerConfig
from zaggd.errors import KeyFileError, ZaggdError
from zaggd.service import Worker

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"zaggd"
ZAP_VERSION = b"1.0"
# Key files are a few hundred bytes; anything much larger is not one.
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_ALLOWED_KEYS = 100_000
REFUSAL_LOG_INTERVAL_S = 60.0
REFUSAL_LOG_PEERS = 1024
START_TIMEOUT_S = 10.0
POLL_MS = 100
# libzmq's ZMQ_PROTOCOL_ERROR_ZMTP_* values carried by HANDSHAKE_FAILED_PROTOCOL.
_CRYPTOGRAPHIC = 0x11000001
_MECHANISM_MISMATCH = 0x11000002
_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_MONITOR_STOPPED
)
# A refusal held by the ZAP handler ends in a handshake timeout: the handler logged it already.
_TIMEOUT_ERRNOS = frozenset({errno.EAGAIN, errno.ETIMEDOUT})
# How long a server waits for a client's handshake, a refused one's included: a refused
# client retries after this (libzmq never retries one answered with an error), so a key
# added to allow_dir and reloaded lets it in without a restart.
HANDSHAKE_TIMEOUT_MS = 5000

_SECRET_BANNER = """#   ****  Generated on {0} by zaggd keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""
_PUBLIC_BANNER = """#   ****  Generated on {0} by zaggd keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Copy it into the allow_dir of the daemons this one connects to (as NAME.key),
#   or give it as server_key_file to the daemons that connect to this one.

"""


# --- key files -------------------------------------------------------------------


def keygen(dir: str, name: str, owner: str | None = None) -> tuple[str, str]:
    """Write DIR/NAME.key and DIR/NAME.key_secret (0600); returns their paths.

    With `owner`, both files belong to that user and its group from the
    start (the service user, which must read its secret key).
    """
    if not wire.NAME_RE.match(name):
        raise ZaggdError(
            f"{name!r}: a key name is a node name: letters, digits, '.', '_' or '-', at most 64"
        )
    user = runas.lookup(owner) if owner is not None else None
    if user is not None and os.geteuid() not in (0, user.uid):
        raise ZaggdError(f"--owner {user.name}: giving files to another user needs root")
    public_path = os.path.join(dir, name + PUBLIC_SUFFIX)
    secret_path = os.path.join(dir, name + SECRET_SUFFIX)
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path}: already exists; refusing to overwrite a key")
    try:
        os.makedirs(dir, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{dir}: cannot create the key folder: {exc.strerror}") from None
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now().isoformat(timespec="seconds")
    body = f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    # The secret is written first, created 0600 from the start, so it is never readable by others.
    _write_new(
        secret_path,
        0o600,
        _SECRET_BANNER.format(now) + body + f'    secret-key = "{secret.decode()}"\n',
        user,
    )
    _write_new(public_path, 0o644, _PUBLIC_BANNER.format(now) + body, user)
    return public_path, secret_path


def _write_new(path: str, mode: int, text: str, owner: runas.User | None = None) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)  # before a byte of the key is in it
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def load_public_key(path: str) -> bytes:
    """The Z85 public key of a key file (public or secret)."""
    public, _ = _read_key_file(path, secret=False)
    return public


def load_secret_key(path: str) -> tuple[bytes, bytes]:
    """The Z85 (public, secret) pair of a secret key file only its owner can read."""
    public, secret = _read_key_file(path, secret=True)
    assert secret is not None
    return public, secret


def _read_key_file(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        # Non-blocking: a path swapped for a FIFO after the check must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except PermissionError as exc:
        hint = runas.denied(path, "chown" if secret else "chmod a+r")
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror} {hint}") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the file we read, not whatever the path names a moment later
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if secret and st.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: secret key file is open to group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}"
            )
        raw = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large for a key file")
    return _parse_key_file(path, raw, secret)


def _parse_key_file(path: str, raw: bytes, secret: bool) -> tuple[bytes, bytes | None]:
    """Parse the zmq.auth format: `public-key = "Z85"` and `secret-key = "Z85"` lines."""
    keys: dict[bytes, bytes] = {}
    for line in raw.splitlines():
        line = line.strip()
        if line.startswith(b"#"):
            continue
        name, sep, value = line.partition(b"=")
        name = name.strip()
        if sep and name in (b"public-key", b"secret-key"):
            if name in keys:
                raise KeyFileError(f"{path}: malformed key file: {name.decode()} given twice")
            keys[name] = value.strip(b" \t'\"")
    if b"public-key" not in keys:
        raise KeyFileError(f"{path}: malformed key file: no public-key line")
    public = _z85_key(path, "public-key", keys[b"public-key"])
    if not secret:
        return public, None
    if b"secret-key" not in keys:
        raise KeyFileError(f"{path}: no secret-key in this file (is it the public .key file?)")
    secret_key = _z85_key(path, "secret-key", keys[b"secret-key"])
    if zmq.curve_public(secret_key) != public:
        raise KeyFileError(f"{path}: malformed key file: public-key does not belong to secret-key")
    return public, secret_key


def _z85_key(path: str, what: str, value: bytes) -> bytes:
    try:
        if len(value) == 40 and len(z85.decode(value)) == 32:
            return value
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    raise KeyFileError(f"{path}: malformed key file: {what} is not a 40-character Z85 key")


def load_allowlist(folder: str) -> dict[bytes, str]:
    """Public keys (32 raw bytes) accepted from clients, each with its name (file stem)."""
    try:
        st = os.stat(folder)
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise KeyFileError(f"{folder}: allow_dir not found") from None
    except NotADirectoryError:
        raise KeyFileError(f"{folder}: allow_dir is not a folder") from None
    except PermissionError as exc:
        hint = runas.denied(folder, "chmod a+rx")
        raise KeyFileError(f"{folder}: cannot read allow_dir: {exc.strerror} {hint}") from None
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot read allow_dir: {exc.strerror}") from None
    # Whoever can write here can let any client in.
    if st.st_mode & stat.S_IWOTH:
        raise KeyFileError(f"{folder}: allow_dir is writable by others; run chmod o-w {folder}")
    allowed: dict[bytes, str] = {}
    for entry in names:
        if not entry.endswith(PUBLIC_SUFFIX) or entry.startswith("."):
            continue
        path = os.path.join(folder, entry)
        name = key_file_node(entry)
        if name is None:
            raise KeyFileError(
                f"{path}: a key in allow_dir is named after its node: letters, digits, '.', '_' or '-'"
            )
        key = z85.decode(load_public_key(path))
        if key in allowed:
            raise KeyFileError(
                f"{path}: same public key as {allowed[key]}{PUBLIC_SUFFIX}; one key, one node"
            )
        allowed[key] = name
        if len(allowed) > MAX_ALLOWED_KEYS:
            raise KeyFileError(f"{folder}: more than {MAX_ALLOWED_KEYS} keys in allow_dir")
    return allowed


def check_config_keys(cfg: ProducerConfig | CollectorConfig) -> None:
    """Check every key file a loaded config names, as check-config and a reload do."""
    curve = cfg.publish.curve if isinstance(cfg, ProducerConfig) else cfg.subscribe.curve
    if curve is not None:
        check_keys(curve)


def check_keys(curve: CurveConfig) -> None:
    """Check every key file a CURVE config names; KeyFileError for the first bad one."""
    load_secret_key(curve.secret_key_file)
    for path in curve.server_key_files:
        load_public_key(path)
    if curve.allow_dir is not None:
        load_allowlist(curve.allow_dir)


# --- sockets ---------------------------------------------------------------------


def apply_curve(sock: zmq.Socket, curve: CurveConfig, server: bool, index: int = 0) -> None:  # type: ignore[type-arg]
    """Make `sock` a CURVE server (with the ZAP allowlist) or a client pinning server key `index`.

    Called by the socket's owning thread before bind/connect. A connecting
    socket that reaches several binders calls it again with each index before
    each connect: libzmq takes the server key at connect time.
    """
    public, secret = load_secret_key(curve.secret_key_file)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    if not server:
        sock.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(_server_key_file(curve, index)))
        return
    if curve.allow_dir is None:
        raise ZaggdError("curve: a binding side needs allow_dir, the public keys it accepts")
    auth = ensure_authenticator(sock.context, curve.allow_dir)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
    _enforce_zap(sock)
    auth.watch(sock)


def pin_server_keys(sock: zmq.Socket, curve: CurveConfig) -> Callable[[int], None]:  # type: ignore[type-arg]
    """For endpoints.attach: before the i-th connect, pin the i-th binder's public key."""

    def pin(index: int) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(_server_key_file(curve, index)))

    return pin


def pinned_nodes(curve: CurveConfig, connect: Sequence[str]) -> list[str | None]:
    """Per connect endpoint, the node its pinned server key names; None where unbound.

    A server key file is named after its node (`web-01.key`), like the keys in
    allow_dir. Only a key that is one endpoint's own can bind it: a key given
    for several endpoints says nothing of which node is behind each.
    """
    files = [_server_key_file(curve, i) for i in range(len(connect))]
    uses: dict[str, int] = {}
    for path in files:
        uses[os.path.realpath(path)] = uses.get(os.path.realpath(path), 0) + 1
    return [key_file_node(p) if uses[os.path.realpath(p)] == 1 else None for p in files]


def key_file_node(path: str) -> str | None:
    """The node a public key file is named after, or None when its name is not a node's."""
    name = os.path.basename(path)
    if name.endswith(PUBLIC_SUFFIX):
        name = name[: -len(PUBLIC_SUFFIX)]
    return name if wire.NAME_RE.match(name) else None


def apply_curve_for(
    sock: zmq.Socket,  # type: ignore[type-arg]
    curve: CurveConfig,
    endpoint: str,
    connect_endpoints: Sequence[str],
    node: str | None = None,
) -> str | None:
    """Make `sock` a CURVE client of the producer whose replay endpoint is `endpoint`.

    The collector learned `endpoint` from a heartbeat; its server key is the one
    given for the `connect` endpoint on the same host (or the only one, or the
    one whose file is named after `node`). ZaggdError when none can be told apart.
    Returns the node that key binds the socket to (see pinned_nodes), if any.
    """
    index = server_key_index(curve.server_key_files, endpoint, connect_endpoints, node)
    apply_curve(sock, curve, False, index)
    nodes = pinned_nodes(curve, connect_endpoints)
    return nodes[index] if index < len(nodes) else None


def server_key_index(
    key_files: Sequence[str],
    endpoint: str,
    connect_endpoints: Sequence[str],
    node: str | None = None,
) -> int:
    """Which of `key_files` (one per connect endpoint) belongs to the binder at `endpoint`."""
    if len(key_files) == 1:
        return 0
    host = endpoint_host(endpoint)
    same_host = [
        i
        for i, e in enumerate(connect_endpoints[: len(key_files)])
        if host and endpoint_host(e) == host
    ]
    if len(same_host) == 1:
        return same_host[0]
    if node is not None:
        # Several binders on one host: a key file named after the node settles it.
        candidates = same_host or list(range(len(key_files)))
        named = [i for i in candidates if _stem(key_files[i]) == node]
        if len(named) == 1:
            return named[0]
    raise ZaggdError(
        f"curve: cannot tell which server_key_file belongs to {endpoint}"
        + (f" (node {node})" if node else "")
        + ": no single connect endpoint on that host; name the key file after the node"
    )


def endpoint_host(endpoint: str) -> str:
    """The host of a tcp:// endpoint, lowercased; "" for other transports."""
    if not endpoint.startswith("tcp://"):
        return ""
    rest = endpoint[len("tcp://") :]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if ";" in host:  # tcp://SOURCE;HOST:PORT
        host = host.split(";", 1)[1]
    return host.strip("[]").lower()


def _stem(path: str) -> str:
    base = os.path.basename(path)
    return base[: -len(PUBLIC_SUFFIX)] if base.endswith(PUBLIC_SUFFIX) else base


def _server_key_file(curve: CurveConfig, index: int) -> str:
    keys = curve.server_key_files
    if not keys:
        raise ZaggdError("curve: a connecting side needs server_key_file, the binder's public key")
    if len(keys) == 1:
        return keys[0]
    if not 0 <= index < len(keys):
        raise ZaggdError(
            f"curve: no server_key_file for connect endpoint {index + 1} (have {len(keys)})"
        )
    return keys[index]


def _enforce_zap(sock: zmq.Socket) -> None:  # type: ignore[type-arg]
    """Refuse clients when no ZAP handler answers, instead of libzmq's default of accepting them."""
    option = getattr(zmq, "ZAP_ENFORCE_DOMAIN", None)
    if option is None:
        return
    # A libzmq built without draft options refuses it: then the authenticator, bound before
    # any bind and ending the process if it dies, is what keeps a handler always there.
    with contextlib.suppress(zmq.ZMQError):
        sock.setsockopt(option, 1)


def node_of_key(context: zmq.Context) -> Callable[[zmq.Frame], str | None]:  # type: ignore[type-arg]
    """A function giving the name of the key a received frame was authenticated with.

    None when the frame has no User-Id (not a CURVE server socket) or the key
    has left allow_dir since (revoked by a reload): such messages are refused.
    """
    auth = _authenticators.get(context)
    if auth is None:
        raise ZaggdError("no CURVE authenticator runs on this context")
    return auth.node_of


def message_node(msg: wire.Message) -> str:
    """The node a message says it comes from (or is for)."""
    if isinstance(msg, wire.Data):
        return msg.header.node
    return msg.node


@dataclass(frozen=True, slots=True)
class AllowlistChange:
    """The names a re-read of allow_dir added and removed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def reload_allowlist(context: zmq.Context | None) -> AllowlistChange:  # type: ignore[type-arg]
    """Re-read allow_dir (SIGHUP); on a bad key file keep the running allowlist and log why.

    What changed: the holders of removed keys, still connected, must be dropped.
    A change is logged with the names added and removed; no change, nothing.
    """
    auth = _authenticators.get(context) if context is not None else None
    return auth.reload() if auth is not None else AllowlistChange()


def same_allow_dir(old: CurveConfig | None, new: CurveConfig | None) -> bool:
    """Whether a reload keeps CURVE on with the same allow_dir (so re-read it in place).

    Another folder is taken when the sockets are made anew; with CURVE
    turned off there is no allowlist to speak of.
    """
    return (
        old is not None
        and new is not None
        and old.allow_dir is not None
        and old.allow_dir == new.allow_dir
    )


def describe_curve(curve: CurveConfig | None, binds: bool) -> str:
    """One phrase for the start-up line and reloads: whether CURVE is on, and its keys."""
    if curve is None:
        return "CURVE off (connections neither encrypted nor authenticated)"
    if binds:
        try:
            count = len(load_allowlist(curve.allow_dir)) if curve.allow_dir else 0
        except KeyFileError:
            count = 0
        return (
            f"CURVE on: key {curve.secret_key_file}, {count} client keys allowed "
            f"in {curve.allow_dir}"
        )
    return f"CURVE on: key {curve.secret_key_file}, pinning {', '.join(curve.server_key_files)}"


def refused_clients(context: zmq.Context | None) -> int | None:  # type: ignore[type-arg]
    """How many CURVE handshakes the context's allowlist refused; None without one."""
    auth = _authenticators.get(context) if context is not None else None
    return auth.refused if auth is not None else None


# --- the ZAP handler ----------------------------------------------------------------

_authenticators: dict[object, Authenticator] = {}
_registry_lock = threading.Lock()
_monitor_ids = count()


def ensure_authenticator(context: zmq.Context, allow_dir: str) -> Authenticator:  # type: ignore[type-arg]
    """The context's running Authenticator for `allow_dir`, started (and bound) if need be."""
    with _registry_lock:
        auth = _authenticators.get(context)
        if auth is not None and auth.is_alive():
            if auth.allow_dir != allow_dir:
                auth.use(allow_dir)  # a reload that names another folder
            return auth
        auth = Authenticator(context, allow_dir)
        auth.start()
        if not auth.started.wait(START_TIMEOUT_S):
            raise ZaggdError("the CURVE authenticator did not start in time")
        if auth.error is not None:
            raise auth.error
        _authenticators[context] = auth
        return auth


def _fail_closed(thread_name: str) -> None:
    # Without its ZAP handler libzmq may let any client in: a restarted process is safer.
    log.critical("%s stopped; exiting rather than run CURVE without an allowlist", thread_name)
    logging.shutdown()
    os._exit(70)


class RefusalLog:
    """Which refusals to log: one line per peer and interval, in bounded memory."""

    def __init__(
        self, interval_s: float = REFUSAL_LOG_INTERVAL_S, max_peers: int = REFUSAL_LOG_PEERS
    ) -> None:
        self.interval_s = interval_s
        self.max_peers = max_peers
        # peer -> [when it was last logged, how many of its refusals went unlogged since]
        self._peers: dict[tuple[str, ...], list[float]] = {}

    def should_log(self, peer: tuple[str, ...], now: float) -> int | None:
        """None to stay quiet, else how many refusals of this peer went unlogged before."""
        if peer not in self._peers and len(self._peers) >= self.max_peers:
            self._forget_old(now)
            if len(self._peers) >= self.max_peers:
                peer = ("other peers",)  # a flood of new keys shares one line per interval
        entry = self._peers.get(peer)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return None
        quiet = int(entry[1]) if entry is not None else 0
        self._peers[peer] = [now, 0]
        return quiet

    def _forget_old(self, now: float) -> None:
        for peer in [p for p, (at, _) in self._peers.items() if now - at >= self.interval_s]:
            del self._peers[peer]


class Authenticator(Worker):
    """The ZAP handler of one zmq.Context: CURVE clients in allow_dir get in, named."""

    def __init__(self, context: zmq.Context, allow_dir: str) -> None:  # type: ignore[type-arg]
        super().__init__("zaggd-zap", _fail_closed)
        self.context = context
        self.allow_dir = allow_dir
        self.allowed = load_allowlist(allow_dir)
        self._names = frozenset(self.allowed.values())
        self.started = threading.Event()
        self.error: Exception | None = None
        self.refused = 0
        self._watch: queue.Queue[str] = queue.Queue()
        self._refusals = RefusalLog()
        self._handshakes = RefusalLog()
        self._lock = threading.Lock()
        if not self.allowed:
            log.warning("allow_dir %s holds no keys: every CURVE client will be refused", allow_dir)

    # Called from other threads ------------------------------------------------

    def watch(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Log handshake failures on `sock`; called by its owning thread before it binds."""
        endpoint = f"inproc://zaggd-zap-monitor-{next(_monitor_ids)}"
        sock.monitor(endpoint, _HANDSHAKE_EVENTS)
        self._watch.put(endpoint)

    def node_of(self, frame: zmq.Frame) -> str | None:
        try:
            name = frame.get("User-Id")
        except zmq.ZMQError:
            return None
        return name if isinstance(name, str) and name in self._names else None

    def reload(self) -> AllowlistChange:
        """Re-read allow_dir; what changed (see reload_allowlist)."""
        with self._lock:
            return self._load(self.allow_dir, "reloaded") or AllowlistChange()

    def use(self, allow_dir: str) -> None:
        with self._lock:
            if self._load(allow_dir, "now", always=True) is not None:
                self.allow_dir = allow_dir

    def _load(self, allow_dir: str, verb: str, always: bool = False) -> AllowlistChange | None:
        """The names added and removed, or None when allow_dir could not be read."""
        try:
            allowed = load_allowlist(allow_dir)
        except KeyFileError as exc:
            log.error(
                "allowlist not reloaded, keeping the %d keys in use: %s", len(self.allowed), exc
            )
            return None
        old, new = set(self.allowed.values()), set(allowed.values())
        # Whole-dict swaps: the ZAP thread reads either the old list or the new one.
        self.allowed = allowed
        self._names = frozenset(new)
        change = AllowlistChange(tuple(sorted(new - old)), tuple(sorted(old - new)))
        if change or always:
            log.info(
                "allowlist %s: %s, %d keys (added: %s; removed: %s)",
                verb,
                allow_dir,
                len(allowed),
                ", ".join(change.added) or "none",
                ", ".join(change.removed) or "none",
            )
        return change

    # The thread -----------------------------------------------------------------

    def work(self) -> None:
        # A ROUTER, not a REP: a refusal is an unanswered request (see answer()).
        zap = self.context.socket(zmq.ROUTER)
        zap.setsockopt(zmq.LINGER, 0)
        try:
            zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            zap.close(linger=0)
            self.error = ZaggdError(
                f"cannot start the CURVE authenticator on {ZAP_ENDPOINT}: {exc.strerror}"
            )
            self.started.set()
            return
        self.started.set()
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        monitors: dict[zmq.Socket, str] = {}  # type: ignore[type-arg]
        try:
            self._serve(zap, poller, monitors)
        except zmq.ContextTerminated:
            pass  # the daemon is terminating its context: ours is the last socket to go
        finally:
            for sock in [zap, *monitors]:
                sock.close(linger=0)
            with _registry_lock:
                if _authenticators.get(self.context) is self:
                    del _authenticators[self.context]

    def _serve(self, zap: zmq.Socket, poller: zmq.Poller, monitors: dict[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
        while not self.stop_event.is_set():
            self.tick()
            self._add_monitors(poller, monitors)
            for sock, _ in poller.poll(POLL_MS):
                if sock is zap:
                    frames = zap.recv_multipart()
                    envelope, request = frames[:2], frames[2:]  # [peer, b""] + RFC 27 request
                    reply = self._answer_safely(request)
                    if reply is not None:
                        zap.send_multipart([*envelope, *reply])
                else:
                    self._handshake_event(sock, poller, monitors)

    def _add_monitors(self, poller: zmq.Poller, monitors: dict[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
        while True:
            try:
                endpoint = self._watch.get_nowait()
            except queue.Empty:
                return
            pair = self.context.socket(zmq.PAIR)
            pair.setsockopt(zmq.LINGER, 0)
            pair.connect(endpoint)
            poller.register(pair, zmq.POLLIN)
            monitors[pair] = endpoint

    def _answer_safely(self, request: list[bytes]) -> list[bytes] | None:
        try:
            return self.answer(request, time.monotonic())
        except Exception:
            # A bug here must refuse the client, not stop the handler (which ends the process).
            log.exception("ZAP request not understood; client refused")
            return [
                ZAP_VERSION,
                request[1] if len(request) > 1 else b"",
                b"500",
                b"internal error",
                b"",
                b"",
            ]

    def answer(self, request: list[bytes], now: float) -> list[bytes] | None:
        """The ZAP reply to one request (RFC 27): 200 with the key's name; None to refuse.

        An unknown key gets no answer: the server's handshake times out and the
        client tries again later, by then perhaps in allow_dir. A 400 would make
        libzmq's client give up for good, until its process restarts.
        """
        if len(request) < 2:
            return [ZAP_VERSION, b"", b"500", b"malformed ZAP request", b"", b""]
        request_id = request[1]
        if len(request) < 6 or request[0] != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        address, mechanism, credentials = request[3], request[5], request[6:]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._refuse(
                mechanism.decode("ascii", "replace")[:20] or "-",
                address,
                "a CURVE key is required",
                now,
            )
            return [ZAP_VERSION, request_id, b"400", b"CURVE required", b"", b""]
        name = self.allowed.get(credentials[0])
        if name is None:
            self._refuse(
                z85.encode(credentials[0]).decode(), address, f"not in {self.allow_dir}", now
            )
            return None
        return [ZAP_VERSION, request_id, b"200", b"OK", name.encode(), b""]

    def _refuse(self, key: str, address: bytes, why: str, now: float) -> None:
        self.refused += 1
        peer = address.decode("ascii", "replace")[:64] or "-"
        quiet = self._refusals.should_log((key, peer), now)
        if quiet is not None:
            log.warning(
                "client refused: public key %s from %s: %s%s",
                key,
                peer,
                why,
                f" ({quiet} more attempts since the last report)" if quiet else "",
            )

    def _handshake_event(
        self,
        pair: zmq.Socket,  # type: ignore[type-arg]
        poller: zmq.Poller,
        monitors: dict[zmq.Socket, str],  # type: ignore[type-arg]
    ) -> None:
        try:
            event = parse_monitor_message(pair.recv_multipart())
        except (ValueError, KeyError, IndexError):
            return
        if event["event"] == zmq.EVENT_MONITOR_STOPPED:
            poller.unregister(pair)
            del monitors[pair]
            pair.close(linger=0)
            return
        where = (
            event["endpoint"].decode("utf-8", "replace")
            if isinstance(event["endpoint"], bytes)
            else str(event["endpoint"])
        )
        why = _handshake_reason(int(event["event"]), int(event["value"]))
        if why is None:
            return
        quiet = self._handshakes.should_log((where, why), time.monotonic())
        if quiet is not None:
            log.warning(
                "client refused on %s: %s%s",
                where,
                why,
                f" ({quiet} more since the last report)" if quiet else "",
            )


def _handshake_reason(event: int, value: int) -> str | None:
    """Why a handshake failed, from a monitor event; None when not worth a line."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == _MECHANISM_MISMATCH:
            return "the client does not use CURVE (plain text?)"
        if value == _CRYPTOGRAPHIC:
            return "CURVE handshake failed (the client has a wrong server key for this socket?)"
        return f"handshake protocol error 0x{value:08x}"
    if value in _TIMEOUT_ERRNOS:
        return None
    # A plain-text client often sees the mismatch first and hangs up: the server only sees that.
    return "the client hung up during the handshake (plain text, or a wrong server key?)"
