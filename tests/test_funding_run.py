"""Funding in a run's data step (``data.market=perp``): generated and checked before any window; refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from helpers import engine_cli
from polars.testing import assert_frame_equal
from test_funding import futures_bars, gen_for

from engine.config import PathsConfig, RunConfig, SyntheticData
from engine.data.funding import funding_read
from engine.data.ingest import IngestionService
from engine.data.lakehouse import store_open
from engine.data.sources.funding_gen import funding_generate
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import SyntheticSource
from engine.run.plan import data_prepare


def test_a_synthetic_perp_run_stores_the_generators_funding(tmp_path: Path) -> None:
    cfg = RunConfig(
        data=SyntheticData(market="perp", n_symbols=40, start="2022-01-01", end="2022-06-30"),
        paths=PathsConfig(lakehouse_dir=str(tmp_path)),
    )
    source = source_from_config(cfg.data)
    lake = store_open(cfg.paths.lakehouse_dir, source.identity())
    data_prepare(cfg, source, lake, IngestionService(lake, source))
    assert isinstance(source, SyntheticSource)
    got = funding_read(cfg, source.symbols(), source.start_ms, source.end_ms)
    want = pl.concat(
        [
            funding_generate(source.path(s), 7, i, source.start_ms, source.end_ms).with_columns(
                pl.lit(s).alias("symbol")
            )
            for i, s in enumerate(source.symbols())
        ]
    ).select("symbol", "time", "rate", "mark")
    assert_frame_equal(got, want.sort("symbol", "time"), check_exact=True)
    # late listings and delistings: each symbol's funding spans its own bars, no more
    for s in source.symbols():
        bars = lake.read("bars", "1d", s).get_column("timestamp").dt.epoch("ms").to_numpy()
        t = got.filter(pl.col("symbol") == s).get_column("time").to_numpy()
        assert t.min() == bars.min() and bars.max() < t.max() < bars.max() + 86_400_000
        assert np.all(np.diff(t) == 8 * 3_600_000)


def test_the_command_line_refuses_a_perp_run_without_funding_in_one_line(tmp_path: Path) -> None:
    gen = gen_for("USDT")
    folder = tmp_path / "data"
    futures_bars(gen, folder)  # bars, no funding file
    common = [
        "data=files",
        f"data.path={folder}",
        f"paths.lakehouse_dir={tmp_path / 'lake'}",
        "paths.ledger=null",
        "quiet=true",
        "ranking.top_n=2",  # the folder's two pairs (a larger top_n is refused before the data is read)
    ]
    for extra, words in (
        (["data.market=perp", f"hydra.run.dir={tmp_path / 'run'}"], "no funding data for 2 perp symbol(s)"),
        (["data.market=futures", f"hydra.run.dir={tmp_path / 'bad'}"], "data.market"),
    ):
        proc = engine_cli([*common, *extra], tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in proc.stderr and len(lines) == 1 and words in lines[0], proc.stderr


def test_an_exchange_ingest_of_perpetuals_with_a_delisted_one(tmp_path: Path) -> None:
    """task=ingest data=ccxt data.market=perp: bars and funding of every perpetual, a delisted one's up to its end."""
    from exchange_server import ExchangeServer
    from helpers import ingest_task
    from test_funding import ccxt_cfg, expected, funding_in

    gen = gen_for("USDT")
    fund = funding_in(gen)
    gone = gen.start_ms + 30 * 86_400_000
    with ExchangeServer(gen, funding=fund, delisted={"ETH/USDT": gone}) as server:
        cfg = ccxt_cfg(server, tmp_path, "USDT", "1d")
        assert ingest_task(cfg) == 0
        source = source_from_config(cfg.data)
        lake = store_open(cfg.paths.lakehouse_dir, source.identity())
        data_prepare(cfg, source, lake, IngestionService(lake, source))  # the run's check: no refusal
        got = funding_read(cfg, ["BTC/USDT", "ETH/USDT"], gen.start_ms, gen.end_ms)
    want = expected(fund, gen.start_ms, gen.end_ms).filter((pl.col("symbol") == "BTC/USDT") | (pl.col("time") <= gone))
    assert_frame_equal(got, want, check_exact=True)
    assert lake.read("bars", "1d", "ETH/USDT").height == 31
