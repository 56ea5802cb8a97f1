"""A ranking bar with fewer ranked symbols than the legs hold: the leg holds fewer, and a warning says so.

Before, ``ranking.bottom_n=5`` on a bar ranking 8 symbols with ``top_n=5`` held 3 shorts at a third of
the short gross each, silently.
"""

from __future__ import annotations

import logging
from unittest import mock

import numpy as np
import polars as pl
import pytest
from helpers import compose_raw

import engine.config.book as book_mod
from engine.config import config_validate
from engine.strategy.sides import side_rows, side_weights


def _ranks(counts: list[int]) -> pl.DataFrame:
    """Ranking bars 0, 1, ... ranking ``counts[k]`` symbols each (rank 1 the best)."""
    parts = [
        pl.DataFrame(
            {
                "rank_ms": np.full(n, k, dtype=np.int64),
                "symbol": [f"S{i}/USDT" for i in range(n)],
                "rank": np.arange(1, n + 1, dtype=np.int64),
                "score": -np.arange(n, dtype=np.float64),
                "weight_vol": np.full(n, 0.05),
            }
        )
        for k, n in enumerate(counts)
    ]
    return pl.concat(parts)


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    with mock.patch.object(book_mod, "market_of", return_value="perp"):
        return config_validate(compose_raw(*overrides))


def test_a_short_leg_with_fewer_symbols_holds_them_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg("portfolio.side=long_short", "ranking.top_n=5", "ranking.bottom_n=5")
    ranks = _ranks([8, 10, 9])
    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        rows = side_rows(ranks, cfg)
    assert [r.getMessage() for r in caplog.records] == [
        "the short leg holds fewer than ranking.bottom_n=5 symbols at 2 of 3 ranking bars (as few as 3): fewer "
        "symbols were ranked there than the legs hold; the leg's gross is spread over those it has"
    ]
    first = rows.filter(pl.col("rank_ms") == 0)
    w = side_weights(first, cfg, 0)
    # 5 long at 0.5 / 5, the 3 left short at 0.5 / 3: gross 1 and net 0 kept
    assert w == pytest.approx(
        {**{f"S{i}/USDT": 0.1 for i in range(5)}, **{f"S{i}/USDT": -1 / 6 for i in range(5, 8)}}, abs=1e-12
    )


def test_legs_that_fit_and_a_long_leg_that_does_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        side_rows(_ranks([10, 12]), _cfg("portfolio.side=long_short", "ranking.top_n=5", "ranking.bottom_n=5"))
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        side_rows(_ranks([4, 7]), _cfg("portfolio.side=short", "ranking.top_n=2", "ranking.bottom_n=6"))
    assert [r.getMessage()[:80] for r in caplog.records] == [
        "the short leg holds fewer than ranking.bottom_n=6 symbols at 1 of 2 ranking bars"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        side_rows(_ranks([3, 8]), _cfg("portfolio.side=long_short", "ranking.top_n=4", "ranking.bottom_n=2"))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the long leg holds fewer than ranking.top_n=4 symbols at 1 of 2 ranking bars (as few as 3)",
        "the short leg holds fewer than ranking.bottom_n=2 symbols at 1 of 2 ranking bars (as few as 0)",
    ]


def test_a_bottom_n_a_long_book_does_not_use_is_stated(caplog: pytest.LogCaptureFixture) -> None:
    from engine.strategy.sides import universe_check

    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        universe_check(_cfg("portfolio.side=long", "ranking.top_n=5", "ranking.bottom_n=7"), 20)
    assert [r.getMessage() for r in caplog.records] == [
        "ranking.bottom_n=7 is not used: portfolio.side=long holds the top ranking.top_n only (set "
        "portfolio.side=long_short or short for a bottom leg)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.strategy.sides"):
        universe_check(_cfg("portfolio.side=long_short", "ranking.top_n=5", "ranking.bottom_n=7"), 20)
        universe_check(_cfg("portfolio.side=long", "ranking.top_n=5"), 20)
    assert caplog.records == []
