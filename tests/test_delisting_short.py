"""The delisting haircut of a short: the cover of a short whose bars end pays the haircut above its last close.

A perpetual book (``data.market=perp``) that holds GONE/USDT short when its bars end covers it at
``last close x (1 + haircut)``: the haircut is a loss for the holder on either side (a long sells
at ``last close x (1 - haircut)``, tests/test_survivorship.py). Before the fix the short covered at
``last close x (1 - haircut)``, so a larger haircut raised the return.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import bars_from_closes, feather_write, perp_files_config

from engine.config import RunConfig
from engine.core.units import DAY_MS
from engine.run import backtest_run
from engine.run.delisting import delisting_haircut

START_MS = 1_609_459_200_000  # 2021-01-01
N_DAYS = 200


@pytest.fixture(scope="module")
def perp_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freqtrade futures folder: two slow risers and GONE/USDT, which falls fastest and ends on day 103."""
    root = tmp_path_factory.mktemp("perp") / "futures"
    root.mkdir()
    rng = np.random.default_rng(3)
    for name, r in (
        ("AAA", rng.normal(0.001, 0.01, N_DAYS)),
        ("BBB", rng.normal(0.001, 0.01, N_DAYS)),
        ("GONE", rng.normal(-0.01, 0.005, 104)),
    ):
        feather_write(
            bars_from_closes(100.0 * np.exp(np.cumsum(r)), START_MS, DAY_MS),
            root / f"{name}_USDT_USDT-1d-futures.feather",
        )
    return root


def _config(tmp: Path, folder: Path, haircut: float, *extra: str) -> RunConfig:
    return perp_files_config(
        tmp, folder, "ranking.top_n=1", "ranking.bottom_n=1", "portfolio.side=short",
        f"execution.delisting_haircut={haircut}", *extra,
    )  # fmt: skip


@pytest.mark.parametrize("haircut", [0.0, 0.3])
def test_a_delisted_short_is_covered_at_its_last_close_plus_the_haircut(
    perp_folder: Path, tmp_path: Path, haircut: float
) -> None:
    run = backtest_run(_config(tmp_path, perp_folder, haircut))
    assert run.result is not None
    orders, equity = run.result.orders, run.result.equity
    exit_ = orders.filter(pl.col("reason") == "delisted")
    assert exit_.height == 1 and exit_.item(0, "symbol") == "GONE/USDT" and exit_.item(0, "side") == "buy"
    bars = pl.read_ipc(perp_folder / "GONE_USDT_USDT-1d-futures.feather")
    last_close = float(bars.get_column("close")[-1])
    last_day = bars.get_column("date")[-1]
    # covered at its last close x (1 + haircut): no slippage or fee (costs=zero), no funding (none in the folder)
    assert exit_.item(0, "price") == pytest.approx(last_close * (1.0 + haircut), rel=1e-12)
    size = exit_.item(0, "size")
    # the book loses exactly the haircut on the short between the last bar's close and the next
    before = equity.filter(pl.col("timestamp") == last_day + pl.duration(days=1)).item(0, "equity")
    after = equity.filter(pl.col("timestamp") > last_day + pl.duration(days=1)).item(0, "equity")
    assert after == pytest.approx(before - size * last_close * haircut, rel=1e-12)
    trade = run.result.trades.filter(pl.col("symbol") == "GONE/USDT").row(-1, named=True)
    assert trade["exit_kind"] == "delisted" and trade["side"] == "short"


def test_the_haircut_moves_each_column_against_its_holder() -> None:
    block = {f: np.full((3, 2), 10.0) for f in ("open", "high", "low", "close")}
    delist = np.array([[False, False], [True, True], [False, False]])
    delisting_haircut(block, delist, 0.25, np.array([False, True]))
    for f in block:
        assert block[f][:, 0].tolist() == [10.0, 7.5, 7.5]  # a long sells lower
        assert block[f][:, 1].tolist() == [10.0, 12.5, 12.5]  # a short covers higher


def test_a_capped_delisting_fill_has_no_market_volume(perp_folder: Path, tmp_path: Path) -> None:
    """Under a participation cap the delisting row fills in full at the last close: its quote volume and
    participation are NaN in orders.parquet (not the stand-in 1e300 and 1e-296), the other fills' are real."""
    run = backtest_run(_config(tmp_path, perp_folder, 0.0, "execution.max_participation=0.0001"))
    assert run.result is not None
    orders = run.result.orders
    exit_ = orders.filter(pl.col("reason") == "delisted")
    assert exit_.height == 1
    assert np.isnan(exit_.item(0, "quote_volume")) and np.isnan(exit_.item(0, "participation"))
    rest = orders.filter(pl.col("reason") != "delisted")
    assert rest.height > 0 and rest.get_column("quote_volume").is_finite().all()
    assert float(rest.get_column("quote_volume").max()) < 1e20  # type: ignore[arg-type]
    assert float(rest.get_column("participation").max()) <= 0.0001 + 1e-12  # type: ignore[arg-type]
