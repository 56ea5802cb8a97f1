"""Stop exits of long positions, found bar by bar on OHLC (numba, no vectorbt).

This module docstring is the specification of the exit rules; ``docs/EXIT_RULES.md`` explains
how the simulator turns its output into orders and how the state lives across windows.

Positions and their risk state
    ``weights[i, c]`` is NaN (no order at bar ``i``) or a finite target fraction ``w >= 0``
    executed at bar ``i``'s open. A position opens on a bar with ``w > 0`` while the column is
    flat and closes on a bar with ``w == 0`` or at a stop exit. Its risk state is

    * the cost basis: the size-weighted average of its buy fills (slippage included) since it
      opened; sells leave it unchanged. An opening buy fills at ``open * (1 + slippage)``; the
      basis after a top-up (``w > 0`` while in position) needs the top-up's fill size, which the
      caller (the simulator) supplies through ``topup`` (see :func:`find_stop_exits_grid`);
    * the trailing peak: starts at the opening fill and is raised by each later bar's high;
    * the opening time: the open time of the opening bar (the holding clock).

    A top-up or a reduction changes neither the peak nor the clock. The state can be handed in
    (a position carried from an earlier window) and is handed back after the last bar, so a
    position's exits never depend on where a caller splits the bars into calls.

Order of events within a bar, for a column in position
    1. Holding limit: if the bar opens at or after ``opened + max_holding``, the position is
       closed at the open (kind ``max_holding``), before and instead of any order of the bar.
    2. If the bar carries an order: a gap through a level at the open (``open <= stop-loss
       level`` or ``open >= TP``, levels of the state before the order) closes the position at
       the open, instead of the order. Otherwise ``w == 0`` closes it (not a stop exit) and
       ``w > 0`` re-weights it (``held_reweights="all"``) or is ignored (``"first_bar"``: only bar
       0, the walk-forward's rebalance, re-weights; later entries of a held column are dropped).
    3. The intrabar checks below, with the state after the bar's order.
    Exits of steps 1 and 2 are flagged ``at_open`` (they fill in the bar's open row, replacing the
    bar's order). After any exit the column stays flat until its next bar with ``w > 0``.

Entry bar
    The bar that opens a position is itself checked: the position exists from the open, so the
    whole range of that bar comes after the entry.

Levels
    ``SL = basis * (1 - fixed_sl)``, ``TP = basis * (1 + tp_stop)``,
    ``trailing = peak * (1 - trail_fraction)``. The peak is raised by a bar's high only AFTER
    that bar's checks, so a bar's own high never arms a trailing exit in the same bar (vectorbt's
    ``from_signals`` updates its trailing stop the same way). The effective stop-loss level is
    ``max(SL, trailing)``; its kind is ``trailing`` when the trailing level is strictly higher,
    else ``stop_loss``.

Intrabar fill rules, in this order
    1. ``open <= stop-loss level``: fill at the open (gap), kind as above.
    2. ``open >= TP``: fill at the open (gap), take profit.
    3. ``low <= stop-loss level`` and ``high >= TP``: ambiguous, the path inside the bar is
       unknown. ``pessimistic`` fills the stop loss at its level, ``optimistic`` the take profit
       at its level; both set the ambiguous flag.
    4. ``low <= stop-loss level``: fill at that level.
    5. ``high >= TP``: fill at TP.

    The fill price returned is the raw level (or open); the simulator applies slippage and fees
    on top, as for any other sell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from engine.config.exit_rules import ExitRules
from engine.simulation.fills import rows_nb

STOP_LOSS = 1
TAKE_PROFIT = 2
TRAILING = 3
MAX_HOLDING = 4
LIQUIDATION = 5  # a leveraged position's margin at maintenance (engine/simulation/margin.py)

EXIT_KIND_NAMES: dict[int, str] = {
    STOP_LOSS: "stop_loss",
    TAKE_PROFIT: "take_profit",
    TRAILING: "trailing",
    MAX_HOLDING: "max_holding",
    LIQUIDATION: "liquidation",
}
"""Name of each exit kind code, as used in the ``reason`` and ``kind`` columns of results."""

ORDER_REASONS: tuple[str, ...] = (
    "rebalance",
    *(EXIT_KIND_NAMES[k] for k in sorted(EXIT_KIND_NAMES)),
    "signal",
    "delisted",
)
"""Reason of an order by code: 0 a rebalance, 1-5 the exit kinds; the walk-forward engine labels a
rebalance-mode order placed by a signal (6) and the sale of a delisted symbol (7)."""
ORDER_SIDES = ("buy", "sell")  # vectorbt's OrderSide codes

Ambiguity = Literal["pessimistic", "optimistic"]


def ambiguity_check(value: object) -> Ambiguity:
    """``value`` if it is an ambiguity policy (which exit wins a bar holding both SL and TP)."""
    if value not in ("pessimistic", "optimistic"):
        msg = f"ambiguity must be 'pessimistic' or 'optimistic', got {value!r}"
        raise ValueError(msg)
    return value


HeldReweights = Literal["all", "first_bar"]


@dataclass(frozen=True)
class StopState:
    """Risk state of each column's open position (see the module docstring).

    Attributes
    ----------
    basis : np.ndarray
        (n_cols,) float64 cost basis, NaN where the column is flat.
    peak : np.ndarray
        (n_cols,) float64 highest price since the position opened (its opening fill, then highs).
    opened_ns : np.ndarray
        (n_cols,) int64 open time of the bar that opened the position (epoch ns).
    """

    basis: np.ndarray
    peak: np.ndarray
    opened_ns: np.ndarray

    @classmethod
    def flat(cls, n_cols: int) -> StopState:
        """Every column flat."""
        return cls(np.full(n_cols, np.nan), np.full(n_cols, np.nan), np.zeros(n_cols, dtype=np.int64))

    @classmethod
    def concat(cls, states: list[StopState]) -> StopState:
        """Columns of several states side by side."""
        return cls(
            np.concatenate([s.basis for s in states]),
            np.concatenate([s.peak for s in states]),
            np.concatenate([s.opened_ns for s in states]),
        )

    def take(self, cols: slice) -> StopState:
        """Return the state of some columns (copies)."""
        return StopState(self.basis[cols].copy(), self.peak[cols].copy(), self.opened_ns[cols].copy())

    def view(self, cols: slice) -> StopState:
        """Return the state of some columns (views: for a finished scan's state)."""
        return StopState(self.basis[cols], self.peak[cols], self.opened_ns[cols])


@dataclass(frozen=True)
class StopExits:
    """Stop exits in bar-major order (sorted by bar, then column), and the state after the bars.

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
    at_open : np.ndarray
        bool, True for exits at the bar's open that replace the bar's order (holding limit, or
        a gap through a level on a bar with an order): they fill in the bar's open row.
    dropped_bar, dropped_col : np.ndarray
        int64 orders dropped (``held_reweights="first_bar"``: an entry of a column already held).
    end : StopState or None
        The state after the last bar.
    """

    bar: np.ndarray
    col: np.ndarray
    kind: np.ndarray
    price: np.ndarray
    ambiguous: np.ndarray
    at_open: np.ndarray | None = None
    dropped_bar: np.ndarray | None = None
    dropped_col: np.ndarray | None = None
    end: StopState | None = None

    def __len__(self) -> int:
        """Return the number of exits."""
        return len(self.bar)


@njit(cache=True)
def _levels(basis: float, peak: float, fixed_sl: float, tp_stop: float, trail: float) -> tuple[float, int, float]:
    """(stop-loss level, its kind, take-profit level) of a position."""
    sl_level = -np.inf
    sl_kind = STOP_LOSS
    if not np.isnan(fixed_sl):
        sl_level = basis * (1.0 - fixed_sl)
    if not np.isnan(trail):
        trail_level = peak * (1.0 - trail)
        if trail_level > sl_level:
            sl_level = trail_level
            sl_kind = TRAILING
    tp_level = basis * (1.0 + tp_stop) if not np.isnan(tp_stop) else np.inf
    return sl_level, sl_kind, tp_level


@njit(cache=True)
def _open_exit(
    o: float, w: float, t: int, basis: float, peak: float, opened: int, sl: float, tp: float, trail: float, hold: int
) -> tuple[int, float]:
    """Apply steps 1-2 of a held column's bar: (kind, fill) of an exit at the open, or (0, nan)."""
    if hold >= 0 and t - opened >= hold:
        return MAX_HOLDING, o
    if np.isnan(w):
        return 0, np.nan
    sl_level, sl_kind, tp_level = _levels(basis, peak, sl, tp, trail)
    if o <= sl_level:
        return sl_kind, o
    if o >= tp_level:
        return TAKE_PROFIT, o
    return 0, np.nan


@njit(cache=True)
def _intrabar_exit(
    o: float, h: float, lo: float, basis: float, peak: float, sl: float, tp: float, trail: float, pessimistic: bool
) -> tuple[int, float, bool]:
    """Apply the intrabar fill rules to a held column's bar: (kind, fill, ambiguous), kind 0 = no exit."""
    sl_level, sl_kind, tp_level = _levels(basis, peak, sl, tp, trail)
    if o <= sl_level:
        return sl_kind, o, False
    if o >= tp_level:
        return TAKE_PROFIT, o, False
    hit_sl = lo <= sl_level
    hit_tp = h >= tp_level
    if hit_sl and hit_tp:
        if pessimistic:
            return sl_kind, sl_level, True
        return TAKE_PROFIT, tp_level, True
    if hit_sl:
        return sl_kind, sl_level, False
    if hit_tp:
        return TAKE_PROFIT, tp_level, False
    return 0, np.nan, False


@njit(cache=True)
def _emit(
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    k: int,
    i: int,
    c: int,
    kind: int,
    price: float,
    amb: bool,
    at_open: bool,
) -> int:
    """Write exit ``k`` into the output arrays; return the next free slot."""
    out[0][k] = i
    out[1][k] = c
    out[2][k] = kind
    out[3][k] = price
    out[4][k] = amb
    out[5][k] = at_open
    return k + 1


@njit(cache=True)
def _needs_topup(
    i: int, t: int, open_: np.ndarray, weights: np.ndarray, basis: np.ndarray, peak: np.ndarray,
    opened_ns: np.ndarray, fixed_sl: np.ndarray, tp_stop: np.ndarray, trail: np.ndarray, max_holding_ns: np.ndarray,
) -> bool:  # fmt: skip
    """Tell whether bar ``i`` re-weights a held column that no exit at the open closes first."""
    for c in range(weights.shape[1]):
        w = weights[i, c]
        if np.isnan(basis[c]) or np.isnan(w) or w <= 0.0:
            continue
        kind, _ = _open_exit(
            open_[i, c], w, t, basis[c], peak[c], opened_ns[c], fixed_sl[c], tp_stop[c], trail[c], max_holding_ns[c]
        )
        if kind == 0:
            return True
    return False


@njit(cache=True)
def _open_exits_at(
    i: int, t: int, open_: np.ndarray, weights: np.ndarray, basis: np.ndarray, peak: np.ndarray,
    opened_ns: np.ndarray, fixed_sl: np.ndarray, tp_stop: np.ndarray, trail: np.ndarray, max_holding_ns: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], k: int, done: np.ndarray,
    close: bool, size_w: np.ndarray, price_w: np.ndarray, off: int,
) -> int:  # fmt: skip
    """Write the exits at bar ``i``'s open of the held columns (they come before the bar's orders).

    With ``close`` the positions are closed and the exits written into the order arrays too.
    """
    r = off + 2 * i
    for c in range(weights.shape[1]):
        done[c] = False
        if np.isnan(basis[c]):
            continue
        kind, price = _open_exit(
            open_[i, c], weights[i, c], t, basis[c], peak[c], opened_ns[c], fixed_sl[c], tp_stop[c], trail[c],
            max_holding_ns[c],
        )  # fmt: skip
        if kind != 0:
            k = _emit(out, k, i, c, kind, price, False, True)
            if close:
                basis[c] = np.nan
                done[c] = True
                size_w[r, c] = 0.0
                price_w[r, c] = price
    return k


@njit(cache=True)
def _bar_nb(
    i: int, t: int, topped: bool, open_: np.ndarray, high: np.ndarray, low: np.ndarray, weights: np.ndarray,
    slippage: float, fixed_sl: np.ndarray, tp_stop: np.ndarray, trail: np.ndarray, max_holding_ns: np.ndarray,
    pessimistic: bool, first_only: bool, basis: np.ndarray, peak: np.ndarray, opened_ns: np.ndarray,
    topup_bar: int, topup_basis: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    drop_bar: np.ndarray, drop_col: np.ndarray, k: int, nd: int, done: np.ndarray,
    fills: bool, size_w: np.ndarray, price_w: np.ndarray, off: int,
) -> tuple[int, int]:  # fmt: skip
    """Scan the columns of bar ``i`` by the rules of the module docstring.

    Returns the new ends of the exits and drops written.
    """
    n_cols = weights.shape[1]
    for c in range(n_cols):
        w = weights[i, c]
        o = open_[i, c]
        if topped and done[c]:
            continue  # closed at this bar's open before its top-ups were walked
        if not np.isnan(basis[c]):
            kind, price = _open_exit(
                o, w, t, basis[c], peak[c], opened_ns[c], fixed_sl[c], tp_stop[c], trail[c], max_holding_ns[c]
            )
            if kind != 0:
                k = _emit(out, k, i, c, kind, price, False, True)
                basis[c] = np.nan
                if fills:
                    size_w[off + 2 * i, c] = 0.0
                    price_w[off + 2 * i, c] = price
                continue
            if not np.isnan(w):
                if w == 0.0:
                    basis[c] = np.nan
                    continue
                if first_only and i > 0:
                    drop_bar[nd] = i
                    drop_col[nd] = c
                    nd += 1
                    if fills:
                        size_w[off + 2 * i, c] = np.nan
                elif i == topup_bar and not topped and not np.isnan(topup_basis[c]):
                    basis[c] = topup_basis[c]
        elif not np.isnan(w) and w > 0.0:
            basis[c] = o * (1.0 + slippage)
            peak[c] = basis[c]
            opened_ns[c] = t
        else:
            continue
        kind, price, amb = _intrabar_exit(
            o, high[i, c], low[i, c], basis[c], peak[c], fixed_sl[c], tp_stop[c], trail[c], pessimistic
        )
        if kind != 0:
            k = _emit(out, k, i, c, kind, price, amb, False)
            basis[c] = np.nan
            if fills:
                size_w[off + 2 * i + 1, c] = 0.0
                price_w[off + 2 * i + 1, c] = price
        elif high[i, c] > peak[c]:
            peak[c] = high[i, c]
    return k, nd


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
    first_only: bool,
    start: int,
    basis: np.ndarray,
    peak: np.ndarray,
    opened_ns: np.ndarray,
    topup_bar: int,
    topup_basis: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    drop_bar: np.ndarray,
    drop_col: np.ndarray,
    k: int,
    nd: int,
    ask: bool,
) -> tuple[int, int, int]:
    """Scan the columns from bar ``start`` and write their stop exits (see the module docstring).

    Parameters
    ----------
    open_, high, low, weights : np.ndarray
        (n_bars, n_cols) float64.
    index_ns : np.ndarray
        (n_bars,) int64 bar open times.
    slippage : float
        Fraction added to the open to get an opening buy's fill price.
    fixed_sl, tp_stop, trail : np.ndarray
        (n_cols,) fractions of each column, NaN where the rule is not set (columns of several
        books of an exit-rule grid side by side have their own rules).
    max_holding_ns : np.ndarray
        (n_cols,) int64 maximum holding time, negative where not set.
    pessimistic : bool
        Which exit wins in an ambiguous bar: stop loss (True) or take profit (False).
    first_only : bool
        ``held_reweights="first_bar"``: a positive weight on a held column after bar 0 is dropped.
    start : int
        First bar to scan.
    basis, peak, opened_ns : np.ndarray
        (n_cols,) state at the start of bar ``start`` (basis NaN = flat); updated in place.
    topup_bar : int
        The bar whose re-weights' resulting cost basis ``topup_basis`` holds (NaN: unchanged).
    out : tuple of np.ndarray
        Output buffers ``(bar, col, kind, price, ambiguous, at_open)`` of ``n_bars * n_cols``
        exits (a column exits at most once per bar), written from index ``k``; ``drop_bar`` and
        ``drop_col`` the same for dropped orders, from index ``nd``.
    ask : bool
        Stop at a top-up bar for the caller to supply the new basis (``need``); False: a top-up
        keeps the basis, as no fills are known. (:func:`stop_exits_walk_nb` walks the fills itself.)

    Returns
    -------
    tuple
        ``(k, nd, need)``: the ends of the written exits and drops, and ``need``: -1 once every
        bar is scanned; otherwise a bar (``!= topup_bar``) that re-weights a held column: the scan
        stopped there with the state at the start of that bar, the exits written are those before
        it plus that bar's exits at the open. The caller gets the top-up fills up to that bar's
        open and scans again from it (writing over that bar's exits).
    """
    n_bars, n_cols = weights.shape
    done = np.zeros(n_cols, dtype=np.bool_)
    no_w = np.empty((1, 1))  # no order arrays: this scan writes its exits only to ``out``
    rules = (fixed_sl, tp_stop, trail, max_holding_ns)
    # Bars outer, columns inner: the arrays are row-major, so this walks memory in order.
    for i in range(start, n_bars):
        t = index_ns[i]
        if (
            ask
            and i != topup_bar
            and not (first_only and i > 0)
            and _needs_topup(i, t, open_, weights, basis, peak, opened_ns, *rules)
        ):
            k = _open_exits_at(i, t, open_, weights, basis, peak, opened_ns, *rules, out, k, done, False, no_w, no_w, 0)
            return k, nd, i  # the caller gets the top-up fills and scans again from this bar
        k, nd = _bar_nb(
            i, t, False, open_, high, low, weights, slippage, *rules, pessimistic, first_only, basis, peak,
            opened_ns, topup_bar, topup_basis, out, drop_bar, drop_col, k, nd, done, False, no_w, no_w, 0,
        )  # fmt: skip
    return k, nd, -1


@njit(cache=True)
def stop_exits_walk_nb(
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
    first_only: bool,
    basis: np.ndarray,
    peak: np.ndarray,
    opened_ns: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    drop_bar: np.ndarray,
    drop_col: np.ndarray,
    size_w: np.ndarray,
    price_w: np.ndarray,
    row_args: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cash: np.ndarray,
    position: np.ndarray,
    off: int,
    taken: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[int, int]:
    """Scan like :func:`stop_exits_nb` from bar 0, getting the top-up fills itself.

    The exits are also written into the order arrays ``size_w`` / ``price_w`` (rows ``off + 2 *
    bar`` at the open, ``+ 1`` inside the bar), and at a bar that re-weights a held column the rows
    not yet walked up to its open are walked by :func:`engine.simulation.fills.rows_nb`
    (``row_args``: per-row size types, fees, slippage and the group lengths; ``cash`` per group and
    ``position`` per column carry its state). ``taken`` receives, per bar, the buys (quantity,
    value) of a top-up bar and a flag, for the caller to check against vectorbt's fills. Returns
    the ends of the exits and drops written.
    """
    n_bars, n_cols = weights.shape
    done = np.zeros(n_cols, dtype=np.bool_)
    rules = (fixed_sl, tp_stop, trail, max_holding_ns)
    no_topup = np.full(n_cols, np.nan)
    k = nd = walked = 0
    for i in range(n_bars):
        t = index_ns[i]
        topped = False
        if not (first_only and i > 0) and _needs_topup(i, t, open_, weights, basis, peak, opened_ns, *rules):
            r = off + 2 * i
            k = _open_exits_at(
                i, t, open_, weights, basis, peak, opened_ns, *rules, out, k, done, True, size_w, price_w, off
            )
            q, v, before = taken[0][i], taken[1][i], np.zeros(n_cols)
            rows_nb(
                size_w[walked : r + 1], price_w[walked : r + 1], row_args[0][walked : r + 1],
                row_args[1][walked : r + 1], row_args[2][walked : r + 1], row_args[3], 1e-8, cash, position,
                r - walked, q, v, before,
            )  # fmt: skip
            walked = r + 1
            taken[2][i] = True
            for c in range(n_cols):
                if q[c] > 0 and not np.isnan(basis[c]):
                    basis[c] = (before[c] * basis[c] + v[c]) / (before[c] + q[c])
            topped = True
        k, nd = _bar_nb(
            i, t, topped, open_, high, low, weights, slippage, *rules, pessimistic, first_only, basis, peak,
            opened_ns, -1, no_topup, out, drop_bar, drop_col, k, nd, done, True, size_w, price_w, off,
        )  # fmt: skip
    return k, nd


WalkArgs = tuple[
    bool,
    np.ndarray,
    np.ndarray,
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    np.ndarray,
    np.ndarray,
    int,
    np.ndarray,
    tuple[np.ndarray, np.ndarray, np.ndarray],
]
"""The trailing arguments of ``stop_exits_nb`` from ``fills`` on (see :meth:`FillWalk.args`)."""


@dataclass
class FillWalk:
    """The order arrays and portfolio state a scan walks to get top-up fills itself.

    See ``stop_exits_nb``'s ``fills``: columns are the scanned (grid) columns, rows the simulator's
    two-rows-per-bar grid with ``off`` leading carry rows.
    """

    size: np.ndarray
    price: np.ndarray
    size_type: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    group_lens: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    off: int
    taken_q: np.ndarray
    taken_v: np.ndarray
    taken: np.ndarray


TopUp = Callable[[int, StopExits, np.ndarray], np.ndarray]
"""``topup(bar, exits, basis)``: the cost basis of every (grid) column after the buys of ``bar``'s
open, given the exits found since the previous top-up bar (that bar's own exits included, and
those of ``bar`` at its open) and the basis before; NaN where the bar bought nothing for a column.
Calls come in increasing bar order."""


def find_stop_exits(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    exit_rules: ExitRules,
    slippage: float = 0.0,
    ambiguity: Ambiguity = "pessimistic",
    *,
    state: StopState | None = None,
    topup: TopUp | None = None,
    held_reweights: HeldReweights = "all",
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
        Buy slippage fraction, part of an opening fill.
    ambiguity : {"pessimistic", "optimistic"}, default "pessimistic"
        Which exit wins when stop loss and take profit are both inside one bar.
    state : StopState or None
        The positions held before the first bar (None: all flat).
    topup : callable or None
        Supplies the cost basis after a re-weight's fills (the simulator passes one); None keeps
        the basis of a re-weighted position unchanged (no fills are known here).
    held_reweights : {"all", "first_bar"}
        Whether a positive weight on a held column re-weights it at any bar or only at bar 0.

    Returns
    -------
    StopExits
        Exits sorted by bar, then column, with the state after the last bar.

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
    return find_stop_exits_grid(
        open_,
        high,
        low,
        index,
        weights,
        [exit_rules],
        slippage,
        ambiguity,
        state=None if state is None else [state],
        topup=topup,
        held_reweights=held_reweights,
    )[0]


def _rule_arrays(exit_rules: list[ExitRules | None], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column rule arrays of books side by side (NaN / -1 where a rule is not set)."""

    def per_col(values: list[float | int | None], fill: float | int, dtype: type) -> np.ndarray:
        return np.repeat(np.array([fill if v is None else v for v in values], dtype=dtype), k)

    return (
        per_col([None if r is None else r.fixed_sl for r in exit_rules], np.nan, np.float64),
        per_col([None if r is None else r.tp_stop for r in exit_rules], np.nan, np.float64),
        per_col([None if r is None else r.trail_fraction for r in exit_rules], np.nan, np.float64),
        per_col([None if r is None else r.max_holding_ns for r in exit_rules], -1, np.int64),
    )


def find_stop_exits_grid(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    exit_rules: list[ExitRules | None],
    slippage: float = 0.0,
    ambiguity: Ambiguity = "pessimistic",
    *,
    state: list[StopState | None] | None = None,
    topup: TopUp | None = None,
    held_reweights: HeldReweights = "all",
) -> list[StopExits]:
    """Return the stop exits of several books on the same prices, in one kernel scan.

    ``weights`` is (n_bars, n_books * n_cols): book after book, each with the columns of the
    (n_bars, n_cols) prices and its own ``exit_rules`` (None: no rule, only the positions are
    tracked). Each book's exits equal :func:`find_stop_exits` on its weights alone (columns do not
    interact in the scan). ``state`` holds each book's positions before the first bar; ``topup``
    gets and returns grid-wide arrays (all books' columns).
    """
    ambiguity_check(ambiguity)
    if held_reweights not in ("all", "first_bar"):
        msg = f"held_reweights must be 'all' or 'first_bar', got {held_reweights!r}"
        raise ValueError(msg)
    g, k = len(exit_rules), np.shape(open_)[1]
    if np.shape(weights)[1] != g * k:
        msg = f"weights must have {g} x {k} columns (one block of the price columns per book)"
        raise ValueError(msg)
    states = state if state is not None else [None] * g
    if len(states) != g:
        msg = f"state must hold one StopState (or None) per book, got {len(states)} for {g} books"
        raise ValueError(msg)
    st = StopState.concat([StopState.flat(k) if s is None else s.take(slice(None)) for s in states])
    if st.basis.shape != (g * k,):
        msg = f"each book's state must have {k} columns"
        raise ValueError(msg)

    return split_books(
        scan_grid(open_, high, low, index, weights, exit_rules, slippage, ambiguity, st, topup, held_reweights), g, k
    )


def scan_grid(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray,
    exit_rules: list[ExitRules | None],
    slippage: float,
    ambiguity: Ambiguity,
    st: StopState,
    topup: TopUp | None,
    held_reweights: HeldReweights,
    fills: FillWalk | None = None,
) -> StopExits:
    """Scan all books' columns side by side for :func:`find_stop_exits_grid`.

    Returns one :class:`StopExits` (``col`` indexes the grid; ``st``, the grid's state, is updated in place).
    With ``fills`` the top-up fills are walked inside the scan (``topup`` is not called).
    """
    g, k = len(exit_rules), np.shape(open_)[1]
    tile = (lambda a: a) if g == 1 else (lambda a: np.tile(a, (1, g)))
    o, h, lo = (tile(np.ascontiguousarray(a, dtype=np.float64)) for a in (open_, high, low))
    index_ns = np.asarray(index, dtype="datetime64[ns]").view(np.int64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    fixed_sl, tp_stop, trail, max_holding_ns = _rule_arrays(exit_rules, k)
    cap = np.shape(w)[0] * g * k  # a column exits at most once per bar
    out = (
        np.empty(cap, dtype=np.int64),
        np.empty(cap, dtype=np.int64),
        np.empty(cap, dtype=np.int8),
        np.empty(cap, dtype=np.float64),
        np.empty(cap, dtype=np.bool_),
        np.empty(cap, dtype=np.bool_),
    )
    n_drop = cap if held_reweights == "first_bar" else 0  # only the signal mode drops orders
    drop_bar, drop_col = np.empty(n_drop, dtype=np.int64), np.empty(n_drop, dtype=np.int64)
    pessimistic, first_only = ambiguity == "pessimistic", held_reweights == "first_bar"
    if fills is not None:  # one scan that walks its top-up fills itself
        n_exits, n_drops = stop_exits_walk_nb(
            o, h, lo, index_ns, w, float(slippage), fixed_sl, tp_stop, trail, max_holding_ns, pessimistic,
            first_only, st.basis, st.peak, st.opened_ns, out, drop_bar, drop_col, fills.size, fills.price,
            (fills.size_type, fills.fees, fills.slippage, fills.group_lens), fills.cash, fills.position, fills.off,
            (fills.taken_q, fills.taken_v, fills.taken),
        )  # fmt: skip
        return StopExits(*_cut(out, 0, n_exits), drop_bar[:n_drops], drop_col[:n_drops], st)
    start, topup_bar, topup_basis = 0, -1, np.full(g * k, np.nan)
    n_exits = n_drops = since = 0  # ``since``: first exit of the bars from the last top-up bar on
    while True:
        end, n_drops, need = stop_exits_nb(
            o, h, lo, index_ns, w, float(slippage), fixed_sl, tp_stop, trail, max_holding_ns, pessimistic,
            first_only, start, st.basis, st.peak, st.opened_ns, topup_bar, topup_basis,
            out, drop_bar, drop_col, n_exits, n_drops, topup is not None,
        )  # fmt: skip
        if need < 0:
            n_exits = end
            break
        if topup is not None:  # the exits from the previous top-up bar on, this bar's at its open included
            recent = StopExits(*_cut(out, since, end))
            topup_basis = np.asarray(topup(need, recent, st.basis.copy()), dtype=np.float64)
        # the bar's exits at the open are found again by the next scan, which writes over them
        n_exits = since = since + int(np.searchsorted(out[0][since:end], need))
        start, topup_bar = need, need
    return StopExits(*_cut(out, 0, n_exits), drop_bar[:n_drops], drop_col[:n_drops], st)


_ExitBuffers = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _cut(out: _ExitBuffers, lo: int, hi: int) -> _ExitBuffers:
    """Rows ``lo:hi`` of each of the kernel's exit buffers (views)."""
    bar, col, kind, price, ambiguous, at_open = out
    return bar[lo:hi], col[lo:hi], kind[lo:hi], price[lo:hi], ambiguous[lo:hi], at_open[lo:hi]


def split_books(e: StopExits, g: int, k: int) -> list[StopExits]:
    """Return a grid scan's exits and state, book by book (columns renumbered from 0 in each)."""
    if g == 1:
        return [e]
    assert e.dropped_col is not None and e.dropped_bar is not None and e.at_open is not None and e.end is not None
    out = []
    book, dbook = e.col // k, e.dropped_col // k
    order = np.argsort(book, kind="stable")  # stays sorted by bar, then column, within a book
    bounds = np.searchsorted(book[order], np.arange(g + 1))
    for b in range(g):
        sel = order[bounds[b] : bounds[b + 1]]
        mine = dbook == b
        out.append(
            StopExits(
                e.bar[sel],
                e.col[sel] - b * k,
                e.kind[sel],
                e.price[sel],
                e.ambiguous[sel],
                e.at_open[sel],
                e.dropped_bar[mine],
                e.dropped_col[mine] - b * k,
                e.end.view(slice(b * k, (b + 1) * k)),
            )
        )
    return out
