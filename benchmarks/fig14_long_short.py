"""Figure 14: what a long-short book on perpetuals costs against a long-only run (issue 24, item 9).

One row of pairs run back to back in this process (after one untimed warm-up of each), data and
ranking included, artefacts excluded: ``engine.run.backtest_run`` with ``+profile=crypto_rating``
(long only, spot: the vectorbt stage) against the same profile, universe and windows with
``portfolio.side=long_short`` (top-10 long, bottom-10 short, market neutral, on perpetual data with
8-hourly funding: the market stage with shorts, liquidation levels and funding booked). Target: at
most 1.5x. Verdict as figure 8 (``fig8_wfo.pair_row``).

Until ``data.market=perp`` (the perpetual data) is merged, the long-short run reads the built-in bars
as a perpetual's with a stand-in funding series (8-hourly, +-1 bp, no mark price), which costs the
kernel what real funding rates would; the row says so.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, engine_cli, run_config
from benchmarks.fig8_wfo import pair_row

FIG = "14 long-short"
QUICK_DATA = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universe": "30 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "pairs": 3 if quick else 5,
    }


def _stand_in() -> bool:
    """Install a funding stand-in when the perpetual data are not there; return whether it was needed."""
    if importlib.util.find_spec("engine.data.funding") is not None:
        return False
    import polars as pl

    import engine.config.book as book

    def funding_read(cfg: Any, symbols: Any, start_ms: int, end_ms: int) -> pl.DataFrame:
        times = np.arange(start_ms - start_ms % 28_800_000, end_ms, 28_800_000, dtype=np.int64)
        rows = [(s, int(t), 1e-4 if j % 2 else -1e-4, None) for j, s in enumerate(sorted(symbols)) for t in times]
        schema = {"symbol": pl.String, "time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    module = types.ModuleType("engine.data.funding")
    module.funding_read = funding_read  # type: ignore[attr-defined]
    sys.modules["engine.data.funding"] = module
    book.market_of = lambda cfg: "perp"  # type: ignore[assignment]
    return True


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.run import backtest_run

    size = sizes(quick)
    lake = tmp / "lh"
    data = QUICK_DATA if quick else []
    engine_cli(tmp / "gen", ["+profile=crypto_rating", f"paths.lakehouse_dir={lake}", "quiet=true", *data])
    stand_in = _stand_in()
    perp = [] if stand_in else ["data.market=perp"]
    long_only = run_config(lake, tmp / "l", ["+profile=crypto_rating", *data])
    long_short = run_config(
        lake, tmp / "s", ["+profile=crypto_rating", "portfolio.side=long_short", "ranking.bottom_n=10", *perp, *data]
    )

    def timed(cfg: Any) -> float:
        t0 = time.perf_counter()
        backtest_run(cfg)
        return time.perf_counter() - t0

    timed(long_only), timed(long_short)  # warm-up: imports, numba compilation, first-call costs
    pairs = [(timed(long_only), timed(long_short)) for _ in range(size["pairs"])]
    row, det = pair_row(FIG, "long-short perp book vs long-only run", "+profile=crypto_rating", pairs, 1.5)
    if stand_in:
        row.note += "; funding: a stand-in series until data.market=perp is merged"
    return [row], {"sizes": size, "long-short vs long-only": det, "funding_stand_in": stand_in}
