"""engine.data.sources.base, directly: what every backend must implement, and the defaults the
shared work relies on (interval check, namespace identity, origin, skipped files, finality)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from engine.config import FilesData, SyntheticData
from engine.core.errors import ConfigError, DataError
from engine.data.bars import BAR_SCHEMA
from engine.data.sources.base import DataSource
from engine.data.sources.registry import source_from_config


class _Fixed(DataSource):
    """The smallest backend: two symbols, two intervals, no bars."""

    name = "fixed"

    def symbols(self) -> list[str]:
        return ["BTC/USDT", "ETH/USDT"]

    def intervals(self) -> tuple[str, ...]:
        return ("1h", "1d")

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        return pl.DataFrame(schema=BAR_SCHEMA)


def test_a_backend_must_implement_the_three_methods() -> None:
    assert DataSource.__abstractmethods__ == frozenset({"symbols", "intervals", "ohlcv_fetch"})

    class Partial(DataSource):
        def symbols(self) -> list[str]:
            return []

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_the_defaults_of_a_backend() -> None:
    src = _Fixed()
    assert src.interval_problem("1h") is None and src.interval_problem("1d") is None
    assert src.interval_problem("4h") == (
        "interval '4h' is not available from the fixed source: available intervals are 1h, 1d"
    )
    assert src.identity() == {"source": "fixed"}  # equal identities share one lakehouse namespace
    assert src.origin("BTC/USDT", "1d") is None  # nothing to re-import on change
    assert src.skipped() == []
    assert src.covered_until(1_700_000_000_000, "1h") == 1_700_000_000_000  # a finished history is final
    assert src.ohlcv_fetch("BTC/USDT", "1h", 0, 1).schema == pl.Schema(BAR_SCHEMA)


def test_every_backend_is_a_data_source_with_its_own_name(tmp_path: Path) -> None:
    synthetic = source_from_config(SyntheticData(n_symbols=3))
    assert isinstance(synthetic, DataSource) and synthetic.name == "synthetic"
    assert synthetic.identity()["source"] == "synthetic"
    assert synthetic.interval_problem("1d") is None
    assert "not available from the synthetic source" in (synthetic.interval_problem("7m") or "")
    files = source_from_config(FilesData(path=str(tmp_path)))
    assert isinstance(files, DataSource) and files.name == "files"


class _Served(_Fixed):
    """A backend that serves what a careless exchange would: out of order, outside the span, a forming bar."""

    def __init__(self, rows: list[tuple[int, float]], now_ms: int) -> None:
        self.rows, self.now_ms = rows, now_ms

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        ts = [t for t, _ in self.rows]
        price = [p for _, p in self.rows]
        return pl.DataFrame(
            {"timestamp": ts, "open": price, "high": price, "low": price, "close": price, "volume": [1.0] * len(ts)}
        )

    def covered_until(self, end_ms: int, interval: str) -> int:
        return min(end_ms, self.now_ms)


def test_ohlcv_load_trims_to_the_span_and_to_what_is_final_and_validates() -> None:
    """The shared work of every backend: epoch-ms rows in any order -> the bars of the span, final, sorted."""
    h = 3_600_000
    src = _Served([(5 * h, 5.0), (1 * h, 1.0), (3 * h, 3.0), (2 * h, 2.0), (0, 0.5), (4 * h, 4.0)], now_ms=4 * h)
    bars = src.ohlcv_load("BTC/USDT", "1h", 1 * h, 6 * h)
    # 0 is before the span, 4h is the still-forming bar (covered_until), 5h lies after it
    assert bars.get_column("timestamp").dt.epoch("ms").to_list() == [1 * h, 2 * h, 3 * h]
    assert bars.get_column("close").to_list() == [1.0, 2.0, 3.0]
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    twice = _Served([(1 * h, 1.0), (1 * h, 1.5)], now_ms=9 * h)
    with pytest.raises(DataError, match=r"^BTC/USDT 1h: duplicate timestamp with different values at "):
        twice.ohlcv_load("BTC/USDT", "1h", 0, 9 * h)
    same = _Served([(1 * h, 1.0), (1 * h, 1.0)], now_ms=9 * h)
    assert same.ohlcv_load("BTC/USDT", "1h", 0, 9 * h).height == 1  # an identical copy: dropped (said)


def test_what_a_backend_states_about_itself(tmp_path: Path) -> None:
    """The facts callers read instead of branching on a name (engine/data/sources/base.py)."""
    from engine.config import CcxtData
    from engine.data.sources.registry import source_class, source_label

    facts = {
        name: (cls.run_ingest, cls.range_from_config, cls.market_rules_stored)
        for name in ("synthetic", "ccxt", "files")
        for cls in [source_class(name)]
    }
    assert facts == {
        "synthetic": ("all", True, False),  # a run generates the whole universe
        "ccxt": ("none", True, True),  # a run never fetches an exchange: task=ingest first
        "files": ("universe", False, False),  # the files' own range when the dates are null
    }
    assert source_label(SyntheticData(n_symbols=3, seed=5)) == (
        "built-in synthetic universe (generated, not market data): 3 symbols, seed 5"
    )
    assert source_label(CcxtData(exchange="kraken")) == "ccxt exchange kraken"
    assert source_label(FilesData(path=str(tmp_path))) == f"your files in {tmp_path}"
    assert "regenerates" in source_class("synthetic").unreadable_fix
    assert "task=ingest data=ccxt" in source_class("ccxt").unreadable_fix
    with pytest.raises(ConfigError, match="unknown data source 'nope'"):
        source_class("nope")
    plan = _Fixed().universe_plan([], "1d", date(2024, 1, 1), date(2024, 1, 31))
    assert (plan.symbols, plan.start_ms, plan.end_ms) == (["BTC/USDT", "ETH/USDT"], 1704067200000, 1706745600000)
    assert _Fixed().nothing_read(plan, "1d") is None  # the generic line of engine.data.ingest.nothing_read
