"""The zaggd command: producer, collector, check-config, config-schema, status, verify, keygen.

A user error is printed as one line, `zaggd: <what and where>`, never a
traceback. The exit is 78 (EX_CONFIG) when a daemon's or check-config's config
or key files cannot be used, or a daemon's state (a damaged state file, a folder
another daemon holds), which the units do not restart on, and 2 for any other
error (a port in use, say), which a restart may cure.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys

from zaggd import __version__, logs
from zaggd.errors import ConfigError, KeyFileError, StateError, ZaggdError

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
    p = sub.add_parser(
        "config-schema", help="print the JSON Schema of a producer or collector config, for editors"
    )
    p.add_argument("daemon", choices=("producer", "collector"))
    p.add_argument("--markdown", action="store_true", help="print the table of keys instead")
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
        from zaggd.security import check_config_keys

        cfg = config_mod.load(args.file)
        check_config_keys(cfg)
        kind = "producer" if isinstance(cfg, config_mod.ProducerConfig) else "collector"
        print(f"{args.file}: valid {kind} config")
        return 0
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

        public, secret = keygen(args.dir, args.name)
        print(f"wrote {public} and {secret}")
        return 0
    raise AssertionError(args.command)


def status(args: argparse.Namespace) -> int:
    from zaggd import config as config_mod
    from zaggd.control import SOCKET_NAME, query

    if args.socket:
        sockets = [args.socket]
    elif args.config:
        sockets = [os.path.join(config_mod.load(args.config).state_dir, SOCKET_NAME)]
    else:
        sockets = sorted(glob.glob(os.path.join(DEFAULT_STATE_ROOT, "*", SOCKET_NAME)))
        if not sockets:
            raise ZaggdError(
                f"no running daemon found under {DEFAULT_STATE_ROOT} (give -c FILE or --socket PATH)"
            )
    answers = [query(path) for path in sockets]
    if args.json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
        return 0
    for answer in answers:
        print_status(answer)
    return 0


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
    streams = answer.get("streams_detail")
    if isinstance(streams, list) and streams:
        keys = [k for k in streams[0] if k != "stream"]
        print("  stream            " + "  ".join(text(k) for k in keys))
        for row in streams:
            if isinstance(row, dict):
                print(f"  {text(row.get('stream'))}  " + "  ".join(text(row.get(k)) for k in keys))
