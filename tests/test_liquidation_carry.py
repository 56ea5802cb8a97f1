"""A leveraged book without exit rules must liquidate as the same book with stops that never trigger.

Found by probing (branch ``probe``): with ``exit_rules=none`` the market stage does not track the
positions' risk state (``engine/simulation/market.py``, ``tracked = [(r is not None and r.active) or
held_reweights == "first_bar" ...]``), so the cost basis of a position carried into the next window is
lost (``engine.run.fold.positions_after`` gets ``end_state=None``: basis NaN). The liquidation level
``E (1 - 1/L) / (1 - mm)`` is then computed from the next window's top-up fill alone (a long bought at
54 and topped up by 0.6 % of its size at 79 is liquidated at 79 x 0.95 / 0.995 = 75.7), or not at all
in a window without a buy. With any active exit rule the basis is carried and the level is right.
Fixed in ``engine/simulation/market.py``: the state is tracked whenever ``margin`` is set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import feather_write, perp_files_config

from engine.config import RunConfig
from engine.core.units import HOUR_MS
from engine.run import backtest_run

START_MS = 1_704_067_200_000  # 2024-01-01


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six perpetuals of 1h bars over 150 days: random walks of 1 % an hour, no funding files."""
    root = tmp_path_factory.mktemp("liq") / "futures"
    root.mkdir()
    n = 150 * 24
    for i in range(6):
        rng = np.random.default_rng(i + 1)
        close = 10.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0.0001 * (i % 5 - 2), 0.01, n)))
        open_ = np.r_[10.0 * (i + 1), close[:-1]]
        bars = pl.DataFrame(
            {
                "timestamp": START_MS + np.arange(n) * HOUR_MS,
                "open": open_,
                "high": np.maximum(open_, close) * 1.003,
                "low": np.minimum(open_, close) * 0.997,
                "close": close,
                "volume": np.full(n, 1e7),
            }
        ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))
        feather_write(bars, root / f"S{i}_USDT_USDT-1h-futures.feather")
    return root


def _config(tmp: Path, folder: Path, *exit_rules: str) -> RunConfig:
    return perp_files_config(
        tmp, folder, "ranking.top_n=2", "ranking.bottom_n=2", "portfolio.side=long_short", "portfolio.leverage=20",
        "portfolio.gross_exposure=10", "backtest.timeframes=[1h]", *exit_rules,
    )  # fmt: skip


def test_stops_that_never_trigger_change_no_liquidation(folder: Path, tmp_path: Path) -> None:
    plain = backtest_run(_config(tmp_path / "a", folder, "exit_rules=none"))
    never = backtest_run(_config(tmp_path / "b", folder, "exit_rules.sl_stop=0.99", "exit_rules.tp_stop=100"))
    assert plain.result is not None and never.result is not None
    cols = ["timestamp", "symbol", "side", "size", "price"]
    liq_plain = plain.result.orders.filter(pl.col("reason") == "liquidation").select(cols)
    liq_never = never.result.orders.filter(pl.col("reason") == "liquidation").select(cols)
    assert liq_never.height > 0
    assert liq_plain.equals(liq_never)
