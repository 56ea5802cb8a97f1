"""The report's charts: equity against the benchmarks, drawdown, exits by kind, the winners heatmap."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from engine.config import RunConfig
from engine.outputs.report_format import BENCHMARK_LABELS, EXIT_LABELS, _esc, _pct, _ts_strings, _when
from engine.run.metrics import drawdown
from engine.run.result import BacktestResult
from engine.run.trades import OPTIONAL_KINDS

CHART_IDS = ("chart-equity", "chart-drawdown", "chart-exits", "chart-winners")
"""Div ids of the charts, in page order (fixed so the page is deterministic and testable)."""
MAX_HEATMAP_SYMBOLS = 40
"""Rows of the winners heatmap: beyond this a heatmap stops being readable."""
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def _benchmark(result: BacktestResult) -> pl.DataFrame | None:
    # Older results have no benchmark field; the report then shows the strategy alone.
    bench = getattr(result, "benchmark", None)
    if not isinstance(bench, pl.DataFrame) or bench.height == 0 or "timestamp" not in bench.columns:
        return None
    return bench.sort("timestamp")


def _bench_columns(bench: pl.DataFrame | None) -> list[str]:
    if bench is None:
        return []
    known = [c for c in BENCHMARK_LABELS if c in bench.columns]
    return known + sorted(c for c in bench.columns if c not in known and c != "timestamp")


def _layout(fig: go.Figure, height: int, **kw: object) -> go.Figure:
    base: dict[str, object] = {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 36, "b": 40},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    }
    fig.update_layout(**{**base, **kw})
    return fig


def _equity_figure(cfg: RunConfig, result: BacktestResult) -> go.Figure:
    fig = go.Figure()
    eq = result.equity.sort("timestamp")
    init_cash = cfg.backtest.init_cash
    bench = _benchmark(result)
    colours = {"equal_weight": "#8c959f", "btc_buy_hold": "#d4a72c"}
    for col in _bench_columns(bench):
        assert bench is not None
        b = bench.select("timestamp", col).drop_nulls()
        fig.add_trace(
            go.Scatter(
                x=_ts_strings(b.get_column("timestamp")),
                y=b.get_column(col).to_numpy(),
                name=BENCHMARK_LABELS.get(col, col),
                mode="lines",
                line={"width": 1.5, "dash": "dot", "color": colours.get(col)},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=_ts_strings(eq.get_column("timestamp")),
            y=eq.get_column("equity").to_numpy(),
            name="Strategy",
            mode="lines",
            line={"width": 2, "color": "#0969da"},
        )
    )
    fig.add_hline(y=init_cash, line={"width": 1, "color": "#d0d7de"})
    # Multi-year curves that end far apart read better on a log axis; linear stays the default.
    scale = [
        {"label": label, "method": "relayout", "args": [{"yaxis.type": kind}]}
        for label, kind in (("linear", "linear"), ("log", "log"))
    ]
    menu = {
        "type": "buttons",
        "direction": "right",
        "buttons": scale,
        "x": 0,
        "xanchor": "left",
        "y": 1.02,
        "yanchor": "bottom",
        "pad": {"t": 0, "r": 0},
        "showactive": True,
        "active": 0,
    }
    return _layout(
        fig,
        440,
        hovermode="x unified",
        yaxis_title="equity",
        updatemenus=[menu],
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.13},
    )


def _drawdown_figure(cfg: RunConfig, result: BacktestResult) -> go.Figure:
    fig = go.Figure()
    eq = result.equity.sort("timestamp")
    init_cash = cfg.backtest.init_cash
    bench = _benchmark(result)
    if bench is not None and "equal_weight" in bench.columns:
        b = bench.select("timestamp", "equal_weight").drop_nulls()
        fig.add_trace(
            go.Scatter(
                x=_ts_strings(b.get_column("timestamp")),
                y=drawdown(b.get_column("equal_weight").to_numpy().astype(np.float64), init_cash),
                name=BENCHMARK_LABELS["equal_weight"],
                mode="lines",
                line={"width": 1.2, "dash": "dot", "color": "#8c959f"},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=_ts_strings(eq.get_column("timestamp")),
            y=drawdown(eq.get_column("equity").to_numpy().astype(np.float64), init_cash),
            name="Strategy",
            mode="lines",
            fill="tozeroy",
            line={"width": 1, "color": "#cf222e"},
            fillcolor="rgba(207,34,46,0.25)",
        )
    )
    return _layout(fig, 280, hovermode="x unified", yaxis={"tickformat": ".0%", "title": "drawdown"})


def _exits_figure(result: BacktestResult) -> go.Figure:
    m = result.metrics
    by_kind = dict(m.get("exits_by_kind") or {})
    # a liquidation bar only where the run had one (a leveraged perpetual book)
    kinds = [k for k in EXIT_LABELS if k not in OPTIONAL_KINDS or by_kind.get(k)]
    kinds += sorted(k for k in by_kind if k not in EXIT_LABELS)
    counts = [int(by_kind.get(k) or 0) for k in kinds]
    colours = ["#cf222e", "#1a7f37", "#bc4c00", "#8250df", "#0969da", "#8c959f", "#57606a"]
    fig = go.Figure(
        go.Bar(
            x=[EXIT_LABELS.get(k, k) for k in kinds],
            y=counts,
            text=[f"{c:,d}" for c in counts],
            textposition="outside",
            cliponaxis=False,
            marker={"color": colours + ["#8c959f"] * (len(kinds) - len(colours))},
        )
    )
    return _layout(fig, 300, yaxis_title="trades", showlegend=False)


def _selected(cfg: RunConfig, winners: pl.DataFrame) -> pl.DataFrame:
    if winners.height == 0:
        return winners
    if "selected" in winners.columns:
        return winners.filter(pl.col("selected"))
    return winners.filter(pl.col("rank") <= cfg.ranking.top_n)


def _winners_figure(cfg: RunConfig, result: BacktestResult) -> tuple[go.Figure, str]:
    """Heatmap of selected symbols x window (colour = rank), and a note on omitted symbols."""
    sel = _selected(cfg, result.winners)
    fig = go.Figure()
    if sel.height == 0:
        fig.add_annotation(text="no winners were selected", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        return _layout(fig, 200), ""
    counts = sel.group_by("symbol").len().sort(["len", "symbol"], descending=[True, False])
    n_symbols = counts.height
    shown = counts.head(MAX_HEATMAP_SYMBOLS).get_column("symbol").to_list()
    windows = sorted(set(sel.get_column("window").to_list()))
    col = {w: j for j, w in enumerate(windows)}
    row = {s: i for i, s in enumerate(shown)}
    z = np.full((len(shown), len(windows)), np.nan)
    text = [["" for _ in windows] for _ in shown]
    has_weight = "weight" in sel.columns
    for r in sel.filter(pl.col("symbol").is_in(shown)).iter_rows(named=True):
        i, j = row[r["symbol"]], col[r["window"]]
        z[i, j] = r["rank"]
        weight = _pct(r["weight"]) if has_weight and r["weight"] is not None else "not traded"
        # plotly renders hover text as pseudo-HTML, so names are escaped like the rest of the page.
        text[i][j] = (
            f"window {r['window']} (ranked {_esc(_when(r['rank_time'].isoformat()) if r.get('rank_time') else r['rank_date'])})<br>"
            f"{_esc(r['symbol'])}: rank {r['rank']}, weight {weight}"
        )
    fig.add_trace(
        go.Heatmap(
            x=windows,
            y=shown,
            z=z,
            text=text,
            hovertemplate="%{text}<extra></extra>",
            # Dark = best rank; the light end stays visible against the white background.
            colorscale=[[0.0, "#08306b"], [0.5, "#2171b5"], [1.0, "#9ecae1"]],
            zmin=1,
            zmax=max(cfg.ranking.top_n, int(np.nanmax(z)), 2),
            xgap=1,
            ygap=1,
            colorbar={"title": {"text": "rank"}, "thickness": 12},
        )
    )
    height = max(260, 18 * len(shown) + 110)
    _layout(
        fig,
        height,
        xaxis={"title": "window", "showgrid": False},
        yaxis={"autorange": "reversed", "showgrid": False, "tickfont": {"size": 11}, "dtick": 1},
        margin={"l": 110, "r": 20, "t": 36, "b": 40},
    )
    note = ""
    if n_symbols > len(shown):
        note = f"The {len(shown)} most often selected of {n_symbols} symbols are shown; all are in winners.parquet."
    return fig, note


def _figure_html(fig: go.Figure, div_id: str, first: bool) -> str:
    html: str = fig.to_html(
        full_html=False, include_plotlyjs="inline" if first else False, div_id=div_id, config=_PLOTLY_CONFIG
    )
    return html
