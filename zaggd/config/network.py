"""What publish and subscribe share: endpoint keys, bind or connect, CURVE and PGM settings.

Endpoints are read with the YAML item they came from, so a cross-check (two
bound endpoints on one address, a key file per connect endpoint) names the
very item at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zaggd.config.endpoints import NO_PGM, Endpoint, has_pgm, parse_endpoint
from zaggd.config.model import CurveConfig, PgmConfig
from zaggd.config.nodes import Val, text, text_or_items
from zaggd.config.schema import Key, Section, Values, ValueType
from zaggd.config.values import Duration, Integer, Path, Rate

Endpoints = list[tuple[Endpoint, Val]]

_ANY_SCHEME = "^(tcp|ipc|epgm|pgm)://."
_UNICAST = "^(tcp|ipc)://."
_NOT_MULTICAST = "replays do not go over multicast; give a tcp:// or ipc:// endpoint"


def _endpoint(val: Val) -> Endpoint:
    written = text(val, "an endpoint such as tcp://host:7450", hint=False)
    try:
        return parse_endpoint(written, val.folder)
    except ValueError as e:
        val.fail(str(e))


def _one_or_list(item: dict[str, Any], least: int) -> dict[str, Any]:
    many: dict[str, Any] = {"type": "array", "items": item}
    if least:
        many["minItems"] = least
    return {"anyOf": [item, many]}


@dataclass(frozen=True, slots=True)
class EndpointList(ValueType):
    """An endpoint or a list of them, no two alike; `replay`: no multicast (replays are unicast)."""

    replay: bool = False

    def read(self, val: Val) -> Endpoints:
        endpoints: Endpoints = []
        seen: dict[str, Val] = {}
        for item in text_or_items(val, "an endpoint or a list of endpoints"):
            endpoint = _endpoint(item)
            if endpoint.url in seen:
                item.fail(f"duplicate endpoint (also {seen[endpoint.url].path})")
            seen[endpoint.url] = item
            endpoints.append((endpoint, item))
        if self.replay:
            for endpoint, item in endpoints:
                if endpoint.is_multicast:
                    item.fail(_NOT_MULTICAST)
        else:
            self._check_data(val, endpoints)
        return endpoints

    def _check_data(self, val: Val, endpoints: Endpoints) -> None:
        """bind or connect: at least one; multicast needs a libzmq with PGM."""
        if not endpoints:
            val.fail("expected at least one endpoint, got an empty list")
        for endpoint, item in endpoints:
            if endpoint.is_multicast and not has_pgm():
                item.fail(NO_PGM)

    def json(self) -> dict[str, Any]:
        pattern = _UNICAST if self.replay else _ANY_SCHEME
        return _one_or_list({"type": "string", "pattern": pattern}, 0 if self.replay else 1)

    def describe(self) -> str:
        if self.replay:
            return "endpoint or list (`tcp://`, `ipc://`)"
        return "endpoint or list (`tcp://`, `ipc://`, `epgm://`, `pgm://`)"


@dataclass(frozen=True, slots=True)
class Advertise(ValueType):
    """An endpoint others can reach: unicast, and no wildcard host."""

    def read(self, val: Val) -> Endpoint:
        endpoint = _endpoint(val)
        if endpoint.is_multicast:
            val.fail(_NOT_MULTICAST)
        if endpoint.is_wildcard:
            val.fail(f"name a host collectors can reach, not the wildcard {endpoint.host!r}")
        return endpoint

    def json(self) -> dict[str, Any]:
        return {"type": "string", "pattern": _UNICAST}

    def describe(self) -> str:
        return "endpoint (`tcp://`, `ipc://`)"


def direction(values: Values) -> tuple[bool, Endpoints]:
    """(binds, endpoints) from whichever of bind and connect was given."""
    if values.has("bind"):
        return True, values.values["bind"]
    endpoints: Endpoints = values.values["connect"]
    for endpoint, item in endpoints:
        if endpoint.host == "*":
            item.fail("cannot connect to the wildcard '*'; name a host")
    return False, endpoints


def check_no_clash(bound: Endpoints) -> None:
    """Endpoints a daemon binds must not take the same address twice."""
    for i, (endpoint, item) in enumerate(bound):
        for other, other_item in bound[:i]:
            if _is_clash(endpoint, other):
                item.fail(f"binds the same address as {other_item.path}")


def _is_clash(a: Endpoint, b: Endpoint) -> bool:
    if a.url == b.url:
        return True
    if a.scheme != "tcp" or b.scheme != "tcp" or a.port != b.port:
        return False
    return a.host == b.host or a.is_wildcard or b.is_wildcard


def urls(endpoints: Endpoints) -> tuple[str, ...]:
    return tuple(endpoint.url for endpoint, _ in endpoints)


# --- curve ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyFiles(ValueType):
    """A key file path, or a list of them (one per connect endpoint)."""

    def read(self, val: Val) -> list[str]:
        read = Path("a key file path").read
        given = text_or_items(val, "a key file path or a list of them")
        if not given:
            val.fail("expected at least one key file, got an empty list")
        return [read(item) for item in given]

    def json(self) -> dict[str, Any]:
        return _one_or_list({"type": "string", "minLength": 1}, 1)

    def describe(self) -> str:
        return "path or list of paths"


CURVE = Section(
    (
        Key(
            "secret_key_file",
            Path("a key file path"),
            "this daemon's secret key file (`zaggd keygen DIR NAME` makes `NAME.key_secret`)",
            required=True,
            hint="this daemon's secret key file",
        ),
        Key(
            "server_key_file",
            KeyFiles(),
            "connecting side: the binder's public key file, one per connect endpoint",
        ),
        Key(
            "allow_dir",
            Path("a folder path"),
            "binding side: the folder of public keys (`NAME.key`) it accepts",
        ),
    )
)

CURVE_KEY = Key(
    "curve",
    CURVE,
    "CurveZMQ encryption and authentication, off when absent; see [docs/security.md](docs/security.md)",
)

_CURVE_MULTICAST = (
    "CURVE cannot protect multicast (epgm/pgm) traffic; "
    "use tcp:// endpoints with curve, or remove curve"
)


def finish_curve(owner: Values, binds: bool, endpoints: Endpoints) -> CurveConfig | None:
    if not owner.has("curve"):
        return None
    curve: Values = owner.values["curve"]
    if any(endpoint.is_multicast for endpoint, _ in endpoints):
        owner.vals["curve"].fail(_CURVE_MULTICAST)
    if binds:
        if curve.has("server_key_file"):
            curve.vals["server_key_file"].fail(
                "only used on the connecting side; a binding side checks clients against allow_dir"
            )
        allow_dir = curve.require("allow_dir", "the folder of public keys this side accepts")
        return CurveConfig(curve.values["secret_key_file"], (), allow_dir)
    if curve.has("allow_dir"):
        curve.vals["allow_dir"].fail(
            "only used on the binding side; a connecting side names server_key_file"
        )
    keys: list[str] = curve.require("server_key_file", "the binder's public key file")
    if len(keys) != len(endpoints):
        curve.vals["server_key_file"].fail(
            f"expected {len(endpoints)} public key files, one per connect endpoint, got {len(keys)}"
        )
    return CurveConfig(curve.values["secret_key_file"], tuple(keys), None)


# --- pgm -------------------------------------------------------------------------

PGM = Section(
    (
        Key("rate", Rate(), "multicast send rate", default=100_000),
        Key(
            "recovery_interval",
            Duration(0.001, 3600),
            "how long sent data stays available for repairs by multicast",
            default=2.0,
        ),
        Key("hops", Integer(1, 255), "how many router hops packets may cross", default=1),
    ),
    build=lambda values: PgmConfig(**values.fields()),
)

PGM_KEY = Key(
    "pgm",
    PGM,
    "multicast settings; see [docs/multicast.md](docs/multicast.md)",
    default=PgmConfig(),
)
