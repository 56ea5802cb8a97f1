"""Multi-timeframe entry/exit signals: a daily trend filter with a 4h pullback-and-reclaim trigger.

The strategy ("trend in trend"): trade a symbol only while its *daily* close is above its
``trend_days`` simple moving average; inside that uptrend, a 4h close at least ``pullback`` below
the 4h EMA arms the trigger, and the first later 4h close back above the EMA is the entry. The
position is closed when the daily uptrend is lost. Stops (``ExitRules``) are the simulator's job
and apply on top.

No look-ahead, stated precisely (times are UTC epoch ms; a bar's ``timestamp`` is its OPEN time):

* a daily bar opened at ``D`` is known at ``known_at = D + 1 day`` (its close);
* a 4h bar opened at ``T`` is decided at ``decision_at = T + interval_ms`` (its close); its
  signals are acted upon at the NEXT bar's open (``weights_from_signals`` places the order one
  grid row later);
* the 4h bar's outputs use the daily fact with the largest ``known_at <= decision_at`` of its
  symbol (``join_asof(strategy="backward")``: equality counts, the daily close and the close of
  the last 4h bar of the day coincide), and 4h closes with open time ``<= T`` only.

Hence the last 4h bar of day D (opened at D 20:00, closed at D+1 00:00) already sees day D's
daily bar; the five earlier 4h bars of day D see day D-1's at the latest.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.config import TrendInTrend
from engine.core.units import DAY_MS

__all__ = ["DAY_MS", "TrendInTrend", "daily_trend", "signals_compute", "weights_from_signals"]


def _epoch_ms(lf: pl.LazyFrame, col: str = "timestamp") -> pl.Expr:
    """``col`` as Int64 epoch milliseconds (accepts a Datetime of any unit or integer epoch ms)."""
    dtype = lf.collect_schema()[col]
    if isinstance(dtype, pl.Datetime):
        return pl.col(col).dt.epoch("ms")
    if dtype.is_integer():
        return pl.col(col).cast(pl.Int64)
    msg = f"column {col!r} has type {dtype}: use a UTC Datetime or integer epoch milliseconds"
    raise TypeError(msg)


def daily_trend(daily: pl.LazyFrame, p: TrendInTrend) -> pl.LazyFrame:
    """Daily uptrend per (symbol, day), stamped with the time it becomes known.

    Parameters
    ----------
    daily : pl.LazyFrame
        Daily bars: ``symbol, timestamp`` (bar OPEN time, UTC), ``open, high, low, close, volume``.
    p : TrendInTrend
        Parameters (``trend_days``).

    Returns
    -------
    pl.LazyFrame
        ``symbol, timestamp, sma, uptrend, known_at_ms``, where ``uptrend = close > sma`` (False
        during the first ``trend_days - 1`` days, where the SMA is undefined) and
        ``known_at_ms = timestamp + 1 day`` in epoch ms (the daily bar's close time), sorted by
        symbol, timestamp.
    """
    ts = _epoch_ms(daily)
    sma = pl.col("close").rolling_mean(p.trend_days, min_samples=p.trend_days).over("symbol")
    return (
        daily.select("symbol", "timestamp", "close")
        .sort("symbol", "timestamp")
        .with_columns(sma.alias("sma"))
        .with_columns(
            (pl.col("close") > pl.col("sma")).fill_null(False).alias("uptrend"),
            (ts + DAY_MS).alias("known_at_ms"),
        )
        .select("symbol", "timestamp", "sma", "uptrend", "known_at_ms")
    )


def signals_compute(fine: pl.LazyFrame, daily: pl.LazyFrame, p: TrendInTrend, interval_ms: int) -> pl.DataFrame:
    """Entry and exit signals on the 4h (``interval_ms``) bars, decided at each bar's close.

    Parameters
    ----------
    fine : pl.LazyFrame
        Fine bars (e.g. 4h), same schema as the daily bars; ``timestamp`` = bar OPEN time.
    daily : pl.LazyFrame
        Daily bars of the same symbols.
    p : TrendInTrend
        Parameters.
    interval_ms : int
        Length of a fine bar in milliseconds (``4 * 3_600_000`` for 4h).

    Returns
    -------
    pl.DataFrame
        One row per (symbol, timestamp) of ``fine``, sorted by symbol, timestamp:

        * ``close``, ``ema`` -- the 4h close and its EMA (per symbol, time-ordered);
        * ``uptrend`` -- the daily uptrend as known at this bar's close (as-of join on
          ``known_at <= timestamp + interval_ms``; False before any daily fact is known);
        * ``armed`` -- the trigger state after this bar: set by a close ``<= ema * (1 - pullback)``,
          cleared by a close ``> ema``, otherwise carried (False before the first set);
        * ``entry`` -- enter at the next bar's open: ``reclaim=True``: the previous bar was armed,
          this close is above the EMA and ``uptrend``; ``reclaim=False``: this bar armed the
          trigger (armed now, not before) and ``uptrend``;
        * ``exit_trend`` -- ``not uptrend``: the daily trend is lost (a level, not an edge), exit at
          the next bar's open if in a position.
    """
    if interval_ms <= 0:
        msg = f"interval_ms must be > 0, got {interval_ms}"
        raise ValueError(msg)
    trend = daily_trend(daily, p).select("symbol", "known_at_ms", "uptrend").sort("known_at_ms")
    ts = _epoch_ms(fine)
    bars = (
        fine.select("symbol", "timestamp", "close")
        .with_columns((ts + interval_ms).alias("decision_at_ms"))
        .sort("decision_at_ms")
    )
    joined = bars.join_asof(
        trend,
        left_on="decision_at_ms",
        right_on="known_at_ms",
        by="symbol",
        strategy="backward",
        allow_exact_matches=True,
        check_sortedness=False,  # both sides are sorted on the keys just above
    ).sort("symbol", "timestamp")

    ema = pl.col("close").ewm_mean(span=p.ema_bars, adjust=False).over("symbol")
    set_ = pl.col("close") <= pl.col("ema") * (1.0 - p.pullback)
    reset = pl.col("close") > pl.col("ema")
    armed = pl.when(set_).then(True).when(reset).then(False).otherwise(None).forward_fill().over("symbol")
    prev_armed = pl.col("armed").shift(1).over("symbol").fill_null(False)
    # reclaim: armed before this bar and closed back above the EMA; else: armed by this very bar
    trigger = (prev_armed & reset) if p.reclaim else (pl.col("armed") & ~prev_armed)
    entry = trigger & pl.col("uptrend")
    return (
        joined.with_columns(pl.col("uptrend").fill_null(False), ema.alias("ema"))
        .with_columns(armed.fill_null(False).alias("armed"))
        .with_columns(entry.alias("entry"), (~pl.col("uptrend")).alias("exit_trend"))
        .select("symbol", "timestamp", "close", "ema", "uptrend", "armed", "entry", "exit_trend")
        .collect()
    )


def weights_from_signals(
    sig: pl.DataFrame,
    symbols: list[str],
    ts_ms: np.ndarray,
    target: dict[str, float],
    interval_ms: int,
    *,
    snap: str = "exact",
) -> np.ndarray:
    """Target weights for ``VectorBTSimulator.simulate`` on the grid ``ts_ms`` (bar open times, ms).

    A signal of the bar opened at ``T`` (signal interval ``interval_ms``) is decided at its close
    and becomes an order at the grid row that opens at ``T + interval_ms``: the grid may be the
    signal's own (the next row) or a finer one (the first finer bar after the signal bar).

    * ``entry`` -> ``target[symbol]`` (enter, or re-weight a held position to its target);
    * ``exit_trend`` -> ``0.0`` (close; a no-op on a flat column);
    * everything else NaN (no order). Acting times that are not on the grid are dropped.

    No position state is kept here: stops live in the simulator, and after a stop exit the next
    ``entry`` re-enters, which a signal-side "held" flag could not know.

    Parameters
    ----------
    sig : pl.DataFrame
        Output of :func:`signals_compute` (``symbol, timestamp, entry, exit_trend``).
    symbols : list of str
        Column order of the result.
    ts_ms : np.ndarray
        Strictly increasing bar open times of the simulation grid, epoch ms.
    target : dict
        Weight per symbol on entry (required for every symbol that has an entry on the grid).
    interval_ms : int
        Length of the signal bars.
    snap : {"exact", "next"}
        "exact": act only where a grid bar opens exactly at ``T + interval_ms`` (a grid as fine as
        the signal's or finer); "next": act at the first grid bar opening at or after it (a coarser
        grid, e.g. daily bars simulating 4h signals the way a daily-only engine would).

    Returns
    -------
    np.ndarray
        ``(len(ts_ms), len(symbols))`` float64, NaN = no order.
    """
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = len(ts_ms)
    w = np.full((n, len(symbols)), np.nan)
    if n and (np.diff(ts_ms) <= 0).any():
        msg = "ts_ms must be strictly increasing"
        raise ValueError(msg)
    if not n or not sig.height:
        return w
    ts = pl.col("timestamp").dt.epoch("ms") if isinstance(sig.schema["timestamp"], pl.Datetime) else pl.col("timestamp")
    act = sig.select(ts.cast(pl.Int64)).to_series().to_numpy() + interval_ms
    first = np.searchsorted(ts_ms, act)
    rows = np.minimum(first, n - 1)
    on_grid = (ts_ms[rows] == act) if snap == "exact" else (first < n)
    names = sig.get_column("symbol").to_numpy()
    entry, exit_ = sig.get_column("entry").to_numpy(), sig.get_column("exit_trend").to_numpy()
    for j, symbol in enumerate(symbols):
        mine = on_grid & (names == symbol)
        w[rows[mine & exit_], j] = 0.0
        if (mine & entry).any():
            w[rows[mine & entry], j] = target[symbol]
    return w
