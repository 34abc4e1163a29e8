"""One-line error messages about a config: `FILE:LINE: key.path: problem`.

Every refusal of a config goes through here, so a message never spans lines
and a quoted value never floods the terminal.
"""

from __future__ import annotations

from typing import NoReturn

from zaggd.errors import ConfigError


def one_line(text: str) -> str:
    """`text` with control characters escaped, so a message stays on one line."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def fail_file(path: str, line: int | None, problem: str) -> NoReturn:
    where = path if line is None else f"{path}:{line}"
    raise ConfigError(one_line(f"{where}: {problem}"))


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(text: str) -> str:
    """A value from the config as a message shows it: quoted, cut at 60 characters."""
    return repr(short(text))
