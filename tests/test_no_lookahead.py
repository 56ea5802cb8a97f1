"""Property: perturbing any bar at or after t never changes a fill or stop decision before t."""

from __future__ import annotations

import numpy as np
from helpers import random_ohlc
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.exit_rules import ExitRules
from engine.simulation.stops import find_stop_exits
from engine.simulation.vbt import PriceBlock, VectorBTSimulator

N, K = 80, 3


def _ohlc(seed: int) -> tuple[np.ndarray, ...]:
    return random_ohlc(np.random.default_rng(seed), N, K, vol=0.03, gap=0.01, wick=0.02)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    t=st.integers(1, N - 1),
    scale=st.floats(0.3, 3.0),
    trail=st.booleans(),
)
def test_future_bars_never_change_past_decisions(seed: int, t: int, scale: float, trail: bool) -> None:
    open_, high, low, close = _ohlc(seed)
    weights = np.full((N, K), np.nan)
    weights[::10] = 0.3
    rules = ExitRules(sl_stop=0.04, tp_stop=0.06, sl_trail=0.05 if trail else False, max_holding="6d")
    index = (np.arange(N, dtype=np.int64) * 86_400_000_000_000).astype("datetime64[ns]")
    p_open, p_high, p_low, p_close = (a.copy() for a in (open_, high, low, close))
    for a in (p_open, p_high, p_low, p_close):
        a[t:] *= scale
    p_high[t:] *= 1.05  # keep the bar contract while moving the ranges too
    p_low[t:] *= 0.95

    before = find_stop_exits(open_, high, low, index, weights, rules, 0.001)
    after = find_stop_exits(p_open, p_high, p_low, index, weights, rules, 0.001)
    keep_b, keep_a = before.bar < t, after.bar < t
    for name in ("bar", "col", "kind", "price", "ambiguous"):
        np.testing.assert_array_equal(getattr(before, name)[keep_b], getattr(after, name)[keep_a])

    sim = VectorBTSimulator(fees=0.001, slippage=0.001)
    cols = ["A/USDT", "B/USDT", "C/USDT"]
    a = sim.simulate(PriceBlock(open_, high, low, close, index, cols), weights, rules, init_cash=1000.0)
    b = sim.simulate(PriceBlock(p_open, p_high, p_low, p_close, index, cols), weights, rules, init_cash=1000.0)
    assert a.orders.filter(a.orders["bar"] < t).equals(b.orders.filter(b.orders["bar"] < t))
    np.testing.assert_array_equal(a.equity[:t], b.equity[:t])
