"""The one exception type that reaches users.

A `SkddError` carries a single readable line (what went wrong and where). The CLI prints it
without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class SkddError(Exception):
    """A user-facing error: bad params, missing/corrupt/tampered input, unreachable storage."""


def one_line(err: BaseException) -> str:
    """An exception as one line (type and message), for wrapping library errors into a SkddError."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
