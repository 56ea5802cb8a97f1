"""The report's costs section: what each friction took, when a run trades through the market stage.

Shown only when metrics.json has a ``costs`` block (any ``execution`` friction on; docs/EXECUTION.md):
fees, slippage, impact and spread in the quote currency, each also as a share of the starting
capital and of the quote traded; the orders not placed (below the minimum notional) and the quote
dropped unfilled; and how much of its bar's quote volume each fill took (orders.parquet's
``participation``), with the fills at the participation cap counted.
"""

from __future__ import annotations

import html
import math

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.run.result import BacktestResult

MONEY = ("fees", "slippage", "impact", "spread")
"""The costs paid in the quote currency, in the order of metrics.json's block."""
AT_CAP = 1e-9
"""A fill is at the cap when its participation is within this (relative) of ``execution.max_participation``."""


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _share(x: float, of: float) -> str:
    return f"{x / of * 100:.3f}%" if of > 0 and math.isfinite(of) else "n/a"


def _row(key: str, label: str, *cells: str) -> str:
    tds = "".join(f'<td class="n">{html.escape(c)}</td>' for c in cells)
    return f'<tr data-cost="{key}"><td>{html.escape(label)}</td>{tds}</tr>'


def _participation(cfg: RunConfig, orders: pl.DataFrame) -> str:
    """Return the paragraph on the fills' participation (empty when orders.parquet has none)."""
    if "participation" not in orders.columns or orders.height == 0:
        return ""
    p = orders.get_column("participation").drop_nulls().to_numpy()
    p = p[np.isfinite(p)]
    if not p.size:
        return ""
    q50, q90, q99 = np.quantile(p, [0.5, 0.9, 0.99]).tolist()
    cap = cfg.execution.max_participation
    at_cap = "" if cap is None else f"; {int(np.sum(p >= cap * (1 - AT_CAP))):,d} at the cap of {cap:g}"
    text = (
        f"Participation (a fill's quote over its bar's quote volume), {p.size:,d} fills: median {q50:.3g}, "
        f"90th percentile {q90:.3g}, 99th {q99:.3g}, max {float(p.max()):.3g}{at_cap}. "
        "A delisting sale (in full, at the last close) has no market volume and is left out."
    )
    return f'<p class="note" id="costs-participation">{html.escape(text)}</p>'


def costs_html(cfg: RunConfig, result: BacktestResult) -> str:
    """Return the report's costs section from metrics.json's ``costs`` block (empty without one)."""
    costs: dict[str, float | int] | None = result.metrics.get("costs")
    if not costs:
        return ""
    orders = result.orders
    traded = float((orders.get_column("size") * orders.get_column("price")).sum()) if orders.height else 0.0
    capital = float(cfg.backtest.init_cash)
    labels = {"fees": "fees", "slippage": "slippage (fixed)", "impact": "impact (square root)", "spread": "spread"}
    rows = [
        _row(k, labels[k], _money(float(costs[k])), _share(float(costs[k]), capital), _share(float(costs[k]), traded))
        for k in MONEY
    ]
    paid = sum(float(costs[k]) for k in MONEY)
    rows.append(_row("total", "total paid", _money(paid), _share(paid, capital), _share(paid, traded)))
    head = (
        '<thead><tr><th></th><th class="n">quote currency</th><th class="n">of the starting capital</th>'
        '<th class="n">of the quote traded</th></tr></thead>'
    )
    rejected, dropped = int(costs["rejected_orders"]), float(costs["dropped_quote"])
    other = (
        "<table><tbody>"
        + _row("rejected_orders", "orders not placed (below the minimum notional)", f"{rejected:,d}")
        + _row("dropped_quote", "quote dropped unfilled (capped remainders let go or replaced)", _money(dropped))
        + "</tbody></table>"
    )
    note = (
        f"What each friction took over the run ({_money(traded)} of quote traded from a starting capital of "
        f"{_money(capital)}); the same numbers as metrics.json's costs block and the sums of orders.parquet's "
        "fees, impact_cost and spread_cost columns (docs/EXECUTION.md)."
    )
    return (
        '<section id="costs"><h2>Costs: what each friction took</h2>'
        f'<table class="costs">{head}<tbody>{"".join(rows)}</tbody></table>{other}'
        f'<p class="note">{html.escape(note)}</p>{_participation(cfg, orders)}</section>'
    )
