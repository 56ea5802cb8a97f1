"""Performance metrics of an equity curve and its orders/trades. Annualisation: 365 days (crypto), by the base bar."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypedDict, cast

import numpy as np

from engine.core.jsontypes import Record
from engine.run.trades import OPTIONAL_KINDS, TRADE_KINDS

YEAR_DAYS = 365.0


class BaseBarsBlock(TypedDict):
    """metrics.json ``base_bars``: the same winners and rules with stops on the base bars only."""

    interval: str
    total_return: float | None
    max_drawdown: float | None
    n_stop_exits: int
    n_ambiguous_exits: int
    ambiguous_resolved_by_finer_bars: int


class Metrics(TypedDict, total=False):
    """The keys of metrics.json, typed (the file is this record, keys sorted, plus ``engine_version``).

    Every run has the figures of :func:`equity_metrics` and :func:`trading_metrics` and the run's
    shape (windows, interval, mode); the blocks below them only where their feature ran.
    """

    # equity_metrics
    total_return: float | None
    cagr: float | None
    annual_volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None
    calmar: float | None
    skewness: float | None
    kurtosis: float | None
    n_returns: int
    # trading_metrics
    turnover: float | None
    exposure: float | None
    n_orders: int
    n_trades: int
    win_rate: float | None
    avg_trade_return: float | None
    exits_by_kind: dict[str, int]
    # the run
    final_equity: float
    n_windows: int
    empty_windows: int
    start: str
    end: str
    interval: str
    base_interval: str
    periods_per_year: float
    n_ambiguous_exits: int
    n_stop_exits: int
    mode: str
    total_return_optimistic: float | None
    base_bars: BaseBarsBlock | None
    costs: dict[str, float | int]
    funding_paid: float
    """A perpetual run: the funding the book paid (received: < 0)."""
    warnings: list[str]
    survivorship: Record
    grid_combination: Record
    engine_version: str
    # task=wfo
    oos_start: str
    is_sharpe: float | None
    oos_sharpe: float | None
    pbo: float | None
    n_trials: int
    deflated_sharpe: float | None
    wfo: Record
    # task=grid's RunResult only (never in a metrics.json): one row per combination
    combinations: list[Record]


CapacityRow = dict[str, float | int | None]
"""One capital of a capacity curve: capital, final_equity, total_return, sharpe, max_drawdown,
n_orders, turnover and a ``cost_<friction>`` per friction."""


class CapacityTable(TypedDict):
    """A capacity curve (capacity.json): one row per capital and the capital where the Sharpe halves."""

    rows: list[CapacityRow]
    half_sharpe_capital: float | None
    note: str
    frictionless: bool


METRICS_KEYS = Metrics.__required_keys__ | Metrics.__optional_keys__
"""Every key metrics.json may hold."""


def metrics_record(values: Mapping[str, object]) -> Metrics:
    """Return ``values`` as the typed :class:`Metrics` record: the one place a metrics dict becomes it.

    A key the record does not name is a bug (the record must describe the file): AssertionError.
    """
    unknown = set(values) - METRICS_KEYS
    assert not unknown, f"metrics keys missing from engine.run.metrics.Metrics: {sorted(unknown)}"
    return cast(Metrics, dict(values))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def drawdown(values: np.ndarray, init_cash: float) -> np.ndarray:
    """Fraction below the running peak, the peak starting at ``init_cash`` as in the metrics.

    Parameters
    ----------
    values
        Equity marks in time order.
    init_cash
        Starting capital: a run that loses from its first bar is under water from the start.

    Returns
    -------
    numpy.ndarray
        ``values / peak - 1`` (0 at a new high, negative below it).
    """
    peak = np.maximum.accumulate(np.concatenate(([init_cash], values)))[1:]
    return values / peak - 1.0


def equity_metrics(
    equity: np.ndarray, init_cash: float, n_days: float, periods_per_year: float = YEAR_DAYS
) -> dict[str, float | None]:
    """Return, risk and drawdown figures of an equity series that starts from ``init_cash``.

    ``equity`` holds one mark per period (a base bar's close: a day by default), ``n_days`` the
    calendar days it spans and ``periods_per_year`` the marks in 365 days (365 for daily marks,
    8,760 for hourly): volatility, Sharpe and Sortino are annualised by its square root, the CAGR
    by ``n_days``. ``skewness`` and ``kurtosis`` (non-excess: 3 for a normal) of the per-period
    returns and their count ``n_returns`` are what the deflated Sharpe ratio of a sweep needs.
    """
    values = np.concatenate(([init_cash], equity.astype(np.float64)))
    rets = values[1:] / values[:-1] - 1.0
    total = values[-1] / init_cash - 1.0
    years = max(n_days, 1.0) / YEAR_DAYS
    cagr = (values[-1] / init_cash) ** (1.0 / years) - 1.0 if values[-1] > 0 else -1.0
    std = rets.std(ddof=1) if rets.size > 1 else 0.0
    ann_vol = std * math.sqrt(periods_per_year)
    sharpe = rets.mean() / std * math.sqrt(periods_per_year) if std > 0 else math.nan
    downside = np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2)) if rets.size else 0.0
    sortino = rets.mean() / downside * math.sqrt(periods_per_year) if downside > 0 else math.nan
    centered = rets - rets.mean() if rets.size else rets
    m2 = float(np.mean(centered**2)) if rets.size else 0.0
    skew = float(np.mean(centered**3)) / m2**1.5 if m2 > 0 else math.nan
    kurt = float(np.mean(centered**4)) / m2**2 if m2 > 0 else math.nan
    max_dd = float(min(0.0, np.min(drawdown(values[1:], init_cash), initial=0.0)))
    calmar = cagr / abs(max_dd) if max_dd < 0 else math.nan
    return {
        "total_return": _finite(total),
        "cagr": _finite(cagr),
        "annual_volatility": _finite(ann_vol),
        "sharpe": _finite(sharpe),
        "sortino": _finite(sortino),
        "max_drawdown": _finite(max_dd),
        "calmar": _finite(calmar),
        "skewness": _finite(skew),
        "kurtosis": _finite(kurt),
        "n_returns": int(rets.size),
    }


def trading_metrics(
    n_orders: int,
    traded: float,
    returns: np.ndarray,
    by_kind: dict[str, int],
    equity: np.ndarray,
    exposure: np.ndarray,
    n_days: float,
) -> dict[str, float | int | dict[str, int] | None]:
    """Turnover (traded value per year over mean equity), exposure, order counts, trade statistics.

    ``returns`` holds each trade's return, ``by_kind`` the number of trades per exit kind.
    """
    mean_equity = float(np.mean(equity)) if equity.size else math.nan
    years = max(n_days, 1.0) / YEAR_DAYS
    return {
        "turnover": _finite(traded / mean_equity / years) if mean_equity > 0 else None,
        "exposure": _finite(float(np.mean(exposure))) if exposure.size else None,
        "n_orders": int(n_orders),
        "n_trades": int(returns.size),
        "win_rate": _finite(float(np.mean(returns > 0))) if returns.size else None,
        "avg_trade_return": _finite(float(np.mean(returns))) if returns.size else None,
        # ``liquidation`` (OPTIONAL_KINDS) is listed only when a position was liquidated (a margin market's runs)
        "exits_by_kind": {k: int(by_kind.get(k, 0)) for k in TRADE_KINDS if k not in OPTIONAL_KINDS or by_kind.get(k)},
    }
