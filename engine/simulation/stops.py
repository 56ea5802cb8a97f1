"""Stop exits of long positions, found bar by bar on OHLC (numba, no vectorbt).

This module docstring is the specification of the exit rules; ``docs/EXIT_RULES.md`` explains
how the simulator turns its output into orders.

Positions
    ``weights[i, c]`` is NaN (no order at bar ``i``) or a finite target fraction ``w >= 0``
    executed at bar ``i``'s open. A position in column ``c`` is open from a bar with ``w > 0``
    until a bar with ``w == 0`` or a stop exit. After a stop exit the column stays flat until the
    next bar with a finite ``w > 0``: there is no re-entry in between.

Reference price
    Every bar with ``w > 0`` (entry or re-weighting) resets the stop reference to that bar's buy
    fill price ``ref = open * (1 + slippage)`` and restarts the trailing peak at ``ref``.

Entry bar
    The bar that opens (or re-weights) a position is itself checked: the position exists from the
    open, so the whole range of that bar comes after the entry.

Levels
    ``SL = ref * (1 - fixed_sl)``, ``TP = ref * (1 + tp_stop)``,
    ``trailing = peak * (1 - trail_fraction)``. The peak is raised by a bar's high only AFTER
    that bar's checks, so a bar's own high never arms a trailing exit in the same bar (vectorbt's
    ``from_signals`` updates its trailing stop the same way). The effective stop-loss level is
    ``max(SL, trailing)``; its kind is ``trailing`` when the trailing level is strictly higher,
    else ``stop_loss``.

Fill rules, in this order
    1. ``open <= stop-loss level``: fill at the open (gap), kind as above.
    2. ``open >= TP``: fill at the open (gap), take profit.
    3. ``low <= stop-loss level`` and ``high >= TP``: ambiguous, the path inside the bar is
       unknown. ``pessimistic`` fills the stop loss at its level, ``optimistic`` the take profit
       at its level; both set the ambiguous flag.
    4. ``low <= stop-loss level``: fill at that level.
    5. ``high >= TP``: fill at TP.

    The fill price returned is the raw level (or open); the simulator applies slippage and fees
    on top, as for any other sell.

Maximum holding time
    The holding clock starts at the open time of the bar that opened the position; a re-weighting
    bar while in position resets the stop reference but NOT the clock. The position is closed at
    the OPEN of the first bar whose open time is ``>= entry time + max_holding_ns`` (kind
    ``max_holding``, fill at the open, not checked for stops afterwards). If that bar carries an
    order (finite weight), the order wins and no ``max_holding`` exit is recorded there; since the
    clock was not reset, a position still held closes at the next bar without an order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from engine.exit_rules import ExitRules

STOP_LOSS = 1
TAKE_PROFIT = 2
TRAILING = 3
MAX_HOLDING = 4

EXIT_KIND_NAMES: dict[int, str] = {
    STOP_LOSS: "stop_loss",
    TAKE_PROFIT: "take_profit",
    TRAILING: "trailing",
    MAX_HOLDING: "max_holding",
}
"""Name of each exit kind code, as used in the ``reason`` and ``kind`` columns of results."""

Ambiguity = Literal["pessimistic", "optimistic"]


@dataclass(frozen=True)
class StopExits:
    """Stop exits in bar-major order (sorted by bar, then column).

    Attributes
    ----------
    bar, col : np.ndarray
        int64 bar and column index of each exit.
    kind : np.ndarray
        int8 exit kind code (see ``EXIT_KIND_NAMES``).
    price : np.ndarray
        float64 fill price before slippage: the stop level, or the open on a gap or max holding.
    ambiguous : np.ndarray
        bool, True where stop loss and take profit were both inside the bar's range.
    """

    bar: np.ndarray
    col: np.ndarray
    kind: np.ndarray
    price: np.ndarray
    ambiguous: np.ndarray

    def __len__(self) -> int:
        """Return the number of exits."""
        return len(self.bar)


@njit(cache=True)
def stop_exits_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index_ns: np.ndarray,
    weights: np.ndarray,
    slippage: float,
    fixed_sl: np.ndarray,
    tp_stop: np.ndarray,
    trail: np.ndarray,
    max_holding_ns: np.ndarray,
    pessimistic: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scan every column over the bars and return its stop exits (see the module docstring).

    Parameters
    ----------
    open_, high, low, weights : np.ndarray
        (n_bars, n_cols) float64.
    index_ns : np.ndarray
        (n_bars,) int64 bar open times.
    slippage : float
        Fraction added to the open to get the buy fill price (the stop reference).
    fixed_sl, tp_stop, trail : np.ndarray
        (n_cols,) fractions of each column, NaN where the rule is not set (columns of several
        books of an exit-rule grid side by side have their own rules).
    max_holding_ns : np.ndarray
        (n_cols,) int64 maximum holding time, negative where not set.
    pessimistic : bool
        Which exit wins in an ambiguous bar: stop loss (True) or take profit (False).

    Returns
    -------
    tuple of np.ndarray
        ``(bar, col, kind, price, ambiguous)``, sorted by bar, then column.
    """
    n_bars, n_cols = weights.shape
    # A column exits at most once per bar, so n_bars * n_cols bounds the output.
    out_bar = np.empty(n_bars * n_cols, dtype=np.int64)
    out_col = np.empty(n_bars * n_cols, dtype=np.int64)
    out_kind = np.empty(n_bars * n_cols, dtype=np.int8)
    out_price = np.empty(n_bars * n_cols, dtype=np.float64)
    out_amb = np.empty(n_bars * n_cols, dtype=np.bool_)
    # Bars outer, columns inner: the arrays are row-major, so this walks memory in order.
    in_pos = np.zeros(n_cols, dtype=np.bool_)
    ref = np.full(n_cols, np.nan)
    peak = np.full(n_cols, np.nan)
    entry_ns = np.zeros(n_cols, dtype=np.int64)
    k = 0
    for i in range(n_bars):
        for c in range(n_cols):
            w = weights[i, c]
            o = open_[i, c]
            if not np.isnan(w):
                if w > 0.0:
                    ref[c] = o * (1.0 + slippage)
                    peak[c] = ref[c]
                    if not in_pos[c]:
                        entry_ns[c] = index_ns[i]
                        in_pos[c] = True
                else:
                    in_pos[c] = False
            elif in_pos[c] and max_holding_ns[c] >= 0 and index_ns[i] - entry_ns[c] >= max_holding_ns[c]:
                out_bar[k] = i
                out_col[k] = c
                out_kind[k] = MAX_HOLDING
                out_price[k] = o
                out_amb[k] = False
                k += 1
                in_pos[c] = False
            if not in_pos[c]:
                continue
            has_trail = not np.isnan(trail[c])
            sl_level = -np.inf
            sl_kind = STOP_LOSS
            if not np.isnan(fixed_sl[c]):
                sl_level = ref[c] * (1.0 - fixed_sl[c])
            if has_trail:
                trail_level = peak[c] * (1.0 - trail[c])
                if trail_level > sl_level:
                    sl_level = trail_level
                    sl_kind = TRAILING
            tp_level = ref[c] * (1.0 + tp_stop[c]) if not np.isnan(tp_stop[c]) else np.inf
            kind = 0
            price = np.nan
            amb = False
            if o <= sl_level:
                kind = sl_kind
                price = o
            elif o >= tp_level:
                kind = TAKE_PROFIT
                price = o
            else:
                hit_sl = low[i, c] <= sl_level
                hit_tp = high[i, c] >= tp_level
                if hit_sl and hit_tp:
                    amb = True
                    if pessimistic:
                        kind = sl_kind
                        price = sl_level
                    else:
                        kind = TAKE_PROFIT
                        price = tp_level
                elif hit_sl:
                    kind = sl_kind
                    price = sl_level
                elif hit_tp:
                    kind = TAKE_PROFIT
                    price = tp_level
            if kind != 0:
                out_bar[k] = i
                out_col[k] = c
                out_kind[k] = kind
                out_price[k] = price
                out_amb[k] = amb
                k += 1
                in_pos[c] = False
            elif has_trail and high[i, c] > peak[c]:
                peak[c] = high[i, c]
    return out_bar[:k], out_col[:k], out_kind[:k], out_price[:k], out_amb[:k]


def find_stop_exits(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    exit_rules: ExitRules,
    slippage: float = 0.0,
    ambiguity: Ambiguity = "pessimistic",
) -> StopExits:
    """Find the stop exits of every column (see the module docstring for the rules).

    Parameters
    ----------
    open_, high, low : np.ndarray
        (n_bars, n_cols) float64 prices.
    index : np.ndarray
        (n_bars,) datetime64[ns] bar open times.
    weights : np.ndarray
        (n_bars, n_cols) float64 target weights, NaN where there is no order.
    exit_rules : ExitRules
        The rules to apply.
    slippage : float, default 0.0
        Buy slippage fraction, part of the stop reference price.
    ambiguity : {"pessimistic", "optimistic"}, default "pessimistic"
        Which exit wins when stop loss and take profit are both inside one bar.

    Returns
    -------
    StopExits
        Exits sorted by bar, then column.

    Examples
    --------
    >>> import numpy as np
    >>> o = np.array([[100.0], [99.0]]); h = np.array([[101.0], [100.0]])
    >>> lo = np.array([[99.0], [94.0]]); w = np.array([[1.0], [np.nan]])
    >>> idx = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]")
    >>> ex = find_stop_exits(o, h, lo, idx, w, ExitRules(sl_stop=0.05))
    >>> int(ex.bar[0]), float(ex.price[0])
    (1, 95.0)
    """
    if ambiguity not in ("pessimistic", "optimistic"):
        msg = f"ambiguity must be 'pessimistic' or 'optimistic', got {ambiguity!r}"
        raise ValueError(msg)
    return find_stop_exits_grid(open_, high, low, index, weights, [exit_rules], slippage, ambiguity)[0]


def find_stop_exits_grid(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    exit_rules: list[ExitRules],
    slippage: float = 0.0,
    ambiguity: Ambiguity = "pessimistic",
) -> list[StopExits]:
    """The stop exits of several books on the same prices, in one kernel call.

    ``weights`` is (n_bars, n_books * n_cols): book after book, each with the columns of the
    (n_bars, n_cols) prices and its own ``exit_rules``. Each book's exits equal
    :func:`find_stop_exits` on its weights alone (columns do not interact in the scan).
    """
    if ambiguity not in ("pessimistic", "optimistic"):
        msg = f"ambiguity must be 'pessimistic' or 'optimistic', got {ambiguity!r}"
        raise ValueError(msg)
    g, k = len(exit_rules), np.shape(open_)[1]
    if np.shape(weights)[1] != g * k:
        msg = f"weights must have {g} x {k} columns (one block of the price columns per book)"
        raise ValueError(msg)

    def per_col(values: list[float | int | None], fill: float | int, dtype: type) -> np.ndarray:
        return np.repeat(np.array([fill if v is None else v for v in values], dtype=dtype), k)

    tile = (lambda a: a) if g == 1 else (lambda a: np.tile(a, (1, g)))
    bar, col, kind, price, amb = stop_exits_nb(
        tile(np.ascontiguousarray(open_, dtype=np.float64)),
        tile(np.ascontiguousarray(high, dtype=np.float64)),
        tile(np.ascontiguousarray(low, dtype=np.float64)),
        np.asarray(index, dtype="datetime64[ns]").view(np.int64),
        np.ascontiguousarray(weights, dtype=np.float64),
        float(slippage),
        per_col([r.fixed_sl for r in exit_rules], np.nan, np.float64),
        per_col([r.tp_stop for r in exit_rules], np.nan, np.float64),
        per_col([r.trail_fraction for r in exit_rules], np.nan, np.float64),
        per_col([r.max_holding_ns for r in exit_rules], -1, np.int64),
        ambiguity == "pessimistic",
    )
    if g == 1:
        return [StopExits(bar, col, kind, price, amb)]
    book = col // k
    order = np.argsort(book, kind="stable")  # stays sorted by bar, then column, within a book
    bounds = np.searchsorted(book[order], np.arange(g + 1))
    out = []
    for b in range(g):
        sel = order[bounds[b] : bounds[b + 1]]
        out.append(StopExits(bar[sel], col[sel] - b * k, kind[sel], price[sel], amb[sel]))
    return out
