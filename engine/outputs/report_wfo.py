"""The report's ``task=wfo`` section: in sample against out of sample, the choices, CPCV."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import polars as pl

from engine.outputs.report_charts import _figure_html, _layout
from engine.outputs.report_format import _esc, _int, _num, _pct, _sign, _table, _ts_strings, _when
from engine.outputs.report_sections import LAST_WINDOWS
from engine.run.result import BacktestResult

WFO_CHART_IDS = ("chart-wfo-equity", "chart-wfo-choices", "chart-wfo-cpcv")
"""Div ids of the walk-forward optimisation charts (``task=wfo`` only), after the others."""


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


def _equity_choices_figures(result: BacktestResult) -> tuple[go.Figure, go.Figure, int]:
    """Return the in-sample vs out-of-sample growth of 1, the chosen combination per window, the first OOS window."""
    assert result.wfo is not None
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
    return fig, fig2, k0


def _cpcv_figure(result: BacktestResult) -> go.Figure:
    """Return the CPCV distribution of out-of-sample Sharpe ratios, one per path (an empty frame without paths)."""
    paths = result.metrics.get("wfo", {}).get("cpcv_path_sharpe")
    fig3 = go.Figure()
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
    return fig3


def _stats_html(result: BacktestResult) -> str:
    """Return the walk-forward statistics table and its notes."""
    m, wfo = result.metrics, result.metrics.get("wfo") or {}
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
    return f'<table class="metrics">{stats}</table>{notes_html}'


def _choices_table(frame: pl.DataFrame) -> str:
    """Return the last :data:`LAST_WINDOWS` out-of-sample choices, newest first."""
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
    return _table(
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


def _wfo_html(result: BacktestResult) -> str:
    """Render the ``task=wfo`` section of the report (empty for other tasks).

    In-sample vs out-of-sample equity, the chosen combination per window, the CPCV distribution
    of out-of-sample Sharpe ratios, and the statistics.
    """
    if result.wfo is None:
        return ""
    m, wfo = result.metrics, result.metrics.get("wfo") or {}
    fig, fig2, k0 = _equity_choices_figures(result)
    fig3 = _cpcv_figure(result)
    cpcv_note = wfo.get("cpcv_reason") or ""
    choices_table = _choices_table(result.wfo["frame"])
    return (
        '<section id="wfo"><h2>Walk-forward optimisation: in sample vs out of sample</h2>'
        f"{_stats_html(result)}"
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
