"""The offline generator: deterministic bytes, consistent timeframes, crypto-like stylised facts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse
from engine.data.sources.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=7, n_symbols=40, start="2021-01-01", end="2022-12-31")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))
    }


def test_same_seed_gives_byte_identical_parquet(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        src = SyntheticSource(seed=3, n_symbols=12, start="2021-01-01", end="2021-06-30")
        lh = Lakehouse(tmp_path / name)
        IngestionService(lh, src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
        digests.append(_digest(tmp_path / name))
    assert digests[0] == digests[1]
    assert len(digests[0]) == 12
    other = SyntheticSource(seed=4, n_symbols=12, start="2021-01-01", end="2021-06-30")
    assert not other.ohlcv_fetch("AAA/USDT", "1d", 0, 2**62).equals(
        SyntheticSource(seed=3, n_symbols=12, start="2021-01-01", end="2021-06-30").ohlcv_fetch(
            "AAA/USDT", "1d", 0, 2**62
        )
    )


def test_layout_is_hive_partitioned(tmp_path: Path) -> None:
    src = SyntheticSource(seed=3, n_symbols=6, start="2021-01-01", end="2021-03-31")
    IngestionService(Lakehouse(tmp_path), src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    assert (tmp_path / "bars" / "interval=1d" / "symbol=BTC_USDT" / "data.parquet").is_file()
    assert (tmp_path / "bars" / "interval=1d" / "symbol=AAA_USDT" / "data.parquet").is_file()


@pytest.mark.parametrize("symbol", ["BTC/USDT", "AAA/USDT", "AAK/USDT"])
def test_timeframes_agree_exactly(source: SyntheticSource, symbol: str) -> None:
    h1 = source.ohlcv_fetch(symbol, "1h", 0, 2**62)
    h4 = source.ohlcv_fetch(symbol, "4h", 0, 2**62)
    d1 = source.ohlcv_fetch(symbol, "1d", 0, 2**62)
    for fine, coarse, every in ((h1, d1, "1d"), (h4, d1, "1d"), (h1, h4, "4h")):
        agg = fine.group_by_dynamic("timestamp", every=every).agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        assert_frame_equal(agg.select(coarse.columns), coarse, check_exact=False, rel_tol=1e-12)
        assert_frame_equal(
            agg.select("timestamp", "open", "high", "low", "close"), coarse.drop("volume"), check_exact=True
        )


def test_bar_contract_holds(source: SyntheticSource) -> None:
    for symbol in source.symbols():
        d = source.ohlcv_fetch(symbol, "4h", 0, 2**62)
        assert d.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
        assert d.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
        assert d.select((pl.col("low") > 0).all()).item()
        assert d.get_column("timestamp").is_sorted()
        assert d.get_column("timestamp").is_unique().all()


def test_stylised_facts(source: SyntheticSource) -> None:
    rets = {}
    for symbol in source.symbols():
        close = source.ohlcv_fetch(symbol, "1d", 0, 2**62).get_column("close").to_numpy()
        rets[symbol] = np.diff(np.log(close))
    r = rets["AAB/USDT"]
    z = (r - r.mean()) / r.std()
    assert np.mean(z**4) > 4.0  # fat tails: kurtosis well above the normal's 3
    a = np.abs(r)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.05  # volatility clustering
    full = [s for s, x in rets.items() if x.size == rets["BTC/USDT"].size]
    corr = np.corrcoef(np.vstack([rets[s] for s in full[:10]]))
    assert np.mean(corr[np.triu_indices(10, 1)]) > 0.2  # common market factor
    lengths = {x.size for x in rets.values()}
    assert len(lengths) > 1  # some symbols listed late or delisted early


def test_listing_and_delisting_present() -> None:
    src = SyntheticSource(seed=7, n_symbols=100, start="2021-01-01", end="2024-12-31")
    late = early = 0
    for symbol in src.symbols():
        ts = src.path(symbol).timestamp_ms
        late += ts[0] > src.start_ms
        early += ts[-1] < src.end_ms - 3_600_000
    assert late >= 3
    assert early >= 3


def test_unknown_symbol_is_a_clear_error(source: SyntheticSource) -> None:
    from engine.core.errors import EngineError

    with pytest.raises(EngineError, match="unknown symbol 'ZZZ/USDT'"):
        source.ohlcv_fetch("ZZZ/USDT", "1d", 0, 2**62)
