"""Exceptions a user can cause (exit 2) and a run that diverged (exit 3)."""


class UserError(ValueError):
    """Bad input: the message names the bad value and what is allowed (exit 2 on the command
    line; a ValueError in Python)."""


class UserTypeError(UserError, TypeError):
    """A config value of the wrong type (a TypeError in Python, exit 2 on the command line)."""


class MaskError(UserError):
    """An env's invalid-action mask that cannot be used (wrong shape or dtype, no action
    allowed) or is missing where action_masking=on asks for one; the message names the env
    and the env step (exit 2 on the command line)."""


class Diverged(Exception):
    """Training produced non-finite values; the message says which and where."""


def one_line(e: Exception) -> str:
    """An exception's message on one line (torch's load_state_dict spreads it over several)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return f"{e.__class__.__name__}: {text[:300]}"
