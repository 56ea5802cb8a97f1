"""report.html: one self-contained page a person can read (equity, drawdown, exits, winners, trades).

The page must open offline and be byte-identical for identical inputs, so plotly.js is inlined once
(first figure only), every chart gets a fixed div id, and nothing time- or random-dependent
(generation time, uuids) is written.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import RunConfig
from engine.data.lakehouse import atomic_write_bytes
from engine.outputs.capacity import capacity_html
from engine.outputs.costs_report import costs_html
from engine.outputs.long_short import long_short_html
from engine.outputs.report_charts import (
    CHART_IDS,
    _drawdown_figure,
    _equity_figure,
    _exits_figure,
    _figure_html,
    _winners_figure,
)
from engine.outputs.report_format import EXIT_LABELS, _esc, _when
from engine.outputs.report_sections import (
    LAST_WINDOWS,
    _base_comparison_html,
    _config_html,
    _header,
    _portfolio_html,
    _trades_table,
    _windows_table,
    ambiguity_sentence,
    data_label,
    exit_rules_text,
)
from engine.outputs.report_wfo import WFO_CHART_IDS, _wfo_html, rules_label
from engine.outputs.rundir import REPORT_HTML
from engine.outputs.survivorship import survivorship_html
from engine.run.result import BacktestResult

__all__ = [
    "CHART_IDS",
    "EXIT_LABELS",
    "WFO_CHART_IDS",
    "ambiguity_sentence",
    "data_label",
    "exit_rules_text",
    "report_html",
    "report_write",
    "rules_label",
]

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
