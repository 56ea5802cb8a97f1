"""The capacity curve's artefacts: capacity.parquet, capacity.json, its report section and console lines."""

from __future__ import annotations

import html
import json
from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from engine.data.lakehouse import parquet_write_atomic
from engine.outputs.rundir import CAPACITY_JSON, CAPACITY_PARQUET, json_write
from engine.run.metrics import CapacityRow, CapacityTable

CURVES = (
    ("total_return", "Total return", ".1%"),
    ("sharpe", "Sharpe ratio", ".2f"),
    ("max_drawdown", "Max drawdown", ".1%"),
)
"""The three curves of the report: metric, title, plotly tick format."""


def capacity_frame(table: CapacityTable) -> pl.DataFrame:
    """Return one row per capital (capital, final equity, total return, Sharpe, max drawdown, orders, costs)."""
    return pl.DataFrame(table["rows"], infer_schema_length=None).with_columns(pl.col("capital").cast(pl.Float64))


def capacity_write(out: Path, table: CapacityTable) -> None:
    """Write ``capacity.parquet`` (the rows) and ``capacity.json`` (the rows and the half-Sharpe capital)."""
    parquet_write_atomic(capacity_frame(table), out / CAPACITY_PARQUET)
    json_write(out / CAPACITY_JSON, table)


def _figure(rows: list[CapacityRow], key: str, title: str, fmt: str) -> go.Figure:
    x = [r["capital"] for r in rows]
    y = [r[key] for r in rows]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers", name=title))
    fig.update_layout(
        template="plotly_white",
        height=260,
        margin={"l": 70, "r": 20, "t": 36, "b": 40},
        title={"text": title, "font": {"size": 14}},
        xaxis={"type": "log", "title": "starting capital (quote currency)"},
        yaxis={"tickformat": fmt},
        showlegend=False,
    )
    return fig


def capacity_html(table: CapacityTable | None) -> str:
    """Return the report's capacity section (empty without a capacity curve); plotly.js is already on the page."""
    if table is None:
        return ""
    rows = table["rows"]
    charts = "".join(
        _figure(rows, key, title, fmt).to_html(
            full_html=False, include_plotlyjs=False, div_id=f"chart-capacity-{key}", config={"displaylogo": False}
        )
        for key, title, fmt in CURVES
    )
    cap = table["half_sharpe_capital"]
    head = f"Sharpe halves at {cap:,.0f}" if cap is not None else "Sharpe never halves on this list"
    note = table["note"] + (
        "; no friction is on (execution.*), so every capital earns the same: turn one on (e.g. +profile="
        "crypto_rating_realistic) to see the strategy's capacity"
        if table["frictionless"]
        else ""
    )
    return (
        f'<section id="capacity"><h2>Capacity: {html.escape(head)}</h2>{charts}'
        f'<p class="note">{html.escape(note)}</p></section>'
    )


def capacity_print(path: Path) -> None:
    """Print the capacity lines of a run's capacity.json."""
    for line in capacity_lines(json.loads(path.read_text())):
        print(line)


def capacity_lines(table: CapacityTable) -> list[str]:
    """Return the console's capacity lines: one per capital and the half-Sharpe capital."""
    lines = ["capacity (starting capital: total return, Sharpe, max drawdown):"]
    for r in table["rows"]:
        sharpe = "n/a" if r["sharpe"] is None else f"{r['sharpe']:.2f}"
        lines.append(f"  {r['capital']:>16,.0f}  {r['total_return']:+.2%}  {sharpe:>6}  {r['max_drawdown']:.2%}")
    cap = table["half_sharpe_capital"]
    lines.append(
        f"  Sharpe at half the smallest capital's: {'never' if cap is None else f'{cap:,.0f}'} ({table['note']})"
    )
    return lines
