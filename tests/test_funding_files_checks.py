"""Funding files a user would give: a time written twice, rates typed as percentages.

Each test writes its own freqtrade futures folder or csv in ``tmp_path`` and reads it with
:class:`engine.data.sources.files_funding.FundingFiles`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from engine.core.errors import DataError
from engine.data.sources.files_funding import FundingFiles
from engine.run.funding import funding_units_warn

T0 = pd.Timestamp("2024-01-01", tz="UTC")
H8 = pd.Timedelta(hours=8)


def _candles(values: list[float], times: list[int]) -> pd.DataFrame:
    """freqtrade's candle layout: ``open`` holds the value at ``date`` (funding rate or mark)."""
    return pd.DataFrame(
        {
            "date": [T0 + k * H8 for k in times],
            "open": values,
            "high": values,
            "low": values,
            "close": values,
            "volume": 0.0,
        }
    )


def _folder(tmp: Path, rates: list[float], times: list[int], marks: pd.DataFrame | None = None) -> Path:
    root = tmp / "futures"
    root.mkdir()
    _candles(rates, times).to_feather(root / "BTC_USDT_USDT-8h-funding_rate.feather")
    if marks is not None:
        marks.to_feather(root / "BTC_USDT_USDT-8h-mark.feather")
    return root


def test_a_funding_time_given_twice_alike_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _folder(tmp_path, [0.0001, 0.0002, 0.0002, 0.0003], [0, 1, 1, 2])
    with caplog.at_level(logging.WARNING, logger="engine.data.sources.files_funding"):
        got = FundingFiles(root).funding("BTC/USDT")
    assert got is not None
    assert got.get_column("rate").to_list() == [0.0001, 0.0002, 0.0003]
    assert got.get_column("time").to_list() == [int((T0 + k * H8).timestamp() * 1000) for k in range(3)]
    lines = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(lines) == 1 and "BTC/USDT: 1 duplicate row(s) of the same time and rate dropped" in lines[0]


def test_a_funding_time_given_twice_with_two_rates_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path, [0.0001, 0.0002, 0.0005, 0.0003], [0, 1, 1, 2])
    with pytest.raises(DataError) as err:
        FundingFiles(root).funding("BTC/USDT")
    msg = str(err.value)
    assert "funding of BTC/USDT: 1 funding time(s) given twice with different rate values" in msg
    assert "the first at 2024-01-01 08:00 UTC; keep one row per time" in msg
    assert "\n" not in msg


def test_a_mark_given_twice_with_two_prices_is_refused(tmp_path: Path) -> None:
    marks = _candles([100.0, 101.0, 99.0], [0, 1, 1])
    root = _folder(tmp_path, [0.0001, 0.0002], [0, 1], marks)
    with pytest.raises(
        DataError,
        match=r"BTC_USDT_USDT-8h-mark.feather: funding of BTC/USDT: 1 funding time\(s\) given twice with different mark values",
    ):
        FundingFiles(root).funding("BTC/USDT")


def test_rates_typed_as_percentages_are_read_and_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 0.01 % per 8 h typed as 0.01: a hundred times the real rate, below the refusal at 100 %
    root = _folder(tmp_path, [0.01, 0.012, -0.005, 0.01], [0, 1, 2, 3])
    got = FundingFiles(root).funding("BTC/USDT")
    assert got is not None and got.get_column("rate").to_list() == [0.01, 0.012, -0.005, 0.01]
    eth = pl.DataFrame({"symbol": ["ETH/USDT"] * 3, "rate": [0.0001, -0.0002, 0.0009]})  # median 0.0002: fine
    frame = pl.concat([got.select(pl.lit("BTC/USDT").alias("symbol"), "rate"), eth])
    with caplog.at_level(logging.WARNING, logger="engine.run.funding"):
        assert funding_units_warn(frame) == ["BTC/USDT"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "funding rates that look like percentages for 1 symbol(s) (median |rate| per interval: BTC/USDT 0.01): "
        "rates are fractions (0.0001 = 0.01 %); if your files hold percentages, divide them by 100"
    ]
    assert funding_units_warn(frame.filter(pl.col("symbol") == "ETH/USDT")) == []
    assert funding_units_warn(pl.DataFrame()) == []  # no funding at all (refused or assumed zero elsewhere)


def test_fraction_rates_and_a_csv_export_raise_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "csv"
    root.mkdir()
    pl.DataFrame(
        {
            "symbol": ["BTC/USDT"] * 3,
            "time": ["2024-01-01T00:00:00Z", "2024-01-01T08:00:00Z", "2024-01-01T16:00:00Z"],
            "rate": [0.0001, 0.00075, -0.0003],  # a clamp-sized rate is no unit error
            "mark": [42000.5, 42100.0, 41900.0],
        }
    ).write_csv(root / "funding.csv")
    with caplog.at_level(logging.WARNING, logger="engine.data.sources.files_funding"):
        got = FundingFiles(root).funding("BTC/USDT")
    assert got is not None and got.get_column("mark").to_list() == [42000.5, 42100.0, 41900.0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_ccxt_export_reads_as_the_canonical_csv(tmp_path: Path) -> None:
    times = ["2024-01-01T00:00:00Z", "2024-01-01T08:00:00Z", "2024-01-01T16:00:00Z"]
    ms = [1_704_067_200_000 + k * 28_800_000 for k in range(3)]
    canonical, ccxt = tmp_path / "a", tmp_path / "b"
    canonical.mkdir()
    ccxt.mkdir()
    pl.DataFrame(
        {
            "symbol": ["ETH/USDT"] * 3,
            "time": times,
            "rate": [0.0001, -0.0002, 0.0003],
            "mark": [2300.0, 2310.5, 2290.25],
        }
    ).write_csv(canonical / "funding.csv")
    # fetchFundingRateHistory's rows as a user writes them out: unified symbol, fundingRate, timestamp (ms), datetime
    pl.DataFrame(
        {
            "symbol": ["ETH/USDT:USDT"] * 3,
            "fundingRate": [0.0001, -0.0002, 0.0003],
            "timestamp": ms,
            "datetime": times,
            "markPrice": [2300.0, 2310.5, 2290.25],
        }
    ).write_csv(ccxt / "funding.csv")
    want = FundingFiles(canonical).funding("ETH/USDT")
    got = FundingFiles(ccxt).funding("ETH/USDT")
    assert want is not None and got is not None and got.equals(want)
    assert got.get_column("time").to_list() == ms
    # an inverse perpetual (settled in the base) is not a BASE/QUOTE pair: refused by the symbol check
    pl.DataFrame({"symbol": ["BTC/USD:BTC"], "fundingRate": [0.0001], "timestamp": ms[:1]}).write_csv(
        ccxt / "funding.csv"
    )
    with pytest.raises(DataError, match="BTC/USD:BTC"):
        FundingFiles(ccxt).funding("BTC/USD")
