"""Figure 3: ranking throughput of ``ranks_compute`` on a generated daily universe.

Daily bars are drawn directly with numpy into a polars LazyFrame (the synthetic source draws
hourly paths and is slow at thousands of symbols). Baseline: a plain polars eager pipeline doing
30-day momentum per symbol (``over("symbol")``), the filter to ranking dates and a per-date rank
(``rank().over("date")``) - one factor, no volatility, liquidity or history filters.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import Row, best_of, timed

FIG = "3 ranking"


def sizes(quick: bool) -> dict[str, Any]:
    return {"n_symbols": 300, "n_days": 1000} if quick else {"n_symbols": 2000, "n_days": 2000}


def universe(n_symbols: int, n_days: int, seed: int = 3) -> pl.DataFrame:
    """Daily bars (symbol, timestamp, OHLCV) in the lakehouse scan's schema, sorted by symbol, time."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(0.0005, 0.03, (n_days, n_symbols)) + rng.normal(0, 0.02, (n_days, 1))
    close = np.exp(rng.uniform(-2, 6, n_symbols)) * np.exp(np.cumsum(ret, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    volume = np.exp(rng.uniform(12, 20, n_symbols)) / close
    ts = (np.datetime64("2019-01-01", "ms") + np.arange(n_days) * np.timedelta64(1, "D")).astype("datetime64[ms]")
    names = [f"S{i:05d}/USDT" for i in range(n_symbols)]
    return pl.DataFrame(
        {
            "symbol": np.repeat(np.array(names), n_days),
            "timestamp": np.tile(ts, n_symbols),
            **{
                c: a.T.ravel()
                for c, a in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume))
            },
        }
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


def baseline(df: pl.DataFrame, rank_dates: list[date], momentum_days: int) -> pl.DataFrame:
    return (
        df.with_columns(
            pl.col("timestamp").dt.date().alias("date"),
            (pl.col("close") / pl.col("close").shift(momentum_days) - 1.0).over("symbol").alias("momentum"),
        )
        .filter(pl.col("date").is_in(rank_dates) & pl.col("momentum").is_not_null())
        .with_columns(pl.col("momentum").rank(descending=True).over("date").alias("rank"))
    )


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.config import PortfolioConfig, RankingConfig, UniverseConfig
    from engine.ranking import ranks_compute

    size = sizes(quick)
    gen_s, df = timed(lambda: universe(size["n_symbols"], size["n_days"]))
    n_rows = df.height
    start = date(2019, 1, 1)
    rank_dates = [start + timedelta(days=d) for d in range(61, size["n_days"], 7)]
    ranking, portfolio, universe_cfg = RankingConfig(), PortfolioConfig(), UniverseConfig()
    lf = df.lazy()
    rep = 3
    ours = best_of(lambda: ranks_compute(lf, rank_dates, ranking, portfolio, universe_cfg), rep)
    base = best_of(lambda: baseline(df, rank_dates, ranking.momentum_days), rep)
    ranks = ranks_compute(lf, rank_dates, ranking, portfolio, universe_cfg)
    label = f"{size['n_symbols']} symbols x {size['n_days']} days"
    rows = [
        Row(
            FIG,
            f"ranks_compute ({label}, {len(rank_dates)} rank dates)",
            n_rows / ours,
            "rows/s",
            n_rows / base,
            "polars eager momentum + per-date rank",
            note=f"{ours:.2f} s vs {base:.2f} s",
        ),
        Row(FIG, "ranks_compute wall time", ours, "s", base, "polars eager momentum + per-date rank"),
    ]
    detail = {
        "sizes": size,
        "n_rows": n_rows,
        "n_rank_dates": len(rank_dates),
        "generate_s": gen_s,
        "ranked_rows": ranks.height,
        "ours_s": ours,
        "baseline_s": base,
        "baseline": "polars eager: momentum over(symbol), is_in(rank dates), rank over(date)",
    }
    return rows, detail
