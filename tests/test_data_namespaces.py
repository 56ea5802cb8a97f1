"""One lakehouse namespace per data identity; readers take only committed files; the bar contract
rejects inf; the generator's names are distinct for any universe size."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import polars as pl
import pytest
from helpers import ingest_task, small_config

from engine.config import RunConfig, config_validate
from engine.core.errors import DataError
from engine.data.bars import bars_validate
from engine.data.ingest import IngestionService
from engine.data.lakehouse import identity_key, namespaces, store_open
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import GENERATOR_VERSION, SyntheticSource, universe_names
from engine.data.sql import sql_arrow
from engine.tasks import run_backtest


def files_config(lh: Path, folder: Path, **data: object) -> RunConfig:
    """task=ingest data=files data.path=FOLDER (everything else default)."""
    raw = {"task": "ingest", "quiet": True, "paths": {"lakehouse_dir": str(lh)}}
    return config_validate({**raw, "data": {"source": "files", "path": str(folder), **data}})


def _files_folder(root: Path) -> Path:
    """Six pairs of 1d csv files from another seed (other prices than the default store)."""
    gen = SyntheticSource(3, 6, "2018-01-01", "2018-12-31")
    root.mkdir()
    for symbol in gen.symbols():
        bars = gen.ohlcv_fetch(symbol, "1d", gen.start_ms, gen.end_ms)
        bars.with_columns(pl.col("timestamp").dt.epoch("ms")).write_csv(root / f"{symbol.replace('/', '_')}-1d.csv")
    return root


def test_sources_never_mix_and_runs_are_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lh = tmp_path / "lh"
    first = run_backtest(small_config(lh, tmp_path / "run1"))
    before = (tmp_path / "run1" / "metrics.json").read_bytes()

    # a files folder ingested into the same paths.lakehouse_dir: its own namespace
    folder = _files_folder(tmp_path / "ohlcv")
    files_cfg = files_config(lh, folder)
    assert ingest_task(files_cfg) == 0
    assert "ingested 2190 daily bars for 6 symbols" in capsys.readouterr().out  # 6 x 365 days of 2018

    # a generator store with another data.end: its own namespace too (no splice of two draws)
    other = run_backtest(small_config(lh, tmp_path / "run_end", "data.end=2021-09-30"))
    assert other.metrics != first.metrics

    again = run_backtest(small_config(lh, tmp_path / "run2"))
    assert (tmp_path / "run2" / "metrics.json").read_bytes() == before
    assert again.metrics["total_return"] == first.metrics["total_return"]

    found = dict(namespaces(lh))
    assert len(found) == 3
    kinds = sorted(str(i["source"]) for i in found.values() if i)
    assert kinds == ["files", "synthetic", "synthetic"]
    files_id = next(i for i in found.values() if i and i["source"] == "files")
    assert files_id == {"source": "files", "path": str(folder.resolve()), "quote": "USDT"}
    synth = sorted((i for i in found.values() if i and i["source"] == "synthetic"), key=lambda i: str(i["end"]))
    assert [i["end"] for i in synth] == ["2021-09-30", "2021-12-31"]
    assert synth[1] == {
        "source": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": 7,
        "n_symbols": 30,
        "start": "2021-01-01",
        "end": "2021-12-31",
        "quote": "USDT",
    }
    # every namespace's name is its identity's key; the default run's files are in its own only
    for name, ident in found.items():
        assert ident is not None and name == identity_key(ident)
    manifest = json.loads((tmp_path / "run2" / "manifest.json").read_text())
    assert manifest["data"]["files"] == 30
    default_ns = identity_key(synth[1])
    listed = [str(p.relative_to(lh)) for p in _default_store_files(lh)]
    assert len(listed) == 30 and all(f.startswith(default_ns + "/bars/interval=1d/") for f in listed)


def _default_store_files(lh: Path) -> list[Path]:
    cfg = small_config(lh, lh / "unused")
    root = store_open(lh, source_from_config(cfg.data).identity()).root
    return sorted(root.glob("bars/interval=1d/symbol=*/data.parquet"))


def test_quote_and_settings_change_the_identity() -> None:
    base = SyntheticSource(7, 10, "2021-01-01", "2021-03-31").identity()
    for other in (
        SyntheticSource(8, 10, "2021-01-01", "2021-03-31"),
        SyntheticSource(7, 11, "2021-01-01", "2021-03-31"),
        SyntheticSource(7, 10, "2021-01-01", "2021-04-30"),
        SyntheticSource(7, 10, "2021-01-01", "2021-03-31", quote="USDC"),
    ):
        assert identity_key(other.identity()) != identity_key(base)
    assert identity_key(SyntheticSource(7, 10, "2021-01-01", "2021-03-31").identity()) == identity_key(base)


def test_corrupt_identity_file_is_one_clear_error(tmp_path: Path) -> None:
    ident = SyntheticSource(7, 3, "2021-01-01", "2021-03-31").identity()
    root = tmp_path / identity_key(ident)
    root.mkdir()
    (root / "_identity.json").write_text("{not json")
    with pytest.raises(DataError, match=r"^corrupt store identity .*_identity.json: delete the folder") as info:
        store_open(tmp_path, ident)
    assert "\n" not in str(info.value)
    (root / "_identity.json").write_text(json.dumps({**ident, "seed": 8}))
    with pytest.raises(DataError, match=r"records the data identity"):
        store_open(tmp_path, ident)


def test_stray_files_in_a_partition_are_never_read(tmp_path: Path) -> None:
    src = SyntheticSource(5, 4, "2021-01-01", "2021-03-31")
    lake = store_open(tmp_path, src.identity())
    IngestionService(lake, src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    clean = lake.scan("bars", "1d").collect().sort(["symbol", "timestamp"])
    cov = pl.from_arrow(sql_arrow("coverage", {"glob": lake.glob("bars", "1d")}))
    part = lake.partition("bars", "1d", "BTC/USDT")
    doubled = lake.read("bars", "1d", "BTC/USDT").with_columns(pl.col(c) * 2 for c in ("open", "high", "low", "close"))
    shifted = doubled.with_columns(pl.col("timestamp") + pl.duration(days=400))
    shifted.write_parquet(part / "data (copy).parquet")
    shifted.write_parquet(part / ".data.parquet")
    shifted.write_parquet(part / ".data.parquet.tmp-123")
    assert clean.height == 4 * 90
    assert lake.scan("bars", "1d").collect().sort(["symbol", "timestamp"]).equals(clean)
    assert pl.from_arrow(sql_arrow("coverage", {"glob": lake.glob("bars", "1d")})).equals(cov)


@pytest.mark.parametrize("column", ["close", "high", "volume"])
def test_inf_is_not_a_bar(column: str) -> None:
    src = SyntheticSource(5, 2, "2021-01-01", "2021-03-31")
    bars = src.ohlcv_fetch("ETH/USDT", "1d", src.start_ms, src.end_ms)
    bad = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(math.inf).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(DataError, match=r"^ETH/USDT 1d: infinite price or volume at 2021-01-11 00:00:00\+00:00"):
        bars_validate(bad, "ETH/USDT", "1d")
    neg = bars.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(-math.inf).otherwise(pl.col("low")).alias("low"))
    with pytest.raises(DataError, match=r"infinite price or volume at 2021-01-04"):
        bars_validate(neg, "ETH/USDT", "1d")


def test_identical_duplicate_bars_are_dropped_and_said(caplog: pytest.LogCaptureFixture) -> None:
    src = SyntheticSource(5, 2, "2021-01-01", "2021-03-31")
    bars = src.ohlcv_fetch("ETH/USDT", "1d", src.start_ms, src.end_ms)
    with caplog.at_level(logging.WARNING):
        kept = bars_validate(pl.concat([bars, bars.tail(5)]), "ETH/USDT", "1d")
    assert kept.equals(bars)
    assert "ETH/USDT 1d: 5 identical duplicate bar(s) dropped" in caplog.text
    caplog.clear()
    bars_validate(bars, "ETH/USDT", "1d")
    assert "duplicate" not in caplog.text


@pytest.mark.parametrize("n", [1021, 2000, 17_577, 20_000])
def test_generator_names_are_distinct_and_majors_stay_majors(n: int) -> None:
    names = universe_names(n)
    assert len(names) == n == len(set(names))
    assert names[:5] == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
    assert names[5] == "AAA/USDT" and names[1019] == "BNA/USDT"  # unchanged below the old wrap point
    assert names[1020] == "BNC/USDT"  # BNB is a major: skipped, not repeated
    if n > 17_575:
        assert names[17_575] == "ZZZ/USDT" and names[17_576] == "AAAA/USDT"


def test_btc_is_the_large_cap_in_a_big_universe() -> None:
    src = SyntheticSource(7, 2000, "2021-01-01", "2021-03-31")
    assert src.symbols().index("BTC/USDT") == 0
    assert src.path("BTC/USDT").open[0] == 30_000.0


def test_ccxt_identity_is_exchange_host_and_quote_without_credentials() -> None:
    from engine.config import CcxtData
    from engine.data.sources.ccxt_source import CcxtSource

    src = CcxtSource(CcxtData(api_url="http://user:secret@127.0.0.1:8765/api/v3?key=abc", quote="BTC"))
    ident = src.identity()
    assert ident == {"source": "ccxt", "exchange": "binance", "api_host": "http://127.0.0.1:8765", "quote": "BTC"}
    assert "secret" not in json.dumps(ident) and "abc" not in json.dumps(ident)
    plain = CcxtSource(CcxtData()).identity()
    assert plain == {"source": "ccxt", "exchange": "binance", "api_host": None, "quote": "USDT"}
    assert identity_key(plain).startswith("ccxt-") and identity_key(plain) != identity_key(ident)
