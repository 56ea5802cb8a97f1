"""Figure 14: what a long-short book on perpetuals costs against a long-only run (issue 24, item 9).

One row of pairs run back to back in this process (after one untimed warm-up of each), data and
ranking included, artefacts excluded: ``engine.run.backtest_run`` with ``+profile=crypto_rating``
(long only, spot: the vectorbt stage) against the same profile, universe and windows with
``portfolio.side=long_short data.market=perp`` (top-10 long, bottom-10 short, market neutral, on the
generator's perpetuals with their 8-hourly funding and mark prices: the market stage with shorts,
liquidation levels and funding booked). Target: at most 1.5x. Verdict as figure 8
(``fig8_wfo.pair_row``).

The long-short book holds up to twice the positions of the long-only one (20 columns a window
against 10), and its run reads and checks the funding data besides the bars; the figure compares
the two runs whole, as a user would run them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, engine_cli, run_config
from benchmarks.fig8_wfo import pair_row

FIG = "14 long-short"
QUICK_DATA = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universe": "30 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "pairs": 3 if quick else 5,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.run import backtest_run

    size = sizes(quick)
    lake = tmp / "lh"
    data = QUICK_DATA if quick else []
    engine_cli(tmp / "gen", ["+profile=crypto_rating", f"paths.lakehouse_dir={lake}", "quiet=true", *data])
    long_only = run_config(lake, tmp / "l", ["+profile=crypto_rating", *data])
    long_short = run_config(
        lake,
        tmp / "s",
        ["+profile=crypto_rating", "portfolio.side=long_short", "ranking.bottom_n=10", "data.market=perp", *data],
    )

    def timed(cfg: Any) -> float:
        t0 = time.perf_counter()
        backtest_run(cfg)
        return time.perf_counter() - t0

    timed(long_only), timed(long_short)  # warm-up: imports, numba compilation, first-call costs
    pairs = [(timed(long_only), timed(long_short)) for _ in range(size["pairs"])]
    row, det = pair_row(FIG, "long-short perp book vs long-only run", "+profile=crypto_rating", pairs, 1.5)
    return [row], {"sizes": size, "long-short vs long-only": det}
