"""The report's long-short section: the return split into the long leg, the short leg and funding.

From trades.parquet (docs/LONG_SHORT.md): a trade's ``pnl`` is net of its fees and of the funding
it paid, so its leg's share of the result is ``pnl + funding`` (price moves less fees) and the
funding is booked apart:

    long leg  = sum over long trades of (pnl + funding) / init_cash
    short leg = sum over short trades of (pnl + funding) / init_cash
    funding   = - sum over all trades of funding / init_cash

Open trades are marked at the last close as in trades.parquet, so the three add up to the run's
total return (``final equity / init_cash - 1``; ``tests/test_long_short_report.py``). The section
also plots the funding paid over time (cumulative; received is negative). Empty for a long-only
spot run.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
import polars as pl

from engine.config import RunConfig
from engine.config.book import is_long_only
from engine.run.result import BacktestResult


def return_split(cfg: RunConfig, trades: pl.DataFrame) -> dict[str, float] | None:
    """Return the long leg's, the short leg's and the funding's part of the total return (None: long-only spot)."""
    if is_long_only(cfg):
        return None
    init = cfg.backtest.init_cash
    side = trades.get_column("side") if "side" in trades.columns else pl.Series(["long"] * trades.height)
    funding = trades.get_column("funding") if "funding" in trades.columns else pl.Series([0.0] * trades.height)
    gross = trades.get_column("pnl") + funding
    return {
        "long_leg": float(gross.filter(side == "long").sum()) / init,
        "short_leg": float(gross.filter(side == "short").sum()) / init,
        "funding": -float(funding.sum()) / init,
    }


def long_short_html(cfg: RunConfig, result: BacktestResult) -> str:
    """Return the report's long-short section (empty for a long-only spot run)."""
    split = return_split(cfg, result.trades)
    if split is None:
        return ""
    rows = "".join(
        f'<tr><td>{html.escape(label)}</td><td class="n">{split[key]:+.2%}</td></tr>'
        for key, label in (("long_leg", "long leg"), ("short_leg", "short leg"), ("funding", "funding"))
    )
    total = sum(split.values())
    table = f'<table><thead><tr><th>part</th><th>of the return</th></tr></thead><tbody>{rows}<tr><td>total</td><td class="n">{total:+.2%}</td></tr></tbody></table>'
    chart = _funding_chart(result.funding)
    note = (
        "Each leg is its trades' profit before funding (fees included, open trades at the last close); funding is "
        "what the positions paid (negative) or received at each funding time."
    )
    return f'<section><h2>Long leg, short leg and funding</h2><p class="note">{html.escape(note)}</p>{table}{chart}</section>'


def _funding_chart(funding: pl.DataFrame | None) -> str:
    """Return the cumulative funding paid over time as a plotly chart (empty without funding)."""
    if funding is None or funding.height == 0:
        return ""
    per = funding.group_by("timestamp").agg(pl.col("amount").sum()).sort("timestamp")
    x = [str(t) for t in per.get_column("timestamp").dt.strftime("%Y-%m-%d %H:%M").to_list()]
    fig = go.Figure(go.Scatter(x=x, y=per.get_column("amount").cum_sum().to_numpy(), mode="lines", name="funding paid"))
    fig.update_layout(
        title="Funding paid, cumulative (quote currency; received < 0)",
        template="plotly_white",
        height=300,
        margin={"l": 70, "r": 20, "t": 36, "b": 40},
    )
    out: str = fig.to_html(full_html=False, include_plotlyjs=False, div_id="chart-funding")
    return out
