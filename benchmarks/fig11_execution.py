"""Figure 11: what the market execution costs (issue 22).

Two rows, each as pairs run back to back in this process (after one untimed warm-up of each), data
and ranking included, artefacts excluded, so a slow spell of the shared machine hits both runs of a
pair alike:

- **realistic profile vs the default run**: ``engine.run.backtest_run`` with
  ``+profile=crypto_rating_realistic`` (1 % participation, square-root impact, EDGE spread, a
  5 USDT minimum notional: the market stage) against ``+profile=crypto_rating`` (the vectorbt
  stage). Target: at most 1.3x;
- **five capitals vs one run**: ``engine.run.capacity.capacity_run`` with the realistic profile and
  ``execution.capacity=[1e4,1e5,1e6,1e7,1e8]`` (five books of one pass; 1e5 is the run's own book)
  against ``backtest_run`` of the same profile at one capital. Target: at most 2x.

Verdict as figure 8: the median pair ratio +- two robust standard errors (``fig8_wfo.noise_band``):
pass when wholly under the target, miss when wholly over it, else inconclusive. Quick mode: 30
symbols over 2023.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import MATCH, MISMATCH, Row, engine_cli, run_config
from benchmarks.fig8_wfo import pair_row

FIG = "11 execution"
QUICK_DATA = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]
CAPITALS = "execution.capacity=[1e4,1e5,1e6,1e7,1e8]"


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universe": "30 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "pairs": 3 if quick else 5,
        "capitals": 5,
    }


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.run import backtest_run
    from engine.run.capacity import capacity_run

    size = sizes(quick)
    lake = tmp / "lh"
    data = QUICK_DATA if quick else []
    engine_cli(tmp / "gen", ["+profile=crypto_rating", f"paths.lakehouse_dir={lake}", "quiet=true", *data])
    default = run_config(lake, tmp / "d", ["+profile=crypto_rating", *data])
    realistic = run_config(lake, tmp / "r", ["+profile=crypto_rating_realistic", *data])
    capacity = run_config(lake, tmp / "c", ["+profile=crypto_rating_realistic", CAPITALS, *data])

    def one_default() -> float:
        return _timed(lambda: backtest_run(default))

    def one_realistic() -> float:
        return _timed(lambda: backtest_run(realistic))

    def five_capitals() -> float:
        return _timed(lambda: capacity_run(capacity))

    one_default(), one_realistic(), five_capitals()  # warm-up: imports, numba compilation, first-call costs
    # correctness: the capacity pass's own book is the plain realistic run, to the bit
    alone, curve = backtest_run(realistic).book_metrics[0], capacity_run(capacity).book_metrics[0]
    keys = ("total_return", "sharpe", "max_drawdown", "n_orders")
    differ = [k for k in keys if alone[k] != curve[k]]
    check = Row(
        FIG,
        "five capitals' run book equals the plain realistic run",
        None,
        "",
        status=MISMATCH if differ else MATCH,
        note=f"differs in {differ}" if differ else f"{', '.join(keys)} equal to the bit",
    )
    profile_pairs = [(one_default(), one_realistic()) for _ in range(size["pairs"])]
    capital_pairs = [(one_realistic(), five_capitals()) for _ in range(size["pairs"])]
    rows, detail = [check], {"sizes": size}
    for name, base, pairs, target in (
        ("realistic profile vs the default run", "+profile=crypto_rating", profile_pairs, 1.3),
        ("five capitals (one pass) vs one run", "one run, realistic profile", capital_pairs, 2.0),
    ):
        row, det = pair_row(FIG, name, base, pairs, target)
        rows.append(row)
        detail[name] = det
    detail["note"] = "in process, data and ranking included, artefacts excluded; verdict as figure 8"
    return rows, detail
