"""Features and ranking: a polars lazy pipeline over the daily bars of the whole universe.

Every feature at date ``d`` uses only bars with open time <= ``d`` (rolling windows look back),
so a window ranked at ``d`` cannot see the future. A symbol is ranked on ``d`` only if it has a
bar on ``d`` (still trading), at least ``min_history_days`` bars (listed long enough), a median
dollar volume above the floor and finite factors: point-in-time and survivorship-safe, symbols
delisted later included.
"""

from __future__ import annotations

import itertools
import logging
import math
from datetime import date

import numpy as np
import polars as pl

from engine.config import PortfolioConfig, RankingConfig, UniverseConfig

log = logging.getLogger(__name__)

FACTORS = ("momentum", "vol_adj_momentum")


def features_compute(bars: pl.LazyFrame, ranking: RankingConfig, portfolio: PortfolioConfig) -> pl.LazyFrame:
    """Per (symbol, day) factor values from daily bars. LazyFrame in, LazyFrame out."""
    n_mom = ranking.momentum_days
    logret = (pl.col("close") / pl.col("close").shift(1)).log()
    return (
        bars.select("symbol", "timestamp", "close", "volume")
        .with_columns(
            pl.col("timestamp").dt.date().alias("date"),
            (pl.col("close") / pl.col("close").shift(n_mom) - 1.0)
            .over("symbol", order_by="timestamp")
            .alias("momentum"),
            logret.rolling_std(ranking.vol_days).over("symbol", order_by="timestamp").alias("vol"),
            logret.rolling_std(portfolio.vol_days).over("symbol", order_by="timestamp").alias("weight_vol"),
            (pl.col("close") * pl.col("volume"))
            .rolling_median(ranking.liquidity_days)
            .over("symbol", order_by="timestamp")
            .alias("dollar_volume"),
            pl.int_range(1, pl.len() + 1).over("symbol", order_by="timestamp").alias("history"),
        )
        .with_columns(
            (pl.col("momentum") / (pl.col("vol") * math.sqrt(n_mom))).alias("vol_adj_momentum"),
        )
    )


def ranks_compute(
    bars: pl.LazyFrame,
    rank_dates: list[date],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
) -> pl.DataFrame:
    """Ranked eligible symbols on each ranking date: one collect for all windows.

    Returns ``rank_date, symbol, score, rank`` (1 = best; ties broken by symbol name) plus the
    factor values and ``weight_vol``.
    """
    feats = features_compute(bars, ranking, portfolio).filter(pl.col("date").is_in(rank_dates))
    if universe.symbols:
        feats = feats.filter(pl.col("symbol").is_in(universe.symbols))
    if universe.exclude:
        feats = feats.filter(~pl.col("symbol").is_in(universe.exclude))
    factor_ok = pl.all_horizontal([pl.col(f).is_not_null() & pl.col(f).is_finite() for f in FACTORS])
    eligible = feats.filter(
        (pl.col("history") >= ranking.min_history_days)
        & (pl.col("dollar_volume") >= ranking.min_dollar_volume)
        & factor_ok
        & (pl.col("vol") > 0)
    )

    frame = (
        eligible.select("date", "symbol", *FACTORS, "vol", "weight_vol", "dollar_volume")
        .sort(["date", "symbol"])
        .collect()
    )
    return _scores_rank(frame, ranking)


def _scores_rank(frame: pl.DataFrame, ranking: RankingConfig) -> pl.DataFrame:
    """Cross-sectional z-scores combined into a score and ranked, per date.

    Done in numpy over rows sorted by (date, symbol): polars' grouped means may sum in a
    thread-dependent order, and bit-identical scores run to run matter more than speed here.
    """
    dates = frame.get_column("date").to_numpy()
    bounds = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1], True])
    score = np.zeros(frame.height)
    for name, weight in ranking.weights.items():
        if weight == 0:
            continue
        x = frame.get_column(name).to_numpy()
        z = np.zeros_like(x)
        for lo, hi in itertools.pairwise(bounds):
            block = x[lo:hi]
            std = block.std(ddof=1) if hi - lo > 1 else 0.0
            z[lo:hi] = (block - block.mean()) / std if std > 0 else 0.0
        score += weight * z
    return (
        frame.with_columns(pl.Series("score", score))
        .sort(["date", "score", "symbol"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("date").alias("rank"))
        .select(
            pl.col("date").alias("rank_date"), "symbol", "score", "rank", *FACTORS, "vol", "weight_vol", "dollar_volume"
        )
    )


def weights_compute(selected: pl.DataFrame, portfolio: PortfolioConfig) -> dict[str, float]:
    """Target weights of one window's winners (equal or inverse-volatility), summing to gross exposure."""
    symbols = selected.get_column("symbol").to_list()
    if not symbols:
        return {}
    if portfolio.weighting == "equal":
        raw = [1.0] * len(symbols)
    else:
        vols = selected.get_column("weight_vol").to_list()
        raw = [1.0 / v if v is not None and v > 0 and math.isfinite(v) else 0.0 for v in vols]
        missing = [s for s, r in zip(symbols, raw, strict=True) if r == 0.0]
        if sum(raw) == 0:
            log.warning(
                "inverse_vol weights: no winner has a volatility over portfolio.vol_days=%d days (%s): equal weights used",
                portfolio.vol_days,
                ", ".join(symbols),
            )
            raw = [1.0] * len(symbols)
        elif missing:
            log.warning(
                "inverse_vol weights: %s have no volatility over portfolio.vol_days=%d days: weight 0",
                ", ".join(missing),
                portfolio.vol_days,
            )
    total = sum(raw)
    return {s: portfolio.gross_exposure * r / total for s, r in zip(symbols, raw, strict=True)}
