"""The market facts of a window (:class:`~engine.simulation.market.Frictions`), built for the market stage.

With any ``execution`` friction on (:meth:`ExecutionConfig.is_frictionless` false) the plan carries
a :class:`MarketData`: the winners' base bars from ``execution.history_bars()`` bars before the
first window (a panel of its own: the plan's base bars, and so the ranking and signals, stay as
they are), the Parkinson volatility of every base bar over the bars before it, and the exchange
rules of every symbol. Per window the fold asks :func:`frictions_build` for the columns it
simulates, on the simulation grid:

- quote volume: ``close * volume`` of the simulated bar (the finer bar when finer bars are
  loaded). A column carried from earlier windows (held, not a winner) is simulated flat at the
  window's first base open: its quote volume is its real base bar's, spread evenly over the finer
  bars inside it. A delisting row (the sale at the last close of a symbol whose bars ended) has an
  unbounded quote volume: the position is closed there in full, as without frictions;
- sigma: the Parkinson estimate ``sqrt(mean(ln(H/L)^2) / (4 ln 2))`` over the ``sigma_window``
  base bars *before* the simulated bar's base bar (never the bar itself), scaled to the simulated
  interval by ``sqrt(interval / base)``; fewer than two past bars: 0 (no impact), with one warning
  per symbol;
- half spread: ``execution.half_spread`` (spread=fixed) or half the EDGE estimate
  (:func:`engine.strategy.spread.edge_spread`) over the ``spread_window`` base bars before the
  window's start, per symbol and window (not estimable: 0, with one warning per symbol);
- amount step, minimum notional and price tick: :func:`engine.data.markets.market_rules`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import RunConfig
from engine.core.units import interval_ms
from engine.data.lakehouse import Lakehouse
from engine.data.panel import Panel, panel_load
from engine.strategy.windows import Window

if TYPE_CHECKING:
    from engine.simulation.market import ExecutionRules, Frictions
    from engine.simulation.stage import GridBook, SimulationContext, SimulationStage
    from engine.simulation.stops import StopState
    from engine.simulation.vbt import SimResult

log = logging.getLogger(__name__)

ORDER_COLUMNS = ("quote_volume", "participation", "impact_cost", "spread_cost")
"""The columns a market run adds to orders.parquet (one value per fill)."""
COST_KEYS = ("fees", "slippage", "impact", "spread", "rejected_orders", "dropped_quote")
"""metrics.json's ``costs`` block, in this order (quote currency; rejected_orders a count)."""
_FOUR_LN2 = 4.0 * math.log(2.0)


def parkinson_sigma(high: np.ndarray, low: np.ndarray, window: int) -> np.ndarray:
    """Return each bar's Parkinson volatility over the ``window`` bars before it (past bars only).

    Parameters
    ----------
    high, low
        (n_bars, k) highs and lows; NaN where a bar is missing.
    window
        Bars before bar ``i`` read for its estimate (``i - window`` .. ``i - 1``).

    Returns
    -------
    numpy.ndarray
        (n_bars, k) ``sqrt(mean(ln(high / low) ** 2) / (4 ln 2))`` over the finite bars of the window,
        NaN where fewer than two of them are finite.
    """
    x = np.log(high / low) ** 2
    ok = np.isfinite(x)
    zeros = np.zeros((1, x.shape[1]))
    total = np.vstack([zeros, np.cumsum(np.where(ok, x, 0.0), axis=0)])
    count = np.vstack([zeros, np.cumsum(ok, axis=0)])
    hi = np.arange(x.shape[0])
    lo = np.maximum(hi - window, 0)
    s, n = total[hi] - total[lo], count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.sqrt(s / n / _FOUR_LN2)
    out[n < 2] = np.nan
    return out


@dataclass
class MarketData:
    """What a run's frictions read: the base bars with history, their sigma, the rules, the rules of execution."""

    panel: Panel
    sigma: np.ndarray
    """(n_base_bars, n_symbols) Parkinson sigma of each base bar from the bars before it."""
    rules: Mapping[str, Any]
    """``MarketRule`` per symbol (min_notional, amount_step, price_tick, active)."""
    execution: ExecutionRules
    spreads: dict[tuple[int, str], float] = field(default_factory=dict)
    """Half spreads computed so far, by (window start, symbol)."""
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` once per run for ``key``."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)


def market_prepare(cfg: RunConfig, lakehouse: Lakehouse, symbols: list[str], first_ms: int, end_ms: int) -> MarketData:
    """Load what the frictions need for ``symbols`` over the run (``first_ms``: the first window's start)."""
    from engine.data.markets import market_rules
    from engine.simulation.market import ExecutionRules

    ex = cfg.execution
    base_ms = interval_ms(cfg.backtest.interval)
    panel = panel_load(
        lakehouse, "bars", cfg.backtest.interval, symbols, first_ms - ex.history_bars() * base_ms, end_ms
    )
    rules = market_rules(cfg, symbols)
    execution = ExecutionRules(
        max_participation=math.inf if ex.max_participation is None else ex.max_participation,
        leftover=ex.leftover,
        impact_k=ex.impact_k if ex.impact == "sqrt" else 0.0,
    )
    return MarketData(panel, parkinson_sigma(panel.high, panel.low, ex.sigma_window), rules, execution)


def _half_spread(cfg: RunConfig, md: MarketData, w: Window, symbol: str) -> float:
    """Return the symbol's half spread for the window: fixed, or half the EDGE estimate of its past base bars."""
    ex = cfg.execution
    if ex.spread == "fixed":
        return ex.half_spread
    key = (w.start_ms, symbol)
    if key not in md.spreads:
        from engine.strategy.spread import edge_spread

        p = md.panel
        end = int(np.searchsorted(p.ts_ms, w.start_ms))
        rows, c = slice(max(end - ex.spread_window, 0), end), p.col(symbol)
        full = edge_spread(p.open[rows, c], p.high[rows, c], p.low[rows, c], p.close[rows, c])
        if not math.isfinite(full):
            md.warn_once(
                f"spread:{symbol}",
                f"{symbol}: no EDGE spread estimate from the {ex.spread_window} base bars before window "
                f"{w.index} (too few or flat bars); no spread is charged there (execution.spread=edge)",
            )
            full = 0.0
        md.spreads[key] = max(full, 0.0) / 2.0
    return md.spreads[key]


def _base_rows(md: MarketData, ts: np.ndarray, base_ms: int) -> np.ndarray:
    """Row of the market panel's base bar that holds each simulated bar (open time ``ts``)."""
    rows: np.ndarray = (ts - ts % base_ms - int(md.panel.ts_ms[0])) // base_ms
    return rows


def frictions_build(
    cfg: RunConfig,
    md: MarketData,
    fine: Panel,
    w: Window,
    winners: list[str],
    carried: list[str],
    ts: np.ndarray,
    delist: np.ndarray,
) -> Frictions:
    """Return the window's :class:`Frictions` for the columns ``winners + carried`` on the grid ``ts``.

    ``fine`` is the panel the winners' simulated bars come from (the base bars or the finer bars).
    """
    from engine.simulation.market import Frictions

    base_ms = interval_ms(cfg.backtest.interval)
    step = int(fine.ts_ms[1] - fine.ts_ms[0]) if fine.ts_ms.size > 1 else base_ms
    columns = winners + carried
    n, k = ts.size, len(columns)
    rows = fine.rows(w.start_ms, w.end_ms)
    quote = np.empty((n, k))
    if winners:
        cols = [fine.col(s) for s in winners]
        quote[:, : len(winners)] = fine.close[rows][:, cols] * fine.volume[rows][:, cols]
    b = _base_rows(md, ts, base_ms)
    p = md.panel
    for j, s in enumerate(carried, start=len(winners)):
        c = p.col(s)
        quote[:, j] = p.close[b, c] * p.volume[b, c] * (step / base_ms)
    quote[delist] = np.inf
    sigma = md.sigma[b][:, [p.col(s) for s in columns]] * math.sqrt(step / base_ms)
    if cfg.execution.impact == "sqrt" and not np.isfinite(sigma).all():
        for j in np.flatnonzero(~np.isfinite(sigma).all(axis=0)).tolist():
            md.warn_once(
                f"sigma:{columns[j]}",
                f"{columns[j]}: fewer than two base bars before some bars of window {w.index} to estimate the "
                "impact's volatility from; no impact is charged on those bars",
            )
    rules = [md.rules[s] for s in columns]
    return Frictions(
        quote_volume=quote,
        sigma=np.nan_to_num(sigma, nan=0.0),
        half_spread=np.array([_half_spread(cfg, md, w, s) for s in columns]),
        amount_step=np.array([float(r.amount_step) for r in rules]),
        min_notional=np.array([float(r.min_notional) for r in rules]),
        price_tick=np.array([float(r.price_tick) for r in rules]),
    )


def pending_attach(risk: StopState, pending: np.ndarray) -> StopState:
    """Return the carried risk state with the book's pending (unfilled, signed) shares per column."""
    return dataclasses.replace(risk, pending=pending)  # type: ignore[call-arg]


def pending_after(columns: list[str], res: SimResult) -> dict[str, float]:
    """Return a window's unfilled remainders (signed shares) by symbol, to fill in the next window."""
    pending = getattr(res.end_state, "pending", None)
    if pending is None:
        return {}
    return {columns[j]: float(pending[j]) for j in np.flatnonzero(pending).tolist()}


def market_stage(cfg: RunConfig, md: MarketData) -> SimulationStage:
    """Return the market stage of the run's costs and rules of execution (``RunPlan.stage``)."""
    from engine.simulation.market import MarketStage

    return MarketStage(cfg.costs, md.execution)  # type: ignore[no-any-return]


def market_execute(stage: Any, ctx: SimulationContext, books: list[GridBook], fr: Frictions) -> list[SimResult]:
    """Run the window's books through the market stage with the window's frictions."""
    return list(stage.execute_grid(ctx, books, frictions=fr))


def order_columns(res: SimResult) -> dict[str, np.ndarray]:
    """Return the market columns of a result's fills (``ORDER_COLUMNS``), in fill order."""
    frame = res.orders
    return {c: frame.get_column(c).to_numpy().astype(np.float64) for c in ORDER_COLUMNS}


def costs_block(costs: Mapping[str, float]) -> dict[str, float | int]:
    """Return metrics.json's ``costs`` block (rejected orders as a count)."""
    return {k: int(costs.get(k, 0)) if k == "rejected_orders" else float(costs.get(k, 0.0)) for k in COST_KEYS}
