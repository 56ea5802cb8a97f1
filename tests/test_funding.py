"""Funding rates of perpetual futures (docs/PERPETUALS.md, "Data"): sources, store, reader, refusals.

The same funding goes in through every generator-free path (the local exchange server's Binance
``fundingRate``, a freqtrade futures folder, ``funding.csv``, per-pair csv files) and the same frame
must come out of :func:`engine.data.funding.funding_read`, equal to the frame put in; at two base
intervals and two quotes, with funding every 8 h on one symbol and every hour on the other, and
marks missing on part of it.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from exchange_server import ExchangeServer
from helpers import feather_write
from polars.testing import assert_frame_equal

from engine.config import CcxtData, FilesData, PathsConfig, RunConfig, SyntheticData
from engine.config.model import BacktestConfig
from engine.core.errors import DataError
from engine.core.units import DAY_MS, HOUR_MS
from engine.data.funding import FUNDING_SCHEMA, FundingStore, funding_read, funding_validate
from engine.data.ingest import IngestionService, universe_ingest
from engine.data.lakehouse import store_open
from engine.data.sources.ccxt_source import CcxtSource
from engine.data.sources.funding_gen import funding_generate
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import SyntheticSource

START, END = "2024-01-01", "2024-02-29"


def gen_for(quote: str) -> SyntheticSource:
    return SyntheticSource(7, 3, START, END, quote)


def funding_in(gen: SyntheticSource) -> dict[str, pl.DataFrame]:
    """What goes in: BTC every 8 h with marks; ETH every hour, marks on every other funding only."""
    btc, eth = gen.symbols()[:2]
    rng = np.random.default_rng(3)
    t8 = np.arange(gen.start_ms, gen.end_ms, 8 * HOUR_MS, dtype=np.int64)
    t1 = np.arange(gen.start_ms, gen.end_ms, HOUR_MS, dtype=np.int64)
    marks = rng.uniform(10.0, 20.0, t1.size)
    return {
        btc: pl.DataFrame(
            {"time": t8, "rate": rng.normal(1e-4, 3e-4, t8.size), "mark": rng.uniform(1e4, 5e4, t8.size)}
        ),
        eth: pl.DataFrame(
            {
                "time": t1,
                "rate": rng.normal(0.0, 1e-4, t1.size),
                "mark": np.where(np.arange(t1.size) % 2 == 0, marks, np.nan),
            }
        ).with_columns(pl.col("mark").fill_nan(None)),
    }


def expected(fund: dict[str, pl.DataFrame], start_ms: int, end_ms: int) -> pl.DataFrame:
    frames = [f.with_columns(pl.lit(s).alias("symbol")) for s, f in fund.items()]
    out = (
        pl.concat(frames).select(list(FUNDING_SCHEMA)).filter((pl.col("time") >= start_ms) & (pl.col("time") < end_ms))
    )
    return out.sort("symbol", "time")


def futures_bars(gen: SyntheticSource, folder: Path) -> None:
    """Hourly bars as freqtrade's futures candles, BASE_QUOTE_QUOTE-1h-futures.feather."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in gen.symbols()[:2]:
        base, quote = s.split("/")
        feather_write(
            gen.ohlcv_fetch(s, "1h", gen.start_ms, gen.end_ms), folder / f"{base}_{quote}_{quote}-1h-futures.feather"
        )


def freqtrade_folder(gen: SyntheticSource, fund: dict[str, pl.DataFrame], folder: Path) -> None:
    """freqtrade's layout: funding as candles whose open is the rate, marks as candles whose open is the mark."""
    futures_bars(gen, folder)
    for s, f in fund.items():
        base, quote = s.split("/")
        tf = "8h" if s.startswith("BTC") else "1h"
        rate = f.select(pl.col("time").cast(pl.Datetime("ms", "UTC")).alias("timestamp"), pl.col("rate").alias("open"))
        candles = rate.with_columns(high=pl.col("open"), low=pl.col("open"), close=pl.col("open"), volume=pl.lit(0.0))
        feather_write(candles, folder / f"{base}_{quote}_{quote}-{tf}-funding_rate.feather")
        mark = f.drop_nulls("mark").select(
            pl.col("time").cast(pl.Datetime("ms", "UTC")).alias("timestamp"), pl.col("mark").alias("open")
        )
        mark = mark.with_columns(
            high=pl.col("open") * 1.01, low=pl.col("open") * 0.99, close=pl.col("open"), volume=pl.lit(1.0)
        )
        feather_write(mark, folder / f"{base}_{quote}_{quote}-{tf}-mark.feather")


def csv_all_folder(gen: SyntheticSource, fund: dict[str, pl.DataFrame], folder: Path) -> None:
    """One funding.csv for every pair: symbol, ISO time, rate, mark."""
    futures_bars(gen, folder)
    rows = pl.concat([f.with_columns(pl.lit(s).alias("symbol")) for s, f in fund.items()])
    iso = pl.col("time").cast(pl.Datetime("ms", "UTC")).dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("time")
    rows.select("symbol", iso, "rate", "mark").write_csv(folder / "funding.csv")


def csv_pair_folder(gen: SyntheticSource, fund: dict[str, pl.DataFrame], folder: Path) -> None:
    """One BASE_QUOTE-funding.csv per pair: epoch seconds, Rate, Mark (names in any case)."""
    futures_bars(gen, folder)
    for s, f in fund.items():
        f.select(
            (pl.col("time") // 1000).alias("Timestamp"), pl.col("rate").alias("Rate"), pl.col("mark").alias("Mark")
        ).write_csv(folder / f"{s.replace('/', '_')}-funding.csv")


def files_read(tmp: Path, folder: Path, interval: str, **data: object) -> tuple[RunConfig, pl.DataFrame]:
    cfg = RunConfig(
        data=FilesData(path=str(folder), market="perp", **data),  # type: ignore[arg-type]
        paths=PathsConfig(lakehouse_dir=str(tmp / "lake")),
        backtest=BacktestConfig(interval=interval),
    )
    source = source_from_config(cfg.data)
    lake = store_open(cfg.paths.lakehouse_dir, source.identity())
    universe_ingest(IngestionService(lake, source), cfg, strict=True)
    gen_range = lake.coverage("bars", interval, "BTC/" + str(source.quote))[0]
    return cfg, funding_read(cfg, source.symbols(), gen_range[0], gen_range[1])


def ccxt_cfg(server: ExchangeServer, tmp: Path, quote: str, interval: str, **data: object) -> RunConfig:
    settings: dict[str, object] = {
        "api_url": server.api_url,
        "symbols": [f"BTC/{quote}", f"ETH/{quote}"],
        "quote": quote,
        "start": START,
        "end": END,
        "limit": 200,
        "rate_limit_ms": 0,
        "timeout_ms": 500,
        "max_retries": 3,
        "market": "perp",
        **data,
    }
    return RunConfig(
        data=CcxtData(**settings),  # type: ignore[arg-type]
        paths=PathsConfig(lakehouse_dir=str(tmp / "lake")),
        backtest=BacktestConfig(interval=interval),
    )


def ccxt_ingest(cfg: RunConfig, sleeps: list[float] | None = None) -> None:
    assert isinstance(cfg.data, CcxtData)
    source = CcxtSource(cfg.data, sleep=(sleeps if sleeps is not None else []).append, backoff_base_s=0.001)
    lake = store_open(cfg.paths.lakehouse_dir, source.identity())
    universe_ingest(IngestionService(lake, source), cfg, strict=False)


# ---- parity: one funding in, through every generator-free source, the same frame out -----------------


@pytest.mark.parametrize(("quote", "interval"), [("USDT", "1d"), ("USDC", "4h")])
def test_the_same_funding_comes_out_of_every_source(tmp_path: Path, quote: str, interval: str) -> None:
    gen = gen_for(quote)
    fund = funding_in(gen)
    want = expected(fund, gen.start_ms, gen.end_ms)
    assert want.height == 60 * 3 + 60 * 24  # 8-hourly BTC and hourly ETH over the 60 days of 2024-01-01 .. 02-29
    got: dict[str, pl.DataFrame] = {}
    with ExchangeServer(gen, funding=fund, mark_prices=True) as server:
        cfg = ccxt_cfg(server, tmp_path / "ccxt", quote, interval)
        ccxt_ingest(cfg)
        got["ccxt"] = funding_read(cfg, [f"BTC/{quote}", f"ETH/{quote}"], gen.start_ms, gen.end_ms)
    for name, build in (
        ("freqtrade", freqtrade_folder),
        ("funding.csv", csv_all_folder),
        ("pair csv", csv_pair_folder),
    ):
        folder = tmp_path / name.replace(" ", "_") / "data"
        build(gen, fund, folder)
        got[name] = files_read(tmp_path / name.replace(" ", "_"), folder, interval)[1]
    for name, frame in got.items():
        assert frame.schema == pl.Schema(FUNDING_SCHEMA), name
        assert_frame_equal(frame, want, check_exact=True), name
    # a span inside: only the funding times in [start, end)
    cut = funding_read(cfg, [f"ETH/{quote}"], gen.start_ms + 5 * HOUR_MS, gen.start_ms + 8 * HOUR_MS)
    assert cut.get_column("time").to_list() == [gen.start_ms + h * HOUR_MS for h in (5, 6, 7)]


def test_a_funding_csv_without_marks_reads_null_marks(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    fund = {s: f.with_columns(pl.lit(None, pl.Float64).alias("mark")) for s, f in funding_in(gen).items()}
    folder = tmp_path / "data"
    futures_bars(gen, folder)
    pl.concat([f.with_columns(pl.lit(s).alias("symbol")) for s, f in fund.items()]).select(
        "symbol", "time", "rate"
    ).write_csv(folder / "funding.csv")
    got = files_read(tmp_path, folder, "1d")[1]
    assert_frame_equal(got, expected(fund, gen.start_ms, gen.end_ms), check_exact=True)
    assert got.get_column("mark").null_count() == got.height


# ---- the exchange server's faults -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "count", "retry_after"),
    [
        ("429", 2, 0),
        ("418", 1, 0),
        ("500", 2, None),
        ("503", 1, None),
        ("short", 2, None),
        ("empty", 1, None),
        ("duplicate", 2, None),
        ("duplicate_changed", 1, None),
        ("out_of_order", 2, None),
    ],
)
def test_faults_of_the_exchange_leave_the_funding_exact(
    tmp_path: Path, fault: str, count: int, retry_after: int | None
) -> None:
    gen = gen_for("USDT")
    fund = funding_in(gen)
    with ExchangeServer(gen, funding=fund) as server:
        server.fault(fault, count, endpoint="fundingRate", retry_after=retry_after)
        cfg = ccxt_cfg(server, tmp_path, "USDT", "1d")
        sleeps: list[float] = []
        ccxt_ingest(cfg, sleeps)
        got = funding_read(cfg, ["BTC/USDT", "ETH/USDT"], gen.start_ms, gen.end_ms)
        pages = server.funding_requests()
    want = expected(fund, gen.start_ms, gen.end_ms)
    if fault == "duplicate_changed":  # the copy served last wins: the first row of the first page, rate doubled
        first = want.filter(pl.col("symbol") == "BTC/USDT").row(0, named=True)
        want = want.with_columns(
            pl.when((pl.col("symbol") == "BTC/USDT") & (pl.col("time") == first["time"]))
            .then(pl.col("rate") * 2.0)
            .otherwise(pl.col("rate"))
            .alias("rate")
        )
    assert_frame_equal(got, want, check_exact=True)
    if fault in ("429", "418", "500", "503"):
        assert len(sleeps) >= count  # each failure waited before its retry
    starts = [int(r.params["startTime"]) for r in pages if r.params["symbol"] == "BTCUSDT"]
    assert starts[0] == gen.start_ms and starts == sorted(starts)  # the walk only moves forward


def test_an_exchange_that_keeps_failing_is_one_line(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    with ExchangeServer(gen, funding=funding_in(gen)) as server:
        server.fault("500", 10, endpoint="fundingRate")
        cfg = ccxt_cfg(server, tmp_path, "USDT", "1d")
        with pytest.raises(DataError) as info:
            ccxt_ingest(cfg)
    line = str(info.value)
    assert "\n" not in line and "ccxt binance BTC/USDT" in line and "after 3 retries" in line


def test_empty_marks_on_the_exchange_are_null(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    fund = funding_in(gen)
    with ExchangeServer(gen, funding=fund, mark_prices=False) as server:
        cfg = ccxt_cfg(server, tmp_path, "USDT", "1d")
        ccxt_ingest(cfg)
        got = funding_read(cfg, ["BTC/USDT", "ETH/USDT"], gen.start_ms, gen.end_ms)
    want = expected(
        {s: f.with_columns(pl.lit(None, pl.Float64).alias("mark")) for s, f in fund.items()}, gen.start_ms, gen.end_ms
    )
    assert_frame_equal(got, want, check_exact=True)


def test_a_second_ingest_fetches_no_funding_again(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    with ExchangeServer(gen, funding=funding_in(gen)) as server:
        cfg = ccxt_cfg(server, tmp_path, "USDT", "1d")
        ccxt_ingest(cfg)
        server.clear()
        ccxt_ingest(cfg)
        assert server.funding_requests() == []


# ---- hand cases ----------------------------------------------------------------------------------


def test_validation_refuses_what_is_not_a_funding_rate() -> None:
    good = pl.DataFrame({"time": [2, 1, 2], "rate": [0.001, -0.002, 0.003], "mark": [None, 5.0, 6.0]})
    out = funding_validate(good, "BTC/USDT", "here")
    assert out.to_dicts() == [{"time": 1, "rate": -0.002, "mark": 5.0}, {"time": 2, "rate": 0.003, "mark": 6.0}]
    for bad, words in (
        ({"time": [0], "rate": [1.5], "mark": [1.0]}, "100 % or more"),
        ({"time": [0], "rate": [float("nan")], "mark": [1.0]}, "not finite"),
        ({"time": [0], "rate": [0.001], "mark": [0.0]}, "mark price is not > 0"),
        ({"time": [0], "mark": [1.0]}, "lacks the column(s) rate"),
    ):
        with pytest.raises(DataError) as info:
            funding_validate(pl.DataFrame(bad), "BTC/USDT", "f.csv")
        assert words in str(info.value) and str(info.value).startswith("f.csv: funding of BTC/USDT")


def test_a_freqtrade_mark_file_fills_the_mark_at_each_funding_time(tmp_path: Path) -> None:
    """Hand case: three fundings, marks at the first and third only (the second has no candle)."""
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    futures_bars(gen, folder)
    t0 = gen.start_ms
    times = [t0, t0 + 8 * HOUR_MS, t0 + 16 * HOUR_MS]
    for s in ("BTC/USDT", "ETH/USDT"):
        stem = s.replace("/", "_") + "_USDT"
        rate = pl.DataFrame({"timestamp": times, "open": [0.0001, -0.0002, 0.0003]})
        rate = rate.with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms", "UTC")),
            high=pl.col("open"),
            low=pl.col("open"),
            close=pl.col("open"),
            volume=pl.lit(0.0),
        )
        feather_write(rate, folder / f"{stem}-8h-funding_rate.feather")
        mark = pl.DataFrame(
            {"timestamp": [t0 - 4 * HOUR_MS, t0, t0 + 4 * HOUR_MS, t0 + 16 * HOUR_MS], "open": [9.0, 10.0, 11.0, 12.0]}
        )
        mark = mark.with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms", "UTC")),
            high=pl.col("open"),
            low=pl.col("open"),
            close=pl.col("open"),
            volume=pl.lit(0.0),
        )
        feather_write(mark.filter(pl.col("open") != 11.0), folder / f"{stem}-4h-mark.feather")
    cfg, got = files_read(tmp_path, folder, "1d", funding_missing="zero")  # three fundings: short of the bars
    btc = got.filter(pl.col("symbol") == "BTC/USDT")
    assert btc.select("time", "rate", "mark").rows() == [
        (times[0], 0.0001, 10.0),
        (times[1], -0.0002, None),
        (times[2], 0.0003, 12.0),
    ]
    # the funding and mark files are read, not listed as skipped
    source = source_from_config(cfg.data)
    assert not [p for p, _ in source.skipped() if "funding_rate" in p.name or "mark" in p.name]


def test_a_symbol_without_funding_in_the_span_has_no_rows(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    csv_all_folder(gen, funding_in(gen), folder)
    cfg, _ = files_read(tmp_path, folder, "1d")
    late = funding_read(cfg, ["BTC/USDT"], gen.start_ms + 1, gen.start_ms + 8 * HOUR_MS)
    assert late.height == 0 and late.schema == pl.Schema(FUNDING_SCHEMA)


def test_two_funding_files_for_one_pair_are_refused(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    csv_all_folder(gen, funding_in(gen), folder)
    (folder / "BTC_USDT-funding.csv").write_text("time,rate\n2024-01-01T00:00:00Z,0.0001\n")
    with pytest.raises(DataError, match="two funding files for BTC/USDT"):
        files_read(tmp_path, folder, "1d")


# ---- refusals: a perp run without funding ---------------------------------------------------------


def test_a_perp_run_without_funding_is_refused_or_assumed_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gen = gen_for("USDT")
    fund = funding_in(gen)
    folder = tmp_path / "data"
    csv_all_folder(gen, {"BTC/USDT": fund["BTC/USDT"]}, folder)  # ETH has bars but no funding
    with pytest.raises(DataError) as info:
        files_read(tmp_path / "a", folder, "1d")
    line = str(info.value)
    assert "\n" not in line and "no funding data for 1 perp symbol(s)" in line and "ETH/USDT" in line
    assert "data.funding_missing=zero" in line
    with caplog.at_level(logging.WARNING):
        _, got = files_read(tmp_path / "b", folder, "1d", funding_missing="zero")
    assert "funding is assumed zero" in caplog.text and "ETH/USDT" in caplog.text
    assert got.get_column("symbol").unique().to_list() == ["BTC/USDT"]


def test_funding_on_spot_data_is_refused(tmp_path: Path) -> None:
    cfg = RunConfig(paths=PathsConfig(lakehouse_dir=str(tmp_path)))
    with pytest.raises(DataError, match=r"set data\.market=perp"):
        funding_read(cfg, ["BTC/USDT"], 0, DAY_MS)


def test_a_read_only_lakehouse_is_read_and_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete store is read without a write; a store lacking funding names it in one line."""
    from engine.data.storage import LocalStorage

    gen = gen_for("USDT")
    folder = tmp_path / "data"
    csv_all_folder(gen, funding_in(gen), folder)
    _, want = files_read(tmp_path, folder, "1d")
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "lake").rglob("*"))

    def refused(*_: object, **__: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "lake"))

    monkeypatch.setattr(LocalStorage, "write_bytes", refused)
    monkeypatch.setattr(LocalStorage, "locked", refused)
    _, again = files_read(tmp_path, folder, "1d")
    assert_frame_equal(again, want)
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "lake").rglob("*")) == before
    victim = next((tmp_path / "lake").glob("*/funding/symbol=ETH_USDT"))
    (victim / "data.parquet").unlink()
    with pytest.raises(DataError) as info:
        files_read(tmp_path, folder, "1d")
    assert "cannot write the funding of ETH/USDT" in str(info.value) and "read-only to this user" in str(info.value)


# ---- the generator ---------------------------------------------------------------------------------


def test_the_generator_leans_with_momentum_every_8h_deterministically(tmp_path: Path) -> None:
    src = SyntheticSource(7, 8, "2022-01-01", "2022-12-31")
    assert src.funding_fetch("BTC/USDT", src.start_ms, src.end_ms) is None  # spot: no funding
    src.market = "perp"
    for s in src.symbols():
        f = src.funding_fetch(s, src.start_ms, src.end_ms)
        assert f is not None and f.height > 0
        t = f.get_column("time").to_numpy()
        assert (t % (8 * HOUR_MS) == 0).all() and (np.diff(t) == 8 * HOUR_MS).all()
        p = src.path(s)
        k = (t - p.timestamp_ms[0]) // HOUR_MS
        trail = np.log(p.open[k] / p.open[np.maximum(k - 72, 0)])
        rate = f.get_column("rate").to_numpy()
        assert np.corrcoef(trail, rate)[0, 1] > 0.8  # positive after a run-up, negative after a sell-off
        assert np.abs(rate).max() <= 0.0075 and f.get_column("mark").to_numpy().tolist() == p.open[k].tolist()
    # the same seed: the same rates; a sub-span: the same rows
    again = SyntheticSource(7, 8, "2022-01-01", "2022-12-31")
    again.market = "perp"
    full = again.funding_fetch("ETH/USDT", src.start_ms, src.end_ms)
    part = again.funding_fetch("ETH/USDT", src.start_ms + 30 * DAY_MS, src.start_ms + 40 * DAY_MS)
    assert full is not None and part is not None and part.height == 30
    assert_frame_equal(full.filter(pl.col("time").is_in(part.get_column("time").implode())), part)
    p = again.path("ETH/USDT")
    assert_frame_equal(full, funding_generate(p, 7, 1, src.start_ms, src.end_ms))


def test_a_synthetic_perp_store_has_its_own_namespace_and_spot_keeps_its_own(tmp_path: Path) -> None:
    spot = source_from_config(SyntheticData())
    perp = source_from_config(SyntheticData(market="perp"))
    assert "market" not in spot.identity()  # spot: today's identity, today's namespace (byte-identical runs)
    assert perp.identity() == {**spot.identity(), "market": "perp", "funding_version": 1}
    lake = store_open(tmp_path, perp.identity())
    assert FundingStore(lake).symbols() == []


def test_funding_that_stops_short_of_the_bars_is_a_gap_not_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Funding that starts 10 days after the bars (and one 3-day hole inside): refused, or zero and said."""
    gen = gen_for("USDT")
    fund = funding_in(gen)
    late = gen.start_ms + 10 * DAY_MS
    hole = (gen.start_ms + 20 * DAY_MS, gen.start_ms + 23 * DAY_MS)
    fund["BTC/USDT"] = fund["BTC/USDT"].filter(
        (pl.col("time") >= late) & ~((pl.col("time") >= hole[0]) & (pl.col("time") < hole[1]))
    )
    folder = tmp_path / "data"
    csv_all_folder(gen, fund, folder)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=r"no funding data for 1 perp symbol\(s\)"):
        files_read(tmp_path / "a", folder, "1d")
    assert "BTC/USDT: 3.3 days without a funding time" in caplog.text
    with caplog.at_level(logging.WARNING):  # not the level an earlier run in this worker left
        _, got = files_read(tmp_path / "b", folder, "1d", funding_missing="zero")
    assert_frame_equal(got, expected(fund, gen.start_ms, gen.end_ms), check_exact=True)
    assert "funding is assumed zero where the store has none, for 1 symbol(s): BTC/USDT" in caplog.text


def test_a_funding_csv_with_text_for_a_rate_is_one_line(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    futures_bars(gen, folder)
    (folder / "funding.csv").write_text(
        "symbol,time,rate\nBTC/USDT,2024-01-01T00:00:00Z,abc\nETH/USDT,2024-01-01T00:00:00Z,0.1\n"
    )
    with pytest.raises(DataError) as info:
        files_read(tmp_path, folder, "1d")
    line = str(info.value)
    assert "\n" not in line and "funding of BTC/USDT" in line and "not a number" in line


def test_a_spot_file_in_a_perp_folder_is_skipped_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A freqtrade spot file (BASE_QUOTE-tf) beside the futures bars is not traded as a perpetual."""
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    csv_all_folder(gen, funding_in(gen), folder)
    spot = gen.ohlcv_fetch("BTC/USDT", "1h", gen.start_ms, gen.end_ms)
    feather_write(spot, folder / "BNB_USDT-1h.feather")
    with caplog.at_level(logging.WARNING):
        cfg, got = files_read(tmp_path, folder, "1d", funding_missing="zero")
    assert "skipped BNB_USDT-1h.feather: freqtrade spot bars: data.market=perp reads" in caplog.text
    source = source_from_config(cfg.data)
    assert "BNB/USDT" not in source.symbols()
    assert sorted(got.get_column("symbol").unique().to_list()) == ["BTC/USDT", "ETH/USDT"]
