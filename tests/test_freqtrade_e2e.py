"""A freqtrade-style folder of 5m BTC-quoted feather files, with gaps, a pair that ends early and
an unrelated file: ingest -> daily ranking -> stops on 5m bars -> report, end to end."""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import feather_write, five_minute_bars, ingest_task
from polars.testing import assert_frame_equal

from engine.compose import config_compose
from engine.config import config_validate
from engine.data.lakehouse import namespaces, store_open
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import SyntheticSource
from engine.tasks import run_backtest

GEN = SyntheticSource(21, 9, "2024-01-01", "2024-02-14")  # 45 days
FIVE = 300_000
HOUR = 3_600_000
DAY = 86_400_000
GAP_PAIR, GAP_FROM, GAP_HOURS = "SOL/BTC", GEN.start_ms + 20 * DAY + 10 * HOUR, 2
EARLY_PAIR, EARLY_END = "XRP/BTC", GEN.start_ms + 30 * DAY + 4 * HOUR + 55 * 60_000  # last bar opens 04:50
RANKING = [
    "ranking.top_n=3",
    "ranking.min_history_days=11",
    "ranking.momentum_days=10",
    "ranking.vol_days=10",
    "ranking.liquidity_days=10",
    "backtest.hold_days=5",
]


def five_minute(symbol: str) -> pl.DataFrame:
    """The generator's hourly bars of ``symbol`` as 5m bars (``helpers.five_minute_bars``), with the
    gap and the early end of the two odd pairs."""
    frame = five_minute_bars(GEN.ohlcv_fetch(symbol.replace("/BTC", "/USDT"), "1h", GEN.start_ms, GEN.end_ms))
    ms = pl.col("timestamp").dt.epoch("ms")
    if symbol == GAP_PAIR:
        frame = frame.filter((ms < GAP_FROM) | (ms >= GAP_FROM + GAP_HOURS * HOUR))
    if symbol == EARLY_PAIR:
        frame = frame.filter(ms < EARLY_END)
    return frame


PAIRS = [s.replace("/USDT", "/BTC") for s in GEN.symbols()[1:]]  # ETH/BTC, SOL/BTC, ... (8 pairs)


def daily_reference(bars: pl.DataFrame) -> pl.DataFrame:
    """Daily bars computed here, independently of the engine: calendar days with all 288 bars."""
    return (
        bars.with_columns(pl.col("timestamp").dt.truncate("1d").alias("day"))
        .sort("timestamp")
        .group_by("day", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") == 288)
        .select(pl.col("day").alias("timestamp"), "open", "high", "low", "close", "volume")
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("freqtrade") / "binance"
    root.mkdir()
    for pair in PAIRS:
        feather_write(five_minute(pair), root / f"{pair.replace('/', '_')}-5m.feather")
    (root / "ETH_BTC-trades.feather").write_bytes(b"freqtrade trades, not candles")
    return root


def test_freqtrade_5m_btc_folder_end_to_end(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lh = tmp_path / "lh"
    ingest = config_validate(
        {
            "task": "ingest",
            "quiet": True,
            "paths": {"lakehouse_dir": str(lh)},
            "data": {"source": "files", "path": str(folder)},
        }
    )
    assert ingest_task(ingest) == 0
    out = capsys.readouterr().out
    assert "skipped ETH_BTC-trades.feather: freqtrade trades file, not OHLCV bars" in out
    # 8 pairs x 45 days, minus the gap's day and the early pair's last 14 full days and its partial day
    assert "ingested 344 daily bars for 8 symbols (2024-01-01 00:00 .. 2024-02-15 00:00" in out

    (ident,) = [i for _, i in namespaces(lh)]
    assert ident == {"source": "files", "path": str(folder.resolve()), "quote": "BTC"}
    store = store_open(lh, source_from_config(ingest.data).identity())
    for pair in PAIRS:
        stored = store.read("bars", "1d", pair)
        ref = daily_reference(five_minute(pair))
        assert_frame_equal(stored.drop("volume"), ref.drop("volume"))  # OHLC exact
        assert_frame_equal(stored, ref, check_exact=False, rel_tol=1e-12)  # volume: another summation order
    assert store.read("bars", "1d", "ETH/BTC").height == 45
    gap_days = store.read("bars", "1d", GAP_PAIR).get_column("timestamp").dt.epoch("ms").to_list()
    assert len(gap_days) == 44 and GEN.start_ms + 20 * DAY not in gap_days
    early = store.read("bars", "1d", EARLY_PAIR).get_column("timestamp").dt.epoch("ms")
    assert early.len() == 30 and early.max() == GEN.start_ms + 29 * DAY  # day 30 (ends 04:50) is not a day

    raw = config_compose(
        [
            "+profile=crypto_rating",
            "data=files",
            f"data.path={folder}",
            "backtest.timeframes=[5m]",
            *RANKING,
            "quiet=true",
        ]
    )[1]
    raw["paths"] = {"lakehouse_dir": str(lh), "output_dir": str(tmp_path / "run")}
    cfg = config_validate(raw)
    assert cfg.ranking.min_quote_volume is None  # the default floor: none for a BTC quote
    result = run_backtest(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["interval"] == "5m"
    assert metrics["n_trades"] > 0 and np.isfinite(metrics["total_return"])
    assert (run / "report.html").stat().st_size > 10_000
    winners = pl.read_parquet(run / "winners.parquet")
    held = set(winners.filter(pl.col("weight").is_not_null()).get_column("symbol").to_list())
    assert held and held <= set(PAIRS)
    # the 5m bars were read lazily, only for the winners, and are the files' own bars
    fine = set(store.symbols("mtf", "5m"))
    assert fine == held
    for pair in fine:
        stored = store.read("mtf", "5m", pair)
        ref = five_minute(pair).filter(pl.col("timestamp").is_in(stored.get_column("timestamp").implode()))
        assert stored.height > 288 and stored.equals(ref)
    trades = pl.read_parquet(run / "trades.parquet")
    assert trades.height == metrics["n_trades"] and set(trades.get_column("symbol").to_list()) <= held
    assert result.metrics["total_return"] == metrics["total_return"]


def test_default_liquidity_floor_keeps_a_btc_quoted_universe(folder: Path, tmp_path: Path) -> None:
    """min_quote_volume counts in the quote (BTC here); its default (null) is no floor for a non-USD
    quote, the same ranks as 0; a floor above every pair's median daily volume empties the ranks."""
    from engine.data.ingest import IngestionService
    from engine.data.sources.files import FilesSource
    from engine.strategy.ranking import ranks_compute

    src = FilesSource(config_validate({"data": {"source": "files", "path": str(folder)}}).data)  # type: ignore[arg-type]
    lake = store_open(tmp_path, src.identity())
    IngestionService(lake, src).fetch_universe(src.symbols(), GEN.start_ms, GEN.end_ms)
    base = config_compose([*RANKING])[1]
    dates = [date(2024, 1, 1) + timedelta(days=k) for k in range(12, 44)]
    ranks = {}
    for floor in (None, 0.0, 1.0e6, 1.0e12):
        ranking = config_validate({**base, "ranking": {**base["ranking"], "min_quote_volume": floor}})
        ranks[floor] = ranks_compute(
            lake.scan("bars", "1d"),
            [GEN.start_ms + (d - date(2024, 1, 1)).days * DAY for d in dates],
            ranking.ranking,
            ranking.portfolio,
            ranking.universe,
        )
    assert ranks[None].height == 241 and ranks[None].equals(ranks[0.0])
    assert ranks[1.0e6].height == 187  # the old USD-sized default, counted in BTC, drops 54 rankings
    assert ranks[1.0e12].height == 0


def test_min_dollar_volume_is_a_deprecated_alias(caplog: pytest.LogCaptureFixture) -> None:
    import engine.config.renamed

    engine.config.renamed.warned.clear()
    # an in-process Hydra run of an earlier test may have reconfigured logging: listen on the logger
    logger = logging.getLogger("engine")
    logger.disabled = False
    caplog.set_level(logging.WARNING, logger="engine")
    logger.addHandler(caplog.handler)
    old = config_validate(config_compose(["ranking.min_dollar_volume=250000"])[1])
    logger.removeHandler(caplog.handler)
    assert old.ranking.min_quote_volume == 250_000.0 and old.ranking.min_dollar_volume is None
    warned = sorted({r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()})
    assert warned == [
        "ranking.min_dollar_volume is deprecated: it counts in the quote currency; use ranking.min_quote_volume"
    ]
    new = config_validate(config_compose(["ranking.min_quote_volume=250000"])[1])
    assert new.ranking == old.ranking
    assert new.ranking.quote_volume_floor("BTC") == 250_000.0
    default = config_validate(config_compose([])[1]).ranking
    assert default.quote_volume_floor("USDT") == 1.0e6 and default.quote_volume_floor("BTC") == 0.0
    assert default.quote_volume_floor("ETH") == 0.0 and default.quote_volume_floor("USDC") == 1.0e6
