"""Independent cross-check of SL / TP exits against backtesting.py on one generated daily series.

Strategy on both sides: SMA(10) crosses above SMA(30) at a bar's close while flat -> buy with all
equity at the next bar's open; stop loss 5 % and take profit 15 % from the entry fill price; no
fees, no spread. Conventions (see docs/EXIT_RULES.md, "backtesting.py"):

- Gaps: both fill a stop loss or take profit gapped through at the open.
- Ambiguous bars (SL and TP inside one range): backtesting.py processes the SL (stop) order before
  the TP (limit) order, i.e. our ``pessimistic`` default.
- Entry bar: backtesting.py sets ``sl=``/``tp=`` prices when the order is placed, before the fill
  price exists. ``test_same_trades_with_bracket_at_order_time`` gives it the levels computed from
  the next open (the fill price, with no costs) as a test oracle: backtesting.py then checks the
  fill bar like we do, and every trade must match. ``test_same_trades_with_levels_set_after_fill``
  uses its only look-ahead-free way (``trade.sl``/``trade.tp`` set in ``next()`` of the fill bar),
  which arms the stops one bar later: trades whose entry bar touched a level are the one allowed
  difference, and they are enumerated and checked.
- End of data: backtesting.py (``finalize_trades=True``) force-closes a trade still open at the
  last bar; our engine keeps it open. That trade is compared on its entry only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from engine.config.exit_rules import ExitRules
from engine.simulation import PriceBlock, SimResult, VectorBTSimulator
from engine.testing import N_BARS, crosscheck_ohlc, entries_while_flat, sma, sma_cross

# backtesting.py 0.6.6's stats use an accessor pandas 3 deprecates; nothing else is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofweek is deprecated:pandas.errors.Pandas4Warning")

SL, TP = 0.05, 0.15
RULES = ExitRules(sl_stop=SL, tp_stop=TP)
CASH = 10_000_000.0  # large enough that backtesting.py's whole-unit sizing never runs short


def _block(df: pd.DataFrame) -> PriceBlock:
    return PriceBlock(
        *(df[[c]].to_numpy(dtype=np.float64).copy() for c in ("Open", "High", "Low", "Close")),
        df.index.to_numpy(dtype="datetime64[ns]"),
        ("X",),
    )


def _our_entries(prices: PriceBlock, signals: np.ndarray) -> np.ndarray:
    return entries_while_flat(prices, signals, RULES)


def _our_trades(
    prices: PriceBlock, w: np.ndarray
) -> tuple[list[tuple[int, float, int | None, float | None]], SimResult]:
    res = VectorBTSimulator(fees=0.0, slippage=0.0).simulate(prices, w, RULES, init_cash=CASH)
    buys = res.orders.filter(side="buy")
    sells = res.orders.filter(side="sell")
    assert (buys["reason"] == "rebalance").all()
    trades = []
    for k in range(buys.height):
        exit_ = (sells["bar"][k], sells["price"][k]) if k < sells.height else (None, None)
        trades.append((buys["bar"][k], buys["price"][k], *exit_))
    return trades, res


def _bt_trades(df: pd.DataFrame, strategy: type[Strategy]) -> pd.DataFrame:
    bt = Backtest(
        df, strategy, cash=CASH, commission=0.0, exclusive_orders=False, trade_on_close=False, finalize_trades=True
    )
    return bt.run()["_trades"].sort_values("EntryBar").reset_index(drop=True)


class _BracketAtOrder(Strategy):
    """Buys with sl=/tp= computed from the next open, which the test knows (the fill price)."""

    next_open: np.ndarray = np.empty(0)

    def init(self) -> None:
        self.fast = self.I(sma, self.data.Close, 10)
        self.slow = self.I(sma, self.data.Close, 30)

    def next(self) -> None:
        i = len(self.data) - 1
        if not self.position and i + 1 < len(self.next_open) and crossover(self.fast, self.slow):
            fill = self.next_open[i + 1]
            self.buy(sl=fill * (1 - SL), tp=fill * (1 + TP))


class _LevelsAfterFill(Strategy):
    """Buys at market; sets SL/TP from ``trade.entry_price`` in ``next()`` of the fill bar."""

    def init(self) -> None:
        self.fast = self.I(sma, self.data.Close, 10)
        self.slow = self.I(sma, self.data.Close, 30)

    def next(self) -> None:
        for trade in self.trades:
            if trade.sl is None:
                trade.sl = trade.entry_price * (1 - SL)
                trade.tp = trade.entry_price * (1 + TP)
        if not self.position and len(self.data) < N_BARS and crossover(self.fast, self.slow):
            self.buy()


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    data = crosscheck_ohlc()
    # sl= must lie below the signal bar's close for backtesting.py to accept the order.
    gap = data["Open"].to_numpy()[1:] / data["Close"].to_numpy()[:-1] - 1
    assert np.abs(gap).max() < SL
    return data


def _compare(ours, bt: pd.DataFrame, shares_end: float, entry_bar_differences: bool) -> dict[str, int]:
    """Compare trade by trade; return how many fell under each allowed difference."""
    assert len(ours) == len(bt)
    counts = {"same": 0, "entry_bar_exit": 0, "open_at_end": 0}
    for (o_entry, o_entry_px, o_exit, o_exit_px), row in zip(ours, bt.itertuples(), strict=True):
        assert o_entry == row.EntryBar
        assert o_entry_px == pytest.approx(row.EntryPrice, rel=1e-9, abs=0)
        if o_exit is None:
            # Still open in our engine: backtesting.py force-closed it on the last bar.
            assert row.ExitBar == N_BARS - 1
            assert shares_end > 0
            counts["open_at_end"] += 1
        elif entry_bar_differences and o_exit == o_entry and row.ExitBar != o_entry:
            # We check the fill bar's range; backtesting.py arms the levels one bar later.
            assert row.ExitBar > o_exit
            counts["entry_bar_exit"] += 1
        else:
            assert (o_exit, o_exit_px) == (row.ExitBar, pytest.approx(row.ExitPrice, rel=1e-9, abs=0))
            counts["same"] += 1
    return counts


def test_signals_match_backtesting_crossover(df: pd.DataFrame) -> None:
    close = df["Close"].to_numpy()
    fast, slow = sma(close, 10), sma(close, 30)
    lib = [i for i in range(30, N_BARS) if crossover(fast[: i + 1], slow[: i + 1])]
    assert sma_cross(close).tolist() == lib
    assert len(lib) > 20


def test_same_trades_with_bracket_at_order_time(df: pd.DataFrame) -> None:
    prices = _block(df)
    ours, res = _our_trades(prices, _our_entries(prices, sma_cross(df["Close"].to_numpy())))
    strategy = type("Bracket", (_BracketAtOrder,), {"next_open": df["Open"].to_numpy()})
    bt = _bt_trades(df, strategy)
    counts = _compare(ours, bt, float(res.shares_end[0]), entry_bar_differences=False)
    assert counts == {"same": len(bt) - 1, "entry_bar_exit": 0, "open_at_end": 1}
    # The series must exercise every rule being cross-checked.
    exits = bt["ExitPrice"].to_numpy()
    entries = bt["EntryPrice"].to_numpy()
    assert np.isclose(exits, entries * (1 - SL), rtol=1e-12).any()
    assert np.isclose(exits, entries * (1 + TP), rtol=1e-12).any()
    assert (exits == df["Open"].to_numpy()[bt["ExitBar"].to_numpy()])[:-1].any(), "no gap fill"
    assert res.n_ambiguous >= 1, "no ambiguous bar: the SL-first convention is untested"
    assert (bt["EntryBar"] == bt["ExitBar"]).any(), "no entry-bar exit: the fill-bar convention is untested"


def test_same_trades_with_levels_set_after_fill(df: pd.DataFrame) -> None:
    bt = _bt_trades(df, _LevelsAfterFill)
    prices = _block(df)
    # Our side enters on backtesting.py's entry bars, so an entry-bar exit on our side cannot
    # shift the later trades.
    w = np.full((N_BARS, 1), np.nan)
    w[bt["EntryBar"].to_numpy(), 0] = 1.0
    ours, res = _our_trades(prices, w)
    counts = _compare(ours, bt, float(res.shares_end[0]), entry_bar_differences=True)
    assert counts["entry_bar_exit"] >= 1
    assert counts["same"] >= 20


@pytest.mark.parametrize("seed", range(4))
def test_entries_while_flat_equal_a_signal_by_signal_loop(seed: int) -> None:
    """The one-scan entries equal the plain loop: take a signal only once the last exit is behind."""
    from engine.simulation.stops import find_stop_exits

    df = crosscheck_ohlc(seed, 600)
    prices = _block(df)
    signals = sma_cross(df["Close"].to_numpy(), 5, 15)
    for rules in (ExitRules(sl_stop=SL, tp_stop=TP), ExitRules(sl_stop=0.03, sl_trail=True, max_holding="9d")):
        n = prices.close.shape[0]
        want = np.full((n, 1), np.nan)
        busy_until = -1
        for s in signals:
            if s + 1 >= n or s < busy_until:
                continue
            want[s + 1] = 1.0
            ex = find_stop_exits(prices.open, prices.high, prices.low, prices.index, want, rules)
            later = ex.bar[ex.bar >= s + 1]
            busy_until = int(later[0]) if len(later) else n
        np.testing.assert_array_equal(entries_while_flat(prices, signals, rules), want)
