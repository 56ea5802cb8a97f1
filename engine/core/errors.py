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
