"""Features and ranking: a polars lazy pipeline over the base bars of the whole universe.

The bars are the base interval's (``backtest.interval``, daily by default). Every feature at the
bar opened at ``t`` uses only bars with open time <= ``t`` (rolling windows look back), so a window
ranked at ``t``'s close cannot see the future. A symbol is ranked at ``t`` only if it has a bar at
``t`` (still trading), at least ``ranking.min_history`` of bars (listed long enough), a median quote
volume per day above the floor and finite factors: point-in-time and survivorship-safe, symbols
delisted later included.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable

import numpy as np
import polars as pl

from engine.config import USD_QUOTES, PortfolioConfig, RankingConfig, UniverseConfig
from engine.core.units import DAY_MS, interval_ms

log = logging.getLogger(__name__)

FACTORS = ("momentum", "vol_adj_momentum")


def features_compute(
    bars: pl.LazyFrame, ranking: RankingConfig, portfolio: PortfolioConfig, interval: str = "1d"
) -> pl.LazyFrame:
    """Per (symbol, bar) factor values from the base bars. LazyFrame in, LazyFrame out.

    Windows are counted in bars of ``interval`` (``RankingConfig.bars``). ``dollar_volume`` is the
    median quote volume (close x volume) per bar over the liquidity window, scaled to one day
    (x bars per day), so the liquidity floor means the same at every base interval.
    """
    fb = ranking.bars(interval)
    n_mom = fb.momentum
    per_day = DAY_MS / interval_ms(interval)
    logret = (pl.col("close") / pl.col("close").shift(1)).log()
    quote_volume = (
        (pl.col("close") * pl.col("volume")).rolling_median(fb.liquidity).over("symbol", order_by="timestamp")
    )
    return (
        bars.select("symbol", "timestamp", "close", "volume")
        .with_columns(
            pl.col("timestamp").dt.epoch("ms").alias("rank_ms"),
            (pl.col("close") / pl.col("close").shift(n_mom) - 1.0)
            .over("symbol", order_by="timestamp")
            .alias("momentum"),
            logret.rolling_std(fb.vol).over("symbol", order_by="timestamp").alias("vol"),
            logret.rolling_std(portfolio.vol_bars(interval)).over("symbol", order_by="timestamp").alias("weight_vol"),
            (quote_volume if per_day == 1.0 else quote_volume * per_day).alias("dollar_volume"),
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
    rank_ms: list[int],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
    interval: str,
) -> pl.LazyFrame:
    """Return the features of the universe's symbols on the ranking bars (open times in ms)."""
    feats = features_compute(bars, ranking, portfolio, interval).filter(pl.col("rank_ms").is_in(rank_ms))
    if universe.symbols:
        feats = feats.filter(pl.col("symbol").is_in(universe.symbols))
    if universe.exclude:
        feats = feats.filter(~pl.col("symbol").is_in(universe.exclude))
    return feats


def _eligibility(ranking: RankingConfig, interval: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Return the eligibility filters, each including the ones before it.

    Listed long enough (history), then liquid enough, then finite factors with a positive
    volatility: the last is eligibility itself.
    """
    history = pl.col("history") >= ranking.bars(interval).min_history
    volume = history & (pl.col("dollar_volume") >= _quote_volume_floor(ranking))
    factors = pl.all_horizontal([pl.col(f).is_not_null() & pl.col(f).is_finite() for f in FACTORS])
    return history, volume, volume & factors & (pl.col("vol") > 0)


def ranks_compute(
    bars: pl.LazyFrame | Iterable[pl.LazyFrame],
    rank_ms: list[int],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
    interval: str = "1d",
) -> pl.DataFrame:
    """Ranked eligible symbols at each ranking bar, for all windows at once.

    ``bars``: the base bars of the universe, as one lazy frame or as batches of whole symbols
    (:func:`~engine.data.lakehouse.scan_batches`). Features are per symbol, so each
    batch's eligible rows on the ranking bars are collected on their own (polars' streaming
    engine, only the columns the features read) and the universe is never held whole: memory
    follows the batch and the ranked rows, not the panel. The rows are then sorted by
    ``(rank_ms, symbol)`` (unique), so the result does not depend on the batching.

    ``rank_ms`` holds the open times of the ranking bars (base ``interval``). Returns
    ``rank_ms, rank_date, symbol, score, rank`` (1 = best; ties broken by symbol name) plus the
    factor values and ``weight_vol``.
    """
    batches = [bars] if isinstance(bars, pl.LazyFrame) else bars
    parts = [
        feats.filter(_eligibility(ranking, interval)[-1])
        .select("rank_ms", "symbol", *FACTORS, "vol", "weight_vol", "dollar_volume")
        .sort(["rank_ms", "symbol"])
        .collect(engine="streaming")
        for feats in (_universe_features(b, rank_ms, ranking, portfolio, universe, interval) for b in batches)
    ]
    return _scores_rank(_merge_sorted(parts), ranking)


def _merge_sorted(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate frames each sorted by ``(rank_ms, symbol)`` into one sorted the same way.

    When every part's symbols come after the previous part's (the batches of
    :func:`~engine.data.lakehouse.scan_batches`), a stable sort by ``rank_ms`` alone
    gives that order (an integer key instead of an integer and a string: the sort that grows with
    the universe); otherwise the full sort. The keys are unique, so both give the same frame.
    """
    bounds = [(p.get_column("symbol").min(), p.get_column("symbol").max()) for p in parts if p.height]
    ascending = all(str(a[1]) < str(b[0]) for a, b in itertools.pairwise(bounds))
    frame = pl.concat(parts, how="vertical", rechunk=True)
    if ascending:
        return frame.sort("rank_ms", maintain_order=True)
    return frame.sort(["rank_ms", "symbol"])


def ranks_restrict(
    ranks: pl.DataFrame, keep: list[str], ranking: RankingConfig, top_n: int | None = None
) -> pl.DataFrame:
    """Rank a smaller universe from a ranking's rows: ``keep``'s rows scored and ranked again.

    Equal to :func:`ranks_compute` with every other symbol excluded (``universe.exclude``):
    eligibility and factor values are per symbol, so the kept rows are the same rows; only the
    cross-sectional z-scores (and so score and rank) change, recomputed here in the same order.
    ``top_n``: keep only the rows ranked ``<= top_n`` (a caller that only selects winners need not
    hold a second copy of the whole ranking).
    """
    frame = (
        ranks.filter(pl.col("symbol").is_in(keep))
        .select("rank_ms", "symbol", *FACTORS, "vol", "weight_vol", "dollar_volume")
        .sort(["rank_ms", "symbol"])
    )
    ranked = _scores_rank(frame, ranking)
    return ranked if top_n is None else ranked.filter(pl.col("rank") <= top_n)


def eligibility_diagnose(
    bars: pl.LazyFrame,
    rank_ms: list[int],
    ranking: RankingConfig,
    portfolio: PortfolioConfig,
    universe: UniverseConfig,
    interval: str = "1d",
) -> str:
    """Name the eligibility filter that leaves no symbol on any ranking date, in words.

    For the error of a run in which every window is empty: the filters are applied one after
    another and the first that removes every remaining (symbol, date) is named, with the value that
    would pass.
    """
    feats = _universe_features(bars, rank_ms, ranking, portfolio, universe, interval)
    min_history = ranking.bars(interval).min_history
    history_ok, volume_ok, factors_ok = _eligibility(ranking, interval)
    f = feats.select(
        pl.len().alias("listed"),
        pl.col("history").max().alias("max_history"),
        history_ok.sum().alias("history_ok"),
        pl.col("dollar_volume").filter(history_ok).max().alias("max_volume"),
        volume_ok.sum().alias("volume_ok"),
        factors_ok.sum().alias("factors_ok"),
    ).collect()
    r = f.row(0, named=True)
    if not r["listed"]:
        return "no symbol of the universe (universe.symbols / universe.exclude) has a bar on any ranking date"
    if not r["history_ok"]:
        return (
            f"ranking.min_history={ranking.min_history!r} ({min_history} {interval} bars) removes every symbol: the "
            f"longest history at a ranking bar is {r['max_history']} bars; shorten it or extend the data"
        )
    if not r["volume_ok"]:
        which = "ranking.min_quote_volume" if ranking.min_quote_volume is not None else "the default liquidity floor"
        return (
            f"{which} removes every symbol: the largest median volume per day over ranking.liquidity_window="
            f"{ranking.liquidity_window} in the quote currency is {r['max_volume']:.6g}; lower "
            "ranking.min_quote_volume (it counts in the pair's quote)"
        )
    if not r["factors_ok"]:
        return (
            f"no symbol has finite factors: ranking.momentum_window={ranking.momentum_window} or "
            f"ranking.vol_window={ranking.vol_window} needs more bars than the data has before a ranking bar"
        )
    return "no ranked symbol has a bar at its window's first open"


def _scores_rank(frame: pl.DataFrame, ranking: RankingConfig) -> pl.DataFrame:
    """Cross-sectional z-scores combined into a score and ranked, per date.

    Done in numpy over rows sorted by (date, symbol): polars' grouped means may sum in a
    thread-dependent order, and bit-identical scores run to run matter more than speed here.
    """
    dates = frame.get_column("rank_ms").to_numpy()
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
        .sort(["rank_ms", "score", "symbol"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("rank_ms").alias("rank"))
        .select(
            "rank_ms",
            pl.col("rank_ms").cast(pl.Datetime("ms", "UTC")).dt.date().alias("rank_date"),
            "symbol",
            "score",
            "rank",
            *FACTORS,
            "vol",
            "weight_vol",
            "dollar_volume",
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
                "inverse_vol weights: no winner has a volatility over %s (%s): equal weights used",
                portfolio.vol_label(),
                ", ".join(symbols),
            )
            raw = [1.0] * len(symbols)
        elif missing:
            log.warning(
                "inverse_vol weights: %s have no volatility over %s: weight 0",
                ", ".join(missing),
                portfolio.vol_label(),
            )
    total = sum(raw)
    return {s: portfolio.gross_exposure * r / total for s, r in zip(symbols, raw, strict=True)}
