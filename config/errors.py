"""Errors a user can act on: the CLI prints their message as one line."""


class CaoError(Exception):
    """Something the user can fix; `str(error)` is the whole message."""

    exit_code = 1


class InvalidInput(CaoError):
    """Bad input on the command line (an account name, a URL, a flag value)."""

    exit_code = 2
