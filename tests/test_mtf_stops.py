"""Intraday stop execution: finer bars resolve what a daily bar cannot, and bad intervals fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import small_config

from engine.config.exit_rules import ExitRules
from engine.core.errors import EngineError
from engine.run import backtest_run, run_plan
from engine.simulation.vbt import PriceBlock, VectorBTSimulator

H = 3_600_000_000_000  # one hour in ns
RULES = ExitRules(sl_stop=0.05, tp_stop=0.15)


def _hourly(day2: list[tuple[float, float, float, float]]) -> np.ndarray:
    """48 hourly OHLC bars: day 1 flat at 100 (entry at its open), day 2 as given (24 bars)."""
    flat = [(100.0, 100.5, 99.5, 100.0)] * 24
    assert len(day2) == 24
    return np.array(flat + day2)


def _agg(h: np.ndarray, k: int) -> np.ndarray:
    m = h.reshape(-1, k, 4)
    return np.stack([m[:, 0, 0], m[:, :, 1].max(1), m[:, :, 2].min(1), m[:, -1, 3]], axis=1)


def _exit(bars: np.ndarray, hours: int) -> tuple[float, bool]:
    n = bars.shape[0]
    block = PriceBlock(
        open=bars[:, [0]],
        high=bars[:, [1]],
        low=bars[:, [2]],
        close=bars[:, [3]],
        index=(np.arange(n, dtype=np.int64) * hours * H).astype("datetime64[ns]"),
        columns=["X/USDT"],
    )
    weights = np.full((n, 1), np.nan)
    weights[0, 0] = 1.0
    res = VectorBTSimulator().simulate(block, weights, RULES, init_cash=1000.0)
    assert res.exits.height == 1
    row = res.exits.row(0, named=True)
    return row["price"], row["ambiguous"]


def _calm(p: float) -> tuple[float, float, float, float]:
    return (p, p + 0.5, p - 0.5, p)


def test_daily_ambiguity_resolved_by_4h_bars() -> None:
    # day 2: hours 0-3 rally through 115, hours 4-7 crash through 95
    day2 = [
        _calm(100.0),
        (100.0, 116.0, 99.5, 110.0),
        _calm(110.0),
        (110.0, 110.5, 100.0, 100.0),
        (100.0, 100.5, 94.0, 96.0),
    ] + [_calm(96.0)] * 19
    h = _hourly(day2)
    assert _exit(_agg(h, 24), 24) == (
        pytest.approx(95.0, rel=1e-12),
        True,
    )  # daily: both levels in one bar, SL first, flagged
    assert _exit(_agg(h, 4), 4) == (pytest.approx(115.0, rel=1e-12), False)  # 4h: the rally came first, no ambiguity


def test_4h_ambiguity_resolved_by_1h_bars() -> None:
    # one 4h bar holds both: hour 0 hits 116, hour 2 hits 94
    day2 = [(100.0, 116.0, 99.5, 112.0), _calm(112.0), (112.0, 112.5, 94.0, 97.0), _calm(97.0)] + [_calm(97.0)] * 20
    h = _hourly(day2)
    assert _exit(_agg(h, 24), 24) == (pytest.approx(95.0, rel=1e-12), True)
    assert _exit(_agg(h, 4), 4) == (pytest.approx(95.0, rel=1e-12), True)
    assert _exit(h, 1) == (pytest.approx(115.0, rel=1e-12), False)


@pytest.mark.parametrize(
    ("timeframes", "needle"),
    [
        ("[1m]", "'1m' is not available from the synthetic source"),
        ("[1w]", "'1w' is coarser than the base bars backtest.interval=1d"),  # refused by the config
        ("[3h]", "'3h' is not available"),
    ],
)
def test_unservable_interval_is_a_clear_error(timeframes: str, needle: str, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=needle):
        run_plan(small_config(tmp_path / "lh", tmp_path / "o", f"backtest.timeframes={timeframes}"))


def test_coarser_than_daily_is_rejected(tmp_path: Path) -> None:
    from engine.data.ingest import IngestionService
    from engine.data.lakehouse import Lakehouse
    from engine.data.sources.synthetic import SyntheticSource

    class Weekly(SyntheticSource):
        def intervals(self) -> tuple[str, ...]:
            return (*super().intervals(), "1w")

    service = IngestionService(Lakehouse(tmp_path), Weekly(1, 3, "2021-01-01", "2021-03-31"))
    with pytest.raises(EngineError, match="'1w' is coarser than the 1d base bars"):
        service.interval_check("1w")


def test_mtf_run_reports_daily_comparison(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "o", "+profile=crypto_rating", "backtest.timeframes=[4h]")
    m = backtest_run(cfg).book_metrics[0]
    assert m["interval"] == "4h"
    daily = m["base_bars"]
    assert daily["n_stop_exits"] > 0
    assert daily["ambiguous_resolved_by_finer_bars"] == daily["n_ambiguous_exits"] - m["n_ambiguous_exits"]


def test_report_shows_daily_vs_fine_comparison(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.tasks import run_backtest

    cfg = small_config(lakehouse_dir, tmp_path / "o", "+profile=crypto_rating", "backtest.timeframes=[4h]")
    run_backtest(cfg)
    page = (tmp_path / "o" / "report.html").read_text()
    assert 'id="daily-vs-fine"' in page
    assert "stops on 4h bars" in page


def test_trend_in_trend_run_compares_with_daily_only_simulation(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "o", "+profile=crypto_rating_mtf", "signals.trend_days=20")
    m = backtest_run(cfg).book_metrics[0]
    assert m["interval"] == "4h"
    assert m["exits_by_kind"]["signal"] + m["n_stop_exits"] > 0
    daily = m["base_bars"]
    assert daily["n_stop_exits"] > 0
    assert daily["total_return"] != m["total_return"]  # entries move to the next daily open
