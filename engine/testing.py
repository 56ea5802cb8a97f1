"""Shared fixtures of the single-asset cross-check with backtesting.py (tests and benchmarks).

One generated daily series, an SMA-cross entry rule and the "enter only while flat" weights, so
``tests/test_crosscheck_backtesting.py`` and ``benchmarks/fig6_peer.py`` measure the same thing.

It stays in the package (not under tests/) because ``python -m benchmarks`` ships in the wheel and
needs the same fixture; it imports only numpy at import time (pandas and the simulator are imported
by the functions that need them), so ``import engine`` never pays for it and it installs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from engine.config.exit_rules import ExitRules
    from engine.simulation.vbt import PriceBlock

N_BARS = 1500


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Return the simple moving average, NaN for the first ``n - 1`` values (backtesting.py's ``self.I`` input).

    Each window's mean is computed on its own (no running sum that drifts), as its first value plus
    the mean of the exact differences to it: a window of equal closes averages to that close exactly,
    so a close equal to its SMA is never a false strict crossover.
    """
    v = np.asarray(x, dtype=np.float64)
    out = np.full(len(v), np.nan)
    if n < 1 or len(v) < n:
        return out
    win = np.lib.stride_tricks.sliding_window_view(v, n)
    first = win[:, :1]
    out[n - 1 :] = first[:, 0] + (win - first).sum(axis=1) / n
    return out


def crosscheck_ohlc(seed: int = 0, n_bars: int = N_BARS) -> pd.DataFrame:
    """Return daily OHLC (backtesting.py's column names) with a few long-wicked bars.

    Some bars hold both the stop loss and the take profit.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n_bars)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.01, n_bars))
    wick = np.where(rng.random(n_bars) < 0.03, 0.12, 0.012)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, n_bars)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, n_bars)) * wick)
    index = pd.date_range("2020-01-01", periods=n_bars, freq="D")
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close}, index=index)


def sma_cross(close: np.ndarray, fast: int = 10, slow: int = 30) -> np.ndarray:
    """Bars whose close has SMA(fast) cross above SMA(slow) (backtesting.lib.crossover's rule)."""
    f, s = sma(close, fast), sma(close, slow)
    cross = np.zeros(len(close), dtype=bool)
    cross[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
    return np.flatnonzero(cross)


def entries_while_flat(prices: PriceBlock, signals: np.ndarray, rules: ExitRules) -> np.ndarray:
    """Weight 1.0 on the bar after each signal at whose close we are flat, NaN elsewhere.

    One stop scan in the signal mode (``held_reweights="first_bar"``) finds them all: it drops an
    entry while the position is held and lets the next one through once a stop has closed it.
    """
    from engine.simulation.stops import find_stop_exits

    n = prices.close.shape[0]
    w = np.full((n, 1), np.nan)
    bars = np.asarray(signals, dtype=np.int64) + 1
    w[bars[bars < n], 0] = 1.0
    ex = find_stop_exits(prices.open, prices.high, prices.low, prices.index, w, rules, held_reweights="first_bar")
    w[ex.dropped_bar, 0] = np.nan
    w[ex.bar[ex.at_open], 0] = np.nan  # an entry on a bar whose open closed the position first
    return w
