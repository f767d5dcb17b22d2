"""Errors secateurs raises for bad input: the message says what was wrong and what to do."""


class SecateursError(Exception):
    """A user-facing error: bad recipe, unknown plugin name, unsupported model, bad path.

    The CLI prints the message (no traceback) and exits with status 2.
    """
