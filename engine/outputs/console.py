"""The console's closing lines of a run: where its data came from, its headline numbers, where it wrote."""

from __future__ import annotations

from pathlib import Path

from engine.config import RunConfig
from engine.outputs.rundir import CAPACITY_JSON
from engine.run.metrics import Metrics


def summary_print(metrics: Metrics, out: Path, cfg: RunConfig) -> None:
    """Print the console's closing lines: the data source, a short metrics table and the output path."""
    from engine.outputs.report import data_label

    m = metrics
    print(f"data: {data_label(cfg)}")
    rows = [
        ("total return", m.get("total_return"), "{:+.2%}"),
        ("CAGR", m.get("cagr"), "{:+.2%}"),
        ("Sharpe", m.get("sharpe"), "{:.2f}"),
        ("max drawdown", m.get("max_drawdown"), "{:.2%}"),
        ("orders", m.get("n_orders"), "{}"),
        ("trades", m.get("n_trades"), "{}"),
        ("ambiguous exits", m.get("n_ambiguous_exits"), "{}"),
    ]
    width = max(len(r[0]) for r in rows)
    days = _span_days(m)
    for name, value, fmt in rows:
        shown = "n/a" if value is None else fmt.format(value)
        if name == "CAGR" and value is not None and days is not None and days < 365:
            shown += f"  (extrapolated from {days:.0f} days)"
        if name == "ambiguous exits" and m.get("total_return_optimistic") is not None:
            # the bound metrics.json holds: the same exits taken take-profit first
            shown += f"  (optimistic bound, TP first: total return {m['total_return_optimistic']:+.2%})"
        print(f"  {name:<{width}}  {shown}")
    costs = m.get("costs")
    if costs is not None:  # a friction was on (execution.*): what each one took
        print(
            f"  {'costs':<{width}}  fees {costs['fees']:,.2f}, slippage {costs['slippage']:,.2f}, impact "
            f"{costs['impact']:,.2f}, spread {costs['spread']:,.2f}; {costs['rejected_orders']} orders rejected "
            f"(below the minimum notional), {costs['dropped_quote']:,.2f} of orders dropped unfilled (remainders a new target replaced or leftover=drop let go)"
        )
    funding = m.get("funding_paid")
    if funding is not None:  # a perpetual run: what the book paid (received: negative), docs/LONG_SHORT.md
        print(f"  {'funding':<{width}}  paid {float(funding):,.2f} (received when negative)")
    s = m.get("survivorship")
    if s:  # the survivors-only audit (docs/SURVIVORSHIP.md)
        print(
            f"  {'survivors only':<{width}}  {s['total_return']:+.2%}  (inflation {s['inflation']:+.2%}: "
            f"{s['n_delisted']} of {s['n_symbols']} symbols delisted, {s['n_delisted_traded']} of them traded)"
        )
    print(f"artefacts: {out}")
    if (out / CAPACITY_JSON).is_file():  # task=capacity, or execution.capacity on a run
        from engine.outputs.capacity import capacity_print

        capacity_print(out / CAPACITY_JSON)


def _span_days(m: Metrics) -> float | None:
    """Return the calendar days from a run's start to its end (metrics.json's ISO times), or None."""
    from datetime import datetime

    try:
        return (
            datetime.fromisoformat(str(m["end"])) - datetime.fromisoformat(str(m["start"]))
        ).total_seconds() / 86_400
    except (KeyError, ValueError):
        return None
