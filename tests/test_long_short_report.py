"""The report splits a long-short perpetual run's return into long leg, short leg and funding; they add up."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from helpers import fake_perp, small_config

from engine.outputs.long_short import return_split
from engine.tasks import run_backtest

pytestmark = pytest.mark.slow  # numba compiles the market kernel on first use


def test_the_three_parts_add_up_to_the_total_return(
    monkeypatch: pytest.MonkeyPatch, lakehouse_dir: Path, tmp_path: Path
) -> None:
    fake_perp(monkeypatch, lambda s: 0.0004 if s < "M" else -0.0002)
    out = tmp_path / "run"
    cfg = small_config(lakehouse_dir, out, "+profile=crypto_rating", "portfolio.side=long_short", "ranking.bottom_n=4")
    run_backtest(cfg)
    trades = pl.read_parquet(out / "trades.parquet")
    equity = pl.read_parquet(out / "equity.parquet")
    metrics = json.loads((out / "metrics.json").read_text())
    split = return_split(cfg, trades)
    assert split is not None
    total = float(equity["equity"][-1]) / cfg.backtest.init_cash - 1.0
    assert sum(split.values()) == pytest.approx(total, abs=1e-9)
    assert split["funding"] == pytest.approx(-metrics["funding_paid"] / cfg.backtest.init_cash, abs=1e-12)
    assert split["long_leg"] != 0 and split["short_leg"] != 0 and split["funding"] != 0
    assert set(trades["side"]) == {"long", "short"}
    assert (trades["exit_kind"].is_in(["stop_loss", "take_profit"])).any()  # stops on both sides' trades
    page = (out / "report.html").read_text()
    assert "Long leg, short leg and funding" in page and 'id="chart-funding"' in page


def test_a_long_only_spot_run_has_no_split(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "x", "+profile=crypto_rating")
    assert return_split(cfg, pl.DataFrame({"pnl": [1.0]})) is None
