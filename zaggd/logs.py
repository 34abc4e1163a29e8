"""Logging to stderr: syslog priority prefixes under journald, timestamps elsewhere.

Names from outside (file names, paths from the wire) are logged through
`shown`, so that none can break a log line or forge one.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


_NAMED = {"\n": "\\n", "\t": "\\t"}
# What str.splitlines() (and so a reader of the log) takes for the end of a line.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def shown(path: str | bytes) -> str:
    """`path` printable on one line: control characters, line separators and bytes
    that are not UTF-8 (surrogate-escaped in a str) escaped as \\n, \\t, \\xNN or
    \\uNNNN; anything else unchanged."""
    text = os.fsdecode(path) if isinstance(path, bytes) else path
    if text.isprintable():
        return text
    return "".join(_shown_char(c) for c in text)


def _shown_char(c: str) -> str:
    if c.isprintable() or (c.isspace() and c >= " " and c not in _LINE_BREAKS):
        return c  # printable, or a space such as U+00A0
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class JournalFormatter(logging.Formatter):
    """`<N>message`: journald reads N as the priority and adds its own timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def is_journal_stderr() -> bool:
    """Whether stderr is the stream JOURNAL_STREAM names (device:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if is_journal_stderr():
        handler.setFormatter(JournalFormatter("%(threadName)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchdog logs every inotify event at debug: traffic, not state changes.
    logging.getLogger("watchdog").setLevel(max(logging.INFO, root.level))
