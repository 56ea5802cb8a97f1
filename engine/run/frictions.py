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

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.config import RunConfig
from engine.core.units import interval_ms
from engine.data.lakehouse import Lakehouse
from engine.data.markets import MarketRule
from engine.data.panel import Panel
from engine.run.funding import FundingIndex
from engine.strategy.windows import Window

if TYPE_CHECKING:
    import polars as pl

    from engine.simulation.books import Pending
    from engine.simulation.market import ExecutionRules, Frictions
    from engine.simulation.stage import GridBook, MarketStage, SimulationContext
    from engine.simulation.vbt import SimResult

log = logging.getLogger(__name__)

ORDER_COLUMNS = ("quote_volume", "participation", "impact_cost", "spread_cost")
"""The columns a market run adds to orders.parquet (one value per fill)."""
COST_KEYS = ("fees", "slippage", "impact", "spread", "rejected_orders", "dropped_quote")
"""metrics.json's ``costs`` block, in this order (quote currency; rejected_orders a count)."""
_FOUR_LN2 = 4.0 * math.log(2.0)
UNLIMITED = 1e300
"""Quote volume of a delisting row: the sale at the last close fills in full there (no cap, no impact)."""


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
    rules: Mapping[str, MarketRule]
    """``MarketRule`` per symbol (min_notional, amount_step, price_tick, active)."""
    execution: ExecutionRules
    spreads: dict[tuple[int, str], float] = field(default_factory=dict)
    """Half spreads computed so far, by (window start, symbol)."""
    warned: set[str] = field(default_factory=set)
    funding: pl.DataFrame | None = None
    """A perpetual run's funding rates (``symbol``, ``time``, ``rate``, ``mark``: engine/run/funding.py); None: spot."""
    funding_index: FundingIndex | None = None
    """The same rates split by symbol once per run, laid on each window's grid (:class:`FundingIndex`)."""

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` once per run for ``key``."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)


def market_prepare(
    cfg: RunConfig, lakehouse: Lakehouse, symbols: list[str], first_ms: int, end_ms: int, panel: Panel
) -> MarketData:
    """Load what the frictions need for ``symbols`` over the run (``first_ms``: the first window's start).

    ``panel``: their base bars from ``execution.history_bars()`` bars before ``first_ms`` to ``end_ms``,
    cut from the plan's one read (:func:`engine.data.panel.panels_load`).
    Called by the plan after its data step, which checked the funding of every symbol of
    ``lakehouse`` (``funding_prepare``): a perp run's funding is read without checking it again.
    """
    from engine.data.markets import leverage_check, market_rules
    from engine.simulation.market import ExecutionRules

    ex = cfg.execution
    rules = market_rules(cfg, symbols)
    leverage_check(cfg.portfolio.leverage, rules)  # a traded market's own maximum (docs/LONG_SHORT.md)
    execution = ExecutionRules(
        max_participation=math.inf if ex.max_participation is None else ex.max_participation,
        leftover=ex.leftover,
        impact_k=ex.impact_k if ex.impact == "sqrt" else 0.0,
    )
    md = MarketData(panel, parkinson_sigma(panel.high, panel.low, ex.sigma_window), rules, execution)
    from engine.config.book import market_of

    if market_of(cfg) == "perp":  # funding of the winners (engine/run/funding.py)
        from engine.run.funding import funding_load

        # the plan's data step (funding_prepare) checked this store's funding of every symbol
        md.funding = funding_load(cfg, symbols, first_ms, end_ms, checked=lakehouse)
        md.funding_index = FundingIndex(md.funding)
    return md


def _half_spreads(cfg: RunConfig, md: MarketData, w: Window, columns: list[str]) -> np.ndarray:
    """Return the columns' half spreads for the window: fixed, or half the EDGE estimate of their past base bars."""
    ex = cfg.execution
    if ex.spread == "fixed":
        return np.full(len(columns), ex.half_spread)
    todo = [s for s in columns if (w.start_ms, s) not in md.spreads]
    if todo:
        from engine.strategy.spread import edge_spreads

        p = md.panel
        end = int(np.searchsorted(p.ts_ms, w.start_ms))  # the base bars that closed before the window
        rows, cols = slice(max(end - ex.spread_window, 0), end), [p.col(s) for s in todo]
        full = edge_spreads(p.open[rows][:, cols], p.high[rows][:, cols], p.low[rows][:, cols], p.close[rows][:, cols])
        for s, x in zip(todo, full.tolist(), strict=True):
            if not math.isfinite(x):
                md.warn_once(
                    f"spread:{s}",
                    f"{s}: no EDGE spread estimate from the {ex.spread_window} base bars before window "
                    f"{w.index} (too few or flat bars): no spread is charged there (execution.spread=edge)",
                )
            md.spreads[(w.start_ms, s)] = x / 2.0 if math.isfinite(x) else 0.0
    return np.array([md.spreads[(w.start_ms, s)] for s in columns])


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
    quote[delist] = UNLIMITED
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
        half_spread=_half_spreads(cfg, md, w, columns),
        amount_step=np.array([float(r.amount_step) for r in rules]),
        min_notional=np.array([float(r.min_notional) for r in rules]),
        price_tick=np.array([float(r.price_tick) for r in rules]),
    )


PendingOrder = tuple[float, int, bool]
"""A remainder carried between windows: signed shares, reason code, ambiguous (``Pending``'s fields)."""


def pending_in(pending: Mapping[str, PendingOrder], columns: list[str]) -> Pending:
    """Return a book's carried remainders on the window's columns."""
    from engine.simulation.books import Pending

    rows = [pending.get(s, (0.0, 0, False)) for s in columns]
    return Pending(
        np.array([r[0] for r in rows], dtype=np.float64),
        np.array([r[1] for r in rows], dtype=np.int8),
        np.array([r[2] for r in rows], dtype=np.bool_),
    )


def pending_after(columns: list[str], res: SimResult) -> dict[str, PendingOrder]:
    """Return a window's unfilled remainders by symbol, to go on filling in the next window."""
    p = res.pending_end
    if p is None:
        return {}
    return {
        columns[j]: (float(p.shares[j]), int(p.reason[j]), bool(p.ambiguous[j]))
        for j in np.flatnonzero(p.shares).tolist()
    }


def _frictions_unset(ctx: SimulationContext) -> Frictions:
    msg = "the run's market stage takes each window's frictions from the fold (engine.run.frictions.market_execute)"
    raise RuntimeError(msg)


def market_stage(cfg: RunConfig, md: MarketData) -> MarketStage:
    """Return the run's market stage (``RunPlan.stage``): its costs and rules; the frictions come per window."""
    from engine.simulation.stage import MarketStage

    return MarketStage(cfg.costs, _frictions_unset, md.execution, margin_of(cfg))


def margin_of(cfg: RunConfig) -> tuple[float, float] | None:
    """Return the isolated margin (leverage, maintenance margin) of a perpetual or short book, None for spot."""
    from engine.config.book import is_long_only

    return None if is_long_only(cfg) else (cfg.portfolio.leverage, cfg.costs.maintenance_margin)


def market_execute(
    cfg: RunConfig, stage: MarketStage, ctx: SimulationContext, books: list[GridBook], fr: Frictions
) -> list[SimResult]:
    """Run the window's books through the market stage with the window's frictions (one kernel call)."""
    from engine.simulation.stage import MarketStage

    return MarketStage(cfg.costs, fr, stage.rules, stage.margin).execute_grid(ctx, books)


def order_columns(res: SimResult) -> dict[str, np.ndarray]:
    """Return the market columns of a result's fills (``ORDER_COLUMNS``), in fill order (NaN volume and participation on a delisting row)."""
    extra = res.order_extra or {}
    n = len(res.order_records)
    cols = {c: np.asarray(extra[c], dtype=np.float64) if c in extra else np.full(n, np.nan) for c in ORDER_COLUMNS}
    forced = cols["quote_volume"] >= UNLIMITED  # a delisting row: no market volume, so none shown (NaN)
    if forced.any():
        cols["quote_volume"] = np.where(forced, np.nan, cols["quote_volume"])
        cols["participation"] = np.where(forced, np.nan, cols["participation"])
    return cols


def costs_block(costs: Mapping[str, float]) -> dict[str, float | int]:
    """Return metrics.json's ``costs`` block (rejected orders as a count)."""
    return {k: int(costs.get(k, 0)) if k == "rejected_orders" else float(costs.get(k, 0.0)) for k in COST_KEYS}
