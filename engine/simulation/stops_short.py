"""Stop exits of short positions: the rules of :mod:`engine.simulation.stops`, mirrored (numba).

A short position (negative shares) has its cost basis at the size-weighted average of its sell
fills (slippage included), its *trough* (the lowest price since it opened: the opening fill, then
each later bar's low, raised only after that bar's checks) and its opening time. Its levels are

    SL = basis * (1 + fixed_sl),   TP = basis * (1 - tp_stop),   trailing = trough * (1 + trail)

and the effective stop-loss level is ``min(SL, trailing)`` (kind ``trailing`` when the trailing
level is strictly lower). The order of events and the fill rules are the long side's with the
inequalities turned round:

1. holding limit at the open (``max_holding``), as for longs;
2. on a bar with an order: ``open >= stop-loss level`` or ``open <= TP`` closes at the open;
3. inside the bar: ``open >= SL level`` fills at the open (gap); ``open <= TP`` at the open;
   ``high >= SL level`` and ``low <= TP``: ambiguous, pessimistic takes the stop loss at its
   level, optimistic the take profit; else ``high >= SL level`` at that level; ``low <= TP`` at TP.

The prices returned are the raw levels (or the open); the market kernel buys back at them with
slippage and fees against the trader. backtesting.py's ``sell(sl=..., tp=...)`` gives the same
trades (tests/test_crosscheck_short.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.simulation.stops import MAX_HOLDING, STOP_LOSS, TAKE_PROFIT, TRAILING


@njit(cache=True)
def _levels_short(
    basis: float, trough: float, fixed_sl: float, tp_stop: float, trail: float
) -> tuple[float, int, float]:
    """(stop-loss level, its kind, take-profit level) of a short position."""
    sl_level = np.inf
    sl_kind = STOP_LOSS
    if not np.isnan(fixed_sl):
        sl_level = basis * (1.0 + fixed_sl)
    if not np.isnan(trail):
        trail_level = trough * (1.0 + trail)
        if trail_level < sl_level:
            sl_level = trail_level
            sl_kind = TRAILING
    tp_level = basis * (1.0 - tp_stop) if not np.isnan(tp_stop) else -np.inf
    return sl_level, sl_kind, tp_level


@njit(cache=True)
def _open_exit_short(
    o: float, w: float, t: int, basis: float, trough: float, opened: int, sl: float, tp: float, trail: float, hold: int
) -> tuple[int, float]:
    """Apply steps 1-2 of a held short column's bar: (kind, fill) of an exit at the open, or (0, nan)."""
    if hold >= 0 and t - opened >= hold:
        return MAX_HOLDING, o
    if np.isnan(w):
        return 0, np.nan
    sl_level, sl_kind, tp_level = _levels_short(basis, trough, sl, tp, trail)
    if o >= sl_level:
        return sl_kind, o
    if o <= tp_level:
        return TAKE_PROFIT, o
    return 0, np.nan


@njit(cache=True)
def _intrabar_exit_short(
    o: float, h: float, lo: float, basis: float, trough: float, sl: float, tp: float, trail: float, pessimistic: bool
) -> tuple[int, float, bool]:
    """Apply the intrabar fill rules to a held short column's bar: (kind, fill, ambiguous), kind 0 = no exit."""
    sl_level, sl_kind, tp_level = _levels_short(basis, trough, sl, tp, trail)
    if o >= sl_level:
        return sl_kind, o, False
    if o <= tp_level:
        return TAKE_PROFIT, o, False
    hit_sl = h >= sl_level
    hit_tp = lo <= tp_level
    if hit_sl and hit_tp:
        if pessimistic:
            return sl_kind, sl_level, True
        return TAKE_PROFIT, tp_level, True
    if hit_sl:
        return sl_kind, sl_level, False
    if hit_tp:
        return TAKE_PROFIT, tp_level, False
    return 0, np.nan, False
