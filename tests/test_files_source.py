"""FilesSource: csv, parquet and freqtrade feather import identically; bad files fail clearly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import engine_cli, random_ohlc
from polars.testing import assert_frame_equal

from engine.config import FilesData
from engine.core.errors import DataError
from engine.core.units import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, parquet_bytes
from engine.data.sources.files import FilesSource
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import SyntheticSource

GEN = SyntheticSource(11, 3, "2024-01-01", "2024-03-31")
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
INTERVALS = ["4h", "1d"]
START = GEN.start_ms
END = GEN.end_ms


def bars(symbol: str, interval: str) -> pl.DataFrame:
    return GEN.ohlcv_fetch(symbol, interval, START, END)


def stem(symbol: str, interval: str) -> str:
    return f"{symbol.replace('/', '_')}-{interval}"


def write_csv_ms(df: pl.DataFrame, path: Path) -> None:
    df.with_columns(pl.col("timestamp").dt.epoch("ms")).write_csv(path.with_suffix(".csv"))


def write_csv_iso(df: pl.DataFrame, path: Path) -> None:
    iso = pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("date")
    df.select(iso, pl.exclude("timestamp")).write_csv(path.with_suffix(".csv"))


def write_csv_seconds(df: pl.DataFrame, path: Path) -> None:
    secs = (pl.col("timestamp").dt.epoch("ms") // 1000).alias("open_time")
    df.select(secs, pl.exclude("timestamp")).rename({"open": "Open", "close": "Close"}).write_csv(
        path.with_suffix(".csv")
    )


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    df.rename({"timestamp": "time"}).write_parquet(path.with_suffix(".parquet"))


def write_feather(df: pl.DataFrame, path: Path) -> None:
    # Exactly how freqtrade stores candles: pandas, a `date` column of datetime64[ns, UTC].
    frame = df.rename({"timestamp": "date"}).to_pandas()
    frame["date"] = frame["date"].dt.as_unit("ns")
    frame.reset_index(drop=True).to_feather(path.with_suffix(".feather"), compression="lz4")


WRITERS: dict[str, Callable[[pl.DataFrame, Path], None]] = {
    "csv_ms": write_csv_ms,
    "csv_iso": write_csv_iso,
    "csv_seconds": write_csv_seconds,
    "parquet": write_parquet,
    "feather": write_feather,
}


def folder_make(root: Path, writer: Callable[[pl.DataFrame, Path], None]) -> Path:
    root.mkdir(parents=True)
    for symbol in SYMBOLS:
        for interval in INTERVALS:
            writer(bars(symbol, interval), root / stem(symbol, interval))
    (root / "BTC_USDT-trades.feather").write_bytes(b"not candles: ignored by name")
    (root / "README.txt").write_text("ignored")
    return root


def source_make(folder: Path) -> FilesSource:
    src = source_from_config(FilesData(path=str(folder)))
    assert isinstance(src, FilesSource)
    return src


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_imports_the_generator_bars(tmp_path: Path, fmt: str) -> None:
    src = source_make(folder_make(tmp_path / "import", WRITERS[fmt]))
    assert src.symbols() == SYMBOLS
    assert src.intervals() == ("4h", "1d")
    lake = Lakehouse(tmp_path / "lake")
    service = IngestionService(lake, src)
    service.fetch_universe(SYMBOLS, START, END)
    service.fetch_mtf_for_candidates(SYMBOLS, ["4h"], START, END)
    for symbol in SYMBOLS:
        assert_frame_equal(lake.read("bars", "1d", symbol), bars(symbol, "1d"))
        assert_frame_equal(lake.read("mtf", "4h", symbol), bars(symbol, "4h"))


def test_formats_write_identical_parquet(tmp_path: Path) -> None:
    payloads = set()
    for fmt, writer in WRITERS.items():
        lake = Lakehouse(tmp_path / fmt / "lake")
        IngestionService(lake, source_make(folder_make(tmp_path / fmt / "import", writer))).fetch_universe(
            SYMBOLS, START, END
        )
        # the bars re-encoded by the store's fixed writer (the footer also records each file's own origin)
        payloads.add((parquet_bytes(lake.read("bars", "1d", "BTC/USDT")), str(lake.coverage("bars", "1d", "BTC/USDT"))))
    assert len(payloads) == 1


def test_range_is_trimmed(tmp_path: Path) -> None:
    src = source_make(folder_make(tmp_path / "import", write_parquet))
    lo, hi = START + 10 * 86_400_000, START + 12 * 86_400_000
    assert_frame_equal(src.ohlcv_fetch("BTC/USDT", "4h", lo, hi), GEN.ohlcv_fetch("BTC/USDT", "4h", lo, hi))


def test_corrupt_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = folder_make(tmp_path / "import", write_parquet)
    bad = folder / "BTC_USDT-1d.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as info:
        IngestionService(Lakehouse(tmp_path / "lake"), source_make(folder)).fetch_universe(SYMBOLS, START, END)
    text = str(info.value)
    assert str(bad) in text
    assert "re-export it" in text
    assert "\n" not in text


def test_missing_columns_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "import"
    folder.mkdir()
    bars("BTC/USDT", "1d").drop("volume").write_csv(folder / "BTC_USDT-1d.csv")
    with pytest.raises(DataError, match=r"BTC_USDT-1d\.csv: missing column\(s\) volume"):
        source_make(folder).ohlcv_fetch("BTC/USDT", "1d", START, END)


def test_two_files_for_one_market_is_an_error(tmp_path: Path) -> None:
    folder = folder_make(tmp_path / "import", write_parquet)
    write_csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d")
    with pytest.raises(DataError, match=r"two files for BTC/USDT 1d .*keep one"):
        source_make(folder).symbols()


def _bad_high_low(df: pl.DataFrame, i: int) -> pl.DataFrame:
    return _set(df, i, high=float(df["low"][i]) * 0.5)


def _bad_nan(df: pl.DataFrame, i: int) -> pl.DataFrame:
    return _set(df, i, close=float("nan"))


def _bad_price(df: pl.DataFrame, i: int) -> pl.DataFrame:
    return _set(df, i, low=0.0)


def _bad_duplicate(df: pl.DataFrame, i: int) -> pl.DataFrame:
    changed = df.slice(i, 1).with_columns(pl.col("volume") + 1.0)
    return pl.concat([df, changed]).sort("timestamp")


def _set(df: pl.DataFrame, i: int, **values: float) -> pl.DataFrame:
    row = pl.int_range(pl.len()) == i
    return df.with_columns([pl.when(row).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items()])


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (_bad_high_low, "high below low"),
        (_bad_nan, "NaN or missing value"),
        (_bad_duplicate, "duplicate timestamp with different values"),
        (_bad_price, "price <= 0"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv_ms", "parquet", "feather"])
def test_bad_bars_are_rejected_naming_symbol_interval_timestamp(
    tmp_path: Path, corrupt: Callable[[pl.DataFrame, int], pl.DataFrame], problem: str, fmt: str
) -> None:
    folder = tmp_path / "import"
    folder.mkdir()
    good = bars("ETH/USDT", "4h")
    WRITERS[fmt](corrupt(good, 17), folder / stem("ETH/USDT", "4h"))
    lake = Lakehouse(tmp_path / "lake")
    with pytest.raises(DataError) as info:
        IngestionService(lake, source_make(folder)).fetch_mtf_for_candidates(["ETH/USDT"], ["4h"], START, END)
    text = str(info.value)
    assert text.startswith("ETH/USDT 4h: " + problem)
    assert str(good["timestamp"][17]) in text
    assert "BTC" not in text
    assert lake.read("mtf", "4h", "ETH/USDT").height == 0


def test_missing_file_for_a_requested_market(tmp_path: Path) -> None:
    src = source_make(folder_make(tmp_path / "import", write_parquet))
    with pytest.raises(DataError, match=r"no file for SOL/USDT 4h .*add SOL_USDT-4h\.csv"):
        src.ohlcv_fetch("SOL/USDT", "4h", START, END)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist: create it or set data\.path"):
        source_make(tmp_path / "nope").symbols()


# ---- implausible prices ------------------------------------------------------------------------

IMPLAUSIBLE = "implausible price (open, high, low or close over 1000x or under 1/1000 of the median close of the 21 bars around it)"


def _small_price_bars(interval: str, price: float, n: int = 60) -> pl.DataFrame:
    """``n`` random-walk bars near ``price`` (0.05 USDT, 0.00002 BTC), bar 10 a real wick: its low
    at a tenth of its close (-90 % and back within the bar)."""
    o, h, lo, c = (a[:, 0] * price / 100 for a in random_ohlc(np.random.default_rng(20), n, 1))
    lo[10] = 0.1 * c[10]
    step = interval_ms(interval)
    ts = pl.Series("timestamp", START + np.arange(n) * step).cast(pl.Datetime("ms", "UTC"))
    return pl.DataFrame({"timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": np.full(n, 5.0)})


@pytest.mark.parametrize("fmt", ["csv_ms", "feather"])
@pytest.mark.parametrize(("interval", "quote", "price"), [("1d", "USDT", 0.05), ("1h", "BTC", 0.00002)])
def test_an_implausible_price_is_refused_or_dropped_and_a_wick_passes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fmt: str, interval: str, quote: str, price: float
) -> None:
    symbol = f"XYZ/{quote}"
    clean = _small_price_bars(interval, price)
    folder = tmp_path / "import"
    folder.mkdir()
    path = folder / stem(symbol, interval)
    WRITERS[fmt](clean, path)
    path = path.with_suffix(".csv" if fmt == "csv_ms" else ".feather")
    # the wick (low = 0.1 x close) is a real bar: kept as it is
    loaded = FilesSource(FilesData(path=str(folder))).load(symbol, interval)
    assert_frame_equal(loaded, clean)
    assert loaded.get_column("low")[10] == pytest.approx(0.1 * loaded.get_column("close")[10], rel=1e-12)

    bad = _set(clean, 30, open=1e300, high=1e300, low=1e300, close=1e300)
    WRITERS[fmt](bad, path.with_suffix(""))
    when = clean.get_column("timestamp")[30]
    with pytest.raises(DataError) as info:
        FilesSource(FilesData(path=str(folder))).load(symbol, interval)
    assert str(info.value) == (
        f"{symbol} {interval}: {IMPLAUSIBLE} at {when} (1 bar(s)); fix or remove these bars, "
        f"or set data.implausible=drop to drop them (file {path})"
    )
    with caplog.at_level("WARNING"):
        dropped = FilesSource(FilesData(path=str(folder), implausible="drop")).load(symbol, interval)
    assert_frame_equal(dropped, clean.filter(pl.int_range(pl.len()) != 30))
    assert f"{symbol} {interval}: 1 bar(s) with an implausible price dropped (data.implausible=drop): {when}" in (
        caplog.text
    )

    # one high print (a wick up to 1e300) is implausible too; a high 900x its close is not
    for high, refused in ((1e300, True), (900 * float(clean["close"][30]), False)):
        WRITERS[fmt](_set(clean, 30, high=high), path.with_suffix(""))
        src = FilesSource(FilesData(path=str(folder)))
        if refused:
            with pytest.raises(DataError, match="implausible price"):
                src.load(symbol, interval)
        else:
            assert src.load(symbol, interval).get_column("high")[30] == pytest.approx(high, rel=1e-12)


def test_a_run_on_an_implausible_file_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "import"
    folder.mkdir()
    clean = _small_price_bars("1d", 0.05)
    write_csv_ms(_set(clean, 30, open=1e300, high=1e300, low=1e300, close=1e300), folder / "XYZ_USDT-1d")
    write_csv_ms(clean, folder / "ABC_USDT-1d")
    lh = tmp_path / "lh"
    proc = engine_cli(
        # top_n within the 2 pairs: the default 10 is refused before the files are read (engine/data/precheck.py)
        ["data=files", f"data.path={folder}", "ranking.top_n=2", f"paths.lakehouse_dir={lh}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"error: XYZ/USDT 1d: {IMPLAUSIBLE} at {clean['timestamp'][30]} (1 bar(s)); fix or remove these bars, "
        f"or set data.implausible=drop to drop them (file {folder / 'XYZ_USDT-1d.csv'})"
    ]
    assert not list(lh.rglob("*.parquet"))
    assert not (tmp_path / "run" / "metrics.json").exists()
