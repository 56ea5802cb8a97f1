"""The report's sections of words and tables.

The header, the windows and trades tables, the stops-on-base-bars comparison, portfolio
construction and the resolved config.
"""

from __future__ import annotations

import json

import polars as pl

from engine.config import RunConfig
from engine.outputs.report_charts import _bench_columns, _benchmark
from engine.outputs.report_format import (
    _TS_FORMAT,
    BENCHMARK_LABELS,
    EXIT_LABELS,
    _esc,
    _int,
    _num,
    _pct,
    _price,
    _sign,
    _table,
    _when,
)
from engine.outputs.rundir import redact
from engine.run.metrics import Metrics
from engine.run.result import BacktestResult

MAX_TRADES = 200
"""Trades listed in the table; the full list is in trades.parquet."""
LAST_WINDOWS = 20
"""Windows listed in the winners table under the heatmap."""


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


def ambiguity_sentence(metrics: Metrics) -> str:
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


def _marks_sentence(m: Metrics) -> str:
    """Say which equity marks the returns and ratios come from and how they are annualised."""
    base = str(m.get("base_interval") or "1d")
    per_year = m.get("periods_per_year") or 365.0
    marks = "daily marks" if base == "1d" else f"the {base} bars' closes"
    return f"Returns and ratios from {marks}, annualised over 365 days ({per_year:,.0f} periods a year)"


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


def _flatten(node: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict) and node:
        out: list[tuple[str, object]] = []
        for k in sorted(node):
            out.extend(_flatten(node[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, node)]


def _config_html(cfg: RunConfig) -> str:
    rows = [[(k, ""), (redact(json.dumps(v, sort_keys=True)), "")] for k, v in _flatten(cfg.model_dump(mode="json"))]
    return f'<details id="config"><summary>Resolved config</summary>{_table(["Key", "Value"], rows)}</details>'


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
