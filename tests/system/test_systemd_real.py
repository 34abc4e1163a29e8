"""zaggd's units under a real systemd: notify, reload, watchdog, journald.

In the booted Debian 12 with the .deb installed, a producer watches
/var/log/app/*.log and publishes on tcp://127.0.0.1:7450 (replay 7451); a
collector subscribes to everything and writes under /var/log/zaggd/. Both
run as the packaged services, as the zaggd user, sandboxed as shipped.
The tests run in file order and build on one another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import nspawn
from tests.system.conftest import is_installed

pytestmark = pytest.mark.system

NODE = "sys-node"
PRODUCER = "zaggd-producer.service"
COLLECTOR = "zaggd-collector.service"
START_TIMEOUT_S = 60
ARRIVAL_TIMEOUT_S = 30

PRODUCER_YAML = f"""\
node: {NODE}
state_dir: /var/lib/zaggd/producer
publish:
  bind: ["tcp://127.0.0.1:7450"]
  replay: "tcp://127.0.0.1:7451"
sources:
  - name: app
    topic: app
    paths: ["/var/log/app/*.log"]
    start_at: beginning
"""

SECOND_SOURCE_YAML = """\
  - name: extra
    topic: extra
    paths: ["/var/log/app2/*.log"]
    start_at: beginning
"""

COLLECTOR_YAML = """\
state_dir: /var/lib/zaggd/collector
subscribe:
  connect: ["tcp://127.0.0.1:7450"]
  topics: [""]
output:
  path: "/var/log/zaggd/{topic}/{node}.log"
  format: raw
  group: adm
  mode: 0640
"""

WATCHDOG_DROPIN = """\
[Service]
WatchdogSec=3s
# A stopped process cannot act on SIGABRT: let systemd SIGKILL it soon.
TimeoutAbortSec=3s
"""


def show(c: nspawn.Container, unit: str, *props: str) -> dict[str, str]:
    out = c.run(["systemctl", "show", unit, *(f"-p{p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def output_lines(c: nspawn.Container, topic: str) -> list[str]:
    path = c.root / f"var/log/zaggd/{topic}/{NODE}.log"
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def append_lines(c: nspawn.Container, path: str, lines: list[str]) -> None:
    # Written from the host into the live tree, as an application would.
    with open(c.root / path.lstrip("/"), "a") as f:
        f.write("".join(f"{line}\n" for line in lines))


def wait_for_lines(c: nspawn.Container, topic: str, expected: list[str]) -> None:
    arrived = nspawn.wait_until(
        lambda: output_lines(c, topic) == expected, timeout_s=ARRIVAL_TIMEOUT_S
    )
    got = output_lines(c, topic)
    assert arrived, (
        f"{topic}: {len(got)} of {len(expected)} lines after {ARRIVAL_TIMEOUT_S} s "
        f"(last: {got[-3:]})\n{journal_text(c)}"
    )


def journal_text(c: nspawn.Container) -> str:
    return c.run(f"journalctl -b --no-pager -n 60 -u {PRODUCER} -u {COLLECTOR}", check=False).stdout


def journal_entries(c: nspawn.Container, unit: str, *args: str) -> list[dict[str, object]]:
    out = c.run(["journalctl", "-b", "--no-pager", "-o", "json", "-u", unit, *args]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def daemon_lines(c: nspawn.Container, unit: str) -> list[dict[str, object]]:
    """Journal entries the daemon wrote to stderr (not systemd's own)."""
    return [e for e in journal_entries(c, unit) if e.get("_TRANSPORT") == "stdout"]


@pytest.fixture(scope="module")
def services(container: nspawn.Container, deb: Path) -> Iterator[nspawn.Container]:
    c = container
    if not is_installed(c):
        c.install_deb(deb)
    c.run("install -d -o root -g adm -m 0750 /var/log/app /var/log/app2")
    c.write_file("/etc/zaggd/producer.yaml", PRODUCER_YAML)
    c.write_file("/etc/zaggd/collector.yaml", COLLECTOR_YAML)
    c.run(["zaggd", "check-config", "/etc/zaggd/producer.yaml"])
    c.run(["zaggd", "check-config", "/etc/zaggd/collector.yaml"])
    yield c
    c.run(f"systemctl stop {PRODUCER} {COLLECTOR}", check=False, timeout_s=90)


def test_services_start_as_notify_and_reach_active(services: nspawn.Container) -> None:
    c = services
    # Type=notify: start returns only after READY=1.
    c.run(f"systemctl start {COLLECTOR} {PRODUCER}", timeout_s=START_TIMEOUT_S)
    for unit in (COLLECTOR, PRODUCER):
        props = show(c, unit, "ActiveState", "SubState", "Type", "User", "StatusText")
        assert props["ActiveState"] == "active", f"{unit}: {props}\n{journal_text(c)}"
        assert props["Type"] == "notify"
        assert props["User"] == "zaggd"
        assert props["StatusText"], f"{unit} sent no STATUS="
    owner = c.run("stat -c %U /var/lib/zaggd/producer /var/log/zaggd").stdout.split()
    assert owner == ["zaggd", "zaggd"]


def test_appended_lines_arrive_at_the_collector(services: nspawn.Container) -> None:
    c = services
    lines = [f"app line {i} {'x' * (i % 50)}" for i in range(500)]
    append_lines(c, "/var/log/app/a.log", lines[:200])
    append_lines(c, "/var/log/app/a.log", lines[200:])
    wait_for_lines(c, "app", lines)


def test_members_of_adm_read_the_aggregate_files_and_others_do_not(
    services: nspawn.Container,
) -> None:
    """output.group adm, output.mode 0640: Debian's readers of logs read the output."""
    c = services
    c.run("id alice >/dev/null 2>&1 || useradd --no-create-home --groups adm alice")
    path = f"/var/log/zaggd/app/{NODE}.log"
    assert output_lines(c, "app"), "no output yet"
    modes = c.run(f"stat -c '%U %G %a' /var/log/zaggd /var/log/zaggd/app {path}").stdout
    assert modes.splitlines() == ["zaggd zaggd 755", "zaggd adm 750", "zaggd adm 640"]
    read = c.run(["runuser", "-u", "alice", "--", "cat", path], check=False)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == output_lines(c, "app")
    other = c.run(["runuser", "-u", "nobody", "--", "cat", path], check=False)
    assert other.returncode != 0 and "Permission denied" in other.stderr


def test_status_as_another_user_says_permission_denied_and_who_may_ask(
    services: nspawn.Container,
) -> None:
    c = services
    asked = c.run(["runuser", "-u", "nobody", "--", "zaggd", "status"], check=False)
    assert (asked.returncode, asked.stderr) == (
        2,
        "zaggd: /var/lib/zaggd/collector: Permission denied: only root and user zaggd "
        "(the daemon's user) may ask; try sudo\n",
    )
    named = c.run(
        ["runuser", "-u", "nobody", "--", "zaggd", "status", "-c", "/etc/zaggd/producer.yaml"],
        check=False,
    )
    assert (named.returncode, named.stderr) == (
        2,
        "zaggd: /var/lib/zaggd/producer/control.sock: Permission denied: only root and "
        "user zaggd (the daemon's user) may ask; try sudo\n",
    )
    as_root = c.run(["zaggd", "status"])
    assert f"producer {NODE}" in as_root.stdout and "collector" in as_root.stdout
    assert "  collectors  1\n" in as_root.stdout, as_root.stdout  # who hears the producer


CURVE_YAML = """\
node: web-01
state_dir: /var/lib/zaggd/curve
publish:
  bind: ["tcp://127.0.0.1:7460"]
  replay: "tcp://127.0.0.1:7461"
  curve:
    secret_key_file: /etc/zaggd/keys/{key}.key_secret
    allow_dir: /etc/zaggd/keys/allowed
sources:
  - name: app
    topic: app
    paths: ["/var/log/app/*.log"]
"""


def test_a_secret_key_the_service_user_cannot_read_fails_check_config_with_the_fix(
    services: nspawn.Container,
) -> None:
    """keygen as root makes a root-owned key: check-config (as root) checks it as user
    zaggd and names the chown; keygen --owner zaggd makes one the service can use."""
    c = services
    unit = "zaggd-producer@curve.service"
    c.run("install -d -m 0755 /etc/zaggd/keys/allowed")
    made = c.run("zaggd keygen /etc/zaggd/keys web-01").stdout
    assert "chown zaggd: /etc/zaggd/keys/web-01.key_secret" in made, made
    c.write_file("/etc/zaggd/curve.yaml", CURVE_YAML.format(key="web-01"))
    secret = "/etc/zaggd/keys/web-01.key_secret"
    problem = (
        f"{secret}: cannot read key file: Permission denied for user zaggd; "
        f"run chown zaggd: {secret}"
    )
    check = c.run(["zaggd", "check-config", "/etc/zaggd/curve.yaml"], check=False)
    assert (check.returncode, check.stderr) == (78, f"zaggd: {problem}\n")
    # The daemon, as the unit runs it, says the same.
    c.run(f"systemctl start {unit}", check=False, timeout_s=START_TIMEOUT_S)
    assert nspawn.wait_until(lambda: show(c, unit, "ActiveState")["ActiveState"] == "failed", 30)
    errors = [str(e["MESSAGE"]) for e in daemon_lines(c, unit) if e.get("PRIORITY") == "3"]
    assert errors == [f"zaggd: {problem}"], journal_text(c)
    c.run(f"systemctl reset-failed {unit}")

    c.run("zaggd keygen --owner zaggd /etc/zaggd/keys web-02")
    owners = c.run("stat -c '%U %G %a' /etc/zaggd/keys/web-02.key_secret").stdout
    assert owners.split() == ["zaggd", "zaggd", "600"]
    c.write_file("/etc/zaggd/curve.yaml", CURVE_YAML.format(key="web-02"))
    check = c.run(["zaggd", "check-config", "/etc/zaggd/curve.yaml"], check=False)
    assert (check.returncode, check.stdout) == (
        0,
        "/etc/zaggd/curve.yaml: valid producer config, readable by user zaggd\n",
    ), check.stderr
    try:
        c.run(f"systemctl start {unit}", timeout_s=START_TIMEOUT_S)
        assert show(c, unit, "ActiveState")["ActiveState"] == "active", journal_text(c)
        started = [
            str(e["MESSAGE"]) for e in daemon_lines(c, unit) if "started" in str(e.get("MESSAGE"))
        ]
        assert any("CURVE on" in line and "0 client keys allowed" in line for line in started), (
            started
        )
    finally:
        c.run(f"systemctl stop {unit}", check=False, timeout_s=60)
        c.run("rm -rf /etc/zaggd/keys /etc/zaggd/curve.yaml /var/lib/zaggd/curve")


def test_reload_applies_a_new_source(services: nspawn.Container) -> None:
    c = services
    pid_before = show(c, PRODUCER, "MainPID")["MainPID"]
    c.write_file("/etc/zaggd/producer.yaml", PRODUCER_YAML + SECOND_SOURCE_YAML)
    c.run(f"systemctl reload {PRODUCER}", timeout_s=START_TIMEOUT_S)
    assert nspawn.wait_until(
        lambda: show(c, PRODUCER, "ActiveState")["ActiveState"] == "active", timeout_s=30
    )
    lines = [f"extra line {i}" for i in range(100)]
    append_lines(c, "/var/log/app2/b.log", lines)
    wait_for_lines(c, "extra", lines)
    assert show(c, PRODUCER, "MainPID")["MainPID"] == pid_before, "reload restarted the producer"


@pytest.mark.parametrize(
    ("unit", "config", "break_it"),
    [
        (PRODUCER, "producer.yaml", ("paths: [", "paths: 7 #[")),
        (COLLECTOR, "collector.yaml", ("format: raw", "format: rawish")),
        # A config that loads, refused by the daemon itself.
        (PRODUCER, "producer.yaml", (f"node: {NODE}", "node: renamed")),
    ],
)
def test_a_refused_reload_fails_systemctl_reload_and_keeps_running(
    services: nspawn.Container, unit: str, config: str, break_it: tuple[str, str]
) -> None:
    """`systemctl reload` exits non-zero and says so; the reason is in the journal at
    PRIORITY=3 and in `systemctl status`; the daemon keeps running its config."""
    c = services
    pid = show(c, unit, "MainPID")["MainPID"]
    good = (c.root / "etc/zaggd" / config).read_text()
    c.write_file(f"/etc/zaggd/{config}", good.replace(*break_it))
    try:
        reload = c.run(f"systemctl reload {unit}", check=False, timeout_s=START_TIMEOUT_S)
        assert reload.returncode != 0, f"a refused reload looked like success\n{journal_text(c)}"
        assert f"Job for {unit} failed" in reload.stderr, reload.stderr

        def error_logged() -> bool:
            return any(
                e.get("PRIORITY") == "3"
                and "reload refused, keeping the running config" in str(e.get("MESSAGE"))
                and config in str(e.get("MESSAGE"))
                for e in daemon_lines(c, unit)
            )

        assert nspawn.wait_until(error_logged, timeout_s=15), journal_text(c)
        props = show(c, unit, "ActiveState", "MainPID", "StatusText")
        assert props["ActiveState"] == "active" and props["MainPID"] == pid, props
        assert "last reload refused" in props["StatusText"], props
    finally:
        c.write_file(f"/etc/zaggd/{config}", good)
    # A good reload succeeds, and says so no more.
    c.run(f"systemctl reload {unit}", timeout_s=START_TIMEOUT_S)
    assert "refused" not in show(c, unit, "StatusText")["StatusText"]
    # The running config was kept: lines still flow.
    lines = [f"after bad reload {i}" for i in range(10)]
    append_lines(c, "/var/log/app/a.log", lines)
    wait_for_lines(c, "app", output_lines(c, "app") + lines)


def test_unreadable_file_is_a_warning_in_the_journal(services: nspawn.Container) -> None:
    """A warning line (<4> on stderr) lands with PRIORITY=4, naming the file."""
    c = services
    c.run("umask 077 && echo secret > /var/log/app/secret.log")

    def warned() -> bool:
        return any(
            e.get("PRIORITY") == "4" and "secret.log" in str(e.get("MESSAGE"))
            for e in daemon_lines(c, PRODUCER)
        )

    assert nspawn.wait_until(warned, timeout_s=30), journal_text(c)
    # Once, naming the user, its groups and the fix; and listed in status.
    status = c.run(["zaggd", "status", "-c", "/etc/zaggd/producer.yaml"]).stdout
    assert "cannot read (Permission denied; see the log): /var/log/app/secret.log" in status
    told = [
        str(e["MESSAGE"])
        for e in daemon_lines(c, PRODUCER)
        if "secret.log" in str(e.get("MESSAGE"))
    ]
    assert told == [
        "zaggd-tailer: cannot read /var/log/app/secret.log: Permission denied for user zaggd "
        "(groups: adm, zaggd): it is root:root 0600; run chgrp adm /var/log/app/secret.log "
        "and chmod g+r /var/log/app/secret.log"
    ], told


def test_daemon_lines_carry_no_raw_priority_prefix(services: nspawn.Container) -> None:
    c = services
    for unit in (PRODUCER, COLLECTOR):
        lines = daemon_lines(c, unit)
        assert lines, f"{unit} logged nothing\n{journal_text(c)}"
        raw = [e["MESSAGE"] for e in lines if str(e.get("MESSAGE", "")).startswith("<")]
        assert not raw, raw
        assert {e.get("PRIORITY") for e in lines} >= {"6"}, "no info lines"


def test_watchdog_kills_a_stopped_producer_and_systemd_restarts_it(
    services: nspawn.Container,
) -> None:
    c = services
    c.write_file("/etc/systemd/system/zaggd-producer.service.d/watchdog.conf", WATCHDOG_DROPIN)
    c.run("systemctl daemon-reload")
    c.run(f"systemctl restart {PRODUCER}", timeout_s=START_TIMEOUT_S)
    before = show(c, PRODUCER, "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "3s"
    since = c.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()

    c.run(["kill", "-STOP", before["MainPID"]])
    results: set[str] = set()

    def restarted() -> bool:
        now = show(c, PRODUCER, "MainPID", "NRestarts", "ActiveState", "Result")
        results.add(now["Result"])
        return (
            int(now["NRestarts"]) > int(before["NRestarts"])
            and now["MainPID"] not in ("0", before["MainPID"])
            and now["ActiveState"] == "active"
        )

    assert nspawn.wait_until(restarted, timeout_s=40, interval_s=0.1), journal_text(c)

    # systemd's own account, at warning level or above, in the unit's journal.
    warnings = c.run(
        ["journalctl", "--no-pager", "-u", PRODUCER, "-p", "warning", "--since", since]
    ).stdout
    assert "Watchdog timeout" in warnings, warnings
    assert "Failed with result 'watchdog'" in warnings, warnings
    assert "watchdog" in results, f"Result= seen while restarting: {results}"

    # The restarted producer still delivers.
    lines = [f"after watchdog {i}" for i in range(20)]
    expected = output_lines(c, "app") + lines
    append_lines(c, "/var/log/app/a.log", lines)
    wait_for_lines(c, "app", expected)


def test_a_broken_config_at_start_fails_once_without_a_restart_loop(
    services: nspawn.Container,
) -> None:
    """Exit 78 (EX_CONFIG) is in RestartPreventExitStatus: systemd waits for the operator."""
    c = services
    unit = "zaggd-collector@broken.service"
    c.write_file("/etc/zaggd/broken.yaml", COLLECTOR_YAML.replace("format: raw", "format: rawish"))
    c.run(f"systemctl start {unit}", check=False, timeout_s=START_TIMEOUT_S)

    def failed() -> bool:
        return show(c, unit, "ActiveState")["ActiveState"] == "failed"

    assert nspawn.wait_until(failed, timeout_s=30), journal_text(c)
    c.run("sleep 5")  # past RestartSec=2s: a restart would have happened by now
    props = show(c, unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert props == {
        "ActiveState": "failed",
        "Result": "exit-code",
        "ExecMainStatus": "78",
        "NRestarts": "0",
    }, journal_text(c)
    errors = [e for e in daemon_lines(c, unit) if e.get("PRIORITY") == "3"]
    assert [str(e["MESSAGE"]) for e in errors] == [
        "zaggd: /etc/zaggd/broken.yaml:7: output.format: expected one of raw, prefixed, jsonl, "
        "got 'rawish'"
    ], journal_text(c)
    c.run(f"systemctl reset-failed {unit}", check=False)
