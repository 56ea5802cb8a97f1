"""The report's survivorship section: the run beside the same book ranked on today's survivors only."""

from __future__ import annotations

import html
import math

from engine.outputs.report_format import _float
from engine.run.metrics import Metrics


def _pct(x: object) -> str:
    """Return a fraction as a percentage with 2 decimals (signed); ``n/a`` when missing."""
    ok = x is not None and math.isfinite(_float(x))
    return f"{_float(x) * 100:+.2f}%" if ok else "n/a"


def _ratio(x: object) -> str:
    return f"{_float(x):.2f}" if x is not None and math.isfinite(_float(x)) else "n/a"


def survivorship_html(metrics: Metrics) -> str:
    """Return the report's survivorship section from metrics.json's block (empty without one).

    A table of total return, Sharpe ratio and max drawdown of the run and of the survivors-only
    run, the inflation in words, and the delisted symbols the run traded.
    """
    s = metrics.get("survivorship")
    if not s:
        return ""
    rows = [
        ("total return", _pct(metrics.get("total_return")), _pct(s.get("total_return"))),
        ("Sharpe ratio", _ratio(metrics.get("sharpe")), _ratio(s.get("sharpe"))),
        ("max drawdown", _pct(metrics.get("max_drawdown")), _pct(s.get("max_drawdown"))),
    ]
    body = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="n">{a}</td><td class="n">{b}</td></tr>' for k, a, b in rows
    )
    table = (
        '<table><thead><tr><th></th><th class="n">this run (every symbol listed at each ranking)</th>'
        f'<th class="n">survivors only</th></tr></thead><tbody>{body}</tbody></table>'
    )
    inflation = float(s["inflation"])
    verdict = (
        "ranking only today's survivors overstates this strategy"
        if inflation > 0
        else "ranking only today's survivors understates this strategy"
        if inflation < 0
        else "no difference"
    )
    traded = s.get("delisted_traded") or []
    names = ", ".join(traded[:20]) + (f" and {len(traded) - 20} more" if len(traded) > 20 else "")
    note = (
        f"Survivors: the {s['n_survivors']:,d} of {s['n_symbols']:,d} symbols whose bars reach the data's last bar "
        f"({str(s.get('data_end', ''))[:10]}); {s['n_delisted']:,d} ended earlier (delisted). Inflation "
        f"(survivors-only total return minus this run's): {_pct(inflation)}: {verdict}. "
        f"This run traded {len(traded):,d} of the delisted symbols{': ' + names if traded else ''}; "
        f"{s.get('delisting_exits', 0):,d} holdings were sold when their bars ended, at the last close less "
        f"{float(s.get('delisting_haircut', 0.0)) * 100:g}% (execution.delisting_haircut). Audited: {s.get('scope', '')}."
    )
    return (
        '<section id="survivorship"><h2>Survivorship audit: this run vs survivors only</h2>'
        f'{table}<p class="note">{html.escape(note)}</p></section>'
    )
