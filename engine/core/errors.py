"""User-facing errors: one line that names the problem and the fix, printed without a traceback."""


class EngineError(Exception):
    """A problem with the user's input (config, data, symbol, exchange), not a bug in the engine."""


class ConfigError(EngineError):
    """The composed configuration is invalid."""


class DataError(EngineError):
    """Data is missing, corrupt or does not cover what the run needs."""


class NoWinnersError(DataError):
    """Every walk-forward window was left without a winner: nothing would be traded."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    r"""Return the first line of an exception's message, or its class name when the message is empty.

    The one way every message of the engine quotes a library's exception (a traceback-free line).

    >>> first_line(ValueError("bad value\nmore detail"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
