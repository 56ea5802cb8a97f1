"""Stop-exit kernel: hand-computed cases and a plain-Python reference on random series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import random_ohlc

from engine.config.exit_rules import ExitRules
from engine.simulation import (
    EXIT_KIND_NAMES,
    MAX_HOLDING,
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING,
    StopState,
    find_stop_exits,
)

DAY_NS = 86_400 * 10**9


def _bars(rows: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, ...]:
    """Single-column OHLC arrays and a daily index from ``(open, high, low, close)`` rows."""
    arr = np.array(rows, dtype=np.float64)
    index = (np.arange(len(rows)) * DAY_NS).astype("datetime64[ns]")
    return arr[:, [0]], arr[:, [1]], arr[:, [2]], arr[:, [3]], index


def _exits(rows, weights, rules, slippage=0.0, ambiguity="pessimistic"):
    o, h, lo, _, index = _bars(rows)
    w = np.array(weights, dtype=np.float64).reshape(-1, 1)
    return find_stop_exits(o, h, lo, index, w, rules, slippage, ambiguity)


NAN = math.nan
ENTRY = (100.0, 101.0, 99.0, 100.0)


def test_kind_names() -> None:
    assert EXIT_KIND_NAMES == {1: "stop_loss", 2: "take_profit", 3: "trailing", 4: "max_holding", 5: "liquidation"}


def test_stop_loss_fills_at_level() -> None:
    rows = [ENTRY, (100.0, 102.0, 97.0, 98.0), (98.0, 99.0, 94.0, 96.0), (96.0, 97.0, 90.0, 91.0)]
    ex = _exits(rows, [1.0, NAN, NAN, NAN], ExitRules(sl_stop=0.05))
    assert ex.bar.tolist() == [2]
    assert ex.kind.tolist() == [STOP_LOSS]
    assert ex.price.tolist() == [95.0]
    assert ex.ambiguous.tolist() == [False]


def test_gap_below_stop_fills_at_open() -> None:
    rows = [ENTRY, (100.0, 102.0, 97.0, 98.0), (90.0, 92.0, 89.0, 91.0)]
    ex = _exits(rows, [1.0, NAN, NAN], ExitRules(sl_stop=0.05))
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist()) == ([2], [STOP_LOSS], [90.0])


def test_gap_above_take_profit_fills_at_open() -> None:
    rows = [ENTRY, (100.0, 102.0, 97.0, 101.0), (120.0, 121.0, 118.0, 119.0)]
    ex = _exits(rows, [1.0, NAN, NAN], ExitRules(tp_stop=0.15))
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist()) == ([2], [TAKE_PROFIT], [120.0])


def test_take_profit_fills_at_level() -> None:
    rows = [ENTRY, (101.0, 110.0, 100.0, 109.0), (109.0, 116.0, 108.0, 112.0)]
    ex = _exits(rows, [1.0, NAN, NAN], ExitRules(tp_stop=0.15))
    assert ex.bar.tolist() == [2]
    assert ex.kind.tolist() == [TAKE_PROFIT]
    assert ex.price.tolist() == [100.0 * (1 + 0.15)]  # 115 up to float rounding of 1.15


def test_trailing_exits_only_when_low_crosses_trailed_level() -> None:
    rows = [
        (100.0, 100.0, 99.0, 100.0),  # peak stays 100, level 90
        (100.0, 110.0, 99.5, 109.0),  # checked against 90, then peak 110
        # checked against 99; were the bar's own high (120) applied first, the level would be
        # 108 and the low of 100 would exit here
        (109.0, 120.0, 100.0, 118.0),
        (118.0, 119.0, 108.5, 110.0),  # level 108 = 120 * 0.9, low 108.5 stays above
        (110.0, 111.0, 107.0, 107.5),  # low 107 crosses 108: exit at 108
        (107.0, 108.0, 100.0, 101.0),
    ]
    ex = _exits(rows, [1.0, NAN, NAN, NAN, NAN, NAN], ExitRules(sl_stop=0.1, sl_trail=True))
    assert ex.bar.tolist() == [4]
    assert ex.kind.tolist() == [TRAILING]
    assert ex.price.tolist() == [120.0 * (1 - 0.1)]


def test_fixed_stop_binds_until_trail_rises_above_it() -> None:
    rows = [ENTRY, (100.0, 130.0, 99.0, 128.0), (128.0, 129.0, 115.0, 116.0)]
    rules = ExitRules(sl_stop=0.05, sl_trail=0.1)
    # Bar 1: SL 95 > trail 90 -> no exit at low 99. Bar 2: trail 117 > SL 95, low 115 -> trailing.
    ex = _exits(rows, [1.0, NAN, NAN], rules)
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist()) == ([2], [TRAILING], [130.0 * (1 - 0.1)])
    low_rows = [ENTRY, (100.0, 101.0, 94.0, 95.0)]
    ex = _exits(low_rows, [1.0, NAN], rules)
    assert (ex.kind.tolist(), ex.price.tolist()) == ([STOP_LOSS], [95.0])


@pytest.mark.parametrize(
    ("ambiguity", "kind", "price"), [("pessimistic", STOP_LOSS, 95.0), ("optimistic", TAKE_PROFIT, 115.0)]
)
def test_ambiguous_bar(ambiguity: str, kind: int, price: float) -> None:
    rows = [ENTRY, (100.0, 116.0, 94.0, 100.0)]
    ex = _exits(rows, [1.0, NAN], ExitRules(sl_stop=0.05, tp_stop=0.15), ambiguity=ambiguity)
    assert ex.bar.tolist() == [1]
    assert ex.kind.tolist() == [kind]
    assert ex.price.tolist() == pytest.approx([price], rel=1e-15)
    assert ex.ambiguous.tolist() == [True]


def test_entry_bar_is_checked() -> None:
    rows = [(100.0, 101.0, 94.0, 96.0), (96.0, 97.0, 95.5, 96.0)]
    ex = _exits(rows, [1.0, NAN], ExitRules(sl_stop=0.05))
    assert (ex.bar.tolist(), ex.price.tolist()) == ([0], [95.0])


def test_reference_is_the_cost_basis_and_a_topup_moves_it() -> None:
    rows = [ENTRY, (110.0, 111.0, 105.0, 106.0), (106.0, 107.0, 104.0, 105.0), (104.0, 105.0, 100.0, 101.0)]
    rules = ExitRules(sl_stop=0.05)
    # Opening fill 100 * 1.01 = 101: SL 95.95. A re-weight at bar 1 without known fills keeps the
    # basis (the bar-0 reference, not bar 1's open): no exit at bar 3 (low 100 > 95.95).
    ex = _exits(rows, [1.0, 0.5, NAN, NAN], rules, slippage=0.01)
    assert ex.bar.tolist() == []
    assert ex.end.basis.tolist() == [101.0]

    # With the top-up's fills (1 share held at 101, 1 more bought at 110 * 1.01 = 111.1), the basis
    # is their size-weighted average 106.05 and the stop 100.7475: bar 3's low 100 reaches it.
    def topup(bar, so_far, basis):
        assert bar == 1 and basis.tolist() == [101.0] and len(so_far) == 0
        return np.array([(1 * 101.0 + 1 * 110.0 * 1.01) / 2])

    o, h, lo, _, index = _bars(rows)
    w = np.array([1.0, 0.5, NAN, NAN]).reshape(-1, 1)
    ex = find_stop_exits(o, h, lo, index, w, rules, 0.01, topup=topup)
    assert ex.bar.tolist() == [3]
    assert ex.price.tolist() == pytest.approx([106.05 * 0.95], rel=1e-15)


def test_state_is_carried_in_and_out() -> None:
    """A position handed in keeps its basis, peak and clock; the state after the bars comes back."""
    rows = [(100.0, 104.0, 99.5, 103.0), (103.0, 103.5, 96.0, 97.0), (97.0, 98.0, 96.0, 97.0)]
    o, h, lo, _, index = _bars(rows)
    w = np.full((3, 1), NAN)
    held = StopState(np.array([90.0]), np.array([110.0]), np.array([-2 * DAY_NS], dtype=np.int64))
    # trailing 10 % below the carried peak 110 = 99 (above the fixed SL 85.5 of basis 90): bar 1's
    # low 96 reaches it; the bar-0 high 104 does not raise the peak above 110.
    ex = find_stop_exits(o, h, lo, index, w, ExitRules(sl_stop=0.05, sl_trail=0.10), state=held)
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist()) == ([1], [TRAILING], [99.0])
    assert np.isnan(ex.end.basis[0])
    # the holding clock runs from the carried opening: 3 days after -2 days is bar 1
    ex = find_stop_exits(o, h, lo, index, w, ExitRules(max_holding="3d"), state=held)
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist(), ex.at_open.tolist()) == (
        [1],
        [MAX_HOLDING],
        [103.0],
        [True],
    )
    # still open at the end: the state after the last bar, peak raised by the highs
    ex = find_stop_exits(o, h, lo, index, w, ExitRules(sl_stop=0.5), state=held)
    assert (ex.end.basis.tolist(), ex.end.peak.tolist(), ex.end.opened_ns.tolist()) == ([90.0], [110.0], [-2 * DAY_NS])


def test_gap_at_an_order_bar_replaces_the_order() -> None:
    """A held position that opens through its stop on a rebalance bar exits at the open, first."""
    rows = [ENTRY, (100.0, 101.0, 99.0, 100.0), (90.0, 95.0, 89.0, 94.0), (94.0, 95.0, 93.0, 94.0)]
    ex = _exits(rows, [1.0, NAN, 1.0, NAN], ExitRules(sl_stop=0.05))
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist(), ex.at_open.tolist()) == (
        [2],
        [STOP_LOSS],
        [90.0],
        [True],
    )
    # flat until the next positive weight: nothing at bar 3
    assert np.isnan(ex.end.basis[0])


def test_first_bar_mode_drops_entries_of_held_columns() -> None:
    rows = [ENTRY, (100.0, 101.0, 99.0, 100.0), (100.0, 101.0, 99.0, 100.0)]
    ex = _exits(rows, [1.0, 0.5, NAN], ExitRules(sl_stop=0.5))
    assert ex.dropped_bar.tolist() == []
    o, h, lo, _, index = _bars(rows)
    w = np.array([1.0, 0.5, NAN]).reshape(-1, 1)
    ex = find_stop_exits(o, h, lo, index, w, ExitRules(sl_stop=0.5), held_reweights="first_bar")
    assert (ex.dropped_bar.tolist(), ex.dropped_col.tolist()) == ([1], [0])


def test_no_reentry_after_stop_until_positive_weight() -> None:
    rows = [
        ENTRY,
        (100.0, 101.0, 94.0, 95.0),
        (95.0, 96.0, 80.0, 81.0),
        (81.0, 82.0, 70.0, 71.0),
        (71.0, 72.0, 60.0, 61.0),
    ]
    # Weight 0 at bar 2 keeps it flat; weight 1 at bar 3 re-enters at 81 (SL 76.95, hit at bar 3).
    ex = _exits(rows, [1.0, NAN, 0.0, 1.0, NAN], ExitRules(sl_stop=0.05))
    assert ex.bar.tolist() == [1, 3]
    assert ex.price.tolist() == [95.0, 81.0 * (1 - 0.05)]


def test_max_holding_closes_at_open() -> None:
    rows = [ENTRY] + [(100.0 + i, 101.0 + i, 99.0 + i, 100.0 + i) for i in range(1, 6)]
    rules = ExitRules(max_holding="3d")
    ex = _exits(rows, [1.0, NAN, NAN, NAN, NAN, NAN], rules)
    assert (ex.bar.tolist(), ex.kind.tolist(), ex.price.tolist()) == ([3], [MAX_HOLDING], [103.0])
    # A re-weighting bar does not restart the clock ...
    ex = _exits(rows, [1.0, NAN, 0.5, NAN, NAN, NAN], rules)
    assert ex.bar.tolist() == [3]
    # ... and on the due bar the limit closes the position at the open, before and instead of
    # the bar's order (the symbol stays in cash until its next positive weight).
    ex = _exits(rows, [1.0, NAN, NAN, 0.5, NAN, NAN], rules)
    assert (ex.bar.tolist(), ex.price.tolist(), ex.at_open.tolist()) == ([3], [103.0], [True])


def test_multi_column_order_is_bar_then_column() -> None:
    o = np.full((3, 2), 100.0)
    h = np.full((3, 2), 101.0)
    lo = np.array([[99.0, 94.0], [94.0, 99.0], [99.0, 99.0]])
    w = np.array([[1.0, 1.0], [NAN, NAN], [NAN, NAN]])
    index = (np.arange(3) * DAY_NS).astype("datetime64[ns]")
    ex = find_stop_exits(o, h, lo, index, w, ExitRules(sl_stop=0.05))
    assert ex.bar.tolist() == [0, 1]
    assert ex.col.tolist() == [1, 0]


# --- plain-Python reference -------------------------------------------------------------------


def _reference(o, h, lo, index_ns, w, slippage, fixed_sl, tp, trail, hold_ns, pessimistic):
    """Column-by-column restatement of the module docstring's rules (a re-weight without known
    fills keeps the cost basis)."""
    out = []
    n_bars, n_cols = w.shape

    def levels(ref, peak):
        cands = []
        if fixed_sl is not None:
            cands.append((ref * (1 - fixed_sl), STOP_LOSS))
        if trail is not None:
            cands.append((peak * (1 - trail), TRAILING))
        sl, sl_kind = max(cands, key=lambda x: (x[0], x[1] == STOP_LOSS)) if cands else (-math.inf, STOP_LOSS)
        return sl, sl_kind, (ref * (1 + tp) if tp is not None else math.inf)

    for c in range(n_cols):
        holding = False
        ref = peak = 0.0
        entry = 0
        for i in range(n_bars):
            wi = w[i, c]
            if holding:
                if hold_ns is not None and index_ns[i] >= entry + hold_ns:
                    out.append((i, c, MAX_HOLDING, o[i, c], False))
                    holding = False
                    continue
                if not math.isnan(wi):
                    sl, sl_kind, tpl = levels(ref, peak)
                    if o[i, c] <= sl or o[i, c] >= tpl:
                        out.append((i, c, sl_kind if o[i, c] <= sl else TAKE_PROFIT, o[i, c], False))
                        holding = False
                        continue
                    if wi == 0:
                        holding = False
                        continue
            elif not math.isnan(wi) and wi > 0:
                holding, entry = True, index_ns[i]
                ref = peak = o[i, c] * (1 + slippage)
            else:
                continue
            sl, sl_kind, tpl = levels(ref, peak)
            hit = None
            if o[i, c] <= sl:
                hit = (sl_kind, o[i, c], False)
            elif o[i, c] >= tpl:
                hit = (TAKE_PROFIT, o[i, c], False)
            elif lo[i, c] <= sl and h[i, c] >= tpl:
                hit = (sl_kind, sl, True) if pessimistic else (TAKE_PROFIT, tpl, True)
            elif lo[i, c] <= sl:
                hit = (sl_kind, sl, False)
            elif h[i, c] >= tpl:
                hit = (TAKE_PROFIT, tpl, False)
            if hit is None:
                peak = max(peak, h[i, c])
            else:
                out.append((i, c, *hit))
                holding = False
    return sorted(out)


RULE_SETS = [
    ExitRules(sl_stop=0.03),
    ExitRules(tp_stop=0.04),
    ExitRules(sl_stop=0.03, tp_stop=0.05),
    ExitRules(sl_stop=0.04, sl_trail=True, tp_stop=0.06),
    ExitRules(sl_stop=0.05, sl_trail=0.02),
    ExitRules(sl_trail=0.03, max_holding="5d"),
    ExitRules(sl_stop=0.02, tp_stop=0.02, max_holding="2d"),
]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("rules", RULE_SETS, ids=str)
def test_kernel_matches_plain_python(seed: int, rules: ExitRules) -> None:
    rng = np.random.default_rng(seed)
    n_bars, n_cols = 120, 4
    o, h, lo, _ = random_ohlc(rng, n_bars, n_cols, vol=0.02, gap=0.01, wick=0.01)
    w = np.where(rng.random((n_bars, n_cols)) < 0.1, rng.choice([0.0, 0.2, 0.5], (n_bars, n_cols)), np.nan)
    index = np.cumsum(rng.integers(1, 3, n_bars) * DAY_NS // 2).astype("datetime64[ns]")
    for ambiguity in ("pessimistic", "optimistic"):
        ex = find_stop_exits(o, h, lo, index, w, rules, 0.001, ambiguity)
        got = sorted(
            zip(
                ex.bar.tolist(),
                ex.col.tolist(),
                ex.kind.tolist(),
                ex.price.tolist(),
                ex.ambiguous.tolist(),
                strict=True,
            )
        )
        want = _reference(
            o,
            h,
            lo,
            index.view(np.int64),
            w,
            0.001,
            rules.fixed_sl,
            rules.tp_stop,
            rules.trail_fraction,
            rules.max_holding_ns,
            ambiguity == "pessimistic",
        )
        assert got == want
        assert len(want) > 0


def test_rejects_unknown_ambiguity() -> None:
    with pytest.raises(ValueError, match="ambiguity"):
        _exits([ENTRY], [1.0], ExitRules(sl_stop=0.05), ambiguity="coin flip")


@pytest.mark.parametrize("ambiguity", ["pessimistic", "optimistic"])
def test_grid_kernel_equals_one_call_per_book(ambiguity: str) -> None:
    """Several books' rules in one kernel call (per-column parameters) give each book exactly the
    exits of its own call."""
    from engine.simulation.stops import find_stop_exits_grid

    n, k = 300, 3
    open_, high, low, _ = random_ohlc(np.random.default_rng(21), n, k, vol=0.03, gap=0.01, wick=0.025)
    index = (np.arange(n) * DAY_NS).astype("datetime64[ns]")
    rules = [
        ExitRules(sl_stop=0.05, tp_stop=0.1),
        ExitRules(sl_stop=0.03, sl_trail=True),
        ExitRules(tp_stop=0.08, max_holding="5d"),
        ExitRules(sl_stop=0.1, sl_trail=0.04, tp_stop=0.3),
    ]
    weights = []
    for b in range(len(rules)):
        w = np.full((n, k), np.nan)
        w[b :: 9 + b] = 0.3
        w[b + 4 :: 23] = 0.0
        weights.append(w)
    got = find_stop_exits_grid(open_, high, low, index, np.hstack(weights), rules, 0.001, ambiguity)
    total = 0
    for w, r, e in zip(weights, rules, got, strict=True):
        want = find_stop_exits(open_, high, low, index, w, r, 0.001, ambiguity)
        for f in ("bar", "col", "kind", "price", "ambiguous"):
            np.testing.assert_array_equal(getattr(e, f), getattr(want, f))
        total += len(want)
    kinds = set(np.concatenate([e.kind for e in got]).tolist())
    assert kinds == {STOP_LOSS, TAKE_PROFIT, TRAILING, MAX_HOLDING}
    assert total > 50
