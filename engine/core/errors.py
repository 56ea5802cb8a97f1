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


INTERRUPTED = (
    "interrupted (SIGINT): a run directory without _COMPLETE was not finished and holds no result to use; "
    "run the command again (the lakehouse keeps what was committed)"
)
"""The one line of a run stopped by Ctrl-C (exit code 130, no traceback)."""


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


class SweepJobsFailed(BaseException):
    """Jobs of a multirun failed: the sweep's outcome, which the command line turns into exit code 1.

    Raised by the sweep summary callback once every job has had its chance to run and the summary
    is printed. A ``BaseException``: Hydra turns an ``Exception`` raised in a callback into a
    warning, and this is the multirun's result, not a fault of the callback.
    """

    exit_code = 1

    def __init__(self, where: str, failed: int, total: int) -> None:
        super().__init__(where, failed, total)
        self.where, self.failed, self.total = where, failed, total

    def __str__(self) -> str:
        """One line: how many jobs failed, and where their reasons are."""
        return (
            f"{self.failed} of {self.total} sweep jobs failed "
            f"(reasons in each job's error.txt, summary in {self.where})"
        )
