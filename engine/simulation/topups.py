"""The stop scan of a simulation, with the fills its top-ups need.

A top-up (a positive weight on a held column) moves the column's cost basis by its fills, which
depend on the cash and the other columns' orders of that row: the scan stops at such a bar, the
rows up to its open are walked (by vectorbt, segment after segment, or by the numba restatement
in :mod:`engine.simulation.fills` inside the scan), and the scan resumes with the new basis.
"""

from __future__ import annotations

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.simulation.orders import OrderArrays, PerRow, orders_simulate
from engine.simulation.prices import PriceBlock
from engine.simulation.stops import (
    Ambiguity,
    FillWalk,
    HeldReweights,
    StopExits,
    StopState,
    scan_grid,
)
from engine.simulation.vbt_enums import SizeType

Taken = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Fills given to the scan: blocks of (grid rows, bought quantities, bought values), one column per grid column."""


def scan_stops(
    prices: PriceBlock,
    w_all: np.ndarray,
    exit_rules: list[ExitRules | None],
    states: list[StopState | None],
    tracked: list[int],
    policy: Ambiguity,
    held_reweights: HeldReweights,
    init: np.ndarray,
    group_lens: np.ndarray,
    off: int,
    arrays: OrderArrays,
    *,
    exact: bool,
    fee: float,
    slip: float,
    engine: str,
) -> tuple[StopExits, OrderArrays, np.ndarray | None, np.ndarray | None, Taken]:
    """Return the stop scan of the tracked books and the order arrays with its exits written in.

    A top-up needs the fills of its row: the rows up to it are walked once, segment after
    segment (each from the cash and positions the last one left), by :func:`rows_nb` or, with
    ``exact``, by vectorbt itself (segments chained by a carry row).

    Parameters
    ----------
    prices, w_all : PriceBlock, np.ndarray
        The simulated prices (``k`` columns per book) and all books' (n_bars, n_books * k) weights.
    exit_rules, states : list of ExitRules or None, list of StopState or None
        Each book's rules and carried risk state.
    tracked : list of int
        The books whose stops are scanned.
    policy : {"pessimistic", "optimistic"}
        Which exit wins when a bar's range holds both stop loss and take profit.
    held_reweights : {"all", "first_bar"}
        Whether a held column re-weights at any bar or only at bar 0.
    init, group_lens, off, arrays
        vectorbt's initial cash and columns per book, row of bar 0 and the order arrays
        (:func:`engine.simulation.orders.order_arrays`).
    exact : bool
        Take every top-up fill from vectorbt rather than from the numba walk.
    fee, slip : float
        The simulator's fees and slippage.
    engine : str
        vectorbt engine.

    Returns
    -------
    tuple
        The scan, the arrays, the reason and ambiguity grids (None without exits), and the fills
        taken per top-up row.
    """
    g, k = len(exit_rules), prices.shape[1]
    sub = len(tracked) < g
    cols_of = np.concatenate([np.arange(b * k, (b + 1) * k) for b in tracked]) if sub else slice(None)
    w_tracked = w_all[:, cols_of] if sub else w_all
    fills = TopupFills(arrays, init, off, k, tracked, cols_of, group_lens, fee, slip, engine)

    walk = None
    # a walk-forward window re-weights only at its first bar: one vectorbt segment of two rows
    # gives those fills; a call that re-weights held columns again later walks them in numba
    later_buys = held_reweights == "all" and bool((w_tracked[1:] > 0).any())
    if not exact and later_buys:  # the scan walks the rows to its top-up bars itself (numba)
        walk = _fill_walk(arrays, cols_of, init, tracked, k, off, prices.shape[0])
    grid = scan_grid(
        prices.open, prices.high, prices.low, prices.index, w_tracked,
        [exit_rules[b] for b in tracked], slip, policy,
        StopState.concat([StopState.flat(k) if (carried := states[b]) is None else carried.take(slice(None)) for b in tracked]),
        fills.topup, held_reweights, walk,
    )  # fmt: skip
    if walk is not None:
        fills.taken.append(_walk_taken(walk, cols_of, sub, g, k, off))
    assert grid.dropped_bar is not None  # scan_grid always reports its dropped orders
    if not (len(grid) or len(grid.dropped_bar)):
        return grid, arrays, None, None, fills.taken
    return grid, *_with_exits(grid, arrays, walk if not sub else None, off, k, g, tracked), fills.taken


def _with_exits(
    grid: StopExits, arrays: OrderArrays, walk: FillWalk | None, off: int, k: int, g: int, tracked: list[int]
) -> tuple[OrderArrays, np.ndarray, np.ndarray]:
    """Return the order arrays with the scan's exits written in, and the reason and ambiguity grids.

    ``walk``: the numba walk of all books' columns, whose arrays already hold the exits.
    """
    close, size0, size_type, _, fees, slippage = arrays
    n_rows = close.shape[0]
    # stop fills differ from the row's close value, so the order prices need their own array
    if walk is not None:  # the walk's arrays already hold the exits: no copies
        size, price = walk.size, walk.price
    else:
        size, price = size0.copy(), close.copy()
    reason = np.zeros((n_rows, k * g), dtype=np.int8)
    amb = np.zeros((n_rows, k * g), dtype=np.bool_)
    apply_exits(size, price, reason, amb, grid, off, k, tracked)
    return (close, size, size_type, price, fees, slippage), reason, amb


def _fill_walk(
    arrays: OrderArrays,
    cols_of: np.ndarray | slice,
    init: np.ndarray,
    tracked: list[int],
    k: int,
    off: int,
    n_bars: int,
) -> FillWalk:
    """Build the order arrays and portfolio state of the tracked columns, for the scan to walk."""
    close, size0, size_type, _, fees, slippage = arrays
    n_rows = close.shape[0]
    per_row = [np.broadcast_to(np.asarray(a, dtype=float).reshape(-1), (n_rows,)) for a in (size_type, fees, slippage)]
    return FillWalk(
        size0[:, cols_of].copy(), close[:, cols_of].copy(), per_row[0].astype(np.int64),
        np.ascontiguousarray(per_row[1]), np.ascontiguousarray(per_row[2]),
        np.full(len(tracked), k, dtype=np.int64), init[tracked].copy(), np.zeros(len(tracked) * k), off,
        np.zeros((n_bars, len(tracked) * k)), np.zeros((n_bars, len(tracked) * k)),
        np.zeros(n_bars, dtype=np.bool_),
    )  # fmt: skip


def _walk_taken(
    walk: FillWalk, cols_of: np.ndarray | slice, sub: bool, g: int, k: int, off: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the fills the walk took at its top-up bars, as a block of ``Taken`` on all grid columns."""
    bars = np.flatnonzero(walk.taken)
    lut = np.asarray(cols_of) if sub else np.arange(g * k)
    got_q, got_v = np.zeros((len(bars), g * k)), np.zeros((len(bars), g * k))
    got_q[:, lut], got_v[:, lut] = walk.taken_q[bars], walk.taken_v[bars]
    return off + 2 * bars, got_q, got_v


class TopupFills:
    """Top-up fills from vectorbt: the rows up to each top-up bar, walked segment after segment.

    Each segment starts from the cash and positions the last one left (a carry row buys the
    positions back first), so the fills are the ones the full call makes.

    Parameters
    ----------
    arrays : tuple
        The order arrays (:func:`engine.simulation.orders.order_arrays`), without the exits.
    init : np.ndarray
        (n_books,) vectorbt's initial cash.
    off : int
        Row of bar 0 in the grid.
    k : int
        Columns per book.
    tracked : list of int
        The books whose stops are scanned.
    cols_of : np.ndarray or slice
        The grid columns of the tracked books.
    group_lens : np.ndarray
        (n_books,) columns per book.
    fee, slip : float
        The simulator's fees and slippage.
    engine : str
        vectorbt engine.

    Attributes
    ----------
    row : int
        First row not walked yet.
    cash, pos : np.ndarray
        (n_books,) cash and (n_books * k,) positions after the rows walked.
    taken : Taken
        The fills given to the scan, one block per top-up row.
    """

    def __init__(
        self,
        arrays: OrderArrays,
        init: np.ndarray,
        off: int,
        k: int,
        tracked: list[int],
        cols_of: np.ndarray | slice,
        group_lens: np.ndarray,
        fee: float,
        slip: float,
        engine: str,
    ) -> None:
        self.arrays, self.off, self.k, self.g = arrays, off, k, len(init)
        self.tracked, self.cols_of, self.group_lens = tracked, cols_of, group_lens
        self.fee, self.slip, self.engine = fee, slip, engine
        self.row = 0
        self.cash = init.copy()
        self.pos = np.zeros(self.g * k)
        self.taken: Taken = []

    def topup(self, bar: int, so_far: StopExits, basis: np.ndarray) -> np.ndarray:
        """Cost basis after the buys of ``bar``'s open, from the fills of that row."""
        close, size0 = self.arrays[0], self.arrays[1]
        lo, r = int(self.row), self.off + 2 * bar
        seg_size, seg_price = size0[lo : r + 1].copy(), close[lo : r + 1].copy()
        apply_exits(seg_size, seg_price, None, None, so_far, self.off - lo, self.k, self.tracked)
        q, v, before = self._segment(seg_size, seg_price, close[lo : r + 1], lo, r)
        self.taken.append((np.array([r]), q[None, :].copy(), v[None, :].copy()))
        q, v, before = q[self.cols_of], v[self.cols_of], before[self.cols_of]
        new = np.full(basis.shape, np.nan)
        bought = (q > 0) & np.isfinite(basis)
        new[bought] = (before[bought] * basis[bought] + v[bought]) / (before[bought] + q[bought])
        return new

    def _segment(
        self, seg_size: np.ndarray, seg_price: np.ndarray, seg_close: np.ndarray, lo: int, r: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run rows ``lo..r`` through vectorbt, from the cash and positions walked so far.

        A carry row buys the positions back first. Returns the buys of row ``r`` (quantity, value)
        and the positions before it.
        """
        _, _, size_type, _, fees, slippage = self.arrays
        g, k = self.g, self.k
        if lo == 0:
            seg = (seg_close, seg_size, _rows(size_type, 0, r + 1), seg_price, _rows(fees, 0, r + 1))
            seg_slip, cash0, first = _rows(slippage, 0, r + 1), self.cash, 0
        else:
            pos = self.pos
            p0 = seg_close[0]
            cash0 = self.cash + (pos * p0).reshape(g, k).sum(axis=1)
            m = r + 1 - lo
            st = np.full((m + 1, 1), SizeType.TargetPercent, dtype=np.int64)
            st[0] = SizeType.Amount
            fe, sl = np.full((m + 1, 1), self.fee), np.full((m + 1, 1), self.slip)
            fe[0] = sl[0] = 0.0
            carry_row = np.where(pos != 0, pos, np.nan)[None, :]
            seg = (
                np.vstack([p0[None, :], seg_close]),
                np.vstack([carry_row, seg_size]),
                st,
                np.vstack([p0[None, :], seg_price]),
                fe,
            )
            seg_slip, first = sl, 1
        rec = orders_simulate(*seg, seg_slip, cash0, self.group_lens, self.engine)
        col = rec["col"]
        signed = np.where(rec["side"] == 1, -rec["size"], rec["size"])
        flow = np.where(rec["side"] == 1, 1.0, -1.0) * rec["size"] * rec["price"] - rec["fees"]
        last = first + r - lo
        before = np.bincount(col[rec["idx"] < last], weights=signed[rec["idx"] < last], minlength=g * k)
        buy = (rec["idx"] == last) & (rec["side"] == 0)
        q = np.bincount(col[buy], weights=rec["size"][buy], minlength=g * k)
        v = np.bincount(col[buy], weights=rec["size"][buy] * rec["price"][buy], minlength=g * k)
        pos_all = np.bincount(col, weights=signed, minlength=g * k)
        self.row, self.pos = r + 1, np.where(np.abs(pos_all) > 0, pos_all, 0.0)
        self.cash = cash0 + np.bincount(col // k, weights=flow, minlength=g)
        return q, v, before


def _rows(a: PerRow, lo: int, hi: int) -> PerRow:
    """Rows ``lo:hi`` of a per-row argument (a scalar applies to every row)."""
    return np.asarray(a)[lo:hi] if np.ndim(a) else a


def apply_exits(
    size: np.ndarray,
    price: np.ndarray,
    reason: np.ndarray | None,
    amb: np.ndarray | None,
    e: StopExits,
    off: int,
    k: int,
    books: list[int],
) -> None:
    """Write stop exits into the order arrays.

    The exits are of one book, or of the books ``books`` side by side in ``e.col``: a target-0
    order at the exit's price, in the bar's open row for exits at the
    open, else in the rest-of-bar row; dropped orders become no order. ``off`` is the row of bar
    0 in the arrays (rows outside them are skipped).
    """
    if len(books) == 1:
        shift = books[0] * k
        cols, dcols = e.col + shift, (e.dropped_col if e.dropped_col is not None else e.col[:0]) + shift
    else:
        lut = np.concatenate([np.arange(b * k, (b + 1) * k) for b in books])
        cols = lut[e.col]
        dcols = lut[e.dropped_col] if e.dropped_col is not None else e.col[:0]
    if e.dropped_bar is not None and len(e.dropped_bar):
        drows = off + 2 * e.dropped_bar
        inside = (drows >= 0) & (drows < size.shape[0])
        size[drows[inside], dcols[inside]] = np.nan
    at_open = e.at_open if e.at_open is not None else np.zeros(len(e), dtype=np.bool_)
    rows = off + 2 * e.bar + np.where(at_open, 0, 1)
    keep = (rows >= 0) & (rows < size.shape[0])
    rows, cols = rows[keep], cols[keep]
    price[rows, cols] = e.price[keep]
    size[rows, cols] = 0.0
    if reason is not None:
        reason[rows, cols] = e.kind[keep]
    if amb is not None:
        amb[rows, cols] = e.ambiguous[keep]
