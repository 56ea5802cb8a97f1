"""Ranking: no look-ahead, point-in-time eligibility, survivorship safety, the DuckDB coverage query."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.config import PortfolioConfig, RankingConfig, UniverseConfig
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse
from engine.data.sources.synthetic import SyntheticSource
from engine.data.sql import sql_arrow
from engine.strategy.ranking import ranks_compute, weights_compute

RANKING = RankingConfig(
    top_n=5, momentum_days=20, vol_days=20, liquidity_days=20, min_history_days=40, min_quote_volume=0.0
)


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    src = SyntheticSource(seed=11, n_symbols=100, start="2021-01-01", end="2022-06-30")
    lh = Lakehouse(tmp_path_factory.mktemp("rank_lh"))
    IngestionService(lh, src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    return lh.scan("bars", "1d").collect()


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _ranks(bars: pl.DataFrame, dates: list[date]) -> pl.DataFrame:
    return ranks_compute(bars.lazy(), [_ms(d) for d in dates], RANKING, PortfolioConfig(), UniverseConfig())


def test_changing_bars_after_the_ranking_date_leaves_winners_unchanged(bars: pl.DataFrame) -> None:
    rank_date = date(2021, 9, 1)
    before = _ranks(bars, [rank_date])
    rng = np.random.default_rng(0)
    cut = pl.datetime(2021, 9, 2, time_zone="UTC")
    scale = pl.Series(rng.uniform(0.2, 5.0, bars.height))
    perturbed = bars.with_columns(
        [
            pl.when(pl.col("timestamp") >= cut).then(pl.col(c) * scale).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "volume")
        ]
    )
    after = _ranks(perturbed, [rank_date])
    # winners and full ranking identical; scores equal up to summation order (polars may chunk
    # the perturbed frame differently, which moves the cross-sectional mean by an ulp)
    assert before.select("symbol", "rank").equals(after.select("symbol", "rank"))
    np.testing.assert_allclose(before.get_column("score"), after.get_column("score"), rtol=0, atol=1e-12)
    # and the perturbation does change a later window, so the test can fail
    later = date(2021, 10, 1)
    assert not _ranks(bars, [later]).equals(_ranks(perturbed, [later]))


def test_a_bar_on_the_ranking_date_does_change_it(bars: pl.DataFrame) -> None:
    rank_date = date(2021, 9, 1)
    day = pl.datetime(2021, 9, 1, time_zone="UTC")
    top = _ranks(bars, [rank_date]).get_column("symbol")[0]
    bumped = bars.with_columns(
        pl.when((pl.col("timestamp") == day) & (pl.col("symbol") == top))
        .then(pl.col("close") * 0.3)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    assert _ranks(bumped, [rank_date]).get_column("symbol")[0] != top


def test_point_in_time_listing_and_delisting(bars: pl.DataFrame) -> None:
    life = bars.group_by("symbol").agg(
        pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")
    )
    dates = [date(2021, 2, 1) + timedelta(days=7 * k) for k in range(70)]
    ranks = _ranks(bars, dates)
    checked_late = checked_delisted = 0
    for symbol, first, last in life.iter_rows():
        ranked = set(ranks.filter(pl.col("symbol") == symbol).get_column("rank_date").to_list())
        eligible = {
            d for d in dates if first.date() + timedelta(days=RANKING.bars("1d").min_history - 1) <= d <= last.date()
        }
        assert ranked == eligible, symbol
        checked_late += first.date() > date(2021, 1, 1)
        checked_delisted += last.date() < date(2022, 6, 30) and bool(ranked)
    assert checked_late >= 1
    assert checked_delisted >= 1


def test_ranks_are_dense_and_deterministic(bars: pl.DataFrame) -> None:
    dates = [date(2021, 6, 1), date(2021, 6, 8)]
    a, b = _ranks(bars, dates), _ranks(bars, dates)
    assert a.equals(b)
    for _, part in a.group_by("rank_date"):
        assert part.get_column("rank").sort().to_list() == list(range(1, part.height + 1))
        assert part.sort("rank").get_column("score").is_sorted(descending=True)


def test_weights_equal_and_inverse_vol() -> None:
    sel = pl.DataFrame({"symbol": ["A/USDT", "B/USDT"], "weight_vol": [0.02, 0.04]})
    assert weights_compute(sel, PortfolioConfig()) == {"A/USDT": 0.5, "B/USDT": 0.5}
    w = weights_compute(sel, PortfolioConfig(weighting="inverse_vol", gross_exposure=0.9))
    assert w["A/USDT"] == pytest.approx(0.6)
    assert w["B/USDT"] == pytest.approx(0.3)


def test_inverse_vol_without_volatility_warns(caplog: pytest.LogCaptureFixture) -> None:
    """No silent fallback: a winner without a volatility (vol_days longer than its data) is named."""
    inv = PortfolioConfig(weighting="inverse_vol", vol_days=40)
    sel = pl.DataFrame(
        {"symbol": ["A/USDT", "B/USDT"], "weight_vol": [None, None]},
        schema={"symbol": pl.String, "weight_vol": pl.Float64},
    )
    with caplog.at_level("WARNING", logger="engine.strategy.ranking"):
        assert weights_compute(sel, inv) == {"A/USDT": 0.5, "B/USDT": 0.5}
    assert "equal weights used" in caplog.text and "portfolio.vol_days=40" in caplog.text
    caplog.clear()
    sel = pl.DataFrame({"symbol": ["A/USDT", "B/USDT"], "weight_vol": [0.02, None]})
    with caplog.at_level("WARNING", logger="engine.strategy.ranking"):
        assert weights_compute(sel, inv) == {"A/USDT": 1.0, "B/USDT": 0.0}
    assert "B/USDT have no volatility" in caplog.text


def test_duckdb_coverage_matches_polars(tmp_path: Path) -> None:
    src = SyntheticSource(seed=11, n_symbols=100, start="2021-01-01", end="2022-06-30")
    lh = Lakehouse(tmp_path)
    IngestionService(lh, src).fetch_universe(src.symbols()[:30], src.start_ms, src.end_ms)
    cov = pl.from_arrow(sql_arrow("coverage", {"glob": lh.glob("bars", "1d")}))
    expect = (
        lh.scan("bars", "1d")
        .group_by("symbol")
        .agg(
            pl.col("timestamp").min().dt.epoch("ms").alias("first_ms"),
            pl.col("timestamp").max().dt.epoch("ms").alias("last_ms"),
            pl.len().cast(pl.Int64).alias("n_bars"),
        )
        .sort("symbol")
        .collect()
    )
    assert cov.equals(expect)
