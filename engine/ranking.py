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

from engine.config import USD_QUOTES, PortfolioConfig, RankingConfig, UniverseConfig

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


def _quote_volume_floor(ranking: RankingConfig) -> pl.Expr:
    """Per-row liquidity floor in the pair's quote currency (``RankingConfig.quote_volume_floor``)."""
    if ranking.min_quote_volume is not None:
        return pl.lit(ranking.min_quote_volume)
    quote = pl.col("symbol").str.split("/").list.get(1)
    return (
        pl.when(quote.is_in(list(USD_QUOTES)))
        .then(pl.lit(ranking.quote_volume_floor("USDT")))
        .otherwise(pl.lit(ranking.quote_volume_floor("BTC")))
    )


def _universe_features(
    bars: pl.LazyFrame,
    rank_dates: list[date],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
) -> pl.LazyFrame:
    """Return the features of the universe's symbols on the ranking dates."""
    feats = features_compute(bars, ranking, portfolio).filter(pl.col("date").is_in(rank_dates))
    if universe.symbols:
        feats = feats.filter(pl.col("symbol").is_in(universe.symbols))
    if universe.exclude:
        feats = feats.filter(~pl.col("symbol").is_in(universe.exclude))
    return feats


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
    feats = _universe_features(bars, rank_dates, ranking, portfolio, universe)
    factor_ok = pl.all_horizontal([pl.col(f).is_not_null() & pl.col(f).is_finite() for f in FACTORS])
    eligible = feats.filter(
        (pl.col("history") >= ranking.min_history_days)
        & (pl.col("dollar_volume") >= _quote_volume_floor(ranking))
        & factor_ok
        & (pl.col("vol") > 0)
    )

    frame = (
        eligible.select("date", "symbol", *FACTORS, "vol", "weight_vol", "dollar_volume")
        .sort(["date", "symbol"])
        .collect()
    )
    return _scores_rank(frame, ranking)


def eligibility_diagnose(
    bars: pl.LazyFrame,
    rank_dates: list[date],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
) -> str:
    """Name the eligibility filter that leaves no symbol on any ranking date, in words.

    For the error of a run in which every window is empty: the filters are applied one after
    another and the first that removes every remaining (symbol, date) is named, with the value that
    would pass.
    """
    feats = _universe_features(bars, rank_dates, ranking, portfolio, universe)
    factor_ok = pl.all_horizontal([pl.col(f).is_not_null() & pl.col(f).is_finite() for f in FACTORS])
    f = feats.select(
        pl.len().alias("listed"),
        pl.col("history").max().alias("max_history"),
        (pl.col("history") >= ranking.min_history_days).sum().alias("history_ok"),
        (pl.col("dollar_volume").filter(pl.col("history") >= ranking.min_history_days)).max().alias("max_volume"),
        ((pl.col("history") >= ranking.min_history_days) & (pl.col("dollar_volume") >= _quote_volume_floor(ranking)))
        .sum()
        .alias("volume_ok"),
        (
            (pl.col("history") >= ranking.min_history_days)
            & (pl.col("dollar_volume") >= _quote_volume_floor(ranking))
            & factor_ok
            & (pl.col("vol") > 0)
        )
        .sum()
        .alias("factors_ok"),
    ).collect()
    r = f.row(0, named=True)
    if not r["listed"]:
        return "no symbol of the universe (universe.symbols / universe.exclude) has a bar on any ranking date"
    if not r["history_ok"]:
        return (
            f"ranking.min_history_days={ranking.min_history_days} removes every symbol: the longest history on a "
            f"ranking date is {r['max_history']} bars; lower it or extend the data"
        )
    if not r["volume_ok"]:
        which = "ranking.min_quote_volume" if ranking.min_quote_volume is not None else "the default liquidity floor"
        return (
            f"{which} removes every symbol: the largest {ranking.liquidity_days}-day median volume in the quote "
            f"currency is {r['max_volume']:.6g}; lower ranking.min_quote_volume (it counts in the pair's quote)"
        )
    if not r["factors_ok"]:
        return (
            f"no symbol has finite factors: ranking.momentum_days={ranking.momentum_days} or "
            f"ranking.vol_days={ranking.vol_days} needs more bars than the data has before a ranking date"
        )
    return "no ranked symbol has a bar at its window's first open"


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
