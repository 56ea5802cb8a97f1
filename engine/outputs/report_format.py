"""The report's words and numbers: formatting of percentages, prices, times and tables, and the labels.

Shared by the report's modules (:mod:`engine.outputs.report` and its ``report_*`` sections); every
text is HTML-escaped here.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import SupportsFloat, SupportsInt

import polars as pl

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
_TS_FORMAT = "%Y-%m-%d %H:%M"


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def _float(x: object) -> float:
    """Return ``float(x)`` of a number the report shows (a metric, a price, a weight; TypeError otherwise)."""
    if not isinstance(x, SupportsFloat | str):
        raise TypeError(f"not a number: {x!r}")
    return float(x)


def _integer(x: object) -> int:
    """Return ``int(x)`` of a count the report shows (TypeError for anything else)."""
    if not isinstance(x, SupportsInt | str):
        raise TypeError(f"not a count: {x!r}")
    return int(x)


def _pct(x: object) -> str:
    """Return a fraction as a percentage with 2 decimals; ``n/a`` when missing."""
    return "n/a" if _missing(x) else f"{_float(x) * 100:.2f}%"


def _num(x: object) -> str:
    """Return a number with thousands separators and 2 decimals; ``n/a`` when missing."""
    return "n/a" if _missing(x) else f"{_float(x):,.2f}"


def _price(x: object) -> str:
    """Return a price with enough digits for sub-dollar coins (2 decimals would show 0.15 for 0.1537)."""
    if _missing(x):
        return "n/a"
    v = _float(x)
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:,.4f}" if abs(v) >= 1 else f"{v:.6g}"


def _int(x: object) -> str:
    return "n/a" if _missing(x) else f"{_integer(x):,d}"


def _sign(x: object) -> str:
    """CSS class colouring a return by its sign."""
    if _missing(x) or _float(x) == 0:
        return "n"
    return "n pos" if _float(x) > 0 else "n neg"


def _when(text: object) -> str:
    """Return an ISO timestamp shortened to the date when it is midnight (daily runs)."""
    if text is None:
        return "n/a"
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    return t.strftime("%Y-%m-%d") if (t.hour, t.minute) == (0, 0) else t.strftime(_TS_FORMAT)


def _esc(x: object) -> str:
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
