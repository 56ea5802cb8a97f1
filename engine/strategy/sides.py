"""Signed target weights of a book with a short leg (docs/LONG_SHORT.md).

``portfolio.side=long_short`` holds the top ``ranking.top_n`` long and the bottom
``ranking.bottom_n`` short (the lowest ranked symbols not already long); ``short`` only the
bottom; ``long`` with a gross above 1 (leverage) only the top. Within each leg the winners are
weighted by ``portfolio.weighting`` (equal or inverse volatility,
:func:`engine.strategy.ranking.weights_compute`), and the legs are scaled so that

    sum |w| = gross_exposure      and      sum w = net_exposure,

i.e. the long leg holds ``L = (gross + net) / 2`` and the short leg ``S = (gross - net) / 2``
(:meth:`engine.config.book.PortfolioBook.legs`). Long weights are positive, short ones negative.
A leg with no tradable symbol holds nothing (its share stays in cash, and a warning says so).
With a risk weighting, ``target_vol``, ``max_weight`` or ``max_turnover`` the weights come from
:mod:`engine.strategy.sided_risk` instead (the same legs, each weighted on its own returns).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from engine.config import PortfolioConfig, RunConfig
from engine.core.errors import EngineError
from engine.strategy.ranking import weights_compute

log = logging.getLogger(__name__)
LAST = 10**9  # sort key of the short leg: after every long rank, the lowest rank first


def side_rows(ranks: pl.DataFrame, cfg: RunConfig) -> pl.DataFrame:
    """Return the ranking rows each window holds: the top-N (long) and the bottom-N (short) as the side says.

    The rows are in rank order within the long leg, then the short leg from the lowest rank up.
    """
    top_n, side = cfg.ranking.top_n, cfg.portfolio.side
    bottom_n = cfg.ranking.bottom_n or top_n
    legs_short_warn(ranks, cfg)
    n = pl.len().over("rank_ms")
    long_ = pl.col("rank") <= top_n if side != "short" else pl.lit(False)
    short = (pl.col("rank") > n - bottom_n) & ~long_ if side != "long" else pl.lit(False)
    return (
        ranks.filter(long_ | short)
        .with_columns(pl.when(long_).then(pl.col("rank")).otherwise(LAST - pl.col("rank")).alias("_order"))
        .sort("rank_ms", "_order")
        .drop("_order")
    )


def legs_short_warn(ranks: pl.DataFrame, cfg: RunConfig) -> None:
    """Warn (one line per leg) when ranking bars rank fewer symbols than a leg holds: it then holds fewer.

    The leg's gross is kept, so each of the symbols it holds gets a larger weight than
    ``ranking.top_n`` / ``ranking.bottom_n`` imply.
    """
    if ranks.height == 0:
        return
    top_n, side = cfg.ranking.top_n, cfg.portfolio.side
    bottom_n = cfg.ranking.bottom_n or top_n
    n = ranks.group_by("rank_ms").len().get_column("len")
    long_held = n.clip(upper_bound=top_n) if side != "short" else n * 0
    legs = []
    if side != "short":
        legs.append(("long", "ranking.top_n", top_n, long_held))
    if side != "long":
        legs.append(("short", "ranking.bottom_n", bottom_n, (n - long_held).clip(upper_bound=bottom_n)))
    for leg, key, want, held in legs:
        few = int((held < want).sum())
        if few:
            log.warning(
                "the %s leg holds fewer than %s=%d symbols at %d of %d ranking bars (as few as %d): fewer symbols "
                "were ranked there than the legs hold; the leg's gross is spread over those it has",
                leg,
                key,
                want,
                few,
                n.len(),
                int(held.sort()[0]),
            )


def universe_check(cfg: RunConfig, n_universe: int) -> None:
    """Refuse a book whose legs need more symbols than the universe has (one line, exit 2); warn of an unused bottom_n."""
    p, r = cfg.portfolio, cfg.ranking
    if p.side == "long" and r.bottom_n is not None:
        log.warning(
            "ranking.bottom_n=%d is not used: portfolio.side=long holds the top ranking.top_n only "
            "(set portfolio.side=long_short or short for a bottom leg)",
            r.bottom_n,
        )
    need = (r.top_n if p.side != "short" else 0) + ((r.bottom_n or r.top_n) if p.side != "long" else 0)
    if need > n_universe:
        msg = (
            f"portfolio.side={p.side} holds {need} symbols (ranking.top_n={r.top_n}, ranking.bottom_n={r.bottom_n}) "
            f"but the universe has {n_universe}: lower them"
        )
        raise EngineError(msg)


def side_weights(chosen: pl.DataFrame, cfg: RunConfig, window: int) -> dict[str, float]:
    """Return the signed target weights of one window's tradable chosen rows (see the module docstring).

    ``chosen`` holds the tradable rows of :func:`side_rows` for the window (``symbol``, ``rank``,
    ``weight_vol``); a row with ``rank <= ranking.top_n`` (and a side other than ``short``) is long.
    """
    p = cfg.portfolio
    long_gross, short_gross = p.legs(p.gross_exposure)
    rank = chosen.get_column("rank").to_numpy()
    is_long = rank <= cfg.ranking.top_n if p.side != "short" else np.zeros(rank.size, dtype=np.bool_)
    legs = ((chosen[np.flatnonzero(is_long)], long_gross, 1.0), (chosen[np.flatnonzero(~is_long)], short_gross, -1.0))
    out: dict[str, float] = {}
    for leg, gross, sign in legs:  # each leg's rows in the chosen rows' order
        if gross <= 0:
            continue
        if leg.height == 0:
            log.warning(
                "window %d: the %s leg has no tradable symbol; its %g of the book stays in cash",
                window,
                "long" if sign > 0 else "short",
                gross,
            )
            continue
        for s, x in leg_weights(leg, p).items():
            out[s] = sign * gross * x
    return out


def leg_weights(leg: pl.DataFrame, p: PortfolioConfig) -> dict[str, float]:
    """Return a leg's unit weights (summing to 1) by ``portfolio.weighting``, in the leg's row order."""
    return weights_compute(leg, p.model_copy(update={"gross_exposure": 1.0}))
