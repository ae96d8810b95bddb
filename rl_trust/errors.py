"""Exceptions a user can cause (exit 2) and a run that diverged (exit 3)."""


class UserError(Exception):
    """Bad input: the message names the bad value and what is allowed."""


class Diverged(Exception):
    """Training produced non-finite values; the message says which and where."""
