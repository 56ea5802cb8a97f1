"""Walk-forward windows: rank at a day's close, hold from the next day's open for ``hold_days``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from engine.config import BacktestConfig, RankingConfig
from engine.errors import EngineError
from engine.units import DAY_MS as DAY_MS  # re-exported for the windows' users


def date_ms(day: date) -> int:
    """Epoch milliseconds of a UTC midnight."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def ms_date(ms: int) -> date:
    """UTC date of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ms / 1000, UTC).date()


@dataclass(frozen=True)
class Window:
    """One walk-forward step.

    ``rank_date`` is the last daily bar the ranking may see (known at its close, which is the
    open of ``start_ms``); trades happen on bars with open time in ``[start_ms, end_ms)``.
    """

    index: int
    rank_date: date
    start_ms: int
    end_ms: int

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly bounds."""
        return {
            "window": self.index,
            "rank_date": self.rank_date.isoformat(),
            "start": datetime.fromtimestamp(self.start_ms / 1000, UTC).isoformat(),
            "end": datetime.fromtimestamp(self.end_ms / 1000, UTC).isoformat(),
        }


def windows_build(data_first_ms: int, data_end_ms: int, bt: BacktestConfig, ranking: RankingConfig) -> list[Window]:
    """Ranking dates every ``step`` days from the first date with enough history.

    ``data_end_ms`` is exclusive (the open time after the last daily bar). The last window is cut
    at the data's (or ``backtest.end``'s) end.
    """
    first_rank = ms_date(data_first_ms) + timedelta(days=ranking.min_history_days - 1)
    if bt.start is not None:
        first_rank = max(first_rank, bt.start)
    end_ms = data_end_ms if bt.end is None else min(data_end_ms, date_ms(bt.end) + DAY_MS)
    windows: list[Window] = []
    rank = first_rank
    while True:
        start = date_ms(rank) + DAY_MS
        if start >= end_ms:
            break
        windows.append(Window(len(windows), rank, start, min(start + bt.hold_days * DAY_MS, end_ms)))
        rank += timedelta(days=bt.step)
    if not windows:
        msg = (
            f"no walk-forward window fits the data ({ms_date(data_first_ms)} .. {ms_date(data_end_ms - 1)}): "
            f"ranking needs {ranking.min_history_days} days of history before the first trade; "
            "lower ranking.min_history_days or extend the data range"
        )
        raise EngineError(msg)
    return windows
