"""Lazy MTF: a backtest against a local Binance-format server fetches fine bars only for winners."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from exchange_server import ExchangeServer
from helpers import TINY_RANKING, compose_raw

from engine.config import CcxtData, config_validate
from engine.data.ingest import IngestionService
from engine.data.lakehouse import store_open
from engine.data.sources.ccxt_source import CcxtSource
from engine.data.sources.synthetic import SyntheticSource
from engine.run import backtest_run, run_plan

GEN = SyntheticSource(5, 12, "2021-01-01", "2021-06-30")


def test_backtest_fetches_fine_bars_only_for_winners(tmp_path: Path) -> None:
    with ExchangeServer(GEN) as server:
        data = {
            "source": "ccxt",
            "exchange": "binance",
            "api_url": server.api_url,
            "rate_limit_ms": 0,
            "start": "2021-01-01",
            "end": "2021-06-30",
            "limit": 1000,
            "timeout_ms": 5000,
        }
        raw = compose_raw("+profile=crypto_rating", "backtest.timeframes=[4h]", *TINY_RANKING)
        raw["data"] = data
        raw["paths"] = {"lakehouse_dir": str(tmp_path / "lh"), "output_dir": str(tmp_path / "out")}
        cfg = config_validate(raw)
        assert isinstance(cfg.data, CcxtData)
        source = CcxtSource(cfg.data)
        lakehouse = store_open(tmp_path / "lh", source.identity())  # the ccxt namespace the run reads
        IngestionService(lakehouse, source).fetch_universe(source.symbols(), GEN.start_ms, GEN.end_ms)
        # the exchange's delisted OLD/USDT is asked for too; it serves no history: a coverage-only partition
        assert lakehouse.symbols("bars", "1d") == sorted([*GEN.symbols(), "OLD/USDT"])
        assert lakehouse.read("bars", "1d", "OLD/USDT").height == 0
        server.clear()

        result = backtest_run(cfg, source=source).result
        assert result is not None

        winners = set(result.winners.filter(pl.col("weight").is_not_null()).get_column("symbol").to_list())
        assert 3 <= len(winners) < 12
        requested = {r.params["symbol"] for r in server.klines()}
        assert {r.params["interval"] for r in server.klines()} == {"4h"}
        assert requested == {s.replace("/", "") for s in winners}
        assert set(lakehouse.symbols("mtf", "4h")) == winners
        assert result.metrics["interval"] == "4h"
        # every stored fine bar lies inside a window in which its symbol was a winner
        bounds = {w.index: (w.start_ms, w.end_ms) for w in run_plan(cfg, source).windows}
        spans = result.winners.filter(pl.col("weight").is_not_null()).select("window", "symbol")
        for symbol in winners:
            stored = lakehouse.read("mtf", "4h", symbol).get_column("timestamp").dt.epoch("ms").to_numpy()
            wins = [bounds[i] for i in spans.filter(pl.col("symbol") == symbol).get_column("window").to_list()]
            inside = [any(a <= t < b for a, b in wins) for t in stored]
            assert stored.size > 0 and all(inside), symbol

        # a second identical run fetches nothing
        server.clear()
        backtest_run(cfg, source=source)
        assert server.klines() == []
