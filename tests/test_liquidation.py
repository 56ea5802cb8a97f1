"""Isolated margin: a leveraged position is liquidated at its liquidation price, found inside the bar.

Hand-computed: a short at 2x entered at 100 with a maintenance margin of 0.5 % is liquidated at
``100 (1 + 1/2) / 1.005 = 149.2537...``, where its margin balance is the maintenance margin of its
notional; a long at 4x with 1 % at ``100 (1 - 1/4) / 0.99 = 75.7575...``.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.config.exit_rules import ExitRules
from engine.simulation import PriceBlock
from engine.simulation.books import GridBook
from engine.simulation.margin import liquidation_price
from engine.simulation.market import ExecutionRules, Frictions, market_simulate

pytestmark = pytest.mark.slow  # numba compiles the market kernel on first use


def _run(ohlc: list[tuple[float, float, float, float]], w0: float, margin: tuple[float, float], rules=None):  # type: ignore[no-untyped-def]
    a = np.array(ohlc, dtype=np.float64)
    n = len(a)
    prices = PriceBlock(
        a[:, [0]],
        a[:, [1]],
        a[:, [2]],
        a[:, [3]],
        np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"),
        ("X",),
    )
    w = np.full((n, 1), np.nan)
    w[0, 0] = w0
    return market_simulate(
        prices, [GridBook(rules, w, 1000.0, None, None)], Frictions.none(n, 1), ExecutionRules(), fees=0.0,
        slippage=0.0, carry_price=None, ambiguity="pessimistic", held_reweights="all", margin=margin,
    )[0]  # fmt: skip


def test_short_at_2x_is_liquidated_at_its_price_inside_the_bar() -> None:
    liq = 100 * 1.5 / 1.005
    assert liquidation_price(100.0, True, 2.0, 0.005) == pytest.approx(liq, rel=1e-15)
    res = _run(
        [(100, 101, 99, 100), (110, 120, 105, 115), (130, 155, 128, 150), (150, 151, 149, 150)], -2.0, (2.0, 0.005)
    )
    o = res.orders
    assert o["side"].to_list() == ["sell", "buy"]
    assert o["size"].to_list() == pytest.approx([20.0, 20.0])
    assert o["bar"][1] == 2 and o["reason"][1] == "liquidation"
    assert o["price"][1] == pytest.approx(liq, rel=1e-12)
    # what is left of the 1000 of margin is the maintenance margin of the notional at the liquidation price
    assert res.cash_end == pytest.approx(0.005 * 20 * liq, rel=1e-9)
    assert res.equity[1] == pytest.approx(1000 - 20 * 15, rel=1e-12)  # still open at bar 1's close
    assert res.shares_end[0] == 0.0


def test_long_at_4x_gaps_through_its_liquidation_price_and_fills_at_the_open() -> None:
    liq = 100 * 0.75 / 0.99
    res = _run([(100, 101, 99, 100), (90, 91, 80, 85), (70, 72, 60, 65)], 4.0, (4.0, 0.01))
    o = res.orders
    assert o["reason"].to_list() == ["rebalance", "liquidation"]
    assert o["bar"][1] == 2 and o["price"][1] == 70.0  # a gap below the level: at the open (worse)
    assert liq < 80  # bar 1's low stayed above the level
    res2 = _run([(100, 101, 99, 100), (90, 91, 75, 85)], 4.0, (4.0, 0.01))
    assert res2.orders["price"][1] == pytest.approx(liq, rel=1e-12) and res2.orders["bar"][1] == 1


def test_a_nearer_stop_loss_exits_first_and_leverage_1_long_is_never_liquidated() -> None:
    res = _run([(100, 101, 99, 100), (110, 160, 105, 150)], -2.0, (2.0, 0.005), ExitRules(sl_stop=0.1))
    assert res.orders["reason"].to_list() == ["rebalance", "stop_loss"]
    assert res.orders["price"][1] == pytest.approx(110.0)  # the open is at the stop level's gap: 110 >= 110
    res = _run([(100, 101, 99, 100), (50, 51, 0.01, 1)], 1.0, (1.0, 0.005))
    assert res.orders["reason"].to_list() == ["rebalance"]


def test_a_2x_long_borrows_its_notional_and_is_liquidated_at_its_price() -> None:
    """Margin buys are not limited by the cash: the gross (at most the leverage) is held in full."""
    liq = 100 * 0.5 / 0.995
    res = _run([(100, 101, 99, 100), (90, 95, 80, 85), (60, 70, 45, 50)], 2.0, (2.0, 0.005))
    o = res.orders
    assert o["size"][0] == pytest.approx(20.0)  # 2 x 1000 of equity at 100
    assert res.cash[0] == pytest.approx(-1000.0)  # the borrowed notional
    assert res.equity[1] == pytest.approx(1000 + 20 * (85 - 100))
    assert o["reason"][1] == "liquidation" and o["bar"][1] == 2 and o["price"][1] == pytest.approx(liq, rel=1e-12)
    assert res.cash_end == pytest.approx(0.005 * 20 * liq, rel=1e-9)  # the maintenance margin is what is left
