"""Why a tighter participation cap can raise the return (docs/EXECUTION.md): hand fixtures.

The cap changes *when* an order fills, never the price a fill gets on its own bar: a capped
entry buys the rest at the next bars' opens, a capped stop exit sells the rest at the next bars'
opens and the unsold part stays invested (marked at each close) meanwhile. Whether that gains or
loses depends only on what the prices do on those later bars; each case below is computed by hand
both ways (a path where waiting pays and one where it costs), so the effect is timing, not a bias.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.config.exit_rules import ExitRules
from engine.simulation import PriceBlock, SimResult
from engine.simulation.books import GridBook, Pending
from engine.simulation.market import ExecutionRules, Frictions, market_simulate

NAN = math.nan
DAY_NS = 86_400 * 10**9


def _run(
    bars: list[tuple[float, float, float, float]],
    quote_volume: list[float],
    weights: list[float],
    ex: ExecutionRules,
    rules: ExitRules | None = None,
    **book: object,
) -> SimResult:
    """One column through the market kernel: no fees, no slippage, no impact, no limits."""
    a = np.array(bars, dtype=np.float64)
    n = len(bars)
    index = (np.arange(n) * DAY_NS).astype("datetime64[ns]")
    prices = PriceBlock(*(np.ascontiguousarray(a[:, j : j + 1]) for j in range(4)), index, ("S0",))
    zero = np.zeros(1)
    fr = Frictions(np.array(quote_volume)[:, None], np.zeros((n, 1)), zero, zero.copy(), zero.copy(), zero.copy())
    w = np.array(weights, dtype=np.float64)[:, None]
    cash = float(book.pop("cash", 10_000.0))  # type: ignore[arg-type]
    gb = GridBook(rules, w, cash, book.pop("shares", None), None, book.pop("pending", None))  # type: ignore[arg-type]
    return market_simulate(
        prices, [gb], fr, ex, fees=0.0, slippage=0.0, carry_price=book.pop("carry_price", None),  # type: ignore[arg-type]
        ambiguity="pessimistic", held_reweights="all",
    )[0]  # fmt: skip


# A new winner bought at the window's first open (100) falls to 80 on its first bar, then recovers
# to 88 on the last: the built-in data's entrants fall on their first bar (docs/EXECUTION.md).
FALL = [(100.0, 100.0, 80.0, 80.0), (80.0, 80.0, 80.0, 80.0), (80.0, 80.0, 80.0, 80.0), (80.0, 88.0, 80.0, 88.0)]
# The same start, but the price rises instead: 100, then 110 from bar 1 on.
RISE = [(100.0, 110.0, 100.0, 110.0), *[(110.0, 110.0, 110.0, 110.0)] * 2, (110.0, 121.0, 110.0, 121.0)]
ROOM = [30_000.0] * 4  # 10 % of it: 3,000 quote a bar


def test_a_capped_entry_buys_the_rest_at_the_next_opens() -> None:
    """90 % of 10,000 wanted at 100 = 90 shares; 3,000 quote a bar allowed.

    Falling path: 30 at 100 (bar 0), 37.5 at 80 (bar 1), 22.5 at 80 (bar 2): 90 shares for 7,800,
    cash 2,200; end equity 2,200 + 90 x 88 = 10,120. Uncapped: 90 at 100, 1,000 + 90 x 88 = 8,920.
    With ``drop`` only bar 0's 30 shares: 7,000 + 30 x 88 = 9,640. The capped book's equity is its
    cash plus its shares at each close while the rest is pending: 7,000 + 30 x 80 on bar 0.
    """
    w = [0.9, NAN, NAN, NAN]
    free = _run(FALL, ROOM, w, ExecutionRules())
    carry = _run(FALL, ROOM, w, ExecutionRules(0.1, "carry"))
    drop = _run(FALL, ROOM, w, ExecutionRules(0.1, "drop"))
    assert free.orders.select("bar", "size", "price").rows() == [(0, 90.0, 100.0)]
    assert carry.orders.select("bar", "size", "price").rows() == [(0, 30.0, 100.0), (1, 37.5, 80.0), (2, 22.5, 80.0)]
    assert drop.orders.select("bar", "size", "price").rows() == [(0, 30.0, 100.0)]
    np.testing.assert_allclose(free.equity, [8_200.0, 8_200.0, 8_200.0, 8_920.0], rtol=1e-12)
    np.testing.assert_allclose(carry.cash, [7_000.0, 4_000.0, 2_200.0, 2_200.0], rtol=1e-12)
    np.testing.assert_allclose(carry.equity, [9_400.0, 9_400.0, 9_400.0, 10_120.0], rtol=1e-12)
    np.testing.assert_allclose(drop.equity, [9_400.0, 9_400.0, 9_400.0, 9_640.0], rtol=1e-12)
    # rising path: the capped book pays more for the same 90 shares, and ends lower
    free = _run(RISE, ROOM, w, ExecutionRules())
    carry = _run(RISE, ROOM, w, ExecutionRules(0.1, "carry"))
    sizes = [30.0, 3_000.0 / 110.0, 3_000.0 / 110.0, 60.0 - 6_000.0 / 110.0]
    assert carry.orders["size"].to_list() == pytest.approx(sizes, rel=1e-12)
    assert carry.orders["price"].to_list() == [100.0, 110.0, 110.0, 110.0]
    assert free.equity[-1] == pytest.approx(1_000.0 + 90 * 121.0, rel=1e-12)  # 11,890
    assert carry.equity[-1] == pytest.approx(10_000.0 - 3_000.0 - 60 * 110.0 + 90 * 121.0, rel=1e-12)  # 11,290


@pytest.mark.parametrize(
    ("next_open", "end"), [(98.0, 4_000.0 + (100 - 4_000 / 95) * 98), (92.0, 4_000.0 + (100 - 4_000 / 95) * 92)]
)
def test_a_capped_stop_exit_keeps_the_unsold_part_invested(next_open: float, end: float) -> None:
    """100 shares bought at 100; bar 1 falls through the 5 % stop (95) with room for 4,000 quote:
    42.1 shares go at 95 and the other 57.9 stay held, marked at bar 1's close (96), and sell at
    bar 2's open. Uncapped the whole position goes at 95 (9,500 cash). If bar 2 opens at 98 the
    capped book ends above the uncapped one; at 92 below."""
    bars = [(100.0, 100.5, 99.5, 100.0), (100.0, 100.0, 94.0, 96.0), (next_open, next_open, next_open, next_open)]
    qv = [1e7, 40_000.0, 1e7]
    w = [1.0, NAN, NAN]
    rules = ExitRules(sl_stop=0.05)
    free = _run(bars, qv, w, ExecutionRules(), rules)
    capped = _run(bars, qv, w, ExecutionRules(0.1), rules)
    assert free.orders.select("bar", "size", "price", "reason").rows()[1:] == [(1, 100.0, 95.0, "stop_loss")]
    rest = 100.0 - 4_000.0 / 95.0
    assert capped.orders.select("bar", "price", "reason").rows()[1:] == [
        (1, 95.0, "stop_loss"),
        (2, next_open, "stop_loss"),
    ]
    assert capped.orders["size"].to_list()[1:] == pytest.approx([4_000.0 / 95.0, rest], rel=1e-12)
    np.testing.assert_allclose(free.equity, [10_000.0, 9_500.0, 9_500.0], rtol=1e-12)
    assert capped.equity[1] == pytest.approx(4_000.0 + rest * 96.0, rel=1e-12)
    assert capped.equity[2] == pytest.approx(end, rel=1e-12)
    assert (capped.equity[2] > free.equity[2]) == (next_open > 95.0)


def test_a_carried_remainder_replaced_by_the_new_target_never_double_buys() -> None:
    """Window 1 left 20 shares held and 30 pending (of a 50-share target at 100). Window 2's new
    50 % target replaces the pending 30: it wants 0.5 x 10,000 / 100 - 20 = 30 shares, not 30 + 30,
    fills 10 a bar and ends at 50 shares, the 30 carried in counted as dropped."""
    bars = [(100.0, 100.0, 100.0, 100.0)] * 5
    pending = Pending(np.array([30.0]), np.zeros(1, dtype=np.int8), np.zeros(1, dtype=bool))
    res = _run(bars, [10_000.0] * 5, [0.5, NAN, NAN, NAN, NAN], ExecutionRules(0.1), cash=8_000.0,
               shares=np.array([20.0]), pending=pending, carry_price=np.array([100.0]))  # fmt: skip
    assert res.orders.select("bar", "size").rows() == [(0, 10.0), (1, 10.0), (2, 10.0)]
    assert res.shares_end[0] == pytest.approx(50.0, rel=1e-12)
    assert res.ledger is not None and res.ledger[0].tolist() == pytest.approx([30.0, 30.0, 30.0, 0.0])
    np.testing.assert_allclose(res.equity, 10_000.0, rtol=1e-12)  # flat prices: the book neither gains nor loses
    # without a new target the carried 30 fill on their own, again up to 50 shares in all
    alone = _run(bars, [10_000.0] * 5, [NAN] * 5, ExecutionRules(0.1), cash=8_000.0, shares=np.array([20.0]),
                 pending=pending, carry_price=np.array([100.0]))  # fmt: skip
    assert alone.orders.select("bar", "size").rows() == [(0, 10.0), (1, 10.0), (2, 10.0)]
    assert alone.shares_end[0] == pytest.approx(50.0, rel=1e-12)


def test_a_tenth_of_the_cap_is_ten_times_the_capital() -> None:
    """Without costs, limits or impact the kernel is scale-free: capital C under cap c fills the same
    fractions of the book as capital 10 C under cap c / 10 (the built-in run's +514.37 % at
    100,000 USDT and cap 0.001 is the capacity curve's 1,000,000 USDT at cap 0.01)."""
    rng = np.random.default_rng(3)
    n = 40
    steps = rng.normal(0.0, 0.03, n)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.concatenate([[100.0], close[:-1]])
    bars = [(o, max(o, c) * 1.01, min(o, c) * 0.99, c) for o, c in zip(open_, close, strict=True)]
    qv = list(rng.uniform(2e4, 2e5, n))
    w = [NAN] * n
    for i in range(0, n, 7):
        w[i] = float(rng.uniform(0.2, 1.0))
    rules = ExitRules(sl_stop=0.05, tp_stop=0.1)
    small = _run(bars, qv, w, ExecutionRules(0.01), rules, cash=1e4)
    large = _run(bars, qv, w, ExecutionRules(0.001), rules, cash=1e3)
    assert small.orders.height > 8 and small.orders["participation"].max() == pytest.approx(0.01)
    np.testing.assert_allclose(small.equity, 10.0 * large.equity, rtol=1e-9)
    np.testing.assert_allclose(small.orders["size"].to_numpy(), 10.0 * large.orders["size"].to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_every_capped_fill_is_at_a_price_of_its_own_bar(seed: int) -> None:
    """Random books under a binding cap: an open-row fill is at its bar's open, a rest-of-bar fill
    (a stop) inside its bar's range, and each bar's equity is its cash plus the shares held at its
    close, remainders pending or not (no fill reaches into a later bar, no pending quote is marked)."""
    rng = np.random.default_rng(seed)
    n, k = 60, 3
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, (n, k)), axis=0))
    open_ = np.vstack([np.full((1, k), 100.0), close[:-1]]) * np.exp(rng.normal(0.0, 0.005, (n, k)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, (n, k))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, (n, k))))
    index = (np.arange(n) * DAY_NS).astype("datetime64[ns]")
    prices = PriceBlock(open_, high, low, close, index, tuple(f"S{j}" for j in range(k)))
    zero = np.zeros(k)
    fr = Frictions(rng.uniform(5e4, 5e5, (n, k)), np.zeros((n, k)), zero, zero.copy(), zero.copy(), zero.copy())
    w = np.full((n, k), NAN)
    w[::6] = rng.dirichlet(np.ones(k), len(range(0, n, 6))) * 0.9
    books = [GridBook(r, w, 1e5, None) for r in (None, ExitRules(sl_stop=0.04, tp_stop=0.08))]
    for res in market_simulate(prices, books, fr, ExecutionRules(0.02), fees=0.0, slippage=0.0, carry_price=None,
                               ambiguity="pessimistic", held_reweights="all"):  # fmt: skip
        rec = res.order_records
        bar, row, col = res.order_bar, rec["idx"] % 2, rec["col"]
        assert len(rec) > 30 and res.pending_end is not None
        np.testing.assert_array_equal(rec["price"][row == 0], open_[bar[row == 0], col[row == 0]])
        inside = rec["price"][row == 1]
        assert (inside >= low[bar[row == 1], col[row == 1]]).all() and (
            inside <= high[bar[row == 1], col[row == 1]]
        ).all()
        assert (res.order_reason[row == 1] != 0).all()  # only stops fill inside a bar
        signed = np.where(rec["side"] == 0, rec["size"], -rec["size"])
        held = np.zeros((n, k))
        np.add.at(held, (bar, col), signed)
        held = np.cumsum(held, axis=0)
        np.testing.assert_allclose(res.equity, res.cash + (held * close).sum(axis=1), rtol=1e-12)
        p = res.orders["participation"].to_numpy()
        assert p.max() <= 0.02 * (1 + 1e-9) and (p >= 0.02 * (1 - 1e-9)).sum() > 5  # the cap binds
        assert np.isnan(w[bar[row == 0], col[row == 0]]).sum() > 5  # remainders filled on later bars
        assert (row == 1).any() == (res.stop_exits is not None)
