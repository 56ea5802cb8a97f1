"""VectorBTSimulator: hand-computed equity, stop orders, parity with the rebalance mode, carry-in."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from helpers import random_ohlc
from polars.testing import assert_frame_equal

from engine.config.exit_rules import ExitRules
from engine.simulation import PriceBlock, SimResult, VectorBTSimulator

DAY_NS = 86_400 * 10**9
NAN = math.nan
ENGINES = ["rust", pytest.param("numba", marks=pytest.mark.slow)]  # numba: JIT compile on first use


def _block(rows: list[tuple[float, float, float, float]] | np.ndarray, names: tuple[str, ...] = ("A",)) -> PriceBlock:
    """PriceBlock from (n_bars, 4 * n_cols) rows: open, high, low, close of each column in turn."""
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(names), 4)
    index = (np.arange(len(rows)) * DAY_NS).astype("datetime64[ns]")
    return PriceBlock(
        np.ascontiguousarray(arr[..., 0]),
        np.ascontiguousarray(arr[..., 1]),
        np.ascontiguousarray(arr[..., 2]),
        np.ascontiguousarray(arr[..., 3]),
        index,
        names,
    )


def _random_block(seed: int, n_bars: int, n_cols: int) -> PriceBlock:
    o, h, lo, close = random_ohlc(np.random.default_rng(seed), n_bars, n_cols, vol=0.02, gap=0.005, wick=0.01)
    index = (np.arange(n_bars) * 4 * 3600 * 10**9).astype("datetime64[ns]")
    return PriceBlock(o, h, lo, close, index, tuple(f"S{i}" for i in range(n_cols)))


def _weights_every(n_bars: int, n_cols: int, step: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.full((n_bars, n_cols), np.nan)
    raw = rng.random((len(range(0, n_bars, step)), n_cols))
    w[::step] = 0.95 * raw / raw.sum(axis=1, keepdims=True)
    return w


# Single asset: enters at the open of bar 0 (100); bar 2's low of 94 crosses SL 95.
SINGLE = [
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 102.0, 97.0, 98.0),
    (98.0, 99.0, 94.0, 96.0),
    (96.0, 97.0, 90.0, 91.0),
]
W_SINGLE = np.array([[1.0], [NAN], [NAN], [NAN]])


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_loss_equity_without_costs(engine: str) -> None:
    res = VectorBTSimulator(engine=engine).simulate(_block(SINGLE), W_SINGLE, ExitRules(sl_stop=0.05), init_cash=1000.0)
    # 10 shares bought at 100; marked at closes 100 and 98; sold at 95 on bar 2.
    assert res.equity.tolist() == [1000.0, 980.0, 950.0, 950.0]
    assert res.cash.tolist() == [0.0, 0.0, 950.0, 950.0]
    assert res.cash_end == 950.0
    assert res.shares_end.tolist() == [0.0]
    assert res.orders["reason"].to_list() == ["rebalance", "stop_loss"]
    assert res.orders["price"].to_list() == [100.0, 95.0]
    assert res.orders["bar"].to_list() == [0, 2]
    assert res.orders["side"].to_list() == ["buy", "sell"]
    assert res.exits["kind"].to_list() == ["stop_loss"]
    assert res.n_ambiguous == 0


def test_stop_loss_equity_with_fees() -> None:
    fees = 0.001
    res = VectorBTSimulator(fees=fees).simulate(_block(SINGLE), W_SINGLE, ExitRules(sl_stop=0.05), init_cash=1000.0)
    # Target 10 shares would cost 1000 * 1.001 > 1000 cash, so vectorbt buys what the cash pays
    # for including the fee: 1000 / (1.001 * 100) shares. The stop sells them at 95 minus 0.1 %.
    shares = 1000.0 / ((1 + fees) * 100.0)
    expected = shares * 95.0 * (1 - fees)
    assert res.equity[2] == pytest.approx(expected, rel=1e-12)
    assert res.equity[3] == pytest.approx(expected, rel=1e-12)
    assert res.orders["fees"].to_list() == pytest.approx(
        [1000.0 - 1000.0 / (1 + fees), shares * 95.0 * fees], rel=1e-12
    )


def test_stop_exit_pays_slippage() -> None:
    slip = 0.002
    res = VectorBTSimulator(slippage=slip).simulate(_block(SINGLE), W_SINGLE, ExitRules(sl_stop=0.05), init_cash=1000.0)
    ref = 100.0 * (1 + slip)
    shares = 1000.0 / ref
    sl_level = ref * (1 - 0.05)
    assert res.exits["price"].to_list() == [sl_level]
    assert res.orders["price"].to_list() == pytest.approx([ref, sl_level * (1 - slip)], rel=1e-15)
    assert res.equity[2] == pytest.approx(shares * sl_level * (1 - slip), rel=1e-12)


def test_gap_below_stop_exits_at_open() -> None:
    rows = [SINGLE[0], SINGLE[1], (90.0, 92.0, 89.0, 91.0)]
    res = VectorBTSimulator().simulate(_block(rows), W_SINGLE[:3], ExitRules(sl_stop=0.05), init_cash=1000.0)
    assert res.orders["price"].to_list() == [100.0, 90.0]
    assert res.equity.tolist() == [1000.0, 980.0, 900.0]


def test_take_profit_exit() -> None:
    rows = [SINGLE[0], (101.0, 110.0, 100.0, 109.0), (109.0, 116.0, 108.0, 112.0)]
    res = VectorBTSimulator().simulate(_block(rows), W_SINGLE[:3], ExitRules(tp_stop=0.15), init_cash=1000.0)
    assert res.orders["reason"].to_list() == ["rebalance", "take_profit"]
    assert res.equity[2] == pytest.approx(1150.0, rel=1e-15)


def test_trailing_exit() -> None:
    rows = [
        (100.0, 100.0, 99.0, 100.0),
        (100.0, 110.0, 99.5, 109.0),
        (109.0, 120.0, 100.0, 118.0),
        (118.0, 119.0, 108.5, 110.0),
        (110.0, 111.0, 107.0, 107.5),
    ]
    w = np.array([[1.0], [NAN], [NAN], [NAN], [NAN]])
    res = VectorBTSimulator().simulate(_block(rows), w, ExitRules(sl_stop=0.1, sl_trail=True), init_cash=1000.0)
    assert res.orders["bar"].to_list() == [0, 4]
    assert res.orders["reason"].to_list() == ["rebalance", "trailing"]
    assert res.equity.tolist() == pytest.approx([1000.0, 1090.0, 1180.0, 1100.0, 1080.0], rel=1e-14)


@pytest.mark.parametrize(("ambiguity", "value"), [("pessimistic", 950.0), ("optimistic", 1150.0)])
def test_ambiguous_bar(ambiguity: str, value: float) -> None:
    rows = [SINGLE[0], (100.0, 116.0, 94.0, 100.0)]
    sim = VectorBTSimulator(ambiguity=ambiguity)
    res = sim.simulate(_block(rows), W_SINGLE[:2], ExitRules(sl_stop=0.05, tp_stop=0.15), init_cash=1000.0)
    assert res.equity[1] == pytest.approx(value, rel=1e-14)
    assert res.exits["ambiguous"].to_list() == [True]
    assert res.n_ambiguous == 1
    other = "optimistic" if ambiguity == "pessimistic" else "pessimistic"
    flipped = sim.simulate(
        _block(rows), W_SINGLE[:2], ExitRules(sl_stop=0.05, tp_stop=0.15), init_cash=1000.0, ambiguity=other
    )
    assert flipped.equity[1] == pytest.approx(2100.0 - value, rel=1e-14)


def test_entry_bar_stop() -> None:
    rows = [(100.0, 101.0, 94.0, 96.0), (96.0, 97.0, 95.5, 96.0)]
    res = VectorBTSimulator().simulate(_block(rows), W_SINGLE[:2], ExitRules(sl_stop=0.05), init_cash=1000.0)
    assert res.orders["bar"].to_list() == [0, 0]
    assert res.orders["side"].to_list() == ["buy", "sell"]
    assert res.equity.tolist() == [950.0, 950.0]


def test_max_holding_exits_at_open_with_costs() -> None:
    rows = [(100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i) for i in range(6)]
    w = np.array([[0.5], [NAN], [NAN], [NAN], [NAN], [NAN]])
    fees, slip = 0.001, 0.0005
    res = VectorBTSimulator(fees=fees, slippage=slip).simulate(
        _block(rows), w, ExitRules(max_holding="3d"), init_cash=1000.0
    )
    # Target 0.5 * 1000 at the open 100 -> 5 shares (valued at the open, filled at 100.05).
    shares = 0.5 * 1000.0 / 100.0
    cash = 1000.0 - shares * 100.0 * (1 + slip) * (1 + fees)
    # Due at the open of bar 3 (0 + 3 days): sold at 103 * (1 - slippage), minus fees.
    cash += shares * 103.0 * (1 - slip) * (1 - fees)
    assert res.orders["reason"].to_list() == ["rebalance", "max_holding"]
    assert res.orders["bar"].to_list() == [0, 3]
    assert res.equity[2] == pytest.approx(cash - shares * 103.0 * (1 - slip) * (1 - fees) + shares * 102.5, rel=1e-12)
    assert res.equity[3:].tolist() == pytest.approx([cash] * 3, rel=1e-12)


def test_three_assets_one_stop_leaves_others_alone() -> None:
    # Columns A, B, C open at 100; B drops through its 95 stop on bar 2; rebalance again on bar 4.
    bars = []
    for i in range(6):
        a = (100.0 + i, 101.0 + i, 99.5 + i, 100.0 + i)
        b = (
            (100.0, 101.0, 94.0, 96.0)
            if i == 2
            else (100.0 - (i > 2) * 4, 101.0, 95.5 - (i > 2) * 4, 100.0 - (i > 1) * 4)
        )
        c = (50.0, 51.0, 49.5, 50.0)
        bars.append((*a, *b, *c))
    prices = _block(bars, ("A", "B", "C"))
    w = np.full((6, 3), np.nan)
    w[0] = 1 / 3
    w[4] = 1 / 3
    res = VectorBTSimulator().simulate(prices, w, ExitRules(sl_stop=0.05), init_cash=3000.0)
    assets = res.portfolio.assets().to_numpy()[1::2]  # one row per bar, at its close
    shares0 = [3000.0 / 3 / 100.0, 3000.0 / 3 / 100.0, 3000.0 / 3 / 50.0]
    assert assets[1].tolist() == pytest.approx(shares0, rel=1e-12)
    for bar in (2, 3):
        assert assets[bar].tolist() == pytest.approx([shares0[0], 0.0, shares0[2]], rel=1e-12)
    # Between the stop and the next rebalance the only order is B's stop; its proceeds sit in cash.
    mid = res.orders.filter(pl.col("bar").is_between(1, 3))
    assert mid.select("bar", "column", "reason").rows() == [(2, "B", "stop_loss")]
    cash = res.portfolio.cash().to_numpy()[1::2]
    assert cash[2] == pytest.approx(10.0 * 95.0, rel=1e-12)
    assert cash[3] == cash[2]
    assert set(res.orders.filter(pl.col("bar") == 4)["column"]) >= {"B"}


def _rebalance_reference(o, c, w, init_cash, fees, slip):
    """Plain-Python rebalance: equity at every close.

    At each weighted open the portfolio is valued at the open (cash + shares * open); the target
    of column k is ``w_k * value / open_k`` shares (vectorbt's val_price is the order price, the
    unslipped open). Orders run sells first (ascending order value, as vectorbt's auto call
    sequence), each filling at ``open * (1 -/+ slippage)`` with fees on the filled value; a buy the
    cash cannot cover is cut to what the cash pays for, fees included.
    """
    n_bars, n_cols = o.shape
    shares = [0.0] * n_cols
    cash = init_cash
    equity = []
    for i in range(n_bars):
        if not all(math.isnan(x) for x in w[i]):
            value = cash + sum(shares[k] * o[i, k] for k in range(n_cols))
            deltas = []
            for k in range(n_cols):
                if not math.isnan(w[i, k]):
                    deltas.append(
                        ((w[i, k] * value / o[i, k] - shares[k]) * o[i, k], k, w[i, k] * value / o[i, k] - shares[k])
                    )
            for _, k, delta in sorted(deltas):
                if delta < 0:
                    fill = o[i, k] * (1 - slip)
                    cash += -delta * fill * (1 - fees)
                    shares[k] += delta
                elif delta > 0:
                    fill = o[i, k] * (1 + slip)
                    size = min(delta, cash / (1 + fees) / fill)
                    cash -= size * fill * (1 + fees)
                    shares[k] += size
        equity.append(cash + sum(shares[k] * c[i, k] for k in range(n_cols)))
    return equity


@pytest.mark.parametrize("engine", ENGINES)
def test_rebalance_matches_plain_python(engine: str) -> None:
    prices = _random_block(3, 10, 2)
    w = np.full((10, 2), np.nan)
    w[0] = [0.45, 0.45]
    w[5] = [0.2, 0.7]
    fees, slip = 0.001, 0.0005
    res = VectorBTSimulator(fees=fees, slippage=slip, engine=engine).simulate(prices, w, init_cash=10_000.0)
    want = _rebalance_reference(prices.open, prices.close, w, 10_000.0, fees, slip)
    np.testing.assert_allclose(res.equity, want, rtol=1e-9, atol=0)
    assert res.orders["side"].to_list() == ["buy", "buy", "sell", "buy"]


def test_rebalance_reference_partial_fill() -> None:
    prices = _random_block(4, 6, 2)
    w = np.full((6, 2), np.nan)
    w[0] = [0.5, 0.5]  # fees make the second buy short of cash
    w[3] = [1.0, 0.0]
    fees, slip = 0.002, 0.001
    res = VectorBTSimulator(fees=fees, slippage=slip).simulate(prices, w, init_cash=5_000.0)
    want = _rebalance_reference(prices.open, prices.close, w, 5_000.0, fees, slip)
    np.testing.assert_allclose(res.equity, want, rtol=1e-9, atol=0)


def _assert_same(a: SimResult, b: SimResult) -> None:
    assert np.array_equal(a.equity, b.equity)
    assert_frame_equal(a.orders, b.orders)


def test_inactive_rules_are_the_rebalance_mode() -> None:
    prices = _random_block(7, 200, 5)
    w = _weights_every(200, 5, 20)
    sim = VectorBTSimulator(fees=0.001, slippage=0.0005)
    base = sim.simulate(prices, w, None, init_cash=1e4)
    _assert_same(base, sim.simulate(prices, w, ExitRules(), init_cash=1e4))
    far = sim.simulate(prices, w, ExitRules(sl_stop=0.99, tp_stop=1000.0), init_cash=1e4)
    np.testing.assert_allclose(far.equity, base.equity, rtol=1e-9, atol=0)
    assert far.exits.height == 0
    assert base.orders.height == 50


@pytest.mark.slow
def test_engines_agree() -> None:
    prices = _random_block(8, 200, 5)
    w = _weights_every(200, 5, 20)
    rules = ExitRules(sl_stop=0.03, tp_stop=0.05, sl_trail=0.04)
    rust = VectorBTSimulator(fees=0.001, slippage=0.0005, engine="rust").simulate(prices, w, rules, init_cash=1e4)
    numba = VectorBTSimulator(fees=0.001, slippage=0.0005, engine="numba").simulate(prices, w, rules, init_cash=1e4)
    np.testing.assert_allclose(rust.equity, numba.equity, rtol=1e-12, atol=0)
    assert rust.orders.select("bar", "column", "side", "reason").equals(
        numba.orders.select("bar", "column", "side", "reason")
    )
    assert rust.exits.height > 10


def _slice(prices: PriceBlock, lo: int, hi: int) -> PriceBlock:
    return PriceBlock(
        prices.open[lo:hi].copy(),
        prices.high[lo:hi].copy(),
        prices.low[lo:hi].copy(),
        prices.close[lo:hi].copy(),
        prices.index[lo:hi].copy(),
        prices.columns,
    )


@pytest.mark.parametrize("cut", [100, 110])
@pytest.mark.parametrize(
    "rules",
    [None, ExitRules(sl_stop=0.1, tp_stop=0.2), ExitRules(sl_stop=0.06, sl_trail=0.08, max_holding="30d")],
    ids=["rebalance", "stops", "trail_hold"],
)
def test_carry_in_matches_one_run(rules: ExitRules | None, cut: int) -> None:
    """Two calls joined by the carried shares, cash and risk state equal one call: the stops of a
    carried position (cost basis with its top-ups, trailing peak, holding clock) go on unchanged,
    whether the cut falls on a rebalance bar (100) or inside a holding period (110)."""
    prices = _random_block(11, 200, 5)
    w = _weights_every(200, 5, 20)
    sim = VectorBTSimulator(fees=0.001, slippage=0.0005)
    whole = sim.simulate(prices, w, rules, init_cash=1e4)
    first = sim.simulate(_slice(prices, 0, cut), w[:cut], rules, init_cash=1e4)
    assert first.shares_end.any()
    second = sim.simulate(
        _slice(prices, cut, 200),
        w[cut:],
        rules,
        init_cash=first.cash_end,
        carry_shares=first.shares_end,
        carry_price=prices.close[cut - 1],
        carry_state=first.end_state,
    )
    np.testing.assert_allclose(np.concatenate([first.equity, second.equity]), whole.equity, rtol=1e-9, atol=0)
    split = pl.concat([first.orders, second.orders.with_columns(pl.col("bar") + cut)])
    assert_frame_equal(split, whole.orders, check_exact=False, rel_tol=1e-9, abs_tol=0)
    # the carry row itself is not an order: the first order is the next rebalance
    assert second.orders.filter(pl.col("reason") == "rebalance")["bar"].min() == (-cut) % 20
    assert rules is None or second.exits.height > 0


@pytest.mark.parametrize("seed", range(20))
def test_carry_row_rebuilds_shares_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prices = _random_block(seed, 3, 6)
    shares = rng.random(6) * rng.choice([1e-3, 1.0, 1e3], 6)
    price = rng.random(6) * 1000 + 0.01
    init_cash = 0.0 if seed % 2 else float(rng.random() * 10)
    res = VectorBTSimulator(fees=0.01, slippage=0.01).simulate(
        prices, np.full((3, 6), np.nan), None, init_cash=init_cash, carry_shares=shares, carry_price=price
    )
    carried = init_cash + float(np.sum(shares * price))
    value = res.portfolio.value().to_numpy()
    assert value[0] == pytest.approx(carried, rel=1e-12, abs=0)
    assert res.shares_end.tolist() == shares.tolist()
    assert res.orders.height == 0
    assert res.equity[0] == pytest.approx(init_cash + float(np.sum(shares * prices.close[0])), rel=1e-12)


def test_price_block_validation() -> None:
    good = _block(SINGLE)
    with pytest.raises(ValueError, match="non-positive"):
        PriceBlock(good.open * 0, good.high, good.low, good.close, good.index, good.columns)
    with pytest.raises(ValueError, match="low <= open"):
        PriceBlock(good.open, good.high, good.high, good.close, good.index, good.columns)
    with pytest.raises(ValueError, match="strictly increasing"):
        PriceBlock(good.open, good.high, good.low, good.close, good.index[::-1].copy(), good.columns)
    with pytest.raises(ValueError, match="columns"):
        PriceBlock(good.open, good.high, good.low, good.close, good.index, ("A", "B"))
    with pytest.raises(ValueError, match="shape"):
        PriceBlock(good.open, good.high[:2], good.low, good.close, good.index, good.columns)


def test_simulate_rejects_bad_inputs() -> None:
    sim = VectorBTSimulator()
    with pytest.raises(ValueError, match="long only"):
        sim.simulate(_block(SINGLE), -W_SINGLE, init_cash=1.0)
    with pytest.raises(ValueError, match="carry_price"):
        sim.simulate(_block(SINGLE), W_SINGLE, init_cash=1.0, carry_shares=np.array([1.0]))
    with pytest.raises(ValueError, match="engine"):
        VectorBTSimulator(engine="cuda")


@pytest.mark.parametrize("engine", ENGINES)
def test_direct_dispatch_equals_portfolio_from_orders(engine: str) -> None:
    """The simulator calls vectorbt's simulation without the Portfolio wrapper: same records."""
    n, k = 120, 4
    open_, high, low, close = random_ohlc(np.random.default_rng(3), n, k, vol=0.03, gap=0.0, wick=0.02)
    idx = (np.arange(n, dtype=np.int64) * 86_400_000_000_000).astype("datetime64[ns]")
    block = PriceBlock(open=open_, high=high, low=low, close=close, index=idx, columns=[f"C{j}/USDT" for j in range(k)])
    w = np.full((n, k), np.nan)
    w[::15] = 0.22
    res = VectorBTSimulator(fees=0.001, slippage=0.0005, engine=engine).simulate(
        block,
        w,
        ExitRules(sl_stop=0.04, tp_stop=0.08),
        init_cash=500.0,
        carry_shares=np.array([1.0, 0.0, 2.5, 0.0]),
        carry_price=open_[0],
    )
    rec = res.portfolio.order_records
    rec = rec[rec["idx"] >= 1]
    assert len(rec) == res.orders.height > 10
    # only rows with an order go to vectorbt (about a fifth here): the bars must still line up
    assert len(np.unique(rec["idx"])) < (2 * n) // 4
    np.testing.assert_array_equal((rec["idx"] - 1) // 2, res.orders.get_column("bar").to_numpy())
    np.testing.assert_array_equal(rec["col"], [block.columns.index(c) for c in res.orders.get_column("column")])
    np.testing.assert_array_equal(rec["size"], res.orders.get_column("size").to_numpy())
    np.testing.assert_array_equal(rec["price"], res.orders.get_column("price").to_numpy())
    np.testing.assert_array_equal(rec["fees"], res.orders.get_column("fees").to_numpy())
    value = res.portfolio.value().to_numpy()[2::2]
    np.testing.assert_allclose(value, res.equity, rtol=1e-12)


def test_grid_books_equal_single_runs() -> None:
    """One vectorbt call over a grid of books gives each book exactly its single-run result."""
    n, k = 150, 3
    open_, high, low, close = random_ohlc(np.random.default_rng(9), n, k, vol=0.03, gap=0.005, wick=0.02)
    idx = (np.arange(n, dtype=np.int64) * 86_400_000_000_000).astype("datetime64[ns]")
    block = PriceBlock(open=open_, high=high, low=low, close=close, index=idx, columns=["A/USDT", "B/USDT", "C/USDT"])
    w = np.full((n, k), np.nan)
    w[::20] = 0.3
    rules = [
        None,
        ExitRules(sl_stop=0.03),
        ExitRules(sl_stop=0.05, tp_stop=0.1),
        ExitRules(sl_stop=0.02, sl_trail=True),
    ]
    cash = [1000.0, 900.0, 1100.0, 0.0]
    carry = [None, np.array([1.0, 0.0, 0.0]), None, np.array([2.0, 3.0, 1.0])]
    sim = VectorBTSimulator(fees=0.001, slippage=0.0005)
    grid = sim.simulate_grid(block, [w] * 4, rules, init_cash=cash, carry_shares=carry, carry_price=open_[0])
    for r, c, cs, got in zip(rules, cash, carry, grid, strict=True):
        one = sim.simulate(block, w, r, init_cash=c, carry_shares=cs, carry_price=open_[0])
        np.testing.assert_array_equal(got.equity, one.equity)
        assert got.orders.equals(one.orders)
        assert got.exits.equals(one.exits)
        np.testing.assert_array_equal(got.shares_end, one.shares_end)
    assert len({float(g.equity[-1]) for g in grid}) == 4


def _grid_run(prices: PriceBlock, seed: int, **kw: object) -> list:
    """A grid of four books (one without rules) with periodic re-weights, full weights (the last
    buy of a row is cut by the cash) and partial ones, with fees and slippage."""
    rng = np.random.default_rng(seed)
    n, k = prices.shape
    weights = [_weights_every(n, k, 9, seed), _weights_every(n, k, 13, seed + 1)]
    full = np.full((n, k), np.nan)
    full[::7] = 1.0 / k
    weights += [full, _weights_every(n, k, 5, seed + 2)]
    rules = [
        ExitRules(sl_stop=0.03, tp_stop=0.05),
        None,
        ExitRules(sl_stop=0.04, sl_trail=True, max_holding="3d"),
        ExitRules(sl_stop=float(rng.uniform(0.01, 0.05)), sl_trail=0.03),
    ]
    sim = VectorBTSimulator(fees=0.001, slippage=0.0005)
    return sim.simulate_grid(prices, weights, rules, init_cash=[1e4] * 4, carry_shares=[None] * 4, **kw)


@pytest.mark.parametrize("seed", range(6))
def test_topup_fills_from_numba_equal_those_from_vectorbt(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's own walk of the fills (engine.simulation.fills) gives the same top-up bases, hence
    the same exits and results, as asking vectorbt for the fills of every top-up row."""
    import engine.simulation.vbt as vbt_mod

    prices = _random_block(100 + seed, 160, 4)
    fast = _grid_run(prices, seed)
    monkeypatch.setattr(vbt_mod, "TOPUP_FILLS", "vectorbt")
    slow = _grid_run(prices, seed)
    # the same orders, bars, sides and reasons; prices to 1e-12 (the vectorbt way chains its
    # segments with carry rows, which can move a cash value by an ulp)
    for a, b in zip(fast, slow, strict=True):
        assert_frame_equal(a.orders, b.orders, check_exact=False, rel_tol=1e-12, abs_tol=0)
        np.testing.assert_allclose(a.equity, b.equity, rtol=1e-12, atol=0)
        if a.end_state is not None:
            np.testing.assert_allclose(a.end_state.basis, b.end_state.basis, rtol=1e-12, atol=0)


def test_a_wrong_fill_walk_falls_back_to_vectorbt(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the numba walk and vectorbt disagree on a top-up fill, the fills are taken from vectorbt."""
    import engine.simulation.vbt as vbt_mod

    prices = _random_block(7, 120, 3)
    want = _grid_run(prices, 7)
    real = vbt_mod._fills_agree
    seen: list[bool] = []
    monkeypatch.setattr(vbt_mod, "_fills_agree", lambda *a: seen.append(False) or False)
    got = _grid_run(prices, 7)
    assert seen  # the check ran and refused the walk
    for a, b in zip(got, want, strict=True):
        assert_frame_equal(a.orders, b.orders, check_exact=False, rel_tol=1e-12, abs_tol=0)
    monkeypatch.setattr(vbt_mod, "_fills_agree", real)
