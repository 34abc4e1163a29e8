"""The zaggd command: producer, collector, check-config, config-schema, reload, status, verify,
keygen.

A user error is printed as one line, `zaggd: <what and where>`, never a
traceback. The exit is 78 (EX_CONFIG) when a daemon's or check-config's config
or key files cannot be used, or a daemon's state (a damaged state file, a folder
another daemon holds), which the units do not restart on, and 2 for any other
error (a port in use, say), which a restart may cure.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import signal
import sys
from collections.abc import Callable

from zaggd import __version__, logs, runas
from zaggd.errors import ConfigError, KeyFileError, StateError, ZaggdError
from zaggd.runas import SERVICE_USER

log = logging.getLogger("zaggd")

EXIT_USAGE = 2
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG; the units' RestartPreventExitStatus
CONFIG_COMMANDS = ("producer", "collector", "check-config")
DEFAULT_STATE_ROOT = "/var/lib/zaggd"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zaggd", description="Line aggregation over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"zaggd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in (
        ("producer", "tail files and publish their lines"),
        ("collector", "subscribe and write aggregate files"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", required=True, metavar="FILE")
        p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p = sub.add_parser("check-config", help="validate a producer or collector config")
    p.add_argument("file")
    p.add_argument(
        "--user",
        metavar="NAME",
        help="check the files as this user can read them (as root, default: the "
        f"services' user {SERVICE_USER} when it exists)",
    )
    p = sub.add_parser(
        "config-schema", help="print the JSON Schema of a producer or collector config, for editors"
    )
    p.add_argument("daemon", choices=("producer", "collector"))
    p.add_argument("--markdown", action="store_true", help="print the table of keys instead")
    p = sub.add_parser(
        "reload", help="have a running daemon re-read its config; fails when it refuses it"
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the daemon's config")
    p.add_argument(
        "--pid", type=int, metavar="PID", help="the daemon's PID (the units give $MAINPID)"
    )
    p = sub.add_parser("status", help="a running daemon's counters and streams")
    p.add_argument(
        "-c", "--config", metavar="FILE", help="the daemon's config (finds its state_dir)"
    )
    p.add_argument("--socket", metavar="PATH", help="the daemon's control socket")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser(
        "verify", help="check output against its manifests and live indexes: doubles, holes, damage"
    )
    p.add_argument("dir")
    p = sub.add_parser("keygen", help="make a CURVE key pair DIR/NAME.key and DIR/NAME.key_secret")
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument(
        "--owner",
        metavar="USER",
        help=f"give both files to this user (the daemon's: {SERVICE_USER} for the units)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except ZaggdError as exc:
        # Under systemd the journal files it at PRIORITY=3, like the daemon's own errors.
        prefix = "<3>" if logs.is_journal_stderr() else ""
        print(f"{prefix}zaggd: {exc}", file=sys.stderr)
        if args.command in CONFIG_COMMANDS and isinstance(
            exc, ConfigError | KeyFileError | StateError
        ):
            return EXIT_CONFIG
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def limit_malloc() -> None:
    """Two malloc arenas, not one per thread: each thread's arena keeps block-sized
    buffers it has freed, which adds up to tens of MB of RSS across threads."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8
    libc.mallopt(m_arena_max, 2)


def dispatch(args: argparse.Namespace) -> int:
    from zaggd import config as config_mod

    if args.command in ("producer", "collector"):
        limit_malloc()

    if args.command == "check-config":
        return check_config(args)
    if args.command == "reload":
        return reload(args)
    if args.command == "config-schema":
        from zaggd.config import documents

        markdown = args.markdown
        sys.stdout.write(
            documents.markdown_table(args.daemon) if markdown else documents.json_text(args.daemon)
        )
        return 0
    if args.command == "producer":
        pcfg = config_mod.load_producer(args.config)
        logs.setup(args.log_level or pcfg.log_level)
        from zaggd.producer.daemon import run as run_producer

        return run_producer(pcfg)
    if args.command == "collector":
        ccfg = config_mod.load_collector(args.config)
        logs.setup(args.log_level or ccfg.log_level)
        from zaggd.collector.daemon import run as run_collector

        return run_collector(ccfg)
    if args.command == "status":
        return status(args)
    if args.command == "verify":
        from zaggd.collector.verify import verify_tree

        return verify_tree(args.dir)
    if args.command == "keygen":
        from zaggd.security import keygen

        public, secret = keygen(args.dir, args.name, args.owner)
        print(f"wrote {public} and {secret}" + (f" for user {args.owner}" if args.owner else ""))
        if args.owner is None and os.geteuid() == 0:
            print(
                f"note: {secret} belongs to root; a daemon running as {SERVICE_USER} needs "
                f"chown {SERVICE_USER}: {secret} (or keygen --owner {SERVICE_USER})"
            )
        return 0
    raise AssertionError(args.command)


def check_config(args: argparse.Namespace) -> int:
    """Validate a config and its key files, as the services' user reads them."""
    from zaggd import config as config_mod
    from zaggd.security import check_config_keys

    def check() -> config_mod.ProducerConfig | config_mod.CollectorConfig:
        cfg = config_mod.load(args.file)
        check_config_keys(cfg)
        return cfg

    cfg = check()
    kind = "producer" if isinstance(cfg, config_mod.ProducerConfig) else "collector"
    user = runas.default_check_user(args.user)
    if user is None:
        print(f"{args.file}: valid {kind} config")
        return 0
    problem = runas.run_as(user, check)
    if problem is not None:
        if f"user {user.name}" not in problem:
            problem += f" (checked as user {user.name})"
        raise KeyFileError(problem)
    print(f"{args.file}: valid {kind} config, readable by user {user.name}")
    return 0


def reload(args: argparse.Namespace) -> int:
    """Have the daemon of a config reload it; exit non-zero when it keeps the running one."""
    from zaggd import config as config_mod
    from zaggd.control import SOCKET_NAME, ask_reload, query

    refused = "reload refused, keeping the running config"
    try:
        cfg = config_mod.load(args.config)
    except ZaggdError as exc:
        # Its control socket is named in the config: SIGHUP tells the daemon, which
        # refuses the config the same way (and shows it in its STATUS=).
        if args.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(args.pid, signal.SIGHUP)
        raise ZaggdError(f"{refused}: {exc}") from None
    path = os.path.join(cfg.state_dir, SOCKET_NAME)
    if args.pid is not None:
        _check_same_daemon(path, args.pid, query)
    refusal, _ = ask_reload(path)
    if refusal is not None:
        raise ZaggdError(f"{refused}: {refusal}")
    print(f"reloaded {args.config}")
    return 0


def _check_same_daemon(path: str, pid: int, query: Callable[[str], dict[str, object]]) -> None:
    """The control socket at `path` is the one of daemon `pid` (state_dir did not change)."""
    moved = "state_dir cannot change while running; restart instead"
    try:
        answered = query(path).get("pid")
    except ZaggdError as exc:
        raise ZaggdError(f"{exc}; if state_dir changed: {moved}") from None
    if answered != pid:
        raise ZaggdError(
            f"{path} is the control socket of PID {answered}, not of the daemon (PID {pid}): {moved}"
        )


def status(args: argparse.Namespace) -> int:
    from zaggd import config as config_mod
    from zaggd.control import SOCKET_NAME, query

    if args.socket:
        sockets = [args.socket]
    elif args.config:
        sockets = [os.path.join(config_mod.load(args.config).state_dir, SOCKET_NAME)]
    else:
        sockets = find_sockets(DEFAULT_STATE_ROOT)
    answers = [query(path) for path in sockets]
    if args.json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
        return 0
    for answer in answers:
        print_status(answer)
    return 0


def find_sockets(root: str) -> list[str]:
    """The control sockets in the state folders under `root`; ZaggdError when there are none,
    saying Permission denied (and who may ask) when a folder was closed to this user."""
    from zaggd.control import SOCKET_NAME, who_may_ask

    sockets = sorted(glob.glob(os.path.join(glob.escape(root), "*", SOCKET_NAME)))
    if sockets:
        return sockets
    try:
        folders = sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
    except OSError:
        folders = []
    closed = [folder for folder in folders if not os.access(folder, os.X_OK)]
    if closed:
        raise ZaggdError(f"{closed[0]}: Permission denied: {who_may_ask(closed[0])}")
    raise ZaggdError(f"no running daemon found under {root} (give -c FILE or --socket PATH)")


def print_status(answer: dict[str, object]) -> None:
    """The answer as a table; every value on its line (names escaped, as in the logs)."""

    def text(value: object) -> str:
        return logs.shown(str(value))

    who = answer.get("node") or answer.get("config")
    print(f"{text(answer.get('daemon'))} {text(who)}: {text(answer.get('status'))}")
    counters = answer.get("counters")
    if isinstance(counters, dict):
        width = max((len(text(k)) for k in counters), default=0)
        for name, value in sorted(counters.items()):
            print(f"  {text(name):<{width}}  {text(value)}")
    for key in ("collectors", "no_collector_for_s", "curve_refused"):
        if key in answer:  # who hears a producer
            print(f"  {key}  {text(answer[key])}")
    streams = answer.get("streams_detail")
    if isinstance(streams, list) and streams:
        keys = [k for k in streams[0] if k != "stream"]
        print("  stream            " + "  ".join(text(k) for k in keys))
        for row in streams:
            if isinstance(row, dict):
                print(f"  {text(row.get('stream'))}  " + "  ".join(text(row.get(k)) for k in keys))
    unreadable = answer.get("unreadable_files")
    if isinstance(unreadable, list):
        for path in unreadable:
            print(f"  cannot read (Permission denied; see the log): {text(path)}")
