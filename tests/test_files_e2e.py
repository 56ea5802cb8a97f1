"""A user's own OHLCV files: ingest them (task=ingest data=files), then backtest offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY_RANKING, engine_cli

from engine.data.sources.synthetic import SyntheticSource

SMALL = [*TINY_RANKING, "quiet=true"]


@pytest.mark.slow
def test_ingest_files_then_backtest(tmp_path: Path) -> None:
    gen = SyntheticSource(3, 8, "2021-01-01", "2021-08-31")
    folder = tmp_path / "ohlcv"
    folder.mkdir()
    for symbol in gen.symbols():
        bars = gen.ohlcv_fetch(symbol, "1d", gen.start_ms, gen.end_ms)
        name = symbol.replace("/", "_") + "-1d"
        bars.with_columns(bars["timestamp"].dt.epoch("ms").alias("timestamp")).write_csv(folder / f"{name}.csv")
    lh = tmp_path / "lh"
    dates = ["data.start=2021-01-01", "data.end=2021-08-31"]
    ingest = engine_cli(
        ["task=ingest", "data=files", f"data.path={folder}", f"paths.lakehouse_dir={lh}", *dates], tmp_path
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "ingested" in ingest.stdout
    assert len(list(lh.glob("files-*/bars/interval=1d/symbol=*/data.parquet"))) == 8
    run = engine_cli(
        [
            "+profile=crypto_rating",
            "data=files",
            f"data.path={folder}",
            f"paths.lakehouse_dir={lh}",
            *dates,
            *SMALL,
            f"paths.output_dir={tmp_path / 'out'}",
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_trades"] > 0
    # a second ingest finds everything covered
    again = engine_cli(
        ["task=ingest", "data=files", f"data.path={folder}", f"paths.lakehouse_dir={lh}", *dates], tmp_path
    )
    assert "ingested 0 daily bars" in again.stdout
