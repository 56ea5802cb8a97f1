"""The report's portfolio-construction section: realised against target volatility, turnover over time.

Computed from what the run did (its equity curve, orders and audit lines), not from the plan:

- realised volatility: the standard deviation of the equity's bar-to-bar returns within each window
  (and over the whole run), annualised by the bars' spacing on a 365-day year;
- turnover, two ways: the limit's own measure, ``sum |w - h|`` against the drifted held book (the
  audit line's ``portfolio.turnover``, what ``max_turnover`` bounds), and the notional traded at each
  window's first bar (the rebalance: buys and sells; stops and delistings of later bars excluded)
  as a fraction of the equity at the ranking bar's close, which also re-buys what stops sold.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.core.units import DAY_MS
from engine.run.result import BacktestResult

YEAR_MS = 365 * DAY_MS


def _annualised(equity: np.ndarray, ts_ms: np.ndarray) -> float:
    """Annualised volatility of an equity series' returns (NaN with fewer than 2 returns)."""
    if equity.size < 3:
        return math.nan
    r = equity[1:] / equity[:-1] - 1.0
    step = float(np.median(np.diff(ts_ms)))
    return float(np.std(r, ddof=1) * math.sqrt(YEAR_MS / step)) if step > 0 else math.nan


def portfolio_rows(cfg: RunConfig, result: BacktestResult) -> tuple[str, list[str], list[list[object]]] | None:
    """Return the section's summary sentence, table head and rows (one per window); None when construction is off.

    Each row: window, ranking date, target gross (the sum of the window's weights), traded at the
    turnover against the held book, traded at the rebalance, realised volatility in the window,
    target volatility (None without one).
    """
    p = cfg.portfolio
    if not p.constructs(p.weighting, p.gross_exposure) or result.equity.is_empty():
        return None
    eq = result.equity.select(pl.col("timestamp").dt.epoch("ms").alias("ms"), "equity")
    ms, equity = eq.get_column("ms").to_numpy(), eq.get_column("equity").to_numpy()
    orders = result.orders
    traded: dict[tuple[int, int], float] = {}
    if not orders.is_empty():
        grouped = (
            orders.with_columns(pl.col("timestamp").dt.epoch("ms").alias("ms"), (pl.col("size") * pl.col("price")).abs().alias("notional"))
            .group_by("window", "ms")
            .agg(pl.col("notional").sum())
        )  # fmt: skip
        traded = {(int(w), int(t)): float(n) for w, t, n in grouped.iter_rows()}
    rows, turnovers = [], []
    for a in sorted(result.audit, key=lambda a: int(a.get("window", 0))):
        k = int(a["window"])
        start = int(pl.Series([a["start"]]).str.to_datetime(time_zone="UTC").dt.epoch("ms")[0])
        end = int(pl.Series([a["end"]]).str.to_datetime(time_zone="UTC").dt.epoch("ms")[0])
        before = ms <= start
        base = float(equity[before][-1]) if before.any() else cfg.backtest.init_cash
        turnover = traded.get((k, start), 0.0) / base
        turnovers.append(turnover)
        inside = (ms >= start) & (ms <= end)
        series = np.r_[base, equity[inside & (ms > start)]]
        vol = _annualised(series, np.r_[start, ms[inside & (ms > start)]])
        gross = float(sum(abs(x) for x in (a.get("weights") or {}).values()))  # |w|: a sided book's too
        limit = (a.get("portfolio") or {}).get("turnover")
        rows.append([k, a.get("rank_time") or a.get("rank_date"), gross, limit, turnover, vol, p.target_vol])
    overall = _annualised(equity, ms)
    target = "no target" if p.target_vol is None else f"target {p.target_vol * 100:.2f}%"
    mean = float(np.mean(turnovers)) if turnovers else math.nan
    peak = float(np.max(turnovers)) if turnovers else math.nan
    summary = (
        f"{p.weighting} weights ({p.covariance} covariance over {p.cov_window} where used), max_weight "
        f"{p.max_weight}, max_turnover {p.max_turnover}, max_gross {p.max_gross}. Realised volatility over the run "
        f"{overall * 100:.2f}% ({target}); traded at the rebalances: mean {mean * 100:.2f}%, max {peak * 100:.2f}% "
        "of equity. Turnover is what max_turnover bounds: the change from the previous targets drifted to the "
        "ranking bar; what is traded also re-buys what stops sold (docs/PORTFOLIO.md)."
    )
    head = ["Window", "Ranked", "Gross (target)", "Turnover", "Traded at rebalance", "Realised vol", "Target vol"]
    return summary, head, rows
