"""report.html: one self-contained page a person can read (equity, drawdown, exits, winners, trades).

The page must open offline and be byte-identical for identical inputs, so plotly.js is inlined once
(first figure only), every chart gets a fixed div id, and nothing time- or random-dependent
(generation time, uuids) is written.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from engine.config import RunConfig
from engine.data.lakehouse import atomic_write_bytes
from engine.outputs.capacity import capacity_html
from engine.outputs.costs_report import costs_html
from engine.outputs.long_short import long_short_html
from engine.outputs.rundir import REPORT_HTML, redact
from engine.outputs.survivorship import survivorship_html
from engine.run.metrics import drawdown
from engine.run.result import BacktestResult

CHART_IDS = ("chart-equity", "chart-drawdown", "chart-exits", "chart-winners")
"""Div ids of the charts, in page order (fixed so the page is deterministic and testable)."""
WFO_CHART_IDS = ("chart-wfo-equity", "chart-wfo-choices", "chart-wfo-cpcv")
"""Div ids of the walk-forward optimisation charts (``task=wfo`` only), after the others."""
MAX_TRADES = 200
"""Trades listed in the table; the full list is in trades.parquet."""
LAST_WINDOWS = 20
"""Windows listed in the winners table under the heatmap."""
MAX_HEATMAP_SYMBOLS = 40
"""Rows of the winners heatmap: beyond this a heatmap stops being readable."""

EXIT_LABELS = {
    "stop_loss": "stop loss",
    "take_profit": "take profit",
    "trailing": "trailing stop",
    "max_holding": "max holding",
    "signal": "trend lost (signal)",
    "rebalance": "rebalance",
    "end": "end of run",
    "delisted": "delisted",
    "liquidation": "liquidated (margin)",
}
BENCHMARK_LABELS = {"equal_weight": "Equal-weight universe", "btc_buy_hold": "BTC buy & hold"}
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
_TS_FORMAT = "%Y-%m-%d %H:%M"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5rem;margin:8px 0 4px}h2{font-size:1.15rem;margin:20px 0 8px}section>h2:first-child{margin-top:0}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin-top:16px}
table{border-collapse:collapse;font-size:.85rem}
th,td{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f6f8fa}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.d{white-space:nowrap}
table.metrics td{border:none;padding:2px 8px}table.metrics td.k{color:#59636e}
table.metrics td.n{font-weight:600;padding-right:28px}
.pos{color:#1a7f37}.neg{color:#cf222e}
.note{color:#59636e;font-size:.85rem;margin:4px 0}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px;margin:12px 0 0}
.scroll{max-height:560px;overflow:auto}
details summary{cursor:pointer;font-weight:600}
"""


# ---- formatting ------------------------------------------------------------------------------


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def _pct(x: Any) -> str:
    """Return a fraction as a percentage with 2 decimals; ``n/a`` when missing."""
    return "n/a" if _missing(x) else f"{float(x) * 100:.2f}%"


def _num(x: Any) -> str:
    """Return a number with thousands separators and 2 decimals; ``n/a`` when missing."""
    return "n/a" if _missing(x) else f"{float(x):,.2f}"


def _price(x: Any) -> str:
    """Return a price with enough digits for sub-dollar coins (2 decimals would show 0.15 for 0.1537)."""
    if _missing(x):
        return "n/a"
    v = float(x)
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:,.4f}" if abs(v) >= 1 else f"{v:.6g}"


def _int(x: Any) -> str:
    return "n/a" if _missing(x) else f"{int(x):,d}"


def _sign(x: Any) -> str:
    """CSS class colouring a return by its sign."""
    if _missing(x) or float(x) == 0:
        return "n"
    return "n pos" if float(x) > 0 else "n neg"


def _when(text: Any) -> str:
    """Return an ISO timestamp shortened to the date when it is midnight (daily runs)."""
    if text is None:
        return "n/a"
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    return t.strftime("%Y-%m-%d") if (t.hour, t.minute) == (0, 0) else t.strftime(_TS_FORMAT)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(head: list[str], rows: list[list[tuple[str, str]]], numeric: set[int] | None = None) -> str:
    """Return an HTML table; each cell is (text, css class), text escaped here."""
    numeric = numeric or set()
    th = "".join(f'<th class="n">{_esc(h)}</th>' if i in numeric else f"<th>{_esc(h)}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{_esc(t)}</td>' if c else f"<td>{_esc(t)}</td>" for t, c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _ts_strings(s: pl.Series) -> list[str]:
    # Naive UTC strings: plotly.js has no time zones and would shift offset-suffixed dates.
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone:
        s = s.dt.convert_time_zone("UTC")
    return s.dt.strftime(_TS_FORMAT).to_list()


# ---- header ----------------------------------------------------------------------------------


def exit_rules_text(cfg: RunConfig) -> str:
    """Return the active exit rules in words, or a statement that there are none.

    Parameters
    ----------
    cfg
        The run configuration; ``cfg.exit_rules`` is None in rebalance mode.

    Returns
    -------
    str
        E.g. ``"stop loss 5.00%, take profit 15.00%"``.
    """
    rules = cfg.exit_rules
    if rules is None:
        return "none (rebalance mode: positions are held until the next rebalance)"
    parts = []
    if rules.fixed_sl is not None:
        parts.append(f"stop loss {_pct(rules.fixed_sl)}")
    if rules.trail_fraction is not None:
        parts.append(f"trailing stop {_pct(rules.trail_fraction)}")
    if rules.tp_stop is not None:
        parts.append(f"take profit {_pct(rules.tp_stop)}")
    if rules.max_holding is not None:
        parts.append(f"max holding {rules.max_holding}")
    return ", ".join(parts)


def data_label(cfg: RunConfig) -> str:
    """Return where a run's bars come from, in words (secrets in paths and URLs redacted).

    Parameters
    ----------
    cfg
        The run configuration; ``cfg.data`` names the source.

    Returns
    -------
    str
        E.g. ``"built-in synthetic universe (generated, not market data): 100 symbols, seed 7"``,
        ``"your files in /data/ohlcv"`` or ``"ccxt exchange binance"``.
    """
    from engine.data.sources.registry import source_label

    return redact(source_label(cfg.data))  # each backend says it (DataSource.label)


def ambiguity_sentence(metrics: dict[str, Any]) -> str:
    """Return the ambiguous-exit line: how much the SL-first assumption costs against TP-first.

    Parameters
    ----------
    metrics
        ``BacktestResult.metrics``: ``n_ambiguous_exits``, ``total_return`` (pessimistic, SL
        first) and ``total_return_optimistic`` (TP first) are used.

    Returns
    -------
    str
        One sentence with both total returns formatted as percentages.
    """
    n = int(metrics.get("n_ambiguous_exits") or 0)
    noun = "exit was" if n == 1 else "exits were"
    return (
        f"{n:,d} {noun} ambiguous (stop loss and take profit inside one bar): "
        f"pessimistic (SL first) total return {_pct(metrics.get('total_return'))}, "
        f"optimistic (TP first) {_pct(metrics.get('total_return_optimistic'))}"
    )


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


def _header(cfg: RunConfig, result: BacktestResult) -> str:
    m = result.metrics
    mode = m.get("mode") or ("rebalance" if cfg.exit_rules is None else "exit_rules")
    init_cash = cfg.backtest.init_cash
    bench = _benchmark(result)
    info = [
        ("Data", data_label(cfg)),
        ("Mode", "exit rules" if mode == "exit_rules" else "rebalance"),
        ("Period", f"{_when(m.get('start'))} to {_when(m.get('end'))}"),
        ("Interval", str(m.get("interval") or "n/a")),
        ("Windows", _int(m.get("n_windows"))),
        (
            "Rebalance",
            f"every {cfg.backtest.step or cfg.backtest.hold} on {cfg.backtest.interval} bars, top "
            f"{cfg.ranking.top_n}, {cfg.portfolio.weighting} weights",
        ),
        ("Exit rules", exit_rules_text(cfg)),
        ("Costs", f"fees {_pct(cfg.costs.fees)}, slippage {_pct(cfg.costs.slippage)} per fill"),
    ]
    info_html = "".join(f'<tr><td class="k">{_esc(k)}</td><td>{_esc(v)}</td></tr>' for k, v in info)

    cells: list[tuple[str, str, str]] = [
        ("Total return", _pct(m.get("total_return")), _sign(m.get("total_return"))),
        ("CAGR", _pct(m.get("cagr")), _sign(m.get("cagr"))),
        ("Final equity", _num(m.get("final_equity")), "n"),
        ("Initial cash", _num(init_cash), "n"),
        ("Annual volatility", _pct(m.get("annual_volatility")), "n"),
        ("Max drawdown", _pct(m.get("max_drawdown")), _sign(m.get("max_drawdown"))),
        ("Sharpe", _num(m.get("sharpe")), "n"),
        ("Sortino", _num(m.get("sortino")), "n"),
        ("Calmar", _num(m.get("calmar")), "n"),
        ("Turnover / year", _num(m.get("turnover")), "n"),
        ("Exposure", _pct(m.get("exposure")), "n"),
        ("Win rate", _pct(m.get("win_rate")), "n"),
        ("Avg trade return", _pct(m.get("avg_trade_return")), _sign(m.get("avg_trade_return"))),
        ("Orders", _int(m.get("n_orders")), "n"),
        ("Trades", _int(m.get("n_trades")), "n"),
    ]
    for col in _bench_columns(bench):
        assert bench is not None
        last = bench.get_column(col).drop_nulls()
        ret = float(last[-1]) / init_cash - 1.0 if last.len() else None
        cells.append((f"{BENCHMARK_LABELS.get(col, col)} return", _pct(ret), _sign(ret)))
    per_row = 4
    rows = []
    for i in range(0, len(cells), per_row):
        chunk = cells[i : i + per_row]
        pairs = "".join(f'<td class="k">{_esc(k)}</td><td class="{c}">{_esc(v)}</td>' for k, v, c in chunk)
        rows.append(f"<tr>{pairs}</tr>")
    metrics_html = f'<table class="metrics" id="metrics">{"".join(rows)}</table>'

    warn = ""
    if cfg.exit_rules is not None or mode == "exit_rules":
        warn = f'<p class="warn" id="ambiguity">{_esc(ambiguity_sentence(m))}</p>'
    title = f"Backtest report: {_when(m.get('start'))} to {_when(m.get('end'))}"
    return (
        f"<h1>{_esc(title)}</h1>"
        f'<section><table class="metrics">{info_html}</table>{warn}</section>'
        f"<section><h2>Key metrics</h2>{metrics_html}"
        f'<p class="note">{_esc(_marks_sentence(m))}; '
        "turnover is traded value per year over mean equity.</p></section>"
    )


# ---- charts ----------------------------------------------------------------------------------


def _layout(fig: go.Figure, height: int, **kw: Any) -> go.Figure:
    base: dict[str, Any] = {
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
    kinds = [k for k in EXIT_LABELS if k != "liquidation" or by_kind.get(k)]
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


# ---- tables ----------------------------------------------------------------------------------


def _windows_table(result: BacktestResult) -> str:
    audit = sorted(result.audit, key=lambda a: a.get("window", 0))[-LAST_WINDOWS:]
    rows = []
    for a in reversed(audit):
        weights = a.get("weights") or {}
        winners = a.get("winners") or []
        held = [weights[s] for s in winners if s in weights]
        if held and len(held) == len(winners) and len(set(held)) == 1:
            # Equal weights repeated per symbol are noise: state the weight once.
            names = f"{', '.join(winners)} (each {_pct(held[0])})"
        else:
            names = ", ".join(f"{s} {_pct(weights[s])}" if s in weights else f"{s} (not traded)" for s in winners)
        exits = a.get("exits") or {}
        order = list(EXIT_LABELS) + sorted(k for k in exits if k not in EXIT_LABELS)
        exit_text = ", ".join(f"{EXIT_LABELS.get(k, k)} {exits[k]}" for k in order if exits.get(k))
        rows.append(
            [
                (str(a.get("window", "")), "n"),
                (_when(a.get("rank_time") or a.get("rank_date")), "d"),
                (f"{_when(a.get('start'))} to {_when(a.get('end'))}", "d"),
                (names or "none (cash)", ""),
                (exit_text or "-", ""),
                (_int(a.get("ambiguous") or 0), "n"),
            ]
        )
    return _table(["Window", "Ranked", "Held (end exclusive)", "Winners (weight)", "Exits", "Ambiguous"], rows, {0, 5})


def _windows(first: int, last: int) -> str:
    """Return a trade's windows: ``3`` or ``3-5`` (a position held across rebalances is one trade)."""
    return str(first) if first == last else f"{first}\u2013{last}"


def _trades_table(result: BacktestResult) -> str:
    trades = result.trades
    total = trades.height
    if total == 0:
        return '<p class="note">No trades.</p>'
    recent = trades.sort(["exit_time", "entry_time", "symbol"], descending=[True, True, False]).head(MAX_TRADES)
    rows = []
    for t in recent.with_columns(
        pl.col("entry_time").dt.strftime(_TS_FORMAT), pl.col("exit_time").dt.strftime(_TS_FORMAT)
    ).iter_rows(named=True):
        rows.append(
            [
                (_windows(t["entry_window"], t["exit_window"]), "n"),
                (t["symbol"], ""),
                (t["entry_time"] or "", "d"),
                (_price(t["entry_price"]), "n"),
                (t["exit_time"] or "", "d"),
                (_price(t["exit_price"]), "n"),
                (
                    EXIT_LABELS.get(t["exit_kind"], t["exit_kind"] or "")
                    + (" (open)" if t["status"] == "open" else ""),
                    "",
                ),
                ("yes" if t["ambiguous"] else "", ""),
                (_pct(t["return"]), _sign(t["return"])),
            ]
        )
    shown = min(total, MAX_TRADES)
    note = (
        f"All {total:,d} trades, most recent first."
        if total <= MAX_TRADES
        else f"The {shown:,d} most recent of {total:,d} trades (by exit time); all are in trades.parquet."
    )
    head = [
        "Windows",
        "Symbol",
        "Entry (UTC)",
        "Entry price",
        "Exit (UTC)",
        "Exit price",
        "Exit",
        "Ambiguous",
        "Net return",
    ]
    table = _table(head, rows, {0, 3, 5, 8})
    return f'<p class="note" id="trades-note">{_esc(note)}</p><div class="scroll">{table}</div>'


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        out: list[tuple[str, Any]] = []
        for k in sorted(node):
            out.extend(_flatten(node[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, node)]


def _config_html(cfg: RunConfig) -> str:
    rows = [[(k, ""), (redact(json.dumps(v, sort_keys=True)), "")] for k, v in _flatten(cfg.model_dump(mode="json"))]
    return f'<details id="config"><summary>Resolved config</summary>{_table(["Key", "Value"], rows)}</details>'


# ---- page ------------------------------------------------------------------------------------


def _marks_sentence(m: dict[str, Any]) -> str:
    """Say which equity marks the returns and ratios come from and how they are annualised."""
    base = str(m.get("base_interval") or "1d")
    per_year = m.get("periods_per_year") or 365.0
    marks = "daily marks" if base == "1d" else f"the {base} bars' closes"
    return f"Returns and ratios from {marks}, annualised over 365 days ({per_year:,.0f} periods a year)"


def _base_comparison_html(result: BacktestResult) -> str:
    """Return the HTML comparing stops on the base bars with the finer bars, same winners and rules (empty if not run)."""
    m = result.metrics
    base_bars = m.get("base_bars")
    if not base_bars:
        return ""
    interval = str(m.get("interval"))
    base = str(base_bars.get("interval") or "1d")
    word = "daily" if base == "1d" else base
    rows = [
        [("total return", ""), (_pct(base_bars.get("total_return")), "n"), (_pct(m.get("total_return")), "n")],
        [("max drawdown", ""), (_pct(base_bars.get("max_drawdown")), "n"), (_pct(m.get("max_drawdown")), "n")],
        [("stop exits", ""), (_int(base_bars.get("n_stop_exits")), "n"), (_int(m.get("n_stop_exits")), "n")],
        [
            ("ambiguous exits", ""),
            (_int(base_bars.get("n_ambiguous_exits")), "n"),
            (_int(m.get("n_ambiguous_exits")), "n"),
        ],
    ]
    table = _table(["", f"stops on {base} bars", f"stops on {interval} bars"], rows, numeric={1, 2})
    note = (
        f"The same winners, weights and exit rules, with stops checked on the {base} base bars only and on "
        f"{interval} bars: {_int(base_bars.get('ambiguous_resolved_by_finer_bars'))} exits ambiguous on {base} bars "
        "were resolved by the finer bars."
    )
    head = f"Stops on {word} vs {interval} bars"
    return f'<section id="daily-vs-fine"><h2>{_esc(head)}</h2>{table}<p class="note">{_esc(note)}</p></section>'


def rules_label(rules_json: str | None) -> str:
    """Label a grid combination's exit rules, short: ``SL 2% / TP 30% / trailing`` (``none``: no rules)."""
    if rules_json is None:
        return "-"
    r = json.loads(rules_json)
    if not r:
        return "none (rebalance only)"
    parts = []
    if r.get("sl_stop") is not None:
        parts.append(("trailing SL " if r.get("sl_trail") is True else "SL ") + _pct(r["sl_stop"]).replace(".00", ""))
    if r.get("tp_stop") is not None:
        parts.append("TP " + _pct(r["tp_stop"]).replace(".00", ""))
    if not isinstance(r.get("sl_trail"), bool) and r.get("sl_trail") is not None:
        parts.append("trail " + _pct(r["sl_trail"]).replace(".00", ""))
    if r.get("max_holding") is not None:
        parts.append(f"hold {r['max_holding']}")
    return " / ".join(parts) or "none"


def _wfo_html(result: BacktestResult) -> str:
    """Render the ``task=wfo`` section of the report (empty for other tasks).

    In-sample vs out-of-sample equity, the chosen combination per window, the CPCV distribution
    of out-of-sample Sharpe ratios, and the statistics.
    """
    if result.wfo is None:
        return ""
    m, wfo = result.metrics, result.metrics.get("wfo") or {}
    frame: pl.DataFrame = result.wfo["frame"]
    returns = np.asarray(result.wfo["returns"], dtype=np.float64)
    rules: list[str] = result.wfo["rules"]
    x = _ts_strings(frame.get_column("end"))
    oos = frame.get_column("phase").to_numpy() == "oos"
    k0 = int(np.argmax(oos)) if oos.any() else len(x)
    # in sample: the combination a plain grid would report (best Sharpe over every window, hindsight)
    from engine.core.best import best_index
    from engine.run.validation import sharpe_columns

    best = best_index(sharpe_columns(returns))
    is_curve = np.cumprod(1.0 + np.nan_to_num(returns[:, best]))
    book = frame.get_column("book_return").fill_null(0.0).to_numpy()
    oos_curve = np.cumprod(1.0 + book[k0:]) * (is_curve[k0 - 1] if k0 > 0 else 1.0)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=x, y=is_curve, name=f"in sample: combination {best} (best Sharpe over all windows, hindsight)")
    )
    fig.add_trace(go.Scatter(x=x[k0:], y=oos_curve, name="out of sample: the walk-forward choices, traded"))
    if k0 > 0:
        fig.add_vline(x=x[k0 - 1], line_dash="dot", line_color="#59636e")
    _layout(fig, 340, yaxis={"title": "growth of 1 (window ends)"}, xaxis={"title": "window end"})
    combos = frame.get_column("combo").to_list()
    text = [
        f"window {w}: {rules[c] if c is not None else 'training only'}"
        for w, c in zip(frame.get_column("window"), combos, strict=True)
    ]
    fig2 = go.Figure(
        go.Scatter(
            x=x,
            y=combos,
            mode="lines+markers",
            line={"shape": "hv"},
            text=text,
            hovertemplate="%{text}<extra></extra>",
            name="chosen combination",
        )
    )
    _layout(
        fig2,
        280,
        yaxis={"title": "combination", "dtick": 1 if len(rules) <= 10 else None, "rangemode": "tozero"},
        xaxis={"title": "window end"},
    )
    paths = result.metrics.get("wfo", {}).get("cpcv_path_sharpe")
    fig3 = go.Figure()
    cpcv_note = wfo.get("cpcv_reason") or ""
    if paths:
        fig3.add_trace(go.Histogram(x=[p for p in paths if p is not None], nbinsx=20, name="CPCV paths"))
        _layout(
            fig3,
            260,
            xaxis={"title": "out-of-sample Sharpe ratio per window, one per CPCV path"},
            yaxis={"title": "paths"},
        )
    else:
        _layout(fig3, 120)
    rows = [
        [("out-of-sample start (ranking date)", ""), (_esc(m.get("oos_start")), "n")],
        [
            ("objective / training windows", ""),
            (
                _esc(
                    f"{wfo.get('objective')} / {wfo.get('train_windows')}{' anchored' if wfo.get('anchored') else ''}"
                ),
                "n",
            ),
        ],
        [("in-sample Sharpe of the choices (annualised)", ""), (_num(m.get("is_sharpe")), "n")],
        [("out-of-sample Sharpe (annualised, per window)", ""), (_num(m.get("oos_sharpe")), "n")],
        [("PBO", ""), (_num(m.get("pbo")), "n")],
        [("trials (deflated Sharpe's N)", ""), (_int(m.get("n_trials")), "n")],
        [("deflated Sharpe ratio", ""), (_num(m.get("deflated_sharpe")), "n")],
        [("combination changes", ""), (_int(wfo.get("n_switches")), "n")],
        [("undefined objectives (ranked last)", ""), (_int(wfo.get("n_undefined_objectives")), "n")],
    ]
    stats = "".join(f'<tr><td class="k">{_esc(k)}</td><td class="n">{v}</td></tr>' for (k, _), (v, _) in rows)
    notes = [n for n in (wfo.get("note"), wfo.get("pbo_reason"), wfo.get("n_trials_source")) if n]
    notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    table_rows = []
    for r in frame.filter(pl.col("phase") == "oos").tail(LAST_WINDOWS).reverse().iter_rows(named=True):
        table_rows.append(
            [
                (str(r["window"]), "n"),
                (_when((r.get("rank_time") or r["rank_date"]).isoformat()), "d"),
                (str(r["combo"]), "n"),
                (rules_label(r["exit_rules"]), ""),
                (_num(r["is_objective"]), "n"),
                (_pct(r["oos_return"]), _sign(r["oos_return"])),
                (f"{r['oos_rank']} of {r['n_combinations']}", "n"),
                (_pct(r["book_return"]), _sign(r["book_return"])),
            ]
        )
    choices_table = _table(
        [
            "Window",
            "Ranked",
            "Combination",
            "Exit rules",
            "In-sample objective",
            "Its OOS return",
            "OOS rank",
            "Book return",
        ],
        table_rows,
        {0, 2, 4, 5, 6, 7},
    )
    return (
        '<section id="wfo"><h2>Walk-forward optimisation: in sample vs out of sample</h2>'
        f'<table class="metrics">{stats}</table>'
        f"{notes_html}"
        f"{_figure_html(fig, WFO_CHART_IDS[0], first=False)}"
        '<p class="note">Growth of 1 per window: the grid\'s best combination in hindsight (what a grid reports) against '
        "the book that traded each window's choice made on the previous windows only (from the dotted line).</p>"
        f"<h2>Chosen combination per window</h2>{_figure_html(fig2, WFO_CHART_IDS[1], first=False)}"
        f"<h2>Last {LAST_WINDOWS} choices</h2>"
        f'<p class="note">Windows here count over the whole walk-forward, training included; the other tables '
        f"of this page count the out-of-sample windows from {_esc(m.get('oos_start'))} (their window 0 is window {k0} here).</p>"
        f'<div class="scroll">{choices_table}</div>'
        f"<h2>CPCV: out-of-sample Sharpe ratio per path</h2>{_figure_html(fig3, WFO_CHART_IDS[2], first=False)}"
        + (f'<p class="note">{_esc(cpcv_note)}</p>' if cpcv_note else "")
        + "</section>"
    )


def _portfolio_html(cfg: RunConfig, result: BacktestResult) -> str:
    """Return the portfolio-construction section (engine/outputs/portfolio_report.py), empty when it is off."""
    from engine.outputs.portfolio_report import portfolio_rows

    found = portfolio_rows(cfg, result)
    if found is None:
        return ""
    summary, head, rows = found
    cells = [[(str(r[0]), "n"), (_when(r[1]), "d"), *((_pct(x), "n") for x in r[2:])] for r in rows]
    table = _table(head, cells, {0, 2, 3, 4, 5, 6})
    return f'<section><h2>Portfolio construction</h2><p class="note">{_esc(summary)}</p><div class="scroll">{table}</div></section>'


def report_html(cfg: RunConfig, result: BacktestResult) -> str:
    """Return the whole report page as a string (deterministic for identical inputs).

    Parameters
    ----------
    cfg
        The run's validated configuration (shown in full at the end of the page).
    result
        What the backtest produced; ``result.benchmark`` is optional.

    Returns
    -------
    str
        A self-contained HTML document with plotly.js inlined once.
    """
    winners_fig, winners_note = _winners_figure(cfg, result)
    n_amb = int(result.metrics.get("n_ambiguous_exits") or 0)
    figures = [
        ("Equity vs benchmarks (marked at bar close)", _equity_figure(cfg, result), ""),
        ("Drawdown (underwater)", _drawdown_figure(cfg, result), ""),
        ("Exits by kind" + (f" ({n_amb:,d} ambiguous)" if n_amb else ""), _exits_figure(result), ""),
        ("Winners per window (colour = rank, 1 = best)", winners_fig, winners_note),
    ]
    charts = []
    for i, ((heading, fig, note), div_id) in enumerate(zip(figures, CHART_IDS, strict=True)):
        note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
        charts.append(f"<section><h2>{_esc(heading)}</h2>{_figure_html(fig, div_id, first=i == 0)}{note_html}")
        if div_id == "chart-winners":
            charts.append(f'<h2>Last {LAST_WINDOWS} windows</h2><div class="scroll">{_windows_table(result)}</div>')
        charts.append("</section>")
    title = f"Backtest report {_when(result.metrics.get('start'))} to {_when(result.metrics.get('end'))}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{_header(cfg, result)}"
        f"{''.join(charts)}"
        f"{_base_comparison_html(result)}"
        f"{costs_html(cfg, result)}"
        f"{survivorship_html(result.metrics)}"
        f"{_wfo_html(result)}"
        f"{capacity_html(result.capacity)}"
        f"{_portfolio_html(cfg, result)}"
        f"{long_short_html(cfg, result)}"
        f"<section><h2>Trades</h2>{_trades_table(result)}</section>"
        f"<section>{_config_html(cfg)}</section>"
        "</main></body></html>\n"
    )


def report_write(out: Path, cfg: RunConfig, result: BacktestResult) -> None:
    """Write ``report.html`` into ``out`` atomically.

    Parameters
    ----------
    out
        The run directory (created if missing).
    cfg
        The run's validated configuration.
    result
        What the backtest produced.
    """
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / REPORT_HTML, report_html(cfg, result).encode("utf-8"))
