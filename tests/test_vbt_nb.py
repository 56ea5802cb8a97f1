"""The numba engine's from_orders loop (:mod:`engine.simulation.vbt_nb`) against vectorbt's own.

``from_orders_nb`` restates ``vectorbt.portfolio.nb.simulate_from_orders_nb``'s loop for the
simulator's arguments around vectorbt's own order execution: its records must equal those of the
call the simulator made before (vectorbt's ``simulate_from_orders_nb`` with the flexible arguments
spelled out), bit for bit, on books of one and several columns, carry rows (per-row size types, fees
and slippage), cash-limited buys, closes, amounts and infinite prices. Every call of the simulator
uses one compiled specialization (a cold process compiles the loop once).
"""

from __future__ import annotations

import numpy as np
import pytest
from vectorbt.portfolio import nb as portfolio_nb
from vectorbt.portfolio.enums import Direction, SizeType

from engine.simulation.orders import orders_simulate
from engine.simulation.vbt_enums import call_seq_default

pytestmark = pytest.mark.slow  # numba: JIT compiles of both loops on first use

GROUPS = [[1], [3], [2, 3, 1], [1, 1], [4, 1, 2]]


def _vectorbt(close, size, size_type, price, fees, slippage, init, group_lens) -> np.ndarray:
    """The simulator's call before vbt_nb: vectorbt's simulate_from_orders_nb, flexible arguments."""
    a = np.asarray
    shape = close.shape
    records, _ = portfolio_nb.simulate_from_orders_nb(
        shape, a(group_lens, dtype=np.int64), a(init, dtype=np.float64), call_seq_default(shape, a(group_lens)),
        size, price, a(size_type, dtype=np.int64), a(Direction.Both, dtype=np.int64), a(fees, dtype=np.float64),
        a(0.0), a(slippage, dtype=np.float64), a(1e-8), a(np.inf), a(np.nan), a(0.0), a(False), a(True), a(False),
        a(False), price, close, auto_call_seq=True, ffill_val_price=True, update_value=False,
        max_orders=shape[0] * shape[1], max_logs=1, flex_2d=True,
    )  # fmt: skip
    return records


def _case(seed: int, group_lens: list[int], carry: bool) -> tuple:
    """Random orders: target percents summing above 1 in some rows (cash-limited buys), closes
    (0), no-order cells (NaN); with ``carry`` a first row of amounts with its own fees (0)."""
    rng = np.random.default_rng(seed)
    n, k = 40, sum(group_lens)
    close = rng.uniform(20.0, 200.0, (n, k))
    size = np.where(rng.random((n, k)) < 0.35, rng.choice([0.0, 0.1, 0.3, 0.45, 0.6], (n, k)), np.nan)
    size[rng.random(n) < 0.2] = np.nan  # rows without any order
    if carry:
        size[0] = np.where(rng.random(k) < 0.7, rng.uniform(0.5, 5.0, k), np.nan)
        size_type = np.full((n, 1), SizeType.TargetPercent, dtype=np.int64)
        size_type[0] = SizeType.Amount
        fees, slippage = np.full((n, 1), 0.001), np.full((n, 1), 0.0005)
        fees[0] = slippage[0] = 0.0
    else:
        size_type, fees, slippage = SizeType.TargetPercent, 0.001, 0.0005
    init = rng.uniform(500.0, 5000.0, len(group_lens))
    return close, size, size_type, close.copy(), fees, slippage, init, np.asarray(group_lens)


@pytest.mark.parametrize("carry", [False, True])
@pytest.mark.parametrize("group_lens", GROUPS)
@pytest.mark.parametrize("seed", range(3))
def test_records_equal_vectorbt_s_simulate_from_orders(seed: int, group_lens: list[int], carry: bool) -> None:
    close, size, size_type, price, fees, slippage, init, lens = _case(seed, group_lens, carry)
    ours = orders_simulate(close, size, size_type, price, fees, slippage, init, lens, "numba")
    theirs = _vectorbt(close, size, size_type, price, fees, slippage, init, lens)
    assert ours.dtype == theirs.dtype
    assert len(ours) == len(theirs) > 5
    for field in theirs.dtype.names:
        np.testing.assert_array_equal(ours[field], theirs[field], err_msg=field)
    rust = orders_simulate(close, size, size_type, price, fees, slippage, init, lens, "rust")
    for field in theirs.dtype.names:
        np.testing.assert_array_equal(ours[field], rust[field], err_msg=field)


@pytest.mark.parametrize("group_lens", GROUPS)
def test_infinite_prices_resolve_as_vectorbt_s(group_lens: list[int]) -> None:
    """+inf: the close; -inf: the previous close (none in row 0: the order is ignored). The loop
    is called on the full grid here (orders_simulate drops the rows without an order first)."""
    from engine.simulation.vbt_nb import from_orders_nb

    close, size, _, price, _, _, init, lens = _case(7, group_lens, False)
    n = len(close)
    size[np.isnan(size)] = 0.2
    price[np.random.default_rng(1).random(price.shape) < 0.15] = np.inf
    price[np.random.default_rng(2).random(price.shape) < 0.15] = -np.inf
    st, fees, slip = np.full(n, SizeType.TargetPercent), np.full(n, 0.002), np.full(n, 0.001)
    ours = from_orders_nb(lens.astype(np.int64), init, size, price, close, st, fees, slip)
    theirs = _vectorbt(close, size, st[:, None], price, fees[:, None], slip[:, None], init, lens)
    assert len(ours) == len(theirs) > 5
    for field in theirs.dtype.names:
        np.testing.assert_array_equal(ours[field], theirs[field], err_msg=field)


def test_one_specialization_for_every_call() -> None:
    """Scalar and per-row arguments, read-only and Fortran-ordered arrays: one compiled loop."""
    from engine.simulation.vbt_nb import from_orders_nb

    for seed, carry in ((0, False), (1, True)):
        close, size, size_type, price, fees, slippage, init, lens = _case(seed, [2, 3], carry)
        orders_simulate(close, size, size_type, price, fees, slippage, init, lens, "numba")
        frozen = [np.asfortranarray(a) for a in (close, size, price)]
        for a in frozen:
            a.flags.writeable = False
        if carry:
            size_type, fees, slippage = (np.broadcast_to(a, a.shape) for a in (size_type, fees, slippage))
        orders_simulate(frozen[0], frozen[1], size_type, frozen[2], fees, slippage, init, lens, "numba")
        orders_simulate(close, size, size_type, price, fees, slippage, list(init), list(lens), "numba")
    assert len(from_orders_nb.signatures) == 1


def test_another_vectorbt_version_uses_vectorbt_s_own_loop(monkeypatch, caplog) -> None:
    """A vectorbt other than the one the loop was checked against: vectorbt's simulate_from_orders_nb
    fills the orders (a stale cached loop never does), with one warning naming both versions."""
    import importlib.metadata

    from engine.simulation import orders

    close, size, size_type, price, fees, slippage, init, lens = _case(4, [2, 3, 1], True)
    checked = orders.orders_simulate(close, size, size_type, price, fees, slippage, init, lens, "numba")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.2.7")
    orders._numba_from_orders.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="engine.simulation.orders"):
            other = orders.orders_simulate(close, size, size_type, price, fees, slippage, init, lens, "numba")
        assert orders._numba_from_orders() is orders._vectorbt_from_orders
    finally:
        orders._numba_from_orders.cache_clear()
    assert [r.getMessage()[:39] for r in caplog.records] == ["vectorbt 1.2.7 is not the 1.2.0 the num"]
    theirs = _vectorbt(close, size, size_type, price, fees, slippage, init, lens)
    for field in theirs.dtype.names:
        np.testing.assert_array_equal(other[field], theirs[field], err_msg=field)
        np.testing.assert_array_equal(checked[field], theirs[field], err_msg=field)
