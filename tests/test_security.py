"""CurveZMQ: key files, the ZAP allowlist, node ids bound to keys, hostile input.

Key-file and allowlist checks run in-process; the ZAP handler runs with real
CURVE sockets on 127.0.0.1; the daemons run as subprocesses in both
directions (collector binds with an allowlist of producers, producer binds
with an allowlist of collectors). Two hypothesis runs feed hostile messages to
the collector's decode-and-route path (in-process) and to a CURVE producer's
replay server (over the wire).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    REPO,
    Daemon,
    append_lines,
    collector_config,
    free_port,
    numbered_lines,
    output_names,
    producer_config,
    read_output_lines,
    stop_all,
    subscriber_thread,
    wait_until,
)
from zaggd import config as config_mod
from zaggd import security, wire
from zaggd.cli import main as cli_main
from zaggd.config import CurveConfig
from zaggd.errors import KeyFileError, ZaggdError

# --- fixtures and helpers --------------------------------------------------------


def make_keys(folder: Path, *names: str) -> Path:
    """`zaggd keygen` for each name, into folder/keys."""
    keys = folder / "keys"
    for name in names:
        security.keygen(str(keys), name)
    return keys


def allow(folder: Path, keys: Path, *names: str) -> Path:
    """An allow_dir holding the public keys of `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(keys / f"{name}.key", folder / f"{name}.key")
    return folder


def curve_server(keys: Path, name: str, allow_dir: Path) -> dict[str, str]:
    return {"secret_key_file": str(keys / f"{name}.key_secret"), "allow_dir": str(allow_dir)}


def curve_client(keys: Path, name: str, *servers: str) -> dict[str, Any]:
    files = [str(keys / f"{s}.key") for s in servers]
    return {
        "secret_key_file": str(keys / f"{name}.key_secret"),
        "server_key_file": files[0] if len(files) == 1 else files,
    }


def tcp() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def app_source(logs: Path) -> list[dict[str, Any]]:
    return [{"name": "app", "topic": "app", "paths": [f"{logs}/*.log"]}]


def write_log(logs: Path, prefix: str, count: int) -> list[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    lines = numbered_lines(prefix, 0, count)
    (logs / "a.log").write_bytes(b"".join(lines))
    return lines


def count_in(daemon: Daemon, text: str) -> int:
    return daemon.output().count(text)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    """A zmq.Context that must terminate promptly, taking its ZAP handler with it."""
    ctx = zmq.Context()
    yield ctx
    done = threading.Event()
    threading.Thread(target=lambda: (ctx.term(), done.set()), daemon=True).start()
    assert done.wait(5), "context did not terminate: a socket was left open"
    wait_until(lambda: not any(t.name == "zaggd-zap" for t in threading.enumerate()), 5)


def curve_pair(
    context: zmq.Context,
    keys: Path,
    allow_dir: Path,
) -> tuple[zmq.Socket, str]:
    """A SUB socket bound as a CURVE server with `allow_dir`, and its endpoint."""
    server = context.socket(zmq.SUB)
    server.setsockopt(zmq.LINGER, 0)
    server.setsockopt(zmq.SUBSCRIBE, b"")
    security.apply_curve(
        server, CurveConfig(str(keys / "collector.key_secret"), (), str(allow_dir)), True
    )
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}"


def try_send(
    context: zmq.Context,
    server: zmq.Socket,
    endpoint: str,
    curve: CurveConfig | None,
    timeout_s: float = 1.5,
) -> zmq.Frame | None:
    """Connect a PUB client (CURVE when `curve`), publish until received; the frame or None."""
    client = context.socket(zmq.PUB)
    client.setsockopt(zmq.LINGER, 0)
    try:
        if curve is not None:
            security.apply_curve(client, curve, False)
        client.connect(endpoint)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            client.send(b"probe")
            if server.poll(50):
                frame: zmq.Frame = server.recv(copy=False)
                return frame
        return None
    finally:
        client.close(linger=0)


# --- keygen and key files -----------------------------------------------------------


def test_keygen_writes_a_pair_pyzmq_reads_with_a_private_secret(tmp_path: Path) -> None:
    public, secret = security.keygen(str(tmp_path / "keys"), "web-01")
    assert (public, secret) == (
        str(tmp_path / "keys/web-01.key"),
        str(tmp_path / "keys/web-01.key_secret"),
    )
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    pub_only, none = zmq.auth.load_certificate(public)
    pub, sec = zmq.auth.load_certificate(secret)
    assert none is None and pub == pub_only and sec is not None
    assert zmq.curve_public(sec) == pub
    assert security.load_secret_key(secret) == (pub, sec)


def test_keygen_refuses_to_overwrite_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert cli_main(["keygen", str(keys), "web-01"]) == 0
    before = (keys / "web-01.key_secret").read_bytes()
    (keys / "web-01.key").unlink()  # even half a pair is kept
    assert cli_main(["keygen", str(keys), "web-01"]) == 2
    err = capsys.readouterr().err
    assert err == f"zaggd: {keys}/web-01.key_secret: already exists; refusing to overwrite a key\n"
    assert (keys / "web-01.key_secret").read_bytes() == before


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 65])
def test_keygen_refuses_a_name_that_is_not_a_node(tmp_path: Path, name: str) -> None:
    with pytest.raises(ZaggdError, match="key name is a node name"):
        security.keygen(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_secret_key_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _, secret = security.keygen(str(tmp_path), "web-01")
    os.chmod(secret, mode)
    with pytest.raises(KeyFileError) as info:
        security.load_secret_key(secret)
    assert str(info.value) == (
        f"{secret}: secret key file is open to group or others (mode {mode:04o}); run chmod 600 {secret}"
    )


GOOD_PUBLIC = zmq.curve_keypair()[0].decode()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "no public-key line"),
        (b"\x00\xff garbage\n", "no public-key line"),
        (b'curve\n    public-key = "short"\n', "public-key is not a 40-character Z85 key"),
        (
            b'curve\n    public-key = "' + b"~" * 40 + b'"\n',
            "public-key is not a 40-character Z85 key",
        ),
        (
            f'curve\n    public-key = "{GOOD_PUBLIC}"\n    public-key = "{GOOD_PUBLIC}"\n'.encode(),
            "given twice",
        ),
        (b"x" * 70_000, "too large for a key file"),
    ],
)
def test_malformed_key_file_is_a_one_line_error(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        security.load_public_key(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_secret_key_must_hold_a_matching_secret(tmp_path: Path) -> None:
    public, _ = security.keygen(str(tmp_path), "web-01")
    as_secret = tmp_path / "public-as-secret"
    shutil.copy(public, as_secret)
    os.chmod(as_secret, 0o600)
    with pytest.raises(KeyFileError, match="no secret-key in this file"):
        security.load_secret_key(str(as_secret))
    other = tmp_path / "mismatch.key_secret"
    other_secret = zmq.curve_keypair()[1].decode()
    other.write_text(
        f'curve\n    public-key = "{GOOD_PUBLIC}"\n    secret-key = "{other_secret}"\n'
    )
    os.chmod(other, 0o600)
    with pytest.raises(KeyFileError, match="public-key does not belong to secret-key"):
        security.load_secret_key(str(other))


def test_missing_key_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match=f"^{missing}: key file not found$"):
        security.load_public_key(str(missing))
    with pytest.raises(KeyFileError, match="not a regular file"):
        security.load_public_key(str(tmp_path))


def test_check_keys_reads_every_file_a_curve_config_names(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "c", "p")
    allowed = allow(tmp_path / "allowed", keys, "p")
    security.check_keys(CurveConfig(str(keys / "c.key_secret"), (), str(allowed)))
    security.check_keys(CurveConfig(str(keys / "p.key_secret"), (str(keys / "c.key"),), None))
    with pytest.raises(KeyFileError, match=r"missing\.key: key file not found"):
        security.check_keys(
            CurveConfig(
                str(keys / "p.key_secret"), (str(keys / "c.key"), str(keys / "missing.key"))
            )
        )


def test_daemon_refuses_a_group_readable_secret_key_at_start(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "collector")
    secret = keys / "collector.key_secret"
    os.chmod(secret, 0o640)
    allowed = allow(tmp_path / "allowed", keys)
    cfg = collector_config(
        tmp_path,
        "c1",
        {"bind": [tcp()], "replay": tcp(), "curve": curve_server(keys, "collector", allowed)},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.run(
        [sys.executable, "-m", "zaggd", "collector", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 78
    assert proc.stderr.splitlines()[-1] == (
        f"zaggd: {secret}: secret key file is open to group or others (mode 0640); run chmod 600 {secret}"
    )
    assert "Traceback" not in proc.stderr


# --- allowlists and server keys -------------------------------------------------------


def test_allowlist_names_each_key_after_its_file(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01", "web-02")
    allowed = allow(tmp_path / "allowed", keys, "web-01", "web-02")
    (allowed / "notes.txt").write_text("not a key")
    shutil.copy(keys / "web-01.key_secret", allowed / "web-01.key_secret")  # not a .key: ignored
    got = security.load_allowlist(str(allowed))
    want = {
        zmq.utils.z85.decode(security.load_public_key(str(keys / f"{n}.key"))): n
        for n in ("web-01", "web-02")
    }
    assert got == want


def test_allowlist_refuses_one_key_under_two_names(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01")
    allowed = allow(tmp_path / "allowed", keys, "web-01")
    shutil.copy(keys / "web-01.key", allowed / "web-02.key")
    with pytest.raises(KeyFileError, match=r"web-02\.key: same public key as web-01\.key"):
        security.load_allowlist(str(allowed))


def test_allowlist_refuses_a_world_writable_folder_and_bad_names(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01")
    allowed = allow(tmp_path / "allowed", keys, "web-01")
    os.chmod(allowed, 0o777)
    with pytest.raises(KeyFileError, match="allow_dir is writable by others"):
        security.load_allowlist(str(allowed))
    os.chmod(allowed, 0o755)
    shutil.copy(keys / "web-01.key", allowed / "bad name.key")
    with pytest.raises(KeyFileError, match="named after its node"):
        security.load_allowlist(str(allowed))
    with pytest.raises(KeyFileError, match="allow_dir not found"):
        security.load_allowlist(str(tmp_path / "missing"))


def test_server_key_is_chosen_by_host_then_by_node_name() -> None:
    keys = ["/k/web-01.key", "/k/web-02.key", "/k/db.key"]
    connect = ["tcp://web-01:7450", "tcp://Web-02:7450", "tcp://10.0.0.9:7450"]
    assert security.server_key_index(keys, "tcp://web-02:7451", connect) == 1
    assert security.server_key_index(keys, "tcp://10.0.0.9:7451", connect) == 2
    assert security.server_key_index(keys[:1], "tcp://anything:1", connect[:1]) == 0
    same_host = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"]
    assert security.server_key_index(keys, "tcp://127.0.0.1:9", same_host, "db") == 2
    with pytest.raises(
        ZaggdError, match=r"cannot tell which server_key_file belongs to tcp://127\.0\.0\.1:9"
    ):
        security.server_key_index(keys, "tcp://127.0.0.1:9", same_host, "web-09")
    with pytest.raises(ZaggdError, match="cannot tell"):
        security.server_key_index(keys, "ipc:///run/x", connect)


def test_refusals_are_logged_once_per_peer_and_interval() -> None:
    refusals = security.RefusalLog(interval_s=60, max_peers=3)
    assert refusals.should_log(("k1", "10.0.0.1"), now=0) == 0
    assert all(refusals.should_log(("k1", "10.0.0.1"), now=t) is None for t in range(1, 59))
    assert refusals.should_log(("k1", "10.0.0.2"), now=1) == 0  # another address: its own line
    assert refusals.should_log(("k1", "10.0.0.1"), now=61) == 58  # and how many went unlogged
    # A flood of new peers shares one line per interval instead of growing without bound.
    assert refusals.should_log(("k2", "x"), now=62) == 0
    assert refusals.should_log(("k3", "x"), now=62) == 0
    assert refusals.should_log(("k4", "x"), now=63) == 0  # the line for "other peers"
    assert all(refusals.should_log((f"k{i}", "x"), now=63) is None for i in range(5, 1000))
    assert len(refusals._peers) <= 4
    assert refusals.should_log(("k999", "x"), now=130) is not None  # old peers make room again


# --- the ZAP handler with real CURVE sockets ----------------------------------------------


def test_zap_answers_allowed_keys_with_their_name_and_holds_unknown_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = make_keys(tmp_path, "web-01", "rogue")
    allowed = allow(tmp_path / "allowed", keys, "web-01")
    auth = security.Authenticator(
        zmq.Context.instance(), str(allowed)
    )  # not started: answer() only
    key = {
        n: zmq.utils.z85.decode(security.load_public_key(str(keys / f"{n}.key")))
        for n in ("web-01", "rogue")
    }

    def request(
        credentials: list[bytes], mechanism: bytes = b"CURVE", address: bytes = b"10.1.2.3"
    ) -> list[bytes]:
        return [b"1.0", b"7", b"zaggd", address, b"", mechanism, *credentials]

    assert auth.answer(request([key["web-01"]]), now=0) == [
        b"1.0",
        b"7",
        b"200",
        b"OK",
        b"web-01",
        b"",
    ]
    with caplog.at_level(logging.WARNING, logger="zaggd.security"):
        for t in range(20):
            assert auth.answer(request([key["rogue"]]), now=t) is None
    rogue = security.load_public_key(str(keys / "rogue.key")).decode()
    lines = [r.getMessage() for r in caplog.records if "client refused" in r.getMessage()]
    assert lines == [f"client refused: public key {rogue} from 10.1.2.3: not in {allowed}"]
    assert auth.refused == 20
    assert auth.answer([b"1.0"], now=0)[2] == b"500"
    assert auth.answer(request([b"x" * 31]), now=0)[2] == b"400"
    assert auth.answer(request([], mechanism=b"PLAIN"), now=0)[2] == b"400"


def test_curve_server_takes_only_allowed_keys_and_names_them(
    tmp_path: Path,
    context: zmq.Context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = make_keys(tmp_path, "collector", "web-01", "rogue")
    allowed = allow(tmp_path / "allowed", keys, "web-01")
    caplog.set_level(logging.INFO, logger="zaggd.security")
    server, endpoint = curve_pair(context, keys, allowed)
    try:
        frame = try_send(
            context,
            server,
            endpoint,
            CurveConfig(str(keys / "web-01.key_secret"), (str(keys / "collector.key"),)),
        )
        assert frame is not None and frame.bytes == b"probe"
        assert security.node_of_key(context)(frame) == "web-01"
        assert (
            try_send(
                context,
                server,
                endpoint,
                CurveConfig(str(keys / "rogue.key_secret"), (str(keys / "collector.key"),)),
            )
            is None
        )
        assert try_send(context, server, endpoint, None) is None  # plain text
        wrong = CurveConfig(
            str(keys / "web-01.key_secret"), (str(keys / "rogue.key"),)
        )  # pins another server
        assert try_send(context, server, endpoint, wrong) is None

        def logged(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        rogue = security.load_public_key(str(keys / "rogue.key")).decode()
        wait_until(lambda: logged(f"client refused: public key {rogue} from 127.0.0.1"), 5)
        wait_until(lambda: logged("(plain text"), 5)
        wait_until(lambda: logged("the client has a wrong server key for this socket?"), 5)
    finally:
        server.close(linger=0)


def test_reload_lets_a_new_key_in_and_revokes_a_removed_one(
    tmp_path: Path, context: zmq.Context
) -> None:
    keys = make_keys(tmp_path, "collector", "web-01")
    allowed = allow(tmp_path / "allowed", keys)
    server, endpoint = curve_pair(context, keys, allowed)
    client = context.socket(zmq.PUB)
    client.setsockopt(zmq.LINGER, 0)
    try:
        security.apply_curve(
            client,
            CurveConfig(str(keys / "web-01.key_secret"), (str(keys / "collector.key"),)),
            False,
        )
        client.connect(endpoint)

        def received() -> zmq.Frame | None:
            client.send(b"probe")
            return server.recv(copy=False) if server.poll(50) else None

        assert all(received() is None for _ in range(10))
        allow(allowed, keys, "web-01")
        security.reload_allowlist(context)
        # The same client, never restarted, gets in at its next attempt: refusals are not final.
        frame = wait_until(received, security.HANDSHAKE_TIMEOUT_MS / 1000 + 10)
        assert security.node_of_key(context)(frame) == "web-01"
        (allowed / "web-01.key").unlink()
        security.reload_allowlist(context)
        frame = wait_until(received, 5)
        assert security.node_of_key(context)(frame) is None  # revoked: its messages are refused
    finally:
        client.close(linger=0)
        server.close(linger=0)


def test_reload_with_a_bad_key_keeps_the_running_allowlist(
    tmp_path: Path, context: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    keys = make_keys(tmp_path, "collector", "web-01")
    allowed = allow(tmp_path / "allowed", keys, "web-01")
    server, _ = curve_pair(context, keys, allowed)
    try:
        (allowed / "broken.key").write_text("nonsense")
        with caplog.at_level(logging.ERROR, logger="zaggd.security"):
            security.reload_allowlist(context)
        assert (
            f"allowlist not reloaded, keeping the 1 keys in use: {allowed}/broken.key"
            in caplog.text
        )
        auth = security._authenticators[context]
        assert set(auth.allowed.values()) == {"web-01"}
    finally:
        server.close(linger=0)


# --- daemons, collector binding ---------------------------------------------------------


def collector_binding(tmp_path: Path, keys: Path, allowed: Path) -> tuple[Daemon, str, str]:
    data, replay = tcp(), tcp()
    cfg = collector_config(
        tmp_path,
        "c1",
        {
            "bind": [data],
            "replay": replay,
            "topics": [""],
            "curve": curve_server(keys, "collector", allowed),
        },
    )
    return Daemon("collector", cfg, tmp_path), data, replay


def connecting_producer(
    tmp_path: Path, node: str, data: str, replay: str, curve: dict[str, Any] | None
) -> tuple[Daemon, Path]:
    logs = tmp_path / f"logs-{node}"
    logs.mkdir()
    publish: dict[str, Any] = {"connect": [data], "replay": [replay]}
    if curve is not None:
        publish["curve"] = curve
    return Daemon(
        "producer", producer_config(tmp_path, node, app_source(logs), publish), tmp_path
    ), logs


def test_allowed_producer_lines_arrive_and_an_unknown_key_is_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "collector", "web-01", "web-02")
    collector, data, replay = collector_binding(
        tmp_path, keys, allow(tmp_path / "allowed", keys, "web-01")
    )
    good, good_logs = connecting_producer(
        tmp_path, "web-01", data, replay, curve_client(keys, "web-01", "collector")
    )
    rogue, rogue_logs = connecting_producer(
        tmp_path, "web-02", data, replay, curve_client(keys, "web-02", "collector")
    )
    try:
        collector.start()
        good.start()
        rogue.start()
        want = write_log(good_logs, "good", 20_000)
        write_log(rogue_logs, "rogue", 1_000)
        out = tmp_path / "out-c1"
        wait_until(lambda: len(read_output_lines(out)) >= len(want), 30, 0.1)
        rogue_key = security.load_public_key(str(keys / "web-02.key")).decode()
        wait_until(
            lambda: (
                count_in(collector, f"client refused: public key {rogue_key} from 127.0.0.1") >= 1
            ),
            10,
        )
        time.sleep(security.HANDSHAKE_TIMEOUT_MS / 1000 + 1)  # the rogue knocks again, quietly
        assert read_output_lines(out) == want
        assert output_names(out / "app") == ["web-01-app.log"]
        assert count_in(collector, "client refused: public key") == 1
        assert collector.status()["counters"]["messages_dropped"] == 0
    finally:
        stop_all(good, rogue, collector)


def test_plain_text_producer_is_refused_by_a_curve_collector(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "collector", "web-01")
    collector, data, replay = collector_binding(
        tmp_path, keys, allow(tmp_path / "allowed", keys, "web-01")
    )
    plain, logs = connecting_producer(tmp_path, "web-01", data, replay, None)
    try:
        collector.start()
        plain.start()
        write_log(logs, "plain", 1_000)
        wait_until(lambda: count_in(collector, "(plain text") >= 1, 15)
        time.sleep(1.0)
        assert read_output_lines(tmp_path / "out-c1") == []
        assert collector.status()["counters"]["lines_written"] == 0
    finally:
        stop_all(plain, collector)


def test_producer_claiming_another_nodes_id_is_rejected_and_counted(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "collector", "web-01", "web-02")
    collector, data, replay = collector_binding(
        tmp_path, keys, allow(tmp_path / "allowed", keys, "web-01", "web-02")
    )
    honest, honest_logs = connecting_producer(
        tmp_path, "web-02", data, replay, curve_client(keys, "web-02", "collector")
    )
    # Holds web-02's key pair, but says it is web-01.
    (tmp_path / "impostor").mkdir()
    impostor, impostor_logs = connecting_producer(
        tmp_path / "impostor", "web-01", data, replay, curve_client(keys, "web-02", "collector")
    )
    try:
        collector.start()
        honest.start()
        impostor.start()
        want = write_log(honest_logs, "honest", 5_000)
        write_log(impostor_logs, "impostor", 5_000)
        out = tmp_path / "out-c1"
        wait_until(lambda: len(read_output_lines(out)) >= len(want), 30, 0.1)
        wait_until(lambda: collector.status()["counters"].get("node_key_mismatches", 0) > 0, 15)
        time.sleep(0.5)
        assert read_output_lines(out) == want
        assert output_names(out / "app") == ["web-02-app.log"]
        counters = collector.status()["counters"]
        assert counters["messages_dropped"] >= counters["node_key_mismatches"] > 0
        assert "web-01" not in {row["node"] for row in collector.status().get("streams_detail", [])}
        assert (
            count_in(
                collector,
                "message dropped: node id not bound to the sender's key: key web-02 sent as node web-01",
            )
            == 1
        )
    finally:
        stop_all(honest, impostor, collector)


def test_sighup_lets_in_a_producer_whose_key_was_added(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "collector", "web-01")
    allowed = allow(tmp_path / "allowed", keys)
    collector, data, replay = collector_binding(tmp_path, keys, allowed)
    producer, logs = connecting_producer(
        tmp_path, "web-01", data, replay, curve_client(keys, "web-01", "collector")
    )
    try:
        collector.start()
        producer.start()
        want = write_log(logs, "late", 2_000)
        wait_until(lambda: count_in(collector, "client refused: public key") >= 1, 15)
        assert read_output_lines(tmp_path / "out-c1") == []
        allow(allowed, keys, "web-01")
        collector.signal(signal.SIGHUP)
        wait_until(lambda: count_in(collector, "allowlist reloaded") == 1, 10)
        out = tmp_path / "out-c1"
        wait_until(
            lambda: len(read_output_lines(out)) >= len(want),
            security.HANDSHAKE_TIMEOUT_MS / 1000 + 25,
            0.1,
        )
        assert read_output_lines(out) == want
    finally:
        stop_all(producer, collector)


# --- daemons, producer binding ------------------------------------------------------------


def binding_producer(
    tmp_path: Path, node: str, keys: Path, allowed: Path, key: str = ""
) -> tuple[Daemon, Path, str]:
    logs = tmp_path / f"logs-{node}"
    logs.mkdir()
    data, replay = tcp(), tcp()
    publish = {
        "bind": [data],
        "replay": replay,
        "heartbeat_interval": "200ms",
        "curve": curve_server(keys, key or node, allowed),
    }
    cfg = producer_config(tmp_path, node, app_source(logs), publish)
    return Daemon("producer", cfg, tmp_path), logs, data


def connecting_collector(tmp_path: Path, keys: Path, connect: list[str], *servers: str) -> Daemon:
    """Collector c1, a CURVE client of each endpoint in `connect`, pinning `servers` in order."""
    subscribe = {
        "connect": connect,
        "topics": [""],
        "curve": curve_client(keys, "collector", *servers),
    }
    return Daemon("collector", collector_config(tmp_path, "c1", subscribe), tmp_path)


def test_producer_binds_serves_only_allowed_collectors_and_rereads_them_on_sighup(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path, "web-01", "c-good", "c-late")
    allowed = allow(tmp_path / "allowed", keys, "c-good")
    producer, logs, data = binding_producer(tmp_path, "web-01", keys, allowed)
    good = Daemon(
        "collector",
        collector_config(
            tmp_path,
            "good",
            {"connect": [data], "topics": [""], "curve": curve_client(keys, "c-good", "web-01")},
        ),
        tmp_path,
    )
    late = Daemon(
        "collector",
        collector_config(
            tmp_path,
            "late",
            {"connect": [data], "topics": [""], "curve": curve_client(keys, "c-late", "web-01")},
        ),
        tmp_path,
    )
    try:
        want = write_log(logs, "early", 10_000)
        producer.start()
        # Published before any collector was there: they can only come by replay, over CURVE too.
        good.start()
        late.start()
        wait_until(lambda: len(read_output_lines(tmp_path / "out-good")) >= len(want), 30, 0.1)
        assert read_output_lines(tmp_path / "out-good") == want
        assert good.status()["counters"]["bytes_repaired"] > 0
        late_key = security.load_public_key(str(keys / "c-late.key")).decode()
        wait_until(
            lambda: (
                count_in(producer, f"client refused: public key {late_key} from 127.0.0.1") >= 1
            ),
            10,
        )
        assert read_output_lines(tmp_path / "out-late") == []
        # Its key added and the producer reloaded, the refused collector gets in by itself.
        allow(allowed, keys, "c-late")
        producer.signal(signal.SIGHUP)
        wait_until(lambda: count_in(producer, "allowlist reloaded") == 1, 10)
        wait_until(
            lambda: len(read_output_lines(tmp_path / "out-late")) >= len(want),
            security.HANDSHAKE_TIMEOUT_MS / 1000 + 25,
            0.1,
        )
        assert read_output_lines(tmp_path / "out-late") == want
    finally:
        stop_all(good, late, producer)


def test_a_key_removed_from_the_allowlist_loses_its_connection_at_reload(tmp_path: Path) -> None:
    """Producer binds: a revoked collector, still connected, is dropped and refused after."""
    keys = make_keys(tmp_path, "web-01", "c-stays", "c-goes")
    allowed = allow(tmp_path / "allowed", keys, "c-stays", "c-goes")
    producer, logs, data = binding_producer(tmp_path, "web-01", keys, allowed)
    stays, goes = (
        Daemon(
            "collector",
            collector_config(
                tmp_path,
                name,
                {"connect": [data], "topics": [""], "curve": curve_client(keys, name, "web-01")},
            ),
            tmp_path,
        )
        for name in ("c-stays", "c-goes")
    )
    try:
        producer.start()
        stays.start()
        goes.start()
        first = write_log(logs, "before", 5_000)
        for name in ("c-stays", "c-goes"):
            wait_until(lambda n=name: read_output_lines(tmp_path / f"out-{n}") == first, 30, 0.1)
        (allowed / "c-goes.key").unlink()
        producer.signal(signal.SIGHUP)
        wait_until(lambda: count_in(producer, "dropping every collector connection") == 1, 10)
        goes_key = security.load_public_key(str(keys / "c-goes.key")).decode()
        wait_until(lambda: count_in(producer, f"client refused: public key {goes_key}") == 1, 15)
        more = numbered_lines("after", 0, 5_000)
        append_lines(logs / "a.log", more)
        wait_until(
            lambda: len(read_output_lines(tmp_path / "out-c-stays")) >= len(first + more), 30, 0.1
        )
        time.sleep(1.0)
        assert read_output_lines(tmp_path / "out-c-stays") == first + more
        assert read_output_lines(tmp_path / "out-c-goes") == first
        assert count_in(producer, "client refused: public key") == 1
    finally:
        stop_all(stays, goes, producer)


def test_a_producer_whose_key_is_removed_is_cut_off_at_reload(tmp_path: Path) -> None:
    """Collector binds: a revoked producer's connection is closed and its new lines refused."""
    keys = make_keys(tmp_path, "collector", "web-01", "web-02")
    allowed = allow(tmp_path / "allowed", keys, "web-01", "web-02")
    collector, data, replay = collector_binding(tmp_path, keys, allowed)
    stays, stays_logs = connecting_producer(
        tmp_path, "web-01", data, replay, curve_client(keys, "web-01", "collector")
    )
    goes, goes_logs = connecting_producer(
        tmp_path, "web-02", data, replay, curve_client(keys, "web-02", "collector")
    )
    try:
        collector.start()
        stays.start()
        goes.start()
        w1, w2 = write_log(stays_logs, "one", 3_000), write_log(goes_logs, "two", 3_000)
        out = tmp_path / "out-c1" / "app"
        wait_until(lambda: len(read_output_lines(tmp_path / "out-c1")) >= 6_000, 30, 0.1)
        (allowed / "web-02.key").unlink()
        collector.signal(signal.SIGHUP)
        wait_until(lambda: count_in(collector, "dropping every producer connection") == 1, 10)
        goes_key = security.load_public_key(str(keys / "web-02.key")).decode()
        wait_until(lambda: count_in(collector, f"client refused: public key {goes_key}") == 1, 15)
        more = numbered_lines("after", 0, 3_000)
        append_lines(stays_logs / "a.log", more)
        append_lines(goes_logs / "a.log", more)
        wait_until(lambda: len(read_output_lines(tmp_path / "out-c1")) >= 9_000, 30, 0.1)
        time.sleep(1.0)
        assert (out / "web-01-app.log").read_bytes() == b"".join(w1 + more)
        assert (out / "web-02-app.log").read_bytes() == b"".join(w2)
    finally:
        stop_all(stays, goes, collector)


def test_collector_pins_one_server_key_per_producer(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01", "web-02", "collector")
    allowed = allow(tmp_path / "allowed", keys, "collector")
    p1, logs1, data1 = binding_producer(tmp_path, "web-01", keys, allowed)
    p2, logs2, data2 = binding_producer(tmp_path, "web-02", keys, allowed)
    collector = connecting_collector(tmp_path, keys, [data1, data2], "web-01", "web-02")
    try:
        w1, w2 = write_log(logs1, "one", 3_000), write_log(logs2, "two", 3_000)
        p1.start()
        p2.start()
        collector.start()  # after the producers published: replays reach both, each with its own key
        out = tmp_path / "out-c1" / "app"
        wait_until(lambda: len(read_output_lines(tmp_path / "out-c1")) >= 6_000, 30, 0.1)
        assert (out / "web-01-app.log").read_bytes() == b"".join(w1)
        assert (out / "web-02-app.log").read_bytes() == b"".join(w2)
        assert count_in(p1, "client refused") == 0 and count_in(p2, "client refused") == 0
    finally:
        stop_all(collector, p1, p2)


def test_a_connecting_collector_binds_each_producer_to_its_pinned_key(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01", "web-02", "collector")
    allowed = allow(tmp_path / "allowed", keys, "collector")
    honest, honest_logs, data1 = binding_producer(tmp_path, "web-02", keys, allowed)
    # Holds web-01's key pair, so the collector's pin for web-01 lets it in, but says it is web-02.
    (tmp_path / "impostor").mkdir()
    impostor, impostor_logs, data2 = binding_producer(
        tmp_path / "impostor", "web-02", keys, allowed, key="web-01"
    )
    collector = connecting_collector(tmp_path, keys, [data1, data2], "web-02", "web-01")
    try:
        honest.start()
        impostor.start()
        collector.start()
        want = write_log(honest_logs, "honest", 5_000)
        write_log(impostor_logs, "impostor", 5_000)
        out = tmp_path / "out-c1"
        wait_until(lambda: len(read_output_lines(out)) >= len(want), 30, 0.1)
        wait_until(lambda: collector.status()["counters"].get("node_key_mismatches", 0) > 0, 15)
        time.sleep(1.0)  # heartbeats, data and any replays from the impostor: all refused
        assert read_output_lines(out) == want
        assert output_names(out / "app") == ["web-02-app.log"]
        assert (
            count_in(
                collector,
                "message dropped: node id not bound to the sender's key: key web-01 sent as node web-02",
            )
            == 1
        )
        assert "not bound to a key" not in collector.output()
    finally:
        stop_all(honest, impostor, collector)


def test_a_server_key_shared_by_several_producers_is_said_to_bind_no_node(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "producers", "collector")
    allowed = allow(tmp_path / "allowed", keys, "collector")
    p1, logs1, data1 = binding_producer(tmp_path, "web-01", keys, allowed, key="producers")
    p2, logs2, data2 = binding_producer(tmp_path, "web-02", keys, allowed, key="producers")
    collector = connecting_collector(tmp_path, keys, [data1, data2], "producers", "producers")
    try:
        p1.start()
        p2.start()
        collector.start()
        w1, w2 = write_log(logs1, "one", 2_000), write_log(logs2, "two", 2_000)
        out = tmp_path / "out-c1"
        wait_until(lambda: len(read_output_lines(out)) >= 4_000, 30, 0.1)
        assert (out / "app" / "web-01-app.log").read_bytes() == b"".join(w1)
        assert (out / "app" / "web-02-app.log").read_bytes() == b"".join(w2)
        assert count_in(collector, f"node ids from {data1}, {data2} are not bound to a key") == 1
        assert collector.status()["counters"].get("node_key_mismatches", 0) == 0
    finally:
        stop_all(collector, p1, p2)


# --- hostile input ---------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["node-a", "node-b", "..", ".", "a/b", "../../etc", "", "x" * 70]),
    st.text(min_size=0, max_size=12),
)
TOPICS = st.one_of(
    st.sampled_from(
        [b"app", b"../../../tmp/x", b"/etc/passwd", b"..", b".", b"a/../../b", b"\x00zaggd", b""]
    ),
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda t: t.encode("utf-8")),
)
STREAMS = st.one_of(st.sampled_from(["0123456789abcdef", "fedcba9876543210"]), st.text(max_size=20))
OFFSETS = st.one_of(
    st.just(0),
    st.integers(min_value=0, max_value=4096),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -1]),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


HOSTILE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([2, "1", None, 1.0, True]),
    "node": NAMES,
    "stream": STREAMS,
    "source": NAMES,
    "path": st.one_of(
        st.sampled_from(["../../x", "\x00", "", "/etc/passwd"]), st.text(max_size=30)
    ),
    "start": OFFSETS,
    "end": OFFSETS,
    "lines": st.integers(min_value=-2, max_value=50),
    "instance": st.sampled_from(["0123456789abcdef", "nope", ""]),
    "replay": st.sampled_from(["", "tcp://127.0.0.1:1", "x" * 2000]),
    "reason": st.text(max_size=300),
}


@st.composite
def hostile_messages(draw: st.DrawFn) -> list[bytes]:
    """Valid v1 messages with a few fields made hostile, or garbage outright.

    Starting from a valid message keeps most cases deep in the collector
    (sequencing, routing, writing) rather than all stopping at the first check.
    """
    kind = draw(st.sampled_from(["data"] * 6 + ["hb", "gone", "hello", "replay", "junk", "raw"]))
    if kind == "raw":
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
    lines = draw(st.integers(min_value=0, max_value=5))
    block = b"".join(draw(st.binary(max_size=20)).replace(b"\n", b"") + b"\n" for _ in range(lines))
    start = draw(st.sampled_from([0, 0, 0, 7, 100]))
    head: dict[str, Any] = {
        "v": 1,
        "k": kind,
        "node": draw(st.sampled_from(["node-a", "node-b", "node-c", "node-d"])),
        "stream": draw(
            st.sampled_from(["0123456789abcdef", "fedcba9876543210", "00000000000000aa"])
        ),
        "source": draw(st.sampled_from(["app", "web"])),
        "path": "/var/log/app.log",
        "start": start,
        "end": start + len(block),
        "lines": lines,
        "instance": "0123456789abcdef",
        "replay": "",
        "reason": "gone",
    }
    for key in draw(st.lists(st.sampled_from(sorted(HOSTILE_FIELDS)), max_size=3, unique=True)):
        head[key] = draw(st.one_of(HOSTILE_FIELDS[key], JSONISH))
    if kind == "junk":
        head = draw(st.dictionaries(st.text(max_size=8), JSONISH, max_size=6))
    if kind == "hb":
        rows = [
            [
                draw(STREAMS),
                draw(TOPICS).decode("utf-8", "replace"),
                draw(NAMES),
                "/x.log",
                draw(OFFSETS),
            ]
            for _ in range(draw(st.integers(0, 3)))
        ]
        block = json.dumps(rows).encode()
    if kind in ("hello", "replay", "gone") or draw(st.integers(0, 9)) == 0:
        block = draw(st.sampled_from([b"", block, b"junk"]))
    control = kind in ("hb", "hello", "replay") and draw(st.integers(0, 4)) > 0
    topic = wire.CONTROL_TOPIC if control else draw(st.one_of(st.just(b"app"), TOPICS))
    return [topic, json.dumps(head).encode(), block]


def build_subscriber(tmp_path: Path, context: zmq.Context):
    cfg_path = collector_config(
        tmp_path,
        "fuzz",
        {
            "bind": [tcp()],
            "replay": tcp(),
            "topics": ["", "app"],
            "max_nodes": 3,
            "max_streams_per_node": 3,
        },
        {
            "path": str(tmp_path / "out" / "{topic}" / "{node}-{source}.log"),
            "format": "jsonl",
            "fsync": "never",
        },
    )
    return subscriber_thread(context, config_mod.load_collector(str(cfg_path)))


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_fuzzed_messages_never_crash_the_collector_or_write_outside_its_output(
    tmp_path: Path, context: zmq.Context
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    before = files_under(tmp_path)
    sub, crashes = build_subscriber(work, context)
    pipe_in, pipe_out = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    for sock in (pipe_in, pipe_out):
        sock.setsockopt(zmq.LINGER, 0)
    pipe_out.bind("inproc://fuzz")
    pipe_in.connect("inproc://fuzz")
    sub._subs = [pipe_out]  # its main data socket, as far as _receive can tell
    try:

        @settings(
            max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(frames=hostile_messages(), bound_to=st.sampled_from([None, "node-a"]))
        def feed(frames: list[bytes], bound_to: str | None) -> None:
            # Half the cases run through the CURVE path: each message's node checked against its key.
            sub.key_node = None if bound_to is None else (lambda frame: bound_to)
            nodes_before = set(sub.nodes)
            pipe_in.send_multipart(frames)
            assert pipe_out.poll(1000)
            sub._receive(pipe_out)
            if bound_to is not None:
                assert set(sub.nodes) - nodes_before <= {"node-a"}  # no other node got in

        feed()
        sub.write_checkpoint()
    finally:
        sub.writer.close_all()
        pipe_in.close(linger=0)
        pipe_out.close(linger=0)
    assert crashes == [] and sub._held is None
    assert sub.counters.get("lines_written") > 0  # the fuzz reached the writer
    assert sub.counters.get("node_key_mismatches") > 0  # and the key check
    out, state = (work / "out").resolve(), (work / "state-fuzz").resolve()
    created = files_under(tmp_path) - before
    for path in created:
        resolved = path.resolve()
        assert resolved == work or resolved.is_relative_to(work), path
        if path.is_file() and not path.name.startswith("collector-"):
            assert resolved.is_relative_to(out) or resolved.is_relative_to(state), path
    assert len(sub.nodes) <= 3
    assert all(n.streams <= 3 for n in sub.nodes.values())


SENTINEL = "ffffffffffffffff"


def test_fuzzed_replay_requests_only_ever_read_the_sources_files(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "web-01", "collector")
    producer, logs, data = binding_producer(
        tmp_path, "web-01", keys, allow(tmp_path / "allowed", keys, "collector")
    )
    content = b"".join(write_log(logs, "real", 2_000))
    secret = b"TOP SECRET " * 1000 + b"\n"
    (logs / "secret.txt").write_bytes(secret)  # beside the watched files, matched by no source
    (tmp_path / "outside.log").write_bytes(secret)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    dealer = ctx.socket(zmq.DEALER)
    client = CurveConfig(str(keys / "collector.key_secret"), (str(keys / "web-01.key"),))
    try:
        producer.start()
        for sock in (sub, dealer):
            sock.setsockopt(zmq.LINGER, 0)
            security.apply_curve(sock, client, False)
        sub.setsockopt(zmq.SUBSCRIBE, wire.CONTROL_TOPIC)
        sub.connect(data)

        def heartbeat() -> wire.Heartbeat | None:
            if not sub.poll(100):
                return None
            msg = wire.decode(sub.recv_multipart())
            return msg if isinstance(msg, wire.Heartbeat) and msg.streams else None

        hb = wait_until(heartbeat, 15)
        real_stream = hb.streams[0].stream
        assert real_stream != SENTINEL
        dealer.connect(hb.replay)
        seen = {"data": 0, "gone": 0}

        @settings(
            max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(
            node=st.sampled_from(["web-01", "web-02", "../web-01"]),
            stream=st.one_of(
                st.just(real_stream),
                STREAMS,
                st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
            ),
            start=OFFSETS,
            length=st.integers(min_value=0, max_value=len(content) + 100),
            garbage=st.one_of(st.none(), st.lists(st.binary(max_size=32), max_size=4)),
        )
        def ask(
            node: str, stream: str, start: int, length: int, garbage: list[bytes] | None
        ) -> None:
            if garbage is not None:
                dealer.send_multipart(garbage or [b""])
            head = {
                "v": 1,
                "k": "replay",
                "node": node,
                "stream": stream,
                "start": start,
                "end": start + length,
            }
            dealer.send_multipart([wire.CONTROL_TOPIC, json.dumps(head).encode(), b""])
            # Answers come in order: the sentinel's "gone" closes this request's answers.
            dealer.send_multipart(
                wire.encode_replay_request(wire.ReplayRequest("web-01", SENTINEL, 0, 1))
            )
            while True:
                assert dealer.poll(10_000), "the replay server stopped answering"
                msg = wire.decode(dealer.recv_multipart())
                if isinstance(msg, wire.Gone) and msg.stream == SENTINEL:
                    return
                # Whatever else comes back is the watched file's own bytes at their offsets, or "gone".
                assert isinstance(msg, wire.Data | wire.Gone)
                seen["data" if isinstance(msg, wire.Data) else "gone"] += 1
                if isinstance(msg, wire.Data):
                    assert msg.header.stream == real_stream
                    assert bytes(msg.block) == content[msg.header.start : msg.header.end]
                    assert b"SECRET" not in bytes(msg.block)

        ask()
        assert seen["data"] > 0 and seen["gone"] > 0, seen
        assert producer.proc is not None and producer.proc.poll() is None
        assert producer.status()["counters"]["bad_requests"] > 0
    finally:
        sub.close(linger=0)
        dealer.close(linger=0)
        ctx.term()
        stop_all(producer)
