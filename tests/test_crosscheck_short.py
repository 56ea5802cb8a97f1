"""Independent cross-check of short SL / TP exits against backtesting.py (``sell(sl=..., tp=...)``).

The mirror of tests/test_crosscheck_backtesting.py: SMA(10) crosses *below* SMA(30) at a bar's close
while flat -> sell short with all equity at the next bar's open; stop loss 5 % above and take
profit 15 % below the entry fill; no fees, no spread. Our side is the market kernel
(:func:`engine.simulation.market.market_simulate`, every friction off) with weight -1 on the bar
after each signal and ``held_reweights="first_bar"`` (an entry while the short is held is dropped,
as backtesting.py places no order while in a position). backtesting.py gets the levels from the
next open (the fill) at order time, so it checks the fill bar as we do. Gaps fill at the open on
both sides; an ambiguous bar takes the stop first on both (backtesting.py processes the stop-loss
order before the take-profit order). The last trade, still open on our side, is force-closed by
backtesting.py at the end and compared on its entry only.

The same check runs on the series written as a freqtrade candle file (feather, ``date`` column)
and read back by the engine's files reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from helpers import feather_write

from engine.config.exit_rules import ExitRules
from engine.data.sources.files import ohlcv_load
from engine.simulation import PriceBlock
from engine.simulation.books import GridBook
from engine.simulation.market import ExecutionRules, Frictions, market_simulate
from engine.testing import N_BARS, crosscheck_ohlc, sma

pytestmark = [
    pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofweek is deprecated:pandas.errors.Pandas4Warning"),
    pytest.mark.slow,  # numba compiles the market kernel on first use
]

SL, TP = 0.05, 0.15
RULES = ExitRules(sl_stop=SL, tp_stop=TP)
CASH = 10_000_000.0


def _block(df: pd.DataFrame) -> PriceBlock:
    return PriceBlock(
        *(df[[c]].to_numpy(dtype=np.float64).copy() for c in ("Open", "High", "Low", "Close")),
        df.index.to_numpy(dtype="datetime64[ns]"),
        ("X",),
    )


def _cross_below(close: np.ndarray) -> np.ndarray:
    f, s = sma(close, 10), sma(close, 30)
    cross = np.zeros(len(close), dtype=bool)
    cross[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
    return np.flatnonzero(cross)


def _ours(df: pd.DataFrame) -> tuple[list[tuple[int, float, int | None, float | None]], float, int]:
    prices = _block(df)
    n = len(df)
    w = np.full((n, 1), np.nan)
    bars = _cross_below(df["Close"].to_numpy()) + 1
    w[bars[bars < n], 0] = -1.0
    res = market_simulate(
        prices,
        [GridBook(RULES, w, CASH, None, None)],
        Frictions.none(n, 1),
        ExecutionRules(),
        fees=0.0,
        slippage=0.0,
        carry_price=None,
        ambiguity="pessimistic",
        held_reweights="first_bar",
    )[0]
    o = res.orders
    sells, buys = o.filter(pl.col("side") == "sell"), o.filter(pl.col("side") == "buy")
    assert (sells["reason"] == "rebalance").all() and (buys["reason"] != "rebalance").all()
    trades = []
    for k in range(sells.height):
        exit_ = (buys["bar"][k], buys["price"][k]) if k < buys.height else (None, None)
        trades.append((sells["bar"][k], sells["price"][k], *exit_))
    return trades, float(res.shares_end[0]), int(res.n_ambiguous)


class _ShortBracket(Strategy):
    """Sells short with sl=/tp= computed from the next open, which the test knows (the fill price)."""

    next_open: np.ndarray = np.empty(0)

    def init(self) -> None:
        self.fast = self.I(sma, self.data.Close, 10)
        self.slow = self.I(sma, self.data.Close, 30)

    def next(self) -> None:
        i = len(self.data) - 1
        if not self.position and i + 1 < len(self.next_open) and crossover(self.slow, self.fast):
            fill = self.next_open[i + 1]
            self.sell(sl=fill * (1 + SL), tp=fill * (1 - TP))


def _bt(df: pd.DataFrame) -> pd.DataFrame:
    strategy = type("ShortBracket", (_ShortBracket,), {"next_open": df["Open"].to_numpy()})
    bt = Backtest(
        df, strategy, cash=CASH, commission=0.0, exclusive_orders=False, trade_on_close=False, finalize_trades=True
    )
    return bt.run()["_trades"].sort_values("EntryBar").reset_index(drop=True)


def _compare(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    ours, shares_end, n_amb = _ours(df)
    bt = _bt(df)
    assert len(ours) == len(bt) > 20
    assert (bt["Size"] < 0).all()
    for (entry, entry_px, exit_, exit_px), row in zip(ours, bt.itertuples(), strict=True):
        assert entry == row.EntryBar
        assert entry_px == pytest.approx(row.EntryPrice, rel=1e-9, abs=0)
        if exit_ is None:  # still short on our side: backtesting.py force-closed it on the last bar
            assert row.ExitBar == len(df) - 1 and shares_end < 0
        else:
            assert (exit_, exit_px) == (row.ExitBar, pytest.approx(row.ExitPrice, rel=1e-9, abs=0))
    return bt, n_amb


def _exercised(df: pd.DataFrame, bt: pd.DataFrame, n_amb: int) -> None:
    """The series must exercise every rule being cross-checked."""
    exits, entries = bt["ExitPrice"].to_numpy(), bt["EntryPrice"].to_numpy()
    assert np.isclose(exits, entries * (1 + SL), rtol=1e-12).any(), "no stop loss at its level"
    assert np.isclose(exits, entries * (1 - TP), rtol=1e-12).any(), "no take profit at its level"
    assert (exits == df["Open"].to_numpy()[bt["ExitBar"].to_numpy()])[:-1].any(), "no gap fill"
    assert (bt["EntryBar"] == bt["ExitBar"]).any(), "no entry-bar exit"
    assert n_amb >= 1, "no ambiguous bar: the SL-first convention is untested"


def _series() -> pd.DataFrame:
    # a falling drift gives the shorts their take profits; wicks give ambiguous bars and gaps
    df = crosscheck_ohlc(3, N_BARS)
    gap = df["Open"].to_numpy()[1:] / df["Close"].to_numpy()[:-1] - 1
    assert np.abs(gap).max() < SL  # sl= must lie above the signal bar's close for backtesting.py
    return df


def test_short_trades_match_backtesting_py_on_generated_data() -> None:
    df = _series()
    bt, n_amb = _compare(df)
    _exercised(df, bt, n_amb)


def test_short_trades_match_backtesting_py_on_a_freqtrade_file(tmp_path: Path) -> None:
    df = _series()
    bars = pl.DataFrame(
        {
            "timestamp": pl.Series(df.index.to_numpy()).dt.replace_time_zone("UTC").dt.cast_time_unit("ms"),
            "open": df["Open"].to_numpy(),
            "high": df["High"].to_numpy(),
            "low": df["Low"].to_numpy(),
            "close": df["Close"].to_numpy(),
            "volume": np.full(len(df), 1000.0),
        }
    )
    path = tmp_path / "BTC_USDT-1d.feather"
    feather_write(bars, path)
    read = ohlcv_load(path, "BTC/USDT", "1d")
    back = pd.DataFrame(
        {c.capitalize(): read[c].to_numpy() for c in ("open", "high", "low", "close")},
        index=pd.DatetimeIndex(read["timestamp"].dt.replace_time_zone(None).to_numpy()),
    )
    assert np.array_equal(back.to_numpy(), df.to_numpy())
    bt, n_amb = _compare(back)
    _exercised(back, bt, n_amb)


def test_short_state_carried_across_two_calls_equals_one_call() -> None:
    """A short's basis, trough and clock cross a cut as a long's do: two calls give one call's fills."""
    df = crosscheck_ohlc(3, 600)
    prices = _block(df)
    n = len(df)
    rules = ExitRules(sl_stop=0.06, sl_trail=True, tp_stop=0.2, max_holding="5d")
    w = np.full((n, 1), np.nan)
    bars = _cross_below(df["Close"].to_numpy()) + 1
    w[bars[bars < n], 0] = -0.7

    def run(a: int, b: int, book: GridBook, carry_price: np.ndarray | None):  # type: ignore[no-untyped-def]
        block = PriceBlock(
            prices.open[a:b], prices.high[a:b], prices.low[a:b], prices.close[a:b], prices.index[a:b], ("X",)
        )
        return market_simulate(
            block, [book], Frictions.none(b - a, 1), ExecutionRules(), fees=0.001, slippage=0.0005,
            carry_price=carry_price, ambiguity="pessimistic", held_reweights="first_bar",
        )[0]  # fmt: skip

    whole = run(0, n, GridBook(rules, w, CASH, None, None), None)
    o = whole.orders
    opens, exits = o.filter(pl.col("side") == "sell")["bar"], o.filter(pl.col("side") == "buy")["bar"]
    # a bar inside a short held for a while, with no order on it
    cut = next(e + 2 for e, x in zip(opens, exits, strict=False) if x - e >= 4 and not np.isfinite(w[e + 2, 0]))
    first = run(0, cut, GridBook(rules, w[:cut], CASH, None, None), None)
    assert first.shares_end[0] < 0, "the cut must fall inside a short"
    second = run(
        cut, n, GridBook(rules, w[cut:], first.cash_end, first.shares_end, first.end_state), prices.close[cut - 1]
    )
    joined = pl.concat([first.orders, second.orders.with_columns(pl.col("bar") + cut)])
    cols = ["bar", "side", "size", "price", "fees", "reason"]
    assert joined.select(cols).to_dicts() == pytest.approx(whole.orders.select(cols).to_dicts(), rel=1e-12)
    assert second.cash_end == pytest.approx(whole.cash_end, rel=1e-12)
    assert (whole.orders["reason"] == "trailing").any() and (whole.orders["reason"] == "max_holding").any()


def test_the_optimistic_bound_takes_the_short_take_profit_in_ambiguous_bars() -> None:
    df = _series()
    prices = _block(df)
    n = len(df)
    w = np.full((n, 1), np.nan)
    bars = _cross_below(df["Close"].to_numpy()) + 1
    w[bars[bars < n], 0] = -1.0
    out = {}
    for policy in ("pessimistic", "optimistic"):
        res = market_simulate(
            prices, [GridBook(RULES, w, CASH, None, None)], Frictions.none(n, 1), ExecutionRules(), fees=0.0,
            slippage=0.0, carry_price=None, ambiguity=policy, held_reweights="first_bar",  # type: ignore[arg-type]
        )[0]  # fmt: skip
        amb = res.order_ambiguous
        out[policy] = (res.orders.filter(pl.Series(amb)), res.orders)
    pess, opt = out["pessimistic"][0], out["optimistic"][0]
    assert pess.height >= 1 and (pess["reason"] == "stop_loss").all()
    assert opt.height >= 1 and (opt["reason"] == "take_profit").all()
    # the first ambiguous exit: the same bar, the stop's level against the take profit's level
    first = out["pessimistic"][1]
    entry = first.filter((pl.col("side") == "sell") & (pl.col("bar") <= pess["bar"][0]))["price"][-1]
    assert pess["price"][0] == pytest.approx(entry * (1 + SL), rel=1e-12)
    same = opt.filter(pl.col("bar") == pess["bar"][0])
    assert same.height == 1 and same["price"][0] == pytest.approx(entry * (1 - TP), rel=1e-12)
