"""Exceptions a user can cause (exit 2) and a run that diverged (exit 3)."""


class UserError(ValueError):
    """Bad input: the message names the bad value and what is allowed (exit 2 on the command
    line; a ValueError in Python)."""


class UserTypeError(UserError, TypeError):
    """A config value of the wrong type (a TypeError in Python, exit 2 on the command line)."""


class Diverged(Exception):
    """Training produced non-finite values; the message says which and where."""
