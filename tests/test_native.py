"""The native signal grid (engine/simulation/native.py): equal to the vectorbt path and to
``vbt.Portfolio.from_orders`` on random books, independent of the thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import vectorbt as vbt
from helpers import random_ohlc
from vectorbt.portfolio.enums import SizeType

from engine.config.exit_rules import ExitRules
from engine.simulation import PriceBlock, VectorBTSimulator, native
from engine.simulation.native import signal_grid

FEE, SLIP = 0.001, 0.0005
RULES: list[ExitRules | None] = [
    ExitRules(sl_stop=0.01, tp_stop=0.02),
    ExitRules(sl_stop=0.02, tp_stop=0.05),
    ExitRules(tp_stop=0.03),
    None,
    ExitRules(sl_stop=0.02, sl_trail=True),
    ExitRules(sl_stop=0.03, sl_trail=0.015, tp_stop=0.04),
    ExitRules(max_holding="6h", tp_stop=0.03),
]


def _book(seed: int, n_bars: int, k: int) -> tuple[PriceBlock, np.ndarray]:
    """Random 1h OHLC of ``k`` columns and signal weights: entries of 0.2-0.5, some closes (0)."""
    rng = np.random.default_rng(seed)
    o, h, lo, c = random_ohlc(rng, n_bars, k, vol=0.01, gap=0.004, wick=0.008)
    index = (np.datetime64("2024-01-01", "ns") + np.arange(n_bars) * np.timedelta64(1, "h")).astype("datetime64[ns]")
    w = np.full((n_bars, k), np.nan)
    hit = rng.random((n_bars, k)) < 0.1
    w[hit] = rng.choice([0.2, 0.3, 0.5, 0.0], hit.sum())
    return PriceBlock(o, h, lo, c, index, tuple(f"S{j}" for j in range(k))), w


def _same_fills(a: np.ndarray, b: np.ndarray) -> bool:
    """Order records equal: rows, columns and sides exactly, sizes, prices and fees to 1e-9."""
    if len(a) != len(b):
        return False
    exact = all(np.array_equal(a[f], b[f]) for f in ("col", "idx", "side"))
    return exact and all(np.allclose(a[f], b[f], rtol=1e-9, atol=1e-12) for f in ("size", "price", "fees"))


@pytest.mark.parametrize(
    ("seed", "k", "ambiguity"), [(0, 1, "pessimistic"), (1, 3, "pessimistic"), (2, 4, "optimistic")]
)
def test_native_grid_equals_the_vectorbt_path(seed: int, k: int, ambiguity: str) -> None:
    prices, w = _book(seed, 400, k)
    g = len(RULES)
    sim = VectorBTSimulator(FEE, SLIP, "rust", ambiguity=ambiguity)  # type: ignore[arg-type]
    ref = sim.simulate_grid(
        prices, [w] * g, RULES, init_cash=[1e4] * g, carry_shares=[None] * g, held_reweights="first_bar"
    )
    got = signal_grid(prices, w, RULES, init_cash=1e4, fees=FEE, slippage=SLIP, ambiguity=ambiguity).results()  # type: ignore[arg-type]
    n_orders = 0
    for r, o in zip(ref, got, strict=True):
        assert _same_fills(r.order_records, o.order_records)
        np.testing.assert_allclose(o.equity, r.equity, rtol=1e-9)
        np.testing.assert_allclose(o.cash, r.cash, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(o.shares_end, r.shares_end, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(o.order_reason, r.order_reason)
        np.testing.assert_array_equal(o.order_ambiguous, r.order_ambiguous)
        np.testing.assert_array_equal(o.order_bar, r.order_bar)
        assert r.stop_exits is not None and o.stop_exits is not None
        for f in ("bar", "col", "kind", "price", "ambiguous", "at_open", "dropped_bar", "dropped_col"):
            np.testing.assert_array_equal(getattr(o.stop_exits, f), getattr(r.stop_exits, f), err_msg=f)
        assert r.end_state is not None and o.end_state is not None
        np.testing.assert_array_equal(o.end_state.basis, r.end_state.basis)
        np.testing.assert_array_equal(o.end_state.opened_ns, r.end_state.opened_ns)
        assert o.n_ambiguous == r.n_ambiguous
        n_orders += len(o.order_records)
    assert n_orders > 50 * len(RULES) // 4  # the books trade: the comparison is not vacuous


def _from_orders(prices: PriceBlock, w: np.ndarray, exits: object, init: float) -> object:
    """``vbt.Portfolio.from_orders`` on the book's orders, built here: the two-row grid (bar opens,
    rests of the bars), the kept entries and closes at the open rows, the stop exits as target-0
    orders at their price (open row for exits at the open, else the rest-of-bar row)."""
    n, k = prices.shape
    close = np.empty((2 * n, k))
    close[0::2], close[1::2] = prices.open, prices.close
    size = np.full((2 * n, k), np.nan)
    size[0::2] = w
    size[2 * exits.dropped_bar, exits.dropped_col] = np.nan  # type: ignore[attr-defined]
    price = close.copy()
    rows = 2 * exits.bar + np.where(exits.at_open, 0, 1)  # type: ignore[attr-defined]
    price[rows, exits.col] = exits.price  # type: ignore[attr-defined]
    size[rows, exits.col] = 0.0  # type: ignore[attr-defined]
    return vbt.Portfolio.from_orders(
        close, size, size_type=SizeType.TargetPercent, price=price, val_price=price, fees=FEE, slippage=SLIP,
        init_cash=init, cash_sharing=True, group_by=True, call_seq="auto", engine="numba",
    )  # fmt: skip


@pytest.mark.parametrize("seed", [3, 4])
def test_native_fills_cash_and_equity_equal_from_orders(seed: int) -> None:
    prices, w = _book(seed, 300, 3)
    books = signal_grid(prices, w, RULES, init_cash=5e3, fees=FEE, slippage=SLIP).results()
    for o in books:
        pf = _from_orders(prices, w, o.stop_exits, 5e3)
        rec = pf.order_records  # type: ignore[attr-defined]
        assert _same_fills(o.order_records, rec)
        value = pf.value().to_numpy()[1::2]  # type: ignore[attr-defined]
        cash = pf.cash().to_numpy()[1::2]  # type: ignore[attr-defined]
        np.testing.assert_allclose(o.equity, value, rtol=1e-9)
        np.testing.assert_allclose(o.cash, cash, rtol=1e-9, atol=1e-9)
        assert _same_fills(o.order_records, o.portfolio.order_records)  # the book's own portfolio


def test_native_grid_does_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "PARALLEL_MIN_CELLS", 0)  # the parallel kernel even for this small grid
    prices, w = _book(5, 500, 2)
    rules = RULES * 3
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = signal_grid(prices, w, rules, fees=FEE, slippage=SLIP)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = signal_grid(prices, w, rules, fees=FEE, slippage=SLIP)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one.results(), many.results(), strict=True):
        assert a.order_records.tobytes() == b.order_records.tobytes()
        assert a.equity.tobytes() == b.equity.tobytes()


def test_per_book_weights_equal_shared_weights() -> None:
    prices, w = _book(6, 200, 2)
    shared = signal_grid(prices, w, RULES[:3]).results()
    blocks = signal_grid(prices, np.hstack([w] * 3), RULES[:3]).results()
    for a, b in zip(shared, blocks, strict=True):
        assert a.order_records.tobytes() == b.order_records.tobytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": np.full((5, 2), 0.5)}, "weights must have shape"),
        ({"weights": np.full((10, 1), -0.5)}, "finite and >= 0"),
        ({"init_cash": [1.0, 2.0]}, "init_cash must be"),
        ({"fees": -0.1}, "fees must be"),
        ({"exit_rules": []}, "at least one book"),
    ],
)
def test_signal_grid_rejects_bad_inputs(kwargs: dict[str, object], message: str) -> None:
    prices, w = _book(7, 10, 1)
    args: dict[str, object] = {"weights": w, "exit_rules": [None]}
    args.update(kwargs)
    weights, rules = args.pop("weights"), args.pop("exit_rules")
    with pytest.raises(ValueError, match=message):
        signal_grid(prices, weights, rules, **args)  # type: ignore[arg-type]
