"""The trade ledger of one window, for every book of an exit-rule grid at once (numba).

A trade of a column opens at the open of a bar with a target weight > 0 while the column is flat
(fill ``open * (1 + slippage)``) and closes at the first of:

- a bar with weight 0 at its open: kind ``delisted`` where the symbol's bars end, else
  ``rebalance`` on the window's first bar or in the rebalance mode, ``signal`` otherwise;
- a stop exit of the simulator: its kind, at the order's fill price (the level when no order
  filled), at the bar's close time, or at its open time for ``max_holding``;
- the end of the window: ``end`` in the last window, else ``rebalance``, at the last close.

A re-weighting bar (weight > 0 while in a trade) keeps the trade open. Kind codes are indices
of :data:`TRADE_KINDS`; codes 0-4 are the simulator's order reasons (0 rebalance, 1-4 exits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.simulation.stops import MAX_HOLDING
from engine.simulation.vbt import ORDER_REASONS

SIGNAL, END, DELISTED = len(ORDER_REASONS), len(ORDER_REASONS) + 1, len(ORDER_REASONS) + 2
TRADE_KINDS: tuple[str, ...] = (*ORDER_REASONS, "signal", "end", "delisted")
"""Name of each trade exit-kind code."""
REBALANCE = ORDER_REASONS.index("rebalance")


@dataclass(frozen=True)
class WindowTrades:
    """Trades of one window, columns of all books (book after book, column by column).

    Attributes
    ----------
    col : np.ndarray
        int64 grid column ``book * n_cols + column``.
    entry_time, exit_time : np.ndarray
        int64 epoch ms.
    entry_price, exit_price : np.ndarray
        float64 fill prices.
    kind : np.ndarray
        int8 index into :data:`TRADE_KINDS`.
    ambiguous : np.ndarray
        bool, exits in a bar whose range held both stop loss and take profit.
    """

    col: np.ndarray
    entry_time: np.ndarray
    entry_price: np.ndarray
    exit_time: np.ndarray
    exit_price: np.ndarray
    kind: np.ndarray
    ambiguous: np.ndarray


@njit(cache=True)
def trades_nb(
    weights: np.ndarray,
    stop_kind: np.ndarray,
    stop_price: np.ndarray,
    stop_amb: np.ndarray,
    opens: np.ndarray,
    last_close: np.ndarray,
    delist: np.ndarray,
    ts: np.ndarray,
    step: int,
    slippage: float,
    signals: bool,
    last_window: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trades of the (n_bars, n_books * n_cols) grid; see the module docstring."""
    n, n_grid = weights.shape
    k = opens.shape[1]
    cap = n_grid * n + n_grid
    o_col = np.empty(cap, dtype=np.int64)
    o_et = np.empty(cap, dtype=np.int64)
    o_ep = np.empty(cap, dtype=np.float64)
    o_xt = np.empty(cap, dtype=np.int64)
    o_xp = np.empty(cap, dtype=np.float64)
    o_kind = np.empty(cap, dtype=np.int8)
    o_amb = np.zeros(cap, dtype=np.bool_)
    m = 0
    for c in range(n_grid):
        j = c % k
        open_ = False
        for r in range(n):
            w = weights[r, c]
            s = stop_kind[r, c]
            if np.isnan(w) and s == 0:
                continue
            if w == 0.0 and open_:
                if delist[r, j]:
                    o_kind[m] = DELISTED
                elif r == 0 or not signals:
                    o_kind[m] = REBALANCE
                else:
                    o_kind[m] = SIGNAL
                o_xp[m] = opens[r, j]
                o_xt[m] = ts[r]
                m += 1
                open_ = False
            if w > 0 and not open_:
                o_col[m] = c
                o_et[m] = ts[r]
                o_ep[m] = opens[r, j] * (1.0 + slippage)
                open_ = True
            if s != 0 and open_:
                o_kind[m] = s
                o_xp[m] = stop_price[r, c]
                o_xt[m] = ts[r] + (0 if s == MAX_HOLDING else step)
                o_amb[m] = stop_amb[r, c]
                m += 1
                open_ = False
        if open_:
            o_kind[m] = END if last_window else REBALANCE
            o_xp[m] = last_close[j]
            o_xt[m] = ts[n - 1] + step
            m += 1
    return o_col[:m], o_et[:m], o_ep[:m], o_xt[:m], o_xp[:m], o_kind[:m], o_amb[:m]


def window_trades(
    weights: np.ndarray,
    stops: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None],
    fills: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    opens: np.ndarray,
    last_close: np.ndarray,
    delist: np.ndarray,
    ts: np.ndarray,
    step: int,
    slippage: float,
    *,
    signals: bool,
    last_window: bool,
) -> WindowTrades:
    """Trades of one window for all books.

    Parameters
    ----------
    weights : np.ndarray
        (n_bars, n_books * n_cols) target weights, NaN where no order was given.
    stops : list of tuples or None
        One ``(bar, col, kind, level, ambiguous)`` per book (None: no exit rules): the stop exits
        found, ``col`` indexing the book's own columns.
    fills : list of tuples
        One ``(bar, col, price)`` per book: the fills of its stop orders (a stop exit without a
        filled order keeps its level as the exit price).
    opens, delist : np.ndarray
        (n_bars, n_cols) opens and delisting mask of the window's columns.
    last_close : np.ndarray
        (n_cols,) close of the window's last bar.
    ts : np.ndarray
        (n_bars,) int64 bar open times (ms); ``step`` the bar length (ms).
    """
    n, n_grid = weights.shape
    k = opens.shape[1]
    kind = np.zeros((n, n_grid), dtype=np.int8)
    price = np.zeros((n, n_grid))
    amb = np.zeros((n, n_grid), dtype=np.bool_)
    for b, (found, (fbar, fcol, fprice)) in enumerate(zip(stops, fills, strict=True)):
        if found is not None and len(found[0]):
            bar, col, code, level, ambiguous = found
            kind[bar, col + b * k] = code
            price[bar, col + b * k] = level
            amb[bar, col + b * k] = ambiguous
            price[fbar, fcol + b * k] = fprice
    out = trades_nb(
        np.ascontiguousarray(weights, dtype=np.float64),
        kind,
        price,
        amb,
        np.ascontiguousarray(opens, dtype=np.float64),
        np.ascontiguousarray(last_close, dtype=np.float64),
        np.ascontiguousarray(delist, dtype=np.bool_),
        np.ascontiguousarray(ts, dtype=np.int64),
        int(step),
        float(slippage),
        bool(signals),
        bool(last_window),
    )
    return WindowTrades(*out)
