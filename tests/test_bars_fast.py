"""The bar contract's numpy fast path gives exactly the polars checks' result: the same frame or the same error."""

from __future__ import annotations

import logging
import math

import polars as pl
import pytest

import engine.data.bars as bars_mod
from engine.core.errors import DataError
from engine.data.bars import IMPLAUSIBLE_FACTOR, bars_validate
from engine.data.sources.synthetic import SyntheticSource


def _bars() -> pl.DataFrame:
    src = SyntheticSource(5, 2, "2021-01-01", "2021-06-30")
    return src.ohlcv_fetch("ETH/USDT", "1d", src.start_ms, src.end_ms)


def _set(df: pl.DataFrame, column: str, row: int, value: float) -> pl.DataFrame:
    return df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(column)).alias(column))


def _cases() -> dict[str, pl.DataFrame]:
    b = _bars()
    c = b.get_column("close")
    return {
        "valid": b,
        "one bar": b.head(1),
        "empty": b.head(0),
        "naive timestamps": b.with_columns(pl.col("timestamp").dt.replace_time_zone(None)),
        "epoch ints": b.with_columns(pl.col("timestamp").dt.epoch("ms")),
        "columns reordered": b.select("close", "timestamp", "open", "high", "low", "volume"),
        "identical duplicates": pl.concat([b, b.tail(3)]),
        "unsorted": b.sort("timestamp", descending=True),
        "duplicate timestamp": pl.concat([b, _set(b.tail(1), "close", 0, c[-1] * 1.01)]),
        "nan": _set(b, "close", 7, math.nan),
        "null": _set(b, "volume", 7, None),  # type: ignore[arg-type]
        "inf": _set(b, "high", 7, math.inf),
        "price 0": _set(b, "low", 7, 0.0),
        "negative volume": _set(b, "volume", 7, -1.0),
        "high below close": _set(b, "high", 7, c[7] * 0.5),
        "low above open": _set(b, "low", 7, c[7] * 2.0),
        "off grid": b.with_columns(pl.col("timestamp") + pl.duration(hours=1)),
        "spike": _set(_set(b, "high", 40, c[40] * 1e6), "close", 40, c[40] * 1e6),
        "high at the factor": _set(b, "high", 40, float(c.min()) * IMPLAUSIBLE_FACTOR),  # type: ignore[arg-type]
        "low at 1/factor": _set(b, "low", 40, float(c.max()) / IMPLAUSIBLE_FACTOR),  # type: ignore[arg-type]
        "wide but plausible": _set(b, "low", 40, float(c.min()) / 50.0),  # type: ignore[arg-type]
        # under the bound of the highest close, above that of its own window's median: valid, by polars
        "low under the top close's bound": _set(b, "low", 40, float(c.max()) / IMPLAUSIBLE_FACTOR * 0.99),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("implausible", ["error", "drop"])
def test_fast_path_equals_the_polars_checks(
    case: str, implausible: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    df = _cases()[case]

    def outcome() -> tuple[object, str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                out: object = bars_validate(df, "ETH/USDT", "1d", implausible)  # type: ignore[arg-type]
            except DataError as exc:
                out = (type(exc), str(exc))
        return out, caplog.text

    fast, fast_log = outcome()
    monkeypatch.setattr(bars_mod, "_bars_plainly_valid", lambda df, interval: False)
    slow, slow_log = outcome()
    if isinstance(slow, pl.DataFrame):
        assert isinstance(fast, pl.DataFrame)
        assert fast.schema == slow.schema
        assert fast.equals(slow)
    else:
        assert fast == slow
    assert fast_log == slow_log


def test_fast_path_takes_the_usual_frame_only() -> None:
    cases = _cases()
    conformed = {k: bars_mod.bars_conform(v) for k, v in cases.items() if k not in {"empty"}}
    plain = {k for k, v in conformed.items() if bars_mod._bars_plainly_valid(v, "1d")}
    assert plain == {
        "valid",
        "one bar",
        "naive timestamps",
        "epoch ints",
        "columns reordered",
        "wide but plausible",
        "high at the factor",
        "low at 1/factor",
    }
    assert isinstance(bars_validate(cases["low under the top close's bound"], "ETH/USDT", "1d"), pl.DataFrame)
