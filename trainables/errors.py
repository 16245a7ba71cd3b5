"""Errors a user can cause and fix; the CLI prints them as one line, with no traceback."""


class BabysitterError(Exception):
    """Bad input: the message names the argument, its value and the rule or the fix."""

    exit_code = 1


class ConfigError(BabysitterError, ValueError):
    """A trial or study setting breaks a rule (a ValueError, so validators can raise it)."""


class DataError(BabysitterError):
    """A data path or image set cannot be used."""


class Interrupted(BabysitterError):
    """Ctrl-C (SIGINT): the study stops where it is and says how to go on; exit 130."""

    exit_code = 130
