"""Walk-forward windows: rank at a base bar's close, hold from the next bar's open for ``backtest.hold``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from engine.config import BacktestConfig, RankingConfig
from engine.core.errors import EngineError
from engine.core.units import DAY_MS as DAY_MS  # re-exported for the windows' users
from engine.core.units import date_ms as date_ms  # re-exported for the windows' users
from engine.core.units import interval_ms, ms_date, ms_iso


@dataclass(frozen=True)
class Window:
    """One walk-forward step.

    ``rank_ms`` is the open time of the last base bar the ranking may see (known at its close,
    which is ``start_ms``, the open of the window's first bar); trades happen on bars with open
    time in ``[start_ms, end_ms)``.
    """

    index: int
    rank_ms: int
    start_ms: int
    end_ms: int

    @property
    def rank_date(self) -> date:
        """UTC date of the ranking bar."""
        return ms_date(self.rank_ms)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly bounds: ``rank_date`` (the ranking bar's day) and ``rank_time`` (its open)."""
        return {
            "window": self.index,
            "rank_date": self.rank_date.isoformat(),
            "rank_time": ms_iso(self.rank_ms),
            "start": ms_iso(self.start_ms),
            "end": ms_iso(self.end_ms),
        }


def windows_build(data_first_ms: int, data_end_ms: int, bt: BacktestConfig, ranking: RankingConfig) -> list[Window]:
    """Ranking bars every ``backtest.step`` from the first bar with enough history.

    Bars are the base interval's (``backtest.interval``). ``data_end_ms`` is exclusive (the open
    time after the last base bar). A symbol needs ``ranking.min_history`` bars, so the first
    ranking bar is the data's first bar plus that many bars minus one; the first window's start
    is then moved to the next multiple of ``step`` (of a day when step is longer) counted from
    00:00 UTC, so a daily rebalance on hourly bars trades at midnight, a 12h one at 00:00 / 12:00.
    ``backtest.start`` (a date) makes the first ranking bar no earlier than that day's first bar;
    ``backtest.end`` (a date) ends the last window at the end of that day. The last window is cut
    at the data's end.
    """
    iv = interval_ms(bt.interval)
    step, hold = bt.step_ms, bt.hold_ms
    first_rank = data_first_ms // iv * iv + (ranking.bars(bt.interval).min_history - 1) * iv
    if bt.start is not None:
        first_rank = max(first_rank, date_ms(bt.start))
    align = step if DAY_MS % step == 0 else DAY_MS
    first_start = -(-(first_rank + iv) // align) * align
    end_ms = data_end_ms if bt.end is None else min(data_end_ms, date_ms(bt.end) + DAY_MS)
    windows: list[Window] = []
    start = first_start
    while start < end_ms:
        windows.append(Window(len(windows), start - iv, start, min(start + hold, end_ms)))
        start += step
    if not windows:
        fb = ranking.bars(bt.interval)
        have = (data_end_ms - data_first_ms) // iv
        msg = (
            f"no walk-forward window fits the data: {have} {bt.interval} bars ({ms_iso(data_first_ms)} .. last bar "
            f"{ms_iso(data_end_ms - iv)}), and the first window needs ranking.min_history={ranking.min_history} "
            f"({fb.min_history} bars) of history plus a bar to trade; give more data, or shorten ranking.min_history "
            f"with the factor windows it must exceed (momentum_window={ranking.momentum_window}, "
            f"vol_window={ranking.vol_window}, liquidity_window={ranking.liquidity_window})"
        )
        raise EngineError(msg)
    return windows
