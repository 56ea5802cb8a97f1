"""SimulationStage and the validated contexts of engine/simulation/stage.py, on a hand-computed window.

The window: one column, three daily bars, 10 shares carried in at 99 with a cost basis of 100
(carry_state), 50 cash, no new orders. A 5 % stop loss (95) is hit in bar 1 (low 94, open 97), so
the 10 shares are sold at 95 with a 0.1 % fee:

    bar 0 close: 50 + 10 * 98          = 1030
    bar 1 close: 50 + 10 * 95 - 0.95   = 999.05 (flat)
    bar 2 close:                         999.05

Without exit rules the shares are held: 50 + 10 * 96 = 1010 at bars 1 and 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from polars.testing import assert_frame_equal

from engine.config import CostsConfig
from engine.config.exit_rules import ExitRules
from engine.simulation.stage import (
    AllocationContext,
    GridBook,
    SelectionContext,
    SimulationContext,
    SimulationStage,
)
from engine.simulation.stops import StopState
from engine.simulation.vbt import PriceBlock, SimResult

DAY_NS = 86_400 * 10**9
RULES = ExitRules(sl_stop=0.05)


def _prices() -> PriceBlock:
    ohlc = np.array(
        [
            [98.0, 99.0, 97.0, 98.0],
            [97.0, 97.5, 94.0, 96.0],
            [96.0, 97.0, 95.5, 96.0],
        ]
    )
    index = (np.arange(1, 4) * DAY_NS).astype("datetime64[ns]")
    return PriceBlock(*(np.ascontiguousarray(ohlc[:, [j]]) for j in range(4)), index, ("A",))


def _state() -> StopState:
    return StopState(np.array([100.0]), np.array([100.0]), np.array([0], dtype=np.int64))


def _ctx(rules: ExitRules | None = RULES, **over: object) -> SimulationContext:
    fields: dict[str, object] = {
        "selection": SelectionContext(window=0, winners=["A"], scores={"A": 1.0}, exit_rules=rules),
        "allocation": AllocationContext(weights={"A": 1.0}, exit_rules=rules),
        "prices": _prices(),
        "weights": np.full((3, 1), np.nan),
        "init_cash": 50.0,
        "carry_shares": np.array([10.0]),
        "carry_price": np.array([99.0]),
        "carry_state": _state(),
    }
    fields.update(over)
    return SimulationContext(**fields)  # type: ignore[arg-type]


def _stage() -> SimulationStage:
    return SimulationStage(CostsConfig(fees=0.001, slippage=0.0))


def _assert_same(a: SimResult, b: SimResult) -> None:
    np.testing.assert_array_equal(a.equity, b.equity)
    np.testing.assert_array_equal(a.cash, b.cash)
    np.testing.assert_array_equal(a.shares_end, b.shares_end)
    assert a.cash_end == b.cash_end
    assert_frame_equal(a.orders, b.orders)
    assert_frame_equal(a.exits, b.exits)
    assert (a.end_state is None) == (b.end_state is None)
    if a.end_state is not None and b.end_state is not None:
        np.testing.assert_array_equal(a.end_state.basis, b.end_state.basis)


def test_the_stage_passes_the_costs_to_its_simulator() -> None:
    sim = SimulationStage(CostsConfig(fees=0.002, slippage=0.0003), vbt_engine="numba").simulator
    assert (sim.fees, sim.slippage, sim.engine) == (0.002, 0.0003, "numba")


def test_execute_is_execute_grid_with_one_book() -> None:
    stage, ctx = _stage(), _ctx()
    one = stage.execute(ctx)
    book = GridBook(RULES, ctx.weights, 50.0, np.array([10.0]), _state())
    (grid,) = stage.execute_grid(ctx, [book])
    _assert_same(one, grid)
    # and both are the hand-computed window: the carried position stopped out at 95 in bar 1
    np.testing.assert_allclose(one.equity, [1030.0, 999.05, 999.05], rtol=1e-12)
    assert one.cash_end == pytest.approx(999.05, rel=1e-12)
    assert one.shares_end.tolist() == [0.0]
    assert one.orders["side"].to_list() == ["sell"]
    assert one.orders["reason"].to_list() == ["stop_loss"]
    assert one.orders["bar"].to_list() == [1]
    assert one.orders["price"].to_list() == [95.0]
    assert one.orders["fees"].to_list() == [pytest.approx(0.95, rel=1e-12)]
    assert one.exits["kind"].to_list() == ["stop_loss"]


def test_execute_takes_the_exit_rules_from_the_allocation() -> None:
    stage = _stage()
    held = stage.execute(_ctx(rules=None))
    np.testing.assert_allclose(held.equity, [1030.0, 1010.0, 1010.0], rtol=1e-12)
    assert held.orders.is_empty() and held.exits.is_empty()
    assert held.shares_end.tolist() == [10.0]
    # the book of a grid with the same inputs but no rules is that result too
    (grid,) = stage.execute_grid(_ctx(), [GridBook(None, np.full((3, 1), np.nan), 50.0, np.array([10.0]))])
    np.testing.assert_array_equal(grid.equity, held.equity)


def test_a_grid_book_equals_its_own_execute() -> None:
    """Books beside each other do not interact: each is the execute of its own inputs."""
    stage, ctx = _stage(), _ctx()
    books = [
        GridBook(None, ctx.weights, 50.0, np.array([10.0]), _state()),
        GridBook(RULES, ctx.weights, 50.0, np.array([10.0]), _state()),
    ]
    without, with_rules = stage.execute_grid(ctx, books)
    _assert_same(with_rules, stage.execute(ctx))
    _assert_same(without, stage.execute(_ctx(rules=None)))


def test_the_context_refuses_weights_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"weights shape \(3, 2\) != prices shape \(3, 1\)"):
        _ctx(weights=np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"weights shape \(2, 1\)"):
        _ctx(weights=np.full((2, 1), np.nan))


def test_the_context_refuses_prices_that_are_not_a_price_block() -> None:
    p = _prices()
    with pytest.raises(TypeError, match="prices must be a PriceBlock"):
        _ctx(prices=np.stack([p.open, p.high, p.low, p.close]))
    with pytest.raises(TypeError, match="prices must be a PriceBlock"):
        _ctx(prices=None)


@pytest.mark.parametrize("bad", [{"basis": [100.0]}, (np.array([100.0]), np.array([100.0]), np.array([0])), "flat"])
def test_the_context_refuses_a_carry_state_that_is_not_a_stop_state(bad: object) -> None:
    with pytest.raises(TypeError, match="carry_state must be a StopState"):
        _ctx(carry_state=bad)


def test_the_context_takes_no_carry_state() -> None:
    assert _ctx(carry_state=None).carry_state is None


@pytest.mark.parametrize("weights", [{"A": -0.1}, {"A": 0.5, "B": -1e-12}, {"A": math.nan}, {"A": math.inf}])
def test_the_allocation_refuses_negative_or_non_finite_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0 \(long only\)"):
        AllocationContext(weights=weights)


def test_the_allocation_refuses_weights_summing_above_one() -> None:
    with pytest.raises(ValueError, match=r"weights must sum to at most 1 \(no leverage\)"):
        AllocationContext(weights={"A": 0.6, "B": 0.5})
    with pytest.raises(ValueError, match="at most 1"):
        AllocationContext(weights={"A": 1.0 + 1e-6})
    # exactly 1, and 1 within the 1e-9 rounding allowance, are accepted
    assert AllocationContext(weights={"A": 0.5, "B": 0.5}).weights == {"A": 0.5, "B": 0.5}
    assert sum(AllocationContext(weights={"A": 0.7, "B": 0.3 + 1e-10}).weights.values()) > 1.0
