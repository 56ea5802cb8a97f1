"""Walk-forward optimisation (``task=wfo``): choose an exit-rule combination on the past, trade it next.

``python -m engine task=wfo +profile=crypto_rating grid=sl_tp_27``

1. Every combination of the exit-rule grid walks forward as one book of one pass, exactly as
   ``task=grid`` does; each book's return in each window gives the (windows x combinations)
   matrix of per-window returns.
2. :func:`wfo_choices`, a pure function of that matrix, picks for each window k the combination
   whose objective (``wfo.objective``) was best over the training windows: the ``wfo.train_windows``
   windows before k (``wfo.anchored``: every window before k). It reads rows < k only. The first
   ``train_windows`` windows only train.
3. One out-of-sample book walks the windows from the first choice (``oos_start``, its ranking
   date) with fresh cash, its exit rules switched at each window start to that window's choice.
   **Carry rule**: a change of combination changes only the rules; the book's cash and open
   positions (quantity, cost basis, trailing peak, opening time) carry as they are, and the new
   rules apply to the carried positions from the new window's first bar (a carried position whose
   new stop level is already crossed at that bar's open exits there, at the open).

With one combination the out-of-sample book is, by construction, the run with
``backtest.start=<oos_start>`` and that combination (tests/test_wfo.py checks it to 1e-9).

Only exit-rule dimensions are supported: ranking and portfolio settings change the winners and
weights of every window (the ``WindowPlan``s are planned once per run and shared by all books of
a pass), so combinations of them cannot be books of one pass; walk them forward with separate
runs (a ``-m`` sweep) instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.core.best import best_index
from engine.core.choices import OBJECTIVES
from engine.core.errors import ConfigError, EngineError
from engine.core.units import DAY_MS
from engine.run.validation import sharpe_columns

log = logging.getLogger("engine")


WFO_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "window": pl.Int64,
    "rank_date": pl.Date,
    "rank_time": pl.Datetime("ms", "UTC"),
    "start": pl.Datetime("ms", "UTC"),
    "end": pl.Datetime("ms", "UTC"),
    "phase": pl.String,
    "combo": pl.Int64,
    "exit_rules": pl.String,
    "is_objective": pl.Float64,
    "oos_return": pl.Float64,
    "oos_rank": pl.Int64,
    "book_return": pl.Float64,
    "n_combinations": pl.Int64,
    "n_undefined": pl.Int64,
}


# ---- the selection: a pure function of the (windows x combinations) matrix --------------------


def objective_columns(returns: np.ndarray, objective: str) -> np.ndarray:
    """Compute the objective of each column of a (rows x combinations) block of per-window returns.

    NaN (undefined, ranked last) where a column has a non-finite return, never moved (all returns
    exactly 0: it held nothing, e.g. no trades), or the objective has no value: sharpe (mean / std,
    ddof=1) with fewer than two rows or zero variance; sortino (mean / downside deviation) without
    a losing row. calmar is the geometric mean return over the maximum drawdown of the compounded
    rows (+inf with no drawdown and a positive return, 0 with neither); total_return the
    compounded return.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if objective not in OBJECTIVES:
        msg = f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}"
        raise ValueError(msg)
    m = r.shape[1]
    if r.shape[0] == 0:
        return np.full(m, np.nan)
    undefined = ~np.isfinite(r).all(axis=0) | (r == 0.0).all(axis=0)
    rr = np.where(np.isfinite(r), r, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if objective == "sharpe":
            out = sharpe_columns(rr)
        elif objective == "sortino":
            downside = np.sqrt(np.mean(np.minimum(rr, 0.0) ** 2, axis=0))
            out = np.where(downside > 0, rr.mean(axis=0) / np.where(downside > 0, downside, 1.0), np.nan)
        else:
            growth = np.cumprod(1.0 + rr, axis=0)
            total = growth[-1] - 1.0
            if objective == "total_return":
                out = total
            else:
                path = np.vstack([np.ones((1, m)), growth])
                dd = np.min(path / np.maximum.accumulate(path, axis=0) - 1.0, axis=0)
                gmean = np.where(growth[-1] > 0, growth[-1] ** (1.0 / r.shape[0]) - 1.0, -1.0)
                out = np.where(dd < 0, gmean / np.abs(np.where(dd < 0, dd, -1.0)), np.where(gmean > 0, np.inf, 0.0))
    out = np.asarray(out, dtype=np.float64).copy()
    out[undefined] = np.nan
    return out


@dataclass(frozen=True)
class WfoChoices:
    """What :func:`wfo_choices` decided, per window (T rows)."""

    choices: np.ndarray
    """Chosen combination per window; -1 for a training-only window."""
    is_objective: np.ndarray
    """The chosen combination's objective over its training windows (NaN: training window, or
    every combination undefined)."""
    n_undefined: np.ndarray
    """Combinations whose objective was undefined at the window's choice (ranked last)."""
    train: list[tuple[int, int]]
    """The training rows [a, b) of each window's choice ((0, 0) for a training window)."""

    @property
    def first(self) -> int:
        """The first traded window (T when none)."""
        idx = np.flatnonzero(self.choices >= 0)
        return int(idx[0]) if idx.size else int(self.choices.size)


def wfo_choices(
    returns: np.ndarray, train_windows: int, anchored: bool = False, objective: str = "sharpe"
) -> WfoChoices:
    """Choose, for each window k >= ``train_windows``, the combination with the best ``objective``.

    The objective is taken over rows ``[k - train_windows, k)`` (``anchored``: ``[0, k)``) of
    ``returns`` (T x M per-window returns). Reads only rows < k for the choice at k; windows
    < ``train_windows`` only train.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        msg = f"returns must be a (windows x combinations) matrix with at least one column, got shape {r.shape}"
        raise ValueError(msg)
    if train_windows < 1:
        msg = f"train_windows must be >= 1, got {train_windows}"
        raise ValueError(msg)
    t = r.shape[0]
    choices = np.full(t, -1, dtype=np.int64)
    is_obj = np.full(t, np.nan)
    n_undef = np.zeros(t, dtype=np.int64)
    train = [(0, 0)] * t
    for k in range(train_windows, t):
        a = 0 if anchored else k - train_windows
        values = objective_columns(r[a:k], objective)
        best = best_index(values)  # NaN last, +inf the highest, ties to the lowest index
        choices[k], is_obj[k], n_undef[k], train[k] = best, values[best], int(np.isnan(values).sum()), (a, k)
    return WfoChoices(choices, is_obj, n_undef, train)


def oos_ranks(returns: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """Rank the chosen combination's return among all combinations in its window (1 = best).

    The rank is 1 + the number of combinations that did strictly better (NaN returns count as
    worst); 0 for a training window.
    """
    r = np.where(np.isfinite(returns), returns, -np.inf)
    out = np.zeros(len(choices), dtype=np.int64)
    for k, c in enumerate(choices):
        if c >= 0:
            out[k] = 1 + int(np.sum(r[k] > r[k, c]))
    return out


# ---- the precheck: enough windows to train and trade --------------------------------------------


def windows_needed_message(train_windows: int, n_windows: int) -> str:
    """Say that ``wfo.train_windows`` leaves no window to trade, and what to use instead."""
    return (
        f"wfo.train_windows={train_windows} leaves no window to trade: the data give {n_windows} walk-forward "
        f"window(s); use wfo.train_windows <= {max(n_windows - 1, 0)} (or more data, or a shorter backtest.hold)"
    )


def windows_precheck(cfg: RunConfig) -> None:
    """Refuse ``wfo.train_windows`` >= the windows the configured data range gives.

    The check runs before any run directory exists, for data whose range the config gives
    (``DataSource.range_from_config``: synthetic and ccxt data; files data are checked once their
    coverage is read).
    """
    from engine.data.sources.registry import source_class
    from engine.strategy.windows import date_ms, windows_build

    data = cfg.data
    if not source_class(data.source).range_from_config or data.start is None or data.end is None:
        return
    try:
        n = len(windows_build(date_ms(data.start), date_ms(data.end) + DAY_MS, cfg.backtest, cfg.ranking))
    except EngineError:  # no window at all: the run says so itself, with its own message
        return
    if cfg.wfo.train_windows >= n:
        raise ConfigError(windows_needed_message(cfg.wfo.train_windows, n))


__all__ = [
    "OBJECTIVES",
    "WfoChoices",
    "objective_columns",
    "oos_ranks",
    "wfo_choices",
    "windows_precheck",
]
