"""Positions, stops and trades that live across walk-forward windows.

The proofs of docs/EXIT_RULES.md, "State across windows": a position's exit depends only on its
entry and the bars after it, never on the window length; a top-up moves the cost basis (and so
the stop) by the amount computed by hand; trailing stops and holding limits run across windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import engine_cli, small_config

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules
from engine.data.panel import Panel
from engine.run import BacktestResult, RunPlan, assemble, run_plan, walk
from engine.simulation.vbt import PriceBlock, VectorBTSimulator
from engine.strategy.windows import Window

ONE = [
    "+profile=crypto_rating",
    "universe.symbols=[BNB/USDT]",
    "ranking.top_n=1",
    "ranking.min_dollar_volume=0",
]
RULES = {
    "sl_tp": ["exit_rules.sl_stop=0.05", "exit_rules.tp_stop=0.15"],
    "trail_hold": [
        "exit_rules.sl_stop=0.15",
        "exit_rules.tp_stop=null",
        "exit_rules.sl_trail=0.10",
        "exit_rules.max_holding=40d",
    ],
    "hold": ["exit_rules.sl_stop=null", "exit_rules.tp_stop=null", "exit_rules.max_holding=20d"],
}


@dataclass(frozen=True)
class Ran:
    """A run's plan (its bars, windows, config) and its result."""

    plan: RunPlan
    result: BacktestResult

    @property
    def cfg(self) -> RunConfig:
        return self.plan.cfg

    @property
    def base_bars(self) -> Panel:
        return self.plan.base_bars

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.plan.windows


def _engine(lakehouse: Path, out: Path, *overrides: str) -> Ran:
    plan = run_plan(small_config(lakehouse, out, *overrides))
    result = assemble(plan, walk(plan, [plan.cfg.exit_rules])).result
    assert result is not None
    return Ran(plan, result)


@pytest.fixture(scope="module")
def one_symbol(lakehouse_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Ran]:
    out = tmp_path_factory.mktemp("one")
    return {
        (name, hold): _engine(lakehouse_dir, out / f"{name}{hold}", *ONE, *rules, f"backtest.hold_days={hold}")
        for name, rules in RULES.items()
        for hold in (1, 7, 30)
    }


def _single_call_exit(eng: Ran, entry_ms: int, rules: ExitRules) -> tuple[int, float, str]:
    """The first exit of one ``simulate`` call started at ``entry_ms`` on the symbol's daily bars."""
    d = eng.base_bars
    j = d.col("BNB/USDT")
    rows = d.rows(entry_ms, eng.windows[-1].end_ms)
    prices = PriceBlock(
        *(np.ascontiguousarray(getattr(d, f)[rows, [j]]) for f in ("open", "high", "low", "close")),
        index=d.ts_ms[rows].astype("datetime64[ms]").astype("datetime64[ns]"),
        columns=("BNB/USDT",),
    )
    w = np.full((prices.shape[0], 1), np.nan)
    w[0] = 1.0
    costs = eng.cfg.costs
    res = VectorBTSimulator(costs.fees, costs.slippage).simulate(prices, w, rules, init_cash=1e5)
    sells = res.orders.filter(pl.col("side") == "sell")
    first = sells.row(0, named=True)
    return int(d.ts_ms[rows][first["bar"]]), float(first["price"]), str(first["reason"])


@pytest.mark.parametrize("name", list(RULES))
def test_exit_depends_on_entry_and_later_bars_only(one_symbol: dict, name: str) -> None:
    rules = one_symbol[(name, 7)].cfg.exit_rules
    firsts = []
    for hold in (1, 7, 30):
        eng = one_symbol[(name, hold)]
        trades = eng.result.trades.filter(pl.col("status") == "closed")
        assert trades.height >= 3, (name, hold)
        for t in trades.iter_rows(named=True):
            entry_ms = int(t["entry_time"].timestamp() * 1000)
            got = (int(t["exit_time"].timestamp() * 1000), t["exit_price"], t["exit_kind"])
            want = _single_call_exit(eng, entry_ms, rules)
            assert got[0] == want[0] and got[2] == want[2], (name, hold, t)
            assert got[1] == pytest.approx(want[1], rel=1e-9)
        firsts.append(trades.row(0, named=True))
    # up to the first exit the three runs hold the same position: same trade, same equity
    assert len({(f["entry_time"], f["exit_time"], f["exit_kind"]) for f in firsts}) == 1
    stop = firsts[0]["exit_time"]
    curves = [
        one_symbol[(name, h)].result.equity.filter(pl.col("timestamp") <= stop + timedelta(days=1))["equity"]
        for h in (1, 7, 30)
    ]
    for c in curves[1:]:
        np.testing.assert_allclose(c.to_numpy(), curves[0].to_numpy(), rtol=1e-9, atol=0)
    # whatever the window length, every trade of a one-symbol top-1 run is closed by an exit
    # rule (or is still open at the end): no rebalance ever closes or resets the position
    for h in (1, 7, 30):
        kinds = set(one_symbol[(name, h)].result.trades["exit_kind"].to_list())
        assert kinds <= {"stop_loss", "take_profit", "trailing", "max_holding", "end"}, kinds


def test_holding_limit_longer_than_a_window_fires(one_symbol: dict) -> None:
    """max_holding=20d in weekly windows: every position is closed 20 days after its entry, at the
    open of that day (in the third window after its entry's), and the symbol then waits in cash
    for the next rebalance."""
    eng = one_symbol[("hold", 7)]
    trades = eng.result.trades
    held = trades.filter(pl.col("exit_kind") == "max_holding")
    assert held.height >= 5
    assert trades.filter(pl.col("status") == "closed").height == held.height
    assert ((held["exit_time"] - held["entry_time"]) == timedelta(days=20)).all()
    assert ((held["exit_window"] - held["entry_window"]) == 2).all()
    d, j = eng.base_bars, eng.base_bars.col("BNB/USDT")
    for t in held.iter_rows(named=True):
        b = int(np.searchsorted(d.ts_ms, int(t["exit_time"].timestamp() * 1000)))
        assert t["exit_price"] == pytest.approx(d.open[b, j] * (1 - eng.cfg.costs.slippage), rel=1e-12)
    # re-entry only at a rebalance: every entry is a window's first bar
    starts = {w.start_ms for w in eng.windows}
    assert all(int(t.timestamp() * 1000) in starts for t in trades["entry_time"])


def test_trailing_stop_set_in_one_window_fires_weeks_later(one_symbol: dict) -> None:
    """A trailing exit at the level computed by hand from the bars since the entry: 10 % below the
    highest high before the exit bar (or the open, on a gap), two and more windows after the entry."""
    eng = one_symbol[("trail_hold", 7)]
    d, j = eng.base_bars, eng.base_bars.col("BNB/USDT")
    trail = eng.result.trades.filter(pl.col("exit_kind") == "trailing")
    later = trail.filter(pl.col("exit_window") - pl.col("entry_window") >= 2)
    assert later.height > 0
    slip = eng.cfg.costs.slippage
    for t in trail.iter_rows(named=True):
        a = int(np.searchsorted(d.ts_ms, int(t["entry_time"].timestamp() * 1000)))
        b = int(np.searchsorted(d.ts_ms, int(t["exit_time"].timestamp() * 1000)))
        peak = max(d.open[a, j] * (1 + slip), d.high[a:b, j].max()) if b > a else d.open[a, j] * (1 + slip)
        level = min(peak * (1 - 0.10), d.open[b, j])
        assert t["exit_price"] == pytest.approx(level * (1 - slip), rel=1e-12)


def test_a_topup_moves_the_cost_basis_and_the_stop() -> None:
    """Two windows chained as the walk-forward chains them (carried shares, cash and risk state).

    Window 1 buys A and B at 100 (500 each, no costs): 5 shares each. Window 2 rebalances to
    A 0.8 / B 0.2 at A's open of 120: value 5*120 + 5*100 = 1100, A's target 880 = 7.3333 shares,
    so 2.3333 are bought at 120 with the 280 of B's sale. A's basis becomes
    (5*100 + 2.3333*120) / 7.3333 = 780 / 7.3333 = 106.3636..., its 10 % stop 95.7272...: the
    low of 94 on window 2's second bar reaches it. On the window-1 basis of 100 the stop would be
    90 and nothing would fire.
    """
    rules = ExitRules(sl_stop=0.10)
    sim = VectorBTSimulator()
    day = np.timedelta64(1, "D")
    t0 = np.datetime64("2024-01-01", "ns")

    def block(rows: list[tuple[float, float]], lows: list[tuple[float, float]], start: int) -> PriceBlock:
        o = np.array(rows, dtype=np.float64)
        lo = np.minimum(np.array(lows, dtype=np.float64), o)
        return PriceBlock(o, o * 1.01, lo, o, t0 + (start + np.arange(len(rows))) * day, ("A", "B"))

    w1 = block([(100.0, 100.0), (100.0, 100.0)], [(99.0, 99.0), (99.0, 99.0)], 0)
    first = sim.simulate(w1, np.array([[0.5, 0.5], [np.nan, np.nan]]), rules, init_cash=1000.0)
    np.testing.assert_allclose(first.shares_end, [5.0, 5.0], rtol=1e-15)
    assert first.end_state.basis.tolist() == [100.0, 100.0]
    w2 = block([(120.0, 100.0), (100.0, 100.0)], [(119.0, 99.0), (94.0, 99.0)], 2)
    second = sim.simulate(
        w2,
        np.array([[0.8, 0.2], [np.nan, np.nan]]),
        rules,
        init_cash=first.cash_end,
        carry_shares=first.shares_end,
        carry_price=w1.close[-1],
        carry_state=first.end_state,
    )
    basis = (5 * 100.0 + (880.0 / 120.0 - 5) * 120.0) / (880.0 / 120.0)
    assert basis == pytest.approx(106.36363636363636, rel=1e-15)
    exits = second.exits
    assert exits["column"].to_list() == ["A"] and exits["bar"].to_list() == [1]
    assert exits["price"][0] == pytest.approx(basis * 0.9, rel=1e-12)
    # the position's opening time and peak are those of window 1 (a top-up resets neither)
    assert second.end_state is not None and np.isnan(second.end_state.basis[0])
    assert second.end_state.basis[1] == 100.0  # B was only reduced: its basis is unchanged
    assert second.end_state.opened_ns[1] == t0.astype(np.int64)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["exit_rules.max_holding=3h"],
            "exit_rules.max_holding='3h' is shorter than one bar of the simulation interval 1d",
        ),
        (
            ["exit_rules.max_holding=2h", "backtest.timeframes=[4h]"],
            "shorter than one bar of the simulation interval 4h",
        ),
        (["exit_rules.max_holding=20"], "use a positive integer followed by m, h, d or w"),
        (["exit_rules.max_holding=3x"], "use a positive integer followed by m, h, d or w"),
    ],
)
def test_bad_holding_limit_is_one_line_exit_2(overrides: list[str], needle: str, tmp_path: Path) -> None:
    proc = engine_cli(["+profile=crypto_rating", *overrides, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, 120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "exit_rules.max_holding" in lines[0] and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "lakehouse").exists()
