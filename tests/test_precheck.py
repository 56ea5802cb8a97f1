"""Mistakes found from the config and file names alone are refused before anything is read or written.

A missing ``execution.markets_file`` and a ``ranking.top_n`` above the universe are one line and
exit code 2, with no run folder, no lakehouse and no ledger left behind (engine/data/precheck.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import engine_cli

from engine.compose import config_compose, overrides_validate
from engine.core.errors import ConfigError
from engine.data.precheck import inputs_precheck

PAIRS = ("AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT")


def _folder(root: Path) -> Path:
    """Four pairs of daily csv files (and two files that are not a pair's bars)."""
    root.mkdir()
    ts = np.arange(60, dtype=np.int64) * 86_400_000 + 1_609_459_200_000
    close = np.linspace(1.0, 2.0, 60)
    for s in PAIRS:
        bars = pl.DataFrame({"timestamp": ts, "open": close, "high": close, "low": close, "close": close})
        bars.with_columns(volume=pl.lit(1e6)).write_csv(root / f"{s.replace('/', '_')}-1d.csv")
    (root / "notes.txt").write_text("not bars")
    (root / "EEE_BTC-1d.csv").write_text("timestamp,open,high,low,close,volume\n")  # another quote
    return root


def _nothing_written(cwd: Path, keep: set[str]) -> None:
    assert {p.name for p in cwd.iterdir()} == keep, sorted(p.name for p in cwd.iterdir())


def test_top_n_above_a_files_universe_is_refused_before_the_import(tmp_path: Path) -> None:
    _folder(tmp_path / "ohlcv")
    proc = engine_cli(["data=files", "data.path=ohlcv", "data.quote=USDT", "ranking.top_n=5"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "error: ranking.top_n=5 exceeds the universe of 4 symbols (the pairs of data.path=ohlcv): use 1 <= top_n <= 4"
    ]
    _nothing_written(tmp_path, {"ohlcv"})


def test_a_missing_markets_file_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    proc = engine_cli(["execution.markets_file=rules/nope.csv", f"paths.output_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: execution.markets_file rules/nope.csv does not exist: give a csv/json/yaml file")
    _nothing_written(tmp_path, set())


def test_the_universe_counted_before_the_data(tmp_path: Path) -> None:
    """The count is the files' pairs in the run's quote, universe.symbols, or the generator's n_symbols,
    less the excluded symbols; top_n equal to it passes."""
    folder = _folder(tmp_path / "ohlcv")

    def cfg(*overrides: str) -> None:
        inputs_precheck(config_compose(["quiet=true", *overrides])[0])

    cfg("data=files", f"data.path={folder}", "ranking.top_n=9")  # two quotes, none chosen: the import says so
    cfg("data=files", f"data.path={folder}", "data.quote=USDT", "ranking.top_n=4")
    with pytest.raises(ConfigError, match=r"top_n=4 exceeds the universe of 3 symbols"):
        cfg("data=files", f"data.path={folder}", "data.quote=USDT", "ranking.top_n=4", "universe.exclude=[AAA/USDT]")
    cfg("data=files", f"data.path={folder}", "data.quote=BTC", "ranking.top_n=1")
    with pytest.raises(ConfigError, match=r"top_n=2 exceeds the universe of 1 symbols"):
        cfg("data=files", f"data.path={folder}", "data.quote=BTC", "ranking.top_n=2")
    cfg("data=files", f"data.path={tmp_path / 'none'}", "ranking.top_n=50")  # no folder: the import says so
    with pytest.raises(ConfigError, match=r"top_n=3 exceeds the universe of 2 symbols \(universe.symbols"):
        cfg("ranking.top_n=3", "universe.symbols=[BTC/USDT,ETH/USDT]")
    cfg("data.n_symbols=30", "ranking.top_n=30")
    with pytest.raises(ConfigError, match=r"top_n=30 exceeds the universe of 29 symbols \(data.n_symbols=30 less"):
        cfg(
            "data.n_symbols=30", "ranking.top_n=30", "universe.exclude=[BTC/USDT,XYZ/USDT]"
        )  # XYZ is not in the universe
    cfg("task=ingest", "data.n_symbols=30", "ranking.top_n=31")  # an ingest ranks nothing
    markets = tmp_path / "m.csv"
    with pytest.raises(ConfigError, match=r"execution.markets_file .* is a folder"):
        cfg(f"execution.markets_file={tmp_path}")
    markets.write_text("symbol,min_notional\n")
    cfg(f"execution.markets_file={markets}")


def test_a_sweep_names_its_values_above_the_universe(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "ohlcv")
    with pytest.raises(ConfigError, match=r"1 of 2 sweep values checked are invalid, e\.g\. ranking.top_n=5 exceeds"):
        overrides_validate(["data=files", f"data.path={folder}", "data.quote=USDT", "ranking.top_n=4,5"], multirun=True)
