"""engine.data.sources.base, directly: what every backend must implement, and the defaults the
shared work relies on (interval check, namespace identity, origin, skipped files, finality)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.config import FilesData, SyntheticData
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
