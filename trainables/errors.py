"""Errors a user can cause and fix; the CLI prints them as one line, with no traceback."""


class BabysitterError(Exception):
    """Bad input: the message names the argument, its value and the rule or the fix."""


class ConfigError(BabysitterError):
    """A trial or study setting breaks a rule."""


class DataError(BabysitterError):
    """A data path or image set cannot be used."""
