"""Market execution (engine/simulation/market.py): parity with the vectorbt path when frictionless,
the participation cap and the conservation of remainders on random books, and hand-computed fills."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from helpers import random_ohlc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.config import CostsConfig
from engine.config.exit_rules import ExitRules
from engine.run.trades import TRADE_KINDS, trades_from_orders
from engine.simulation import PriceBlock, SimResult, VectorBTSimulator
from engine.simulation.books import GridBook, Pending
from engine.simulation.market import ExecutionRules, Frictions, market_simulate
from engine.simulation.stage import AllocationContext, MarketStage, SelectionContext, SimulationContext

NAN = math.nan
H4_NS = 4 * 3600 * 10**9
FEE, SLIP = 0.001, 0.0005
RULES = [
    None,
    ExitRules(sl_stop=0.03, tp_stop=0.05),
    ExitRules(sl_stop=0.04, sl_trail=True, max_holding="3d"),
    ExitRules(sl_stop=0.02, sl_trail=0.03, tp_stop=0.04),
]


def _block(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> PriceBlock:
    index = (np.arange(len(o)) * H4_NS).astype("datetime64[ns]")
    return PriceBlock(o, h, lo, c, index, tuple(f"S{i}" for i in range(o.shape[1])))


def _random_block(seed: int, n: int, k: int) -> PriceBlock:
    return _block(*random_ohlc(np.random.default_rng(seed), n, k, vol=0.02, gap=0.005, wick=0.01))


def _slice(p: PriceBlock, lo: int, hi: int) -> PriceBlock:
    return PriceBlock(p.open[lo:hi], p.high[lo:hi], p.low[lo:hi], p.close[lo:hi], p.index[lo:hi], p.columns)


def _weights(n: int, k: int, step: int, seed: int, full: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.full((n, k), NAN)
    raw = rng.random((len(range(0, n, step)), k))
    raw[raw < 0.2] = 0.0  # some columns closed at a rebalance
    w[::step] = (1.0 / k) if full else 0.95 * raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-9)
    return w


def _market(prices: PriceBlock, books: list[GridBook], fr: Frictions | None = None, **kw: object) -> list[SimResult]:
    n, k = prices.shape
    args: dict = {
        "fees": FEE,
        "slippage": SLIP,
        "carry_price": None,
        "ambiguity": "pessimistic",
        "held_reweights": "all",
        **kw,
    }
    ex = args.pop("ex", ExecutionRules())
    return market_simulate(prices, books, Frictions.none(n, k) if fr is None else fr, ex, **args)


def _assert_parity(want: SimResult, got: SimResult) -> None:
    """Fills, cash, equity, exits and end state of the two paths equal (to 1e-9)."""
    a, b = want.order_records, got.order_records
    assert len(a) == len(b)
    np.testing.assert_array_equal(want.order_bar, got.order_bar)
    for f in ("col", "side"):
        np.testing.assert_array_equal(a[f], b[f])
    for f in ("size", "price", "fees"):
        np.testing.assert_allclose(b[f], a[f], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(want.order_reason, got.order_reason)
    np.testing.assert_array_equal(want.order_ambiguous, got.order_ambiguous)
    np.testing.assert_allclose(got.cash, want.cash, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.equity, want.equity, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got.shares_end, want.shares_end, rtol=1e-9, atol=1e-12)
    assert (want.stop_exits is None) == (got.stop_exits is None)
    if want.stop_exits is not None:
        # the same exits (bar, column, kind, flag); levels to 1e-12 (a top-up's basis can move by an ulp)
        key = ["bar", "column"]
        assert_frame_equal(got.exits.sort(key), want.exits.sort(key), check_exact=False, rel_tol=1e-12, abs_tol=0)
        e, g = want.stop_exits, got.stop_exits
        assert g is not None and e.end is not None and g.end is not None
        np.testing.assert_array_equal(np.sort(e.dropped_bar * 100 + e.dropped_col), g.dropped_bar * 100 + g.dropped_col)
        np.testing.assert_allclose(g.end.basis, e.end.basis, rtol=1e-12)
        np.testing.assert_allclose(g.end.peak, e.end.peak, rtol=1e-12)
        np.testing.assert_array_equal(g.end.opened_ns, e.end.opened_ns)
    assert got.costs is not None and got.costs["rejected_orders"] == 0 and got.costs["dropped_quote"] == 0.0
    assert got.costs["fees"] == pytest.approx(float(a["fees"].sum()), rel=1e-9)


# ---------------------------------------------------------------- 1. parity, frictions off


@pytest.mark.parametrize("ambiguity", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("held_reweights", ["all", "first_bar"])
@pytest.mark.parametrize("seed", range(3))
def test_frictionless_equals_vectorbt(seed: int, held_reweights: str, ambiguity: str) -> None:
    """Cap inf, impact 0, no spread or limits: every book's fills, cash, equity and exits are the
    vectorbt path's, with re-weights of held columns at later bars, cash-cut buys and no rules."""
    prices = _random_block(seed, 160, 4)
    n, k = prices.shape
    ws = [_weights(n, k, 9, seed), _weights(n, k, 5, seed + 1), _weights(n, k, 7, seed + 2, full=True)]
    ws.append(_weights(n, k, 13, seed + 3))
    cash = [1e4, 5e3, 1e4, 2e4]
    sim = VectorBTSimulator(fees=FEE, slippage=SLIP)
    want = sim.simulate_grid(prices, ws, RULES, init_cash=cash, carry_shares=[None] * 4, ambiguity=ambiguity,
                             held_reweights=held_reweights)  # fmt: skip
    books = [GridBook(r, w, c, None) for r, w, c in zip(RULES, ws, cash, strict=True)]
    got = _market(prices, books, ambiguity=ambiguity, held_reweights=held_reweights)
    for a, b in zip(want, got, strict=True):
        _assert_parity(a, b)
    assert sum(len(r.order_records) for r in got) > 100
    assert sum(len(r.exits) for r in got) > 10
    assert held_reweights == "all" or sum(len(r.stop_exits.dropped_bar) for r in got if r.stop_exits) > 0


@pytest.mark.parametrize("seed", range(3))
def test_frictionless_rebalance_only_equals_vectorbt(seed: int) -> None:
    """Books without exit rules (the vectorbt path's single from_orders call, no stop scan)."""
    prices = _random_block(40 + seed, 150, 5)
    n, k = prices.shape
    ws = [_weights(n, k, 3, seed), _weights(n, k, 8, seed + 1, full=True)]
    want = VectorBTSimulator(fees=FEE, slippage=SLIP).simulate_grid(
        prices, ws, [None, None], init_cash=[1e4, 3e3], carry_shares=[None, None]
    )
    got = _market(prices, [GridBook(None, ws[0], 1e4, None), GridBook(None, ws[1], 3e3, None)])
    for a, b in zip(want, got, strict=True):
        assert a.stop_exits is None and len(a.order_records) > 50
        _assert_parity(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_frictionless_carry_equals_vectorbt(seed: int) -> None:
    """A second window carried from the first (shares, cash, stop state) equals the vectorbt path's."""
    prices = _random_block(20 + seed, 200, 3)
    n, k = prices.shape
    cut = 91 + 10 * seed  # just after a rebalance: every book holds something
    ws = [_weights(n, k, 10, seed + j) for j in range(len(RULES))]
    sim = VectorBTSimulator(fees=FEE, slippage=SLIP)
    first = sim.simulate_grid(_slice(prices, 0, cut), [w[:cut] for w in ws], RULES, init_cash=[1e4] * 4,
                              carry_shares=[None] * 4)  # fmt: skip
    assert sum(bool(r.shares_end.any()) for r in first) >= 2
    second_prices = _slice(prices, cut, n)
    carry_price = prices.close[cut - 1]
    want = sim.simulate_grid(
        second_prices, [w[cut:] for w in ws], RULES, init_cash=[r.cash_end for r in first],
        carry_shares=[r.shares_end for r in first], carry_price=carry_price, carry_state=[r.end_state for r in first],
    )  # fmt: skip
    books = [
        GridBook(r, w[cut:], f.cash_end, f.shares_end, f.end_state) for r, w, f in zip(RULES, ws, first, strict=True)
    ]
    got = _market(second_prices, books, carry_price=carry_price)
    for a, b in zip(want, got, strict=True):
        _assert_parity(a, b)


# ---------------------------------------------------------------- 2. cap and conservation


def _frictions(rng: np.random.Generator, prices: PriceBlock, scale: float, impact: bool) -> Frictions:
    n, k = prices.shape
    qv = scale * rng.lognormal(0.0, 1.0, (n, k))
    qv[rng.random((n, k)) < 0.1] = 0.0
    qv[rng.random((n, k)) < 0.05] = NAN
    sigma = np.full((n, k), 0.02) if impact else np.full((n, k), NAN)
    return Frictions(
        qv,
        sigma,
        rng.choice([0.0, 0.0005, 0.002], k),
        rng.choice([0.0, 0.001, 0.1], k),
        rng.choice([0.0, 5.0, 50.0], k),
        rng.choice([0.0, 0.01], k),
    )


def _check_cap_and_ledger(
    res: SimResult, fr: Frictions, cap: float, pending_in: np.ndarray, shares_in: np.ndarray
) -> None:
    o = res.orders
    quote = (o["participation"] * o["quote_volume"]).to_numpy()
    n, k = fr.quote_volume.shape
    used = np.zeros((n, k))
    np.add.at(used, (o["bar"].to_numpy(), res.order_records["col"]), quote)
    limit = cap * np.nan_to_num(fr.quote_volume)
    # (participation x volume rounds: the kernel holds size x price <= cap x volume exactly)
    assert (used <= limit * (1 + 1e-12) + 1e-9).all(), float((used - limit).max())
    # every fill's quote at the bar's price is size * price before costs: participation agrees
    assert np.isfinite(quote).all()
    # desired + pending in = filled + dropped + pending out, per column
    assert res.ledger is not None and res.pending_end is not None
    desired, filled, dropped, unfilled = res.ledger.T
    out = np.abs(res.pending_end.shares)
    np.testing.assert_allclose(desired + pending_in, filled + dropped + unfilled + out, rtol=1e-9, atol=1e-9)
    assert (res.ledger >= -1e-9).all()
    got = np.bincount(res.order_records["col"], weights=res.order_records["size"], minlength=k)
    np.testing.assert_allclose(got, filled, rtol=1e-12, atol=0)
    signed = np.where(res.order_records["side"] == 0, 1.0, -1.0) * res.order_records["size"]
    assert (res.shares_end >= -1e-9).all()
    assert res.costs is not None and res.costs["dropped_quote"] >= 0
    net = shares_in + np.bincount(res.order_records["col"], weights=signed, minlength=k)
    np.testing.assert_allclose(net, res.shares_end, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    cap=st.sampled_from([0.001, 0.01, 0.05, 0.3]),
    leftover=st.sampled_from(["carry", "drop"]),
    impact=st.booleans(),
    scale=st.sampled_from([1e3, 1e5, 1e7]),
    cut=st.integers(10, 70),
    first_bar=st.booleans(),
)
def test_cap_holds_and_remainders_are_conserved(
    seed: int, cap: float, leftover: str, impact: bool, scale: float, cut: int, first_bar: bool
) -> None:
    """Random books, volumes (some bars untradable), limits and rules, cut into two carried windows:
    no column fills more than cap x the bar's quote volume, and every share desired is filled,
    dropped or still pending."""
    rng = np.random.default_rng(seed)
    prices = _random_block(seed, 80, 3)
    n, k = prices.shape
    fr = _frictions(rng, prices, scale, impact)
    ex = ExecutionRules(cap, leftover, 1.0 if impact else 0.0)
    rules = [RULES[seed % 4], RULES[(seed + 1) % 4]]
    ws = [_weights(n, k, int(rng.integers(3, 12)), seed + j) for j in range(2)]
    books = [GridBook(r, w[:cut], 1e5, None) for r, w in zip(rules, ws, strict=True)]
    part = lambda a: a[:cut]  # noqa: E731
    fr1 = Frictions(part(fr.quote_volume), part(fr.sigma), *(getattr(fr, f) for f in _LIMITS))
    held = "first_bar" if first_bar else "all"
    first = _market(_slice(prices, 0, cut), books, fr1, ex=ex, held_reweights=held)
    for r in first:
        _check_cap_and_ledger(r, fr1, cap, np.zeros(k), np.zeros(k))
    rest = lambda a: a[cut:]  # noqa: E731
    fr2 = Frictions(rest(fr.quote_volume), rest(fr.sigma), *(getattr(fr, f) for f in _LIMITS))
    books2 = [
        GridBook(r, w[cut:], f.cash_end, f.shares_end, f.end_state, f.pending_end)
        for r, w, f in zip(rules, ws, first, strict=True)
    ]
    second = _market(_slice(prices, cut, n), books2, fr2, ex=ex, carry_price=prices.close[cut - 1], held_reweights=held)
    for r, f in zip(second, first, strict=True):
        assert f.pending_end is not None
        _check_cap_and_ledger(r, fr2, cap, np.abs(f.pending_end.shares), f.shares_end)
    if leftover == "drop":
        assert not any(
            (r.pending_end.shares[r.pending_end.reason == 0] != 0).any() for r in [*first, *second] if r.pending_end
        )


_LIMITS = ("half_spread", "amount_step", "min_notional", "price_tick")


def test_the_cap_binds_and_carries() -> None:
    """A buy of 5x the allowed quote fills over the next bars at cap x volume each, each fill stamped
    with its own bar; with ``drop`` only the first bar's share fills."""
    n = 8
    o = np.full((n, 1), 100.0)
    prices = _block(o, o * 1.01, o * 0.99, o.copy())
    fr = Frictions.none(n, 1)
    fr = Frictions(np.full((n, 1), 10_000.0), fr.sigma, *(getattr(fr, f) for f in _LIMITS))
    w = np.full((n, 1), NAN)
    w[0] = 0.5  # 5,000 of 10,000 cash; the cap allows 0.1 x 10,000 = 1,000 a bar
    carry = _market(prices, [GridBook(None, w, 1e4, None)], fr, fees=0.0, slippage=0.0,
                    ex=ExecutionRules(0.1, "carry"))[0]  # fmt: skip
    assert carry.orders["bar"].to_list() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(carry.orders["size"].to_numpy(), 10.0)
    np.testing.assert_allclose(carry.orders["participation"].to_numpy(), 0.1)
    drop = _market(prices, [GridBook(None, w, 1e4, None)], fr, fees=0.0, slippage=0.0,
                   ex=ExecutionRules(0.1, "drop"))[0]  # fmt: skip
    assert drop.orders["bar"].to_list() == [0]
    assert drop.costs is not None and drop.costs["dropped_quote"] == pytest.approx(4000.0)
    assert drop.ledger is not None and drop.ledger[0].tolist() == pytest.approx([50.0, 10.0, 40.0, 0.0])


def _flat(n: int, lows: dict[int, float] | None = None) -> PriceBlock:
    """One column at 100 on every bar (lows overridden per bar)."""
    o = np.full((n, 1), 100.0)
    lo = o * 0.99
    for i, v in (lows or {}).items():
        lo[i] = v
    return _block(o, o * 1.01, lo, o.copy())


def test_a_new_target_replaces_the_pending_remainder() -> None:
    """50 shares wanted, 10 a bar allowed: after 20 have filled, a 15 % target at bar 2 sells 5 and the
    30 still pending are dropped."""
    n = 5
    fr = Frictions(np.full((n, 1), 10_000.0), np.zeros((n, 1)), *(np.zeros(1) for _ in _LIMITS))
    w = np.full((n, 1), NAN)
    w[0], w[2] = 0.5, 0.15
    res = _market(_flat(n), [GridBook(None, w, 1e4, None)], fr, fees=0.0, slippage=0.0, ex=ExecutionRules(0.1))[0]
    assert res.orders.select("bar", "side", "size").rows() == [(0, "buy", 10.0), (1, "buy", 10.0), (2, "sell", 5.0)]
    assert res.ledger is not None and res.ledger[0].tolist() == pytest.approx([55.0, 25.0, 30.0, 0.0])
    assert res.costs is not None and res.costs["dropped_quote"] == pytest.approx(3000.0)
    assert res.pending_end is not None and not res.pending_end


def test_a_stop_cancels_the_pending_buy_and_shares_the_bar_cap() -> None:
    """The pending buy fills 10 shares at bar 1's open, using the bar's whole room: the stop found in
    the same bar cannot sell then, sells 10 at each of the next two opens, and the 30 shares still
    to buy are cancelled."""
    n = 5
    fr = Frictions(np.full((n, 1), 10_000.0), np.zeros((n, 1)), *(np.zeros(1) for _ in _LIMITS))
    w = np.full((n, 1), NAN)
    w[0] = 0.5
    res = _market(_flat(n, {1: 94.0}), [GridBook(ExitRules(sl_stop=0.05), w, 1e4, None)], fr, fees=0.0,
                  slippage=0.0, ex=ExecutionRules(0.1))[0]  # fmt: skip
    assert res.orders.select("bar", "side", "size", "reason").rows() == [
        (0, "buy", 10.0, "rebalance"),
        (1, "buy", 10.0, "rebalance"),
        (2, "sell", 10.0, "stop_loss"),
        (3, "sell", 10.0, "stop_loss"),
    ]
    assert res.exits.select("bar", "kind", "price").rows() == [(1, "stop_loss", 95.0)]
    assert res.ledger is not None and res.ledger[0].tolist() == pytest.approx([70.0, 40.0, 30.0, 0.0])
    assert res.shares_end[0] == 0.0


# ---------------------------------------------------------------- 3. hand cases


def _one_bar_buy(fr_kw: dict, w: float = 0.5, ex: ExecutionRules | None = None, **kw: object) -> SimResult:
    """One column at 100, one buy of ``w`` of 10,000 cash at bar 0's open."""
    o = np.full((2, 1), 100.0)
    prices = _block(o, o * 1.01, o * 0.99, o.copy())
    base = {
        "quote_volume": np.full((2, 1), 1e6),
        "sigma": np.full((2, 1), 0.02),
        **{f: np.zeros(1) for f in _LIMITS},
        **fr_kw,
    }
    weights = np.array([[w], [NAN]])
    args = {"fees": 0.0, "slippage": 0.0, **kw}
    book = GridBook(None, weights, 1e4, None)
    return _market(prices, [book], Frictions(**base), ex=ex or ExecutionRules(), **args)[0]


def test_impact_and_spread_by_hand() -> None:
    """50 shares at 100 (Q = 5,000) against V = 1e6 with sigma 2 %, k = 1 and a 10 bp half-spread:
    impact = 0.02 x sqrt(0.005) = 0.0014142; price = 100 x 1.001 x 1.0014142; fees 0.1 % of value."""
    res = _one_bar_buy({"half_spread": np.array([0.001])}, ex=ExecutionRules(impact_k=1.0), fees=0.001)
    imp = 0.02 * math.sqrt(5000.0 / 1e6)
    price = 100.0 * 1.001 * (1.0 + imp)
    o = res.orders.row(0, named=True)
    assert o["size"] == pytest.approx(50.0, rel=1e-12)
    assert o["price"] == pytest.approx(price, rel=1e-12)
    assert o["spread_cost"] == pytest.approx(50 * 0.1, rel=1e-9)
    assert o["impact_cost"] == pytest.approx(50 * 100.1 * imp, rel=1e-9)
    assert o["participation"] == pytest.approx(0.005, rel=1e-12)
    assert o["quote_volume"] == 1e6
    assert o["fees"] == pytest.approx(50 * price * 0.001, rel=1e-12)
    assert res.costs is not None
    assert res.costs["impact"] == pytest.approx(50 * 100.1 * imp, rel=1e-9)
    assert res.costs["spread"] == pytest.approx(5.0, rel=1e-9)
    assert res.cash_end == pytest.approx(1e4 - 50 * price * 1.001, rel=1e-12)


def test_amount_rounds_down_to_the_step() -> None:
    """A target of 50.37 shares with a 0.1 step buys 50.3; the 0.07 left is dropped."""
    res = _one_bar_buy({"amount_step": np.array([0.1])}, w=0.5037)
    assert res.orders["size"].to_list() == pytest.approx([50.3], rel=1e-12)
    assert res.ledger is not None and res.ledger[0].tolist() == pytest.approx([50.37, 50.3, 0.07, 0.0], rel=1e-9)


def test_order_below_min_notional_is_not_placed() -> None:
    """A 40-quote order against a 50 minimum is rejected and counted; the cash stays."""
    res = _one_bar_buy({"min_notional": np.array([50.0])}, w=0.004)
    assert res.orders.height == 0
    assert res.costs is not None and res.costs["rejected_orders"] == 1
    assert res.cash_end == 1e4 and not res.shares_end.any()
    ok = _one_bar_buy({"min_notional": np.array([50.0])}, w=0.006)
    assert ok.orders.height == 1 and ok.costs is not None and ok.costs["rejected_orders"] == 0


def test_tick_rounds_against_the_trader() -> None:
    """Slippage puts the buy at 100.0123 and the sell at 99.9877: a 0.01 tick makes them 100.02 and 99.98."""
    o = np.full((2, 1), 100.0)
    prices = _block(o, o * 1.01, o * 0.99, o.copy())
    fr = Frictions.none(2, 1)
    fr = Frictions(fr.quote_volume, fr.sigma, np.zeros(1), np.zeros(1), np.zeros(1), np.array([0.01]))
    w = np.array([[0.5], [0.0]])
    res = _market(prices, [GridBook(None, w, 1e4, None)], fr, fees=0.0, slippage=0.000123)[0]
    assert res.orders["side"].to_list() == ["buy", "sell"]
    assert res.orders["price"].to_list() == pytest.approx([100.02, 99.98], rel=1e-12)
    # the rounding is a cost of the spread: 0.0077 a share on the buy, 0.0077 on the sell
    assert res.orders["spread_cost"].to_list() == pytest.approx([0.0077 * 50, 0.0077 * 50], rel=1e-6)


def test_stop_exit_under_the_cap_sells_over_three_bars() -> None:
    """100 shares stopped at 95 (5 % stop loss) in bar 1 with room for 4,000 quote that bar: 42.1 shares
    go at 95, 31.25 at bar 2's open (96, room 3,000), the rest at bar 3's open (97). The trade's exit
    price is the fills' average and its kind the stop loss."""
    rows = [(100.0, 101.0, 99.5, 100.0), (100.0, 100.0, 94.0, 96.0), (96.0, 97.0, 95.5, 96.5), (97.0, 98, 96, 97)]
    a = np.array(rows)
    prices = _block(*(np.ascontiguousarray(a[:, j : j + 1]) for j in range(4)))
    qv = np.array([[1e6], [40_000.0], [30_000.0], [1e6]])
    fr = Frictions(qv, np.zeros((4, 1)), *(np.zeros(1) for _ in _LIMITS))
    w = np.array([[1.0], [NAN], [NAN], [NAN]])
    res = _market(prices, [GridBook(ExitRules(sl_stop=0.05), w, 1e4, None)], fr, fees=0.0, slippage=0.0,
                  ex=ExecutionRules(0.1, "drop"))[0]  # fmt: skip
    o = res.orders
    assert o["bar"].to_list() == [0, 1, 2, 3]
    assert o["reason"].to_list() == ["rebalance", "stop_loss", "stop_loss", "stop_loss"]
    sizes = [100.0, 4000.0 / 95.0, 3000.0 / 96.0, 100.0 - 4000.0 / 95.0 - 3000.0 / 96.0]
    assert o["size"].to_list() == pytest.approx(sizes, rel=1e-12)
    assert o["price"].to_list() == pytest.approx([100.0, 95.0, 96.0, 97.0], rel=1e-12)
    assert res.exits["bar"].to_list() == [1] and res.exits["price"].to_list() == [95.0]
    assert res.shares_end[0] == 0.0
    vwap = (4000.0 + 3000.0 + sizes[3] * 97.0) / 100.0
    n = o.height
    trades = trades_from_orders(
        {
            "window": np.zeros(n, dtype=np.int64),
            "timestamp": o["bar"].to_numpy() * 14_400_000,
            "symbol": np.array(["S0"] * n, dtype=object),
            "side": res.order_records["side"],
            "size": o["size"].to_numpy(),
            "price": o["price"].to_numpy(),
            "fees": o["fees"].to_numpy(),
            "reason": res.order_reason.astype(np.int64),
            "ambiguous": res.order_ambiguous,
        },
        {"S0": 97.0},
        3 * 14_400_000,
        0,
    )
    assert len(trades["exit_price"]) == 1 and not trades["status"][0]
    assert trades["exit_price"][0] == pytest.approx(vwap, rel=1e-12)
    assert TRADE_KINDS[trades["exit_kind"][0]] == "stop_loss"


@pytest.mark.parametrize("cut", [3, 17, 40])
def test_pending_carried_across_two_calls_equals_one_call(cut: int) -> None:
    """Two windows joined by cash, shares, stop state and pending remainders equal one window over both."""
    rng = np.random.default_rng(5)
    prices = _random_block(5, 90, 3)
    n, k = prices.shape
    fr = _frictions(rng, prices, 2e4, True)
    fr = Frictions(fr.quote_volume, fr.sigma, fr.half_spread, np.zeros(k), np.zeros(k), fr.price_tick)
    ex = ExecutionRules(0.05, "carry", 0.5)
    rules = [None, RULES[1], RULES[2]]
    ws = [_weights(n, k, 6, j) for j in range(3)]
    whole = _market(prices, [GridBook(r, w, 1e5, None) for r, w in zip(rules, ws, strict=True)], fr, ex=ex)
    cut_fr = lambda lo, hi: Frictions(fr.quote_volume[lo:hi], fr.sigma[lo:hi], *(getattr(fr, f) for f in _LIMITS))  # noqa: E731
    first = _market(_slice(prices, 0, cut), [GridBook(r, w[:cut], 1e5, None) for r, w in zip(rules, ws, strict=True)],
                    cut_fr(0, cut), ex=ex)  # fmt: skip
    assert any(bool(f.pending_end) for f in first)
    books = [
        GridBook(r, w[cut:], f.cash_end, f.shares_end, f.end_state, f.pending_end)
        for r, w, f in zip(rules, ws, first, strict=True)
    ]
    second = _market(_slice(prices, cut, n), books, cut_fr(cut, n), ex=ex, carry_price=prices.close[cut - 1])
    for one, a, b in zip(whole, first, second, strict=True):
        joined = pl.concat([a.orders, b.orders.with_columns(pl.col("bar") + cut)])
        assert joined.height > 20
        assert_frame_equal(joined, one.orders, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
        np.testing.assert_allclose(np.concatenate([a.equity, b.equity]), one.equity, rtol=1e-9)
        assert one.costs is not None and a.costs is not None and b.costs is not None
        for key in one.costs:
            assert a.costs[key] + b.costs[key] == pytest.approx(one.costs[key], rel=1e-9, abs=1e-9)
        assert one.pending_end is not None and b.pending_end is not None
        np.testing.assert_allclose(b.pending_end.shares, one.pending_end.shares, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- the stage and bad inputs


def test_market_stage_runs_the_kernel() -> None:
    """MarketStage.execute_grid hands the window, its books and the frictions (or their builder) to the kernel."""
    prices = _random_block(3, 40, 2)
    n, k = prices.shape
    w = _weights(n, k, 5, 3)
    fr = _frictions(np.random.default_rng(3), prices, 1e4, True)
    ex = ExecutionRules(0.02, "carry", 1.0)
    ctx = SimulationContext(
        selection=SelectionContext(window=0, winners=list(prices.columns), scores={}),
        allocation=AllocationContext(weights={}),
        prices=prices,
        weights=w,
        init_cash=1e4,
    )
    seen: list[SimulationContext] = []

    def build(c: SimulationContext) -> Frictions:
        seen.append(c)
        return fr

    stage = MarketStage(CostsConfig(fees=FEE, slippage=SLIP), build, ex)
    got = stage.execute(ctx)
    assert seen == [ctx]
    want = _market(prices, [GridBook(None, w, 1e4, None)], fr, ex=ex)[0]
    assert got.orders.equals(want.orders) and got.orders.height > 0
    assert got.costs == want.costs
    fixed = MarketStage(CostsConfig(fees=FEE, slippage=SLIP), fr, ex)
    assert fixed.execute_grid(ctx, [GridBook(None, w, 1e4, None)])[0].orders.equals(want.orders)


def test_a_walk_that_runs_out_of_room_is_redone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first walk's buffers hold the usual number of fills; one that runs out is redone with room for all."""
    import engine.simulation.market as market_mod

    prices = _random_block(4, 60, 3)
    n, k = prices.shape
    fr = _frictions(np.random.default_rng(4), prices, 1e4, True)
    books = [GridBook(r, _weights(n, k, 4, j), 1e5, None) for j, r in enumerate(RULES)]
    ex = ExecutionRules(0.01, "carry", 1.0)
    want = _market(prices, books, fr, ex=ex)
    monkeypatch.setattr(market_mod, "first_room", lambda n_bars, g, k: 2 * k + 5)
    got = _market(prices, books, fr, ex=ex)
    for a, b in zip(want, got, strict=True):
        assert b.orders.height > 10 and b.orders.equals(a.orders) and b.exits.equals(a.exits)
        np.testing.assert_array_equal(b.equity, a.equity)
        assert b.costs == a.costs


def test_bad_inputs_are_named() -> None:
    prices = _random_block(1, 5, 2)
    book = GridBook(None, np.full((5, 2), NAN), 1e4, None)
    fr = Frictions.none(5, 2)
    with pytest.raises(ValueError, match="max_participation"):
        ExecutionRules(0.0)
    with pytest.raises(ValueError, match="leftover"):
        ExecutionRules(0.1, "keep")
    with pytest.raises(ValueError, match="half_spread"):
        _market(prices, [book], Frictions(fr.quote_volume, fr.sigma, np.ones(2), *(np.zeros(2) for _ in range(3))))
    with pytest.raises(ValueError, match="quote_volume"):
        _market(prices, [book], Frictions(np.ones((4, 2)), fr.sigma, *(np.zeros(2) for _ in range(4))))
    with pytest.raises(ValueError, match="sigma"):
        _market(prices, [book], Frictions(np.ones((5, 2)), fr.sigma, *(np.zeros(2) for _ in range(4))),
                ex=ExecutionRules(impact_k=1.0))  # fmt: skip
    with pytest.raises(ValueError, match="carry_pending"):
        _market(prices, [GridBook(None, book.weights, 1e4, None, None, Pending.none(3))])
