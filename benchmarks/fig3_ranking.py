"""Figure 3: ranking throughput of ``ranks_compute`` on a generated universe, daily and hourly base.

Bars are drawn directly with numpy into a polars LazyFrame (the synthetic source draws hourly
paths and is slow at thousands of symbols). Baseline: a plain polars eager pipeline doing the
momentum per symbol (``over("symbol")``), the filter to ranking bars and a per-bar rank
(``rank().over("rank_ms")``) - one factor, no volatility, liquidity or history filters. The daily
rows rank weekly with the default windows (30 days); the hourly rows rank daily (at 23:00) with
the ``crypto_rating_intraday`` windows (3 days = 72 bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import Row, best_of, timed

FIG = "3 ranking"


DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"n_symbols": 300, "n_days": 1000, "hourly_symbols": 300, "hourly_days": 90}
    return {"n_symbols": 2000, "n_days": 2000, "hourly_symbols": 1000, "hourly_days": 180}


def universe(n_symbols: int, n_days: int, seed: int = 3, step_ms: int = DAY_MS) -> pl.DataFrame:
    """Bars (symbol, timestamp, OHLCV) every ``step_ms`` over ``n_days`` days in the lakehouse scan's
    schema, sorted by symbol, time."""
    rng = np.random.default_rng(seed)
    n_bars = n_days * DAY_MS // step_ms
    scale = (step_ms / DAY_MS) ** 0.5
    ret = rng.normal(0.0005 * scale**2, 0.03 * scale, (n_bars, n_symbols)) + rng.normal(0, 0.02 * scale, (n_bars, 1))
    close = np.exp(rng.uniform(-2, 6, n_symbols)) * np.exp(np.cumsum(ret, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    volume = np.exp(rng.uniform(12, 20, n_symbols)) / close * scale**2
    ts = (np.datetime64("2019-01-01", "ms") + np.arange(n_bars) * np.timedelta64(step_ms, "ms")).astype(
        "datetime64[ms]"
    )
    names = [f"S{i:05d}/USDT" for i in range(n_symbols)]
    return pl.DataFrame(
        {
            "symbol": np.repeat(np.array(names), n_bars),
            "timestamp": np.tile(ts, n_symbols),
            **{
                c: a.T.ravel()
                for c, a in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume))
            },
        }
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


def baseline(df: pl.DataFrame, rank_ms: list[int], momentum_bars: int) -> pl.DataFrame:
    return (
        df.with_columns(
            pl.col("timestamp").dt.epoch("ms").alias("rank_ms"),
            (pl.col("close") / pl.col("close").shift(momentum_bars) - 1.0).over("symbol").alias("momentum"),
        )
        .filter(pl.col("rank_ms").is_in(rank_ms) & pl.col("momentum").is_not_null())
        .with_columns(pl.col("momentum").rank(descending=True).over("rank_ms").alias("rank"))
    )


def _measure(
    df: pl.DataFrame, rank_ms: list[int], ranking: Any, portfolio: Any, interval: str, label: str
) -> tuple[list[Row], dict[str, Any]]:
    from engine.config import UniverseConfig
    from engine.strategy.ranking import ranks_compute

    universe_cfg = UniverseConfig()
    lf = df.lazy()
    rep = 3
    momentum = ranking.bars(interval).momentum
    ours = best_of(lambda: ranks_compute(lf, rank_ms, ranking, portfolio, universe_cfg, interval), rep)
    base = best_of(lambda: baseline(df, rank_ms, momentum), rep)
    ranks = ranks_compute(lf, rank_ms, ranking, portfolio, universe_cfg, interval)
    if ranks.height == 0 or ranks.get_column("rank_ms").n_unique() != len(rank_ms):
        msg = f"figure 3 {label}: {ranks.get_column('rank_ms').n_unique()} of {len(rank_ms)} ranking bars have ranks"
        raise AssertionError(msg)
    n_rows = df.height
    rows = [
        Row(
            FIG,
            f"ranks_compute ({label}, {len(rank_ms)} ranking bars)",
            n_rows / ours,
            "rows/s",
            n_rows / base,
            "polars eager momentum + per-bar rank",
            note=f"{ours:.2f} s vs {base:.2f} s",
        ),
        Row(FIG, f"ranks_compute wall time ({interval} base)", ours, "s", base, "polars eager momentum + per-bar rank"),
    ]
    return rows, {
        "n_rows": n_rows,
        "n_rank_bars": len(rank_ms),
        "ranked_rows": ranks.height,
        "ours_s": ours,
        "baseline_s": base,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.config import PortfolioConfig, RankingConfig

    size = sizes(quick)
    start = int(np.datetime64("2019-01-01", "ms").astype(np.int64))
    gen_s, df = timed(lambda: universe(size["n_symbols"], size["n_days"]))
    daily_rank = [start + d * DAY_MS for d in range(61, size["n_days"], 7)]
    rows, daily = _measure(
        df, daily_rank, RankingConfig(), PortfolioConfig(), "1d", f"{size['n_symbols']} symbols x {size['n_days']} days"
    )
    del df
    hourly = universe(size["hourly_symbols"], size["hourly_days"], step_ms=HOUR_MS)
    hourly_rank = [start + d * DAY_MS + 23 * HOUR_MS for d in range(4, size["hourly_days"])]
    intraday = RankingConfig(momentum_window="3d", vol_window="3d", liquidity_window="1d", min_history="4d")
    more, hourly_detail = _measure(
        hourly,
        hourly_rank,
        intraday,
        PortfolioConfig(vol_window="3d"),
        "1h",
        f"hourly base, {size['hourly_symbols']} symbols x {size['hourly_days']} days",
    )
    detail = {
        "sizes": size,
        "generate_s": gen_s,
        **daily,
        "hourly": hourly_detail,
        "baseline": "polars eager: momentum over(symbol), is_in(ranking bars), rank over(ranking bar)",
    }
    return rows + more, detail
