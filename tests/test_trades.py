"""The trade ledger of a window (engine.trades): every exit kind on a hand-built two-book window."""

from __future__ import annotations

import numpy as np

from engine.simulation.stops import MAX_HOLDING, STOP_LOSS, TAKE_PROFIT
from engine.trades import TRADE_KINDS, window_trades

NAN = np.nan
SLIP = 0.01
OPENS = np.array([[100.0, 50.0], [110.0, 55.0], [120.0, 60.0], [130.0, 65.0]])
LAST_CLOSE = np.array([135.0, 70.0])
TS = np.array([0, 10, 20, 30], dtype=np.int64)
DELIST = np.zeros((4, 2), dtype=bool)
DELIST[3, 1] = True  # column 1's bars end before bar 3: the engine gives it weight 0 there

# book 0: no exit rules; book 1: stops found by the simulator
W0 = np.array([[0.5, 0.5], [0.3, NAN], [0.0, NAN], [0.4, 0.0]])
W1 = np.array([[0.5, 0.0], [NAN, 0.5], [0.2, NAN], [NAN, NAN]])
# (bar, col, kind, level, ambiguous): a stop loss at 95 in bar 1 (ambiguous), max holding at bar 3's
# open, a take profit at 66 in bar 2 of column 1
STOPS1 = (
    np.array([1, 2, 3]),
    np.array([0, 1, 0]),
    np.array([STOP_LOSS, TAKE_PROFIT, MAX_HOLDING], dtype=np.int8),
    np.array([95.0, 66.0, 130.0]),
    np.array([True, False, False]),
)
FILLS1 = (np.array([1]), np.array([0]), np.array([95.0 * (1 - SLIP)]))  # only the stop loss has a fill
NO_FILLS = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0))


def _ledger(signals: bool, last_window: bool) -> list[tuple]:
    t = window_trades(
        np.hstack([W0, W1]),
        [None, STOPS1],
        [NO_FILLS, FILLS1],
        OPENS,
        LAST_CLOSE,
        DELIST,
        TS,
        10,
        SLIP,
        signals=signals,
        last_window=last_window,
    )
    return [
        (int(c), int(et), float(ep), int(xt), float(xp), TRADE_KINDS[int(k)], bool(a))
        for c, et, ep, xt, xp, k, a in zip(
            t.col, t.entry_time, t.entry_price, t.exit_time, t.exit_price, t.kind, t.ambiguous, strict=True
        )
    ]


def _expected(signal_kind: str, end_kind: str) -> list[tuple]:
    buy = 1.0 + SLIP
    return [
        # book 0, column 0: re-weighted at bar 1 (same trade), closed by weight 0 at bar 2's open,
        # re-entered at bar 3 and closed at the window's end (last close, end of bar 3)
        (0, 0, 100.0 * buy, 20, 120.0, signal_kind, False),
        (0, 30, 130.0 * buy, 40, 135.0, end_kind, False),
        # book 0, column 1: sold at bar 3's open because its bars end (delisted)
        (1, 0, 50.0 * buy, 30, 65.0, "delisted", False),
        # book 1, column 0: stop loss at its fill price (slippage included), at the bar's close time;
        # re-entry at bar 2, closed at bar 3's open by max holding (its open time)
        (2, 0, 100.0 * buy, 20, 95.0 * (1 - SLIP), "stop_loss", True),
        (2, 20, 120.0 * buy, 30, 130.0, "max_holding", False),
        # book 1, column 1: weight 0 while flat is no trade; take profit at its level (no fill)
        (3, 10, 55.0 * buy, 30, 66.0, "take_profit", False),
    ]


def test_every_exit_kind_by_hand() -> None:
    assert _ledger(signals=True, last_window=False) == _expected("signal", "rebalance")


def test_rebalance_mode_and_last_window() -> None:
    """Without signals a weight-0 exit is a rebalance; in the last window the end is ``end``."""
    assert _ledger(signals=False, last_window=True) == _expected("rebalance", "end")


def test_books_are_independent() -> None:
    """Book 1 alone gives the same trades as beside book 0 (columns renumbered)."""
    t = window_trades(W1, [STOPS1], [FILLS1], OPENS, LAST_CLOSE, DELIST, TS, 10, SLIP, signals=True, last_window=False)
    both = [row for row in _ledger(signals=True, last_window=False) if row[0] >= 2]
    assert [int(c) + 2 for c in t.col] == [row[0] for row in both]
    np.testing.assert_array_equal(t.exit_price, [row[4] for row in both])
