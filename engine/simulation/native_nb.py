"""The native signal-grid kernel: stop exits and vectorbt's fills in one numba pass per book.

:mod:`engine.simulation.native` states what it computes and validates its inputs. Per book (a
cash-sharing group of ``k`` columns with its own exit rules), bar after bar:

1. the bar's open row: exits at the open (holding limit, a gap through a level) and the bar's
   orders, by the rules of :mod:`engine.simulation.stops` in the signal mode
   (``held_reweights="first_bar"``: a positive weight on a held column is dropped, ``0`` closes);
   the orders are filled as vectorbt's ``from_orders`` fills them (:func:`engine.simulation.fills.order_nb`:
   target percent of the value at the row's prices, sells before buys, the same tolerances);
2. the rest of the bar: the intrabar stop exits of the held columns, filled at their level as
   target-0 orders; the trailing peaks rise by the bar's high;
3. cash and equity at the bar's close.

Books are independent, so they run in parallel (``prange``) and each writes only its own slices
of the output buffers: the result does not depend on the number of threads. ``fastmath`` is off.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from engine.simulation.fills import _is_close, insert_argsort_nb, order_nb
from engine.simulation.stops import MAX_HOLDING, TAKE_PROFIT, _levels, _open_exit

MIN_SIZE = 1e-8  # vectorbt's default min_size, as in orders.py


@njit(cache=True)
def _record(
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], m: int, first: int, row: int,
    col: int, side: int, reason: int, amb: bool, size: float, fill: float, fees: float, price: float, cash: float,
) -> None:  # fmt: skip
    """Write order ``m`` (the ``m - first``-th of its book): its vectorbt record and the engine's own fields."""
    r = records[m]
    r["id"], r["col"], r["idx"], r["side"] = m - first, col, row, side
    r["size"], r["price"], r["fees"] = size, fill, fees
    out[0][m], out[1][m], out[2][m], out[3][m] = reason, amb, price, cash


@njit(cache=True)
def _fill_row(
    bar: int, row: int, n: int, cols: np.ndarray, target: np.ndarray, price: np.ndarray,
    reason: np.ndarray, amb: np.ndarray, value: float, cash: float, pos: np.ndarray, fee: float, slip: float,
    order_value: np.ndarray, call: np.ndarray, records: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], m: int, first: int, partial: bool,
) -> tuple[float, int]:  # fmt: skip
    """Fill the ``n`` orders of one row of a book (sells before buys); return the cash and the next record slot."""
    m0 = m
    v = 0.0 if _is_close(value, 0.0) else value
    for j in range(n):
        c = cols[j]
        order_value[j] = target[j] * value - pos[c] * price[j]
        call[j] = j
    insert_argsort_nb(order_value, call, n)
    for q in range(n):
        j = call[q]
        c = cols[j]
        cash = 0.0 if _is_close(cash, 0.0) else cash
        p = 0.0 if _is_close(pos[c], 0.0) else pos[c]
        pos[c] = p
        cash, pos[c], size, fill, fees, side = order_nb(target[j], price[j], v, cash, p, fee, slip, MIN_SIZE)
        if side >= 0:
            _record(records, out, m, first, 2 * bar + row, c, side, reason[j], amb[j], size, fill, fees, price[j], cash)
            m += 1
    if partial:  # vectorbt snaps the cash again at the columns without an order, called last
        cash = 0.0 if _is_close(cash, 0.0) else cash
        if m > m0:
            out[3][m - 1] = cash
    return cash, m


@njit(cache=True)
def _sort_exits(
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray, lo: int, hi: int
) -> None:
    """Sort one bar's exits ``lo:hi`` by column (insertion sort; a column exits at most once a bar)."""
    for j in range(lo + 1, hi):
        m = j
        while m > lo and ex_i[1][m - 1] > ex_i[1][m]:
            ex_i[0][m - 1], ex_i[0][m] = ex_i[0][m], ex_i[0][m - 1]
            ex_i[1][m - 1], ex_i[1][m] = ex_i[1][m], ex_i[1][m - 1]
            ex_i[2][m - 1], ex_i[2][m] = ex_i[2][m], ex_i[2][m - 1]
            ex_i[3][m - 1], ex_i[3][m] = ex_i[3][m], ex_i[3][m - 1]
            ex_i[4][m - 1], ex_i[4][m] = ex_i[4][m], ex_i[4][m - 1]
            ex_price[m - 1], ex_price[m] = ex_price[m], ex_price[m - 1]
            m -= 1


@njit(cache=True)
def _book_nb(
    b: int, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], init_cash: np.ndarray,
    fee: float, slip: float, pessimistic: bool, offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray,
    drops: tuple[np.ndarray, np.ndarray], counts: np.ndarray, cash_out: np.ndarray, equity: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Simulate book ``b`` (see :func:`signal_grid_nb` for the arguments)."""
    n_bars, k = open_.shape
    shared = weights.shape[1] == k
    lo_c, hi_c = b * k, (b + 1) * k
    pos, basis, peak, opened = state[0][lo_c:hi_c], state[1][lo_c:hi_c], state[2][lo_c:hi_c], state[3][lo_c:hi_c]
    pos[:] = 0.0
    basis[:] = np.nan
    peak[:] = np.nan
    opened[:] = 0
    # the levels of each held position, recomputed only when its basis or its peak moves
    sl_lv, tp_lv, sl_kd = np.empty(k), np.empty(k), np.empty(k, dtype=np.int64)
    cols = np.empty(k, dtype=np.int64)
    target, price, ov = np.empty(k), np.empty(k), np.empty(k)
    reason, amb = np.empty(k, dtype=np.int8), np.zeros(k, dtype=np.bool_)
    call = np.empty(k, dtype=np.int64)
    m, e, d = offsets[0][b], offsets[1][b], offsets[2][b]
    m_first = m
    cash = init_cash[b]
    for i in range(n_bars):
        t = index_ns[i]
        n = 0
        e_bar = e
        for c in range(k):  # 1. the open row
            gc = lo_c + c
            w = weights[i, c] if shared else weights[i, gc]
            if np.isnan(basis[c]):
                if np.isnan(w):
                    continue
                o = open_[i, c]
                if w > 0.0:
                    basis[c] = o * (1.0 + slip)
                    peak[c] = basis[c]
                    opened[c] = t
                    sl_lv[c], sl_kd[c], tp_lv[c] = _levels(basis[c], peak[c], rules[0][gc], rules[1][gc], rules[2][gc])
                cols[n], target[n], price[n], reason[n], amb[n] = c, w, o, 0, False
                n += 1
                continue
            o = open_[i, c]
            hold = rules[3][gc]
            if np.isnan(w):  # only the holding limit can close it at the open
                if hold < 0 or t - opened[c] < hold:
                    continue
                kind, px = MAX_HOLDING, o
            else:
                kind, px = _open_exit(
                    o, w, t, basis[c], peak[c], opened[c], rules[0][gc], rules[1][gc], rules[2][gc], hold
                )
            if kind != 0:
                ex_i[0][e], ex_i[1][e], ex_i[2][e], ex_i[3][e], ex_i[4][e] = i, c, kind, False, True
                ex_price[e] = px
                e += 1
                basis[c] = np.nan
                cols[n], target[n], price[n], reason[n], amb[n] = c, 0.0, px, kind, False
                n += 1
            elif w == 0.0:
                basis[c] = np.nan
                cols[n], target[n], price[n], reason[n], amb[n] = c, 0.0, o, 0, False
                n += 1
            elif i > 0:  # signal mode: an entry of a held column is dropped
                drops[0][d], drops[1][d] = i, c
                d += 1
        if n:
            value = cash
            for c in range(k):
                if pos[c] != 0:
                    value += pos[c] * open_[i, c]
            cash, m = _fill_row(
                i, 0, n, cols, target, price, reason, amb, value, cash, pos, fee, slip, ov, call, records, out, m,
                m_first, n < k,
            )  # fmt: skip
        n = 0
        e_open = e
        for c in range(k):  # 2. the rest of the bar (_intrabar_exit on the cached levels)
            if np.isnan(basis[c]):
                continue
            o, h, lo = open_[i, c], high[i, c], low[i, c]
            kind, px, am = 0, 0.0, False
            if o <= sl_lv[c]:
                kind, px = sl_kd[c], o
            elif o >= tp_lv[c]:
                kind, px = TAKE_PROFIT, o
            else:
                hit_sl, hit_tp = lo <= sl_lv[c], h >= tp_lv[c]
                if hit_sl and hit_tp:
                    am = True
                    if pessimistic:
                        kind, px = sl_kd[c], sl_lv[c]
                    else:
                        kind, px = TAKE_PROFIT, tp_lv[c]
                elif hit_sl:
                    kind, px = sl_kd[c], sl_lv[c]
                elif hit_tp:
                    kind, px = TAKE_PROFIT, tp_lv[c]
            if kind != 0:
                ex_i[0][e], ex_i[1][e], ex_i[2][e], ex_i[3][e], ex_i[4][e] = i, c, kind, am, False
                ex_price[e] = px
                e += 1
                basis[c] = np.nan
                cols[n], target[n], price[n], reason[n], amb[n] = c, 0.0, px, kind, am
                n += 1
            elif h > peak[c]:
                peak[c] = h
                gc = lo_c + c
                if not np.isnan(rules[2][gc]):
                    sl_lv[c], sl_kd[c], tp_lv[c] = _levels(basis[c], h, rules[0][gc], rules[1][gc], rules[2][gc])
        if e_open > e_bar and e > e_open:
            _sort_exits(ex_i, ex_price, e_bar, e)  # by column, as the stop scan writes them
        if n:
            value = cash
            j = 0
            for c in range(k):  # valued at the stop fills where a column exits, else at the close
                px = close[i, c]
                if j < n and cols[j] == c:
                    px = price[j]
                    j += 1
                if pos[c] != 0:
                    value += pos[c] * px
            cash, m = _fill_row(
                i, 1, n, cols, target, price, reason, amb, value, cash, pos, fee, slip, ov, call, records, out, m,
                m_first, n < k,
            )  # fmt: skip
        held = 0.0
        for c in range(k):  # 3. the close
            held += pos[c] * close[i, c]
        equity[b, i] = cash + held
    cash_out[b] = cash
    counts[b, 0], counts[b, 1], counts[b, 2] = m - offsets[0][b], e - offsets[1][b], d - offsets[2][b]


@njit(cache=True)
def _fill_one(
    bar: int, row: int, target: float, price: float, reason: int, amb: bool, value: float, cash: float, pos: float,
    fee: float, slip: float, records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], m: int,
    first: int,
) -> tuple[float, float, int]:  # fmt: skip
    """:func:`_fill_row` for a book of one column: (cash, position, next record slot)."""
    v = 0.0 if _is_close(value, 0.0) else value
    cash = 0.0 if _is_close(cash, 0.0) else cash
    p = 0.0 if _is_close(pos, 0.0) else pos
    cash, pos, size, fill, fees, side = order_nb(target, price, v, cash, p, fee, slip, MIN_SIZE)
    if side >= 0:
        _record(records, out, m, first, 2 * bar + row, 0, side, reason, amb, size, fill, fees, price, cash)
        m += 1
    return cash, pos, m


@njit(cache=True)
def _book1_nb(
    b: int, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], init_cash: np.ndarray,
    fee: float, slip: float, pessimistic: bool, offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray,
    drops: tuple[np.ndarray, np.ndarray], counts: np.ndarray, cash_out: np.ndarray, equity: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """:func:`_book_nb` for a book of one column (``k == 1``): the same steps with the state in registers."""
    n_bars = open_.shape[0]
    wc = np.int64(0) if weights.shape[1] == 1 else np.int64(b)  # prange may hand a uint64 index
    fsl, ftp, ftr, hold = rules[0][b], rules[1][b], rules[2][b], rules[3][b]
    m, e, d = offsets[0][b], offsets[1][b], offsets[2][b]
    m_first = m
    cash, pos = init_cash[b], 0.0
    basis, peak, opened = np.nan, np.nan, 0
    sl_lv, sl_kd, tp_lv = 0.0, 0, 0.0
    for i in range(n_bars):
        w = weights[i, wc]
        if np.isnan(basis):  # 1. the open row of a flat column
            if np.isnan(w):
                equity[b, i] = cash + pos * close[i, 0]
                continue
            o = open_[i, 0]
            if w > 0.0:
                basis = o * (1.0 + slip)
                peak = basis
                opened = index_ns[i]
                sl_lv, sl_kd, tp_lv = _levels(basis, peak, fsl, ftp, ftr)
            value = cash + pos * o if pos != 0 else cash
            cash, pos, m = _fill_one(i, 0, w, o, 0, False, value, cash, pos, fee, slip, records, out, m, m_first)
            if np.isnan(basis):
                equity[b, i] = cash + pos * close[i, 0]
                continue
        else:  # 1. the open row of a held column
            o = open_[i, 0]
            t = index_ns[i]
            if np.isnan(w):
                kind, px = (MAX_HOLDING, o) if hold >= 0 and t - opened >= hold else (0, np.nan)
            else:
                kind, px = _open_exit(o, w, t, basis, peak, opened, fsl, ftp, ftr, hold)
            if kind != 0 or w == 0.0:
                if kind != 0:
                    ex_i[0][e], ex_i[1][e], ex_i[2][e], ex_i[3][e], ex_i[4][e] = i, 0, kind, False, True
                    ex_price[e] = px
                    e += 1
                else:
                    px = o
                basis = np.nan
                value = cash + pos * o if pos != 0 else cash
                cash, pos, m = _fill_one(
                    i, 0, 0.0, px, kind, False, value, cash, pos, fee, slip, records, out, m, m_first
                )
                equity[b, i] = cash + pos * close[i, 0]
                continue
            if not np.isnan(w) and i > 0:  # signal mode: an entry of a held column is dropped
                drops[0][d], drops[1][d] = i, 0
                d += 1
        # 2. the rest of the bar (_intrabar_exit on the cached levels)
        o, h, lo = open_[i, 0], high[i, 0], low[i, 0]
        kind, px, am = 0, 0.0, False
        if o <= sl_lv:
            kind, px = sl_kd, o
        elif o >= tp_lv:
            kind, px = TAKE_PROFIT, o
        else:
            hit_sl, hit_tp = lo <= sl_lv, h >= tp_lv
            if hit_sl and hit_tp:
                am = True
                if pessimistic:
                    kind, px = sl_kd, sl_lv
                else:
                    kind, px = TAKE_PROFIT, tp_lv
            elif hit_sl:
                kind, px = sl_kd, sl_lv
            elif hit_tp:
                kind, px = TAKE_PROFIT, tp_lv
        if kind != 0:
            ex_i[0][e], ex_i[1][e], ex_i[2][e], ex_i[3][e], ex_i[4][e] = i, 0, kind, am, False
            ex_price[e] = px
            e += 1
            basis = np.nan
            value = cash + pos * px if pos != 0 else cash
            cash, pos, m = _fill_one(i, 1, 0.0, px, kind, am, value, cash, pos, fee, slip, records, out, m, m_first)
        elif h > peak:
            peak = h
            if not np.isnan(ftr):
                sl_lv, sl_kd, tp_lv = _levels(basis, peak, fsl, ftp, ftr)
        equity[b, i] = cash + pos * close[i, 0]
    cash_out[b] = cash
    state[0][b], state[1][b], state[2][b], state[3][b] = pos, basis, peak, opened
    counts[b, 0], counts[b, 1], counts[b, 2] = m - offsets[0][b], e - offsets[1][b], d - offsets[2][b]


@njit(cache=True)
def _run_book(
    b: int, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], init_cash: np.ndarray,
    fee: float, slip: float, pessimistic: bool, offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray,
    drops: tuple[np.ndarray, np.ndarray], counts: np.ndarray, cash_out: np.ndarray, equity: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Simulate book ``b`` with :func:`_book1_nb` (one column) or :func:`_book_nb`."""
    if open_.shape[1] == 1:
        _book1_nb(
            b, open_, high, low, close, index_ns, weights, rules, init_cash, fee, slip, pessimistic, offsets, records,
            out, ex_i, ex_price, drops, counts, cash_out, equity, state,
        )  # fmt: skip
    else:
        _book_nb(
            b, open_, high, low, close, index_ns, weights, rules, init_cash, fee, slip, pessimistic, offsets, records,
            out, ex_i, ex_price, drops, counts, cash_out, equity, state,
        )  # fmt: skip


@njit(cache=True, parallel=True)
def signal_grid_nb(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], init_cash: np.ndarray,
    fee: float, slip: float, pessimistic: bool, offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray,
    drops: tuple[np.ndarray, np.ndarray], counts: np.ndarray, cash_out: np.ndarray, equity: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Simulate every book (see the module docstring); the result is the same on any number of threads.

    Parameters
    ----------
    open_, high, low, close : np.ndarray
        (n_bars, k) float64 prices, shared by all books.
    index_ns : np.ndarray
        (n_bars,) int64 bar open times.
    weights : np.ndarray
        (n_bars, k) weights shared by all books, or (n_bars, g * k) one block per book; NaN = no order.
    rules : tuple
        (g * k,) fixed stop loss, take profit, trailing fraction (NaN: not set) and the maximum
        holding time in ns (int64, < 0: not set) of every book's columns.
    init_cash : np.ndarray
        (g,) cash of each book at the start.
    fee, slip : float
        Fees and slippage fractions of every order.
    pessimistic : bool
        The stop loss wins an ambiguous bar (else the take profit).
    offsets : tuple
        (g + 1,) int64 first slot of each book in the order, exit and drop buffers.
    records : np.ndarray
        vectorbt ``order_dt`` records, written where an order fills: ``id`` within the book, ``idx``
        the grid row (2 * bar + 0 at the open, + 1 for the rest of the bar), ``col`` in the book.
    out : tuple
        The same orders' reason code (int8), ambiguous (bool), order price before slippage and the
        book's cash after the order's row so far.
    ex_i, ex_price, drops : tuple, np.ndarray, tuple
        Exit buffers (bar, column, kind, ambiguous, at_open; price) and dropped entries (bar, column).
    counts : np.ndarray
        (g, 3) int64: orders, exits and drops written per book.
    cash_out, equity : np.ndarray
        (g,) cash after the last bar and (g, n_bars) equity at each bar's close (the cash per bar
        follows from the orders' cash).
    state : tuple
        (g * k,) position, cost basis, trailing peak and opening time after the last bar.
    """
    for b in prange(init_cash.shape[0]):
        _run_book(
            b, open_, high, low, close, index_ns, weights, rules, init_cash, fee, slip, pessimistic, offsets, records,
            out, ex_i, ex_price, drops, counts, cash_out, equity, state,
        )  # fmt: skip


@njit(cache=True)
def signal_grid_serial_nb(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], init_cash: np.ndarray,
    fee: float, slip: float, pessimistic: bool, offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    records: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ex_i: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ex_price: np.ndarray,
    drops: tuple[np.ndarray, np.ndarray], counts: np.ndarray, cash_out: np.ndarray, equity: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Run :func:`signal_grid_nb`'s books one after another in this thread (a small grid: no thread start)."""
    for b in range(init_cash.shape[0]):
        _run_book(
            b, open_, high, low, close, index_ns, weights, rules, init_cash, fee, slip, pessimistic, offsets, records,
            out, ex_i, ex_price, drops, counts, cash_out, equity, state,
        )  # fmt: skip
