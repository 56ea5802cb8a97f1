"""report.html's costs section (engine/outputs/costs_report.py): the numbers it shows are metrics.json's.

A tiny realistic run (a binding cap, impact, a fixed spread, a minimum notional) writes its report;
the test reads the section's numbers out of the html and checks them against metrics.json's ``costs``
block and orders.parquet. A frictionless run's report has no such section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import small_config

from engine.tasks import run_backtest

pytestmark = pytest.mark.slow  # numba compiles the market kernel on first use

CAP = 2e-4
REALISTIC = [
    "+profile=crypto_rating",
    f"execution.max_participation={CAP}",
    "execution.impact=sqrt",
    "execution.spread=fixed",
    "execution.half_spread=0.001",
    "execution.min_notional=50",
]
ROW = re.compile(r'<tr data-cost="(\w+)"><td>[^<]*</td>((?:<td class="n">[^<]*</td>)+)</tr>')


def _cells(page: str) -> dict[str, list[str]]:
    section = page[page.index('<section id="costs">') :]
    section = section[: section.index("</section>")]
    return {k: re.findall(r'<td class="n">([^<]*)</td>', cells) for k, cells in ROW.findall(section)}


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_the_costs_section_shows_metrics_json(lakehouse_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_backtest(small_config(lakehouse_dir, out, *REALISTIC))
    costs = json.loads((out / "metrics.json").read_text())["costs"]
    page = (out / "report.html").read_text()
    cells = _cells(page)
    assert set(cells) == {"fees", "slippage", "impact", "spread", "total", "rejected_orders", "dropped_quote"}
    for key in ("fees", "slippage", "impact", "spread", "dropped_quote"):
        assert _number(cells[key][0]) == pytest.approx(costs[key], abs=0.005), key
    assert min(costs[k] for k in ("fees", "slippage", "impact", "spread", "dropped_quote")) > 0  # all shown non-zero
    paid = costs["fees"] + costs["slippage"] + costs["impact"] + costs["spread"]
    assert _number(cells["total"][0]) == pytest.approx(paid, abs=0.005)
    assert int(cells["rejected_orders"][0].replace(",", "")) == costs["rejected_orders"]
    orders = pl.read_parquet(out / "orders.parquet")
    traded = float((orders["size"] * orders["price"]).sum())
    assert _number(cells["fees"][1]) == pytest.approx(costs["fees"] / 100_000 * 100, abs=0.0005)  # of the capital
    assert _number(cells["total"][2]) == pytest.approx(paid / traded * 100, abs=0.0005)  # of the quote traded
    # the participation paragraph: fills, maximum and the fills at the cap, counted from orders.parquet
    note = re.search(r'<p class="note" id="costs-participation">([^<]*)</p>', page)
    assert note is not None
    p = orders["participation"].to_numpy()
    found = re.search(r"([\d,]+) fills: .* max ([\d.e-]+); ([\d,]+) at the cap of ([\d.e-]+)\.", note.group(1))
    assert found is not None, note.group(1)
    assert int(found.group(1).replace(",", "")) == orders.height
    assert float(found.group(2)) == pytest.approx(p.max(), rel=5e-3) and p.max() <= CAP * (1 + 1e-9)
    assert int(found.group(3).replace(",", "")) == int(np.sum(p >= CAP * (1 - 1e-9))) > 0
    assert float(found.group(4)) == CAP


def test_a_frictionless_report_has_no_costs_section(lakehouse_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    run_backtest(small_config(lakehouse_dir, out, "+profile=crypto_rating_baseline"))
    assert "costs" not in json.loads((out / "metrics.json").read_text())
    assert 'id="costs"' not in (out / "report.html").read_text()
