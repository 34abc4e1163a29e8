"""Errors a user can cause. cli.main() prints them as one line, no traceback."""


class ZaggdError(Exception):
    """A problem the operator can fix: the message names where and what."""


class ConfigError(ZaggdError):
    """A config file that cannot be used: file, line, key and problem."""


class ProtocolError(ZaggdError):
    """A message off the wire that breaks protocol v1; it is dropped and counted."""


class KeyFileError(ZaggdError):
    """A CURVE key file that is missing, malformed or too widely readable."""


class StateError(ZaggdError):
    """A state file or folder that cannot be used: damaged, unreadable, or another daemon's."""
