"""vectorbt's ``from_orders`` fill arithmetic for the simulator's own orders, in numba.

The cost basis after a top-up needs the top-up's fill, which depends on the cash and the other
columns' orders of that row. vectorbt computes it, but only inside a whole simulation; calling
it once per top-up bar costs a call each (~40 us plus Python), which a single ``simulate`` call
that re-weights held positions every few bars pays hundreds of times. This module restates the
few branches of vectorbt 1.2's ``simulate_from_orders_nb`` / ``execute_order_nb`` / ``buy_nb`` /
``sell_nb`` that the simulator's orders use (target percent and amount sizes, direction both,
long positions, proportional fees and slippage, ``min_size``, partial fills, no fixed fees, no
cash locking, sells before buys through the same insertion sort), with the same operations in the
same order, to walk the rows between two top-up bars.

It is a fast path, never the authority: the simulator compares every fill it took from here with
the fills of its vectorbt call and, on any difference, redoes the call with the top-up fills taken
from vectorbt itself (``tests/test_simulator.py`` holds both paths equal).
"""

from __future__ import annotations

import numpy as np
from numba import njit

REL_TOL = 1e-9  # vectorbt.utils.math_.rel_tol
ABS_TOL = 1e-12  # vectorbt.utils.math_.abs_tol
AMOUNT = 0  # vectorbt SizeType.Amount
TARGET_PERCENT = 5  # vectorbt SizeType.TargetPercent


@njit(cache=True)
def _is_close(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b) or np.isinf(a) or np.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


@njit(cache=True)
def _is_less(a: float, b: float) -> bool:
    if _is_close(a, b):
        return False
    return a < b


@njit(cache=True)
def _add(a: float, b: float) -> float:
    zero = _is_close(abs(a), abs(b)) if np.sign(a) != np.sign(b) else _is_close(a + b, 0.0)
    return 0.0 if zero else a + b


@njit(cache=True)
def insert_argsort_nb(a: np.ndarray, idx: np.ndarray, n: int) -> None:
    """Sort ``a[:n]`` ascending in place, NaN last, moving ``idx[:n]`` along (vectorbt's ``insert_argsort_nb``).

    The call order of a cash-sharing group: its orders' values, sells (negative) first.
    """
    for j in range(1, n):
        a_j = a[j]
        c_j = idx[j]
        m = j - 1
        while m >= 0 and (a[m] > a_j or np.isnan(a[m])):
            a[m + 1] = a[m]
            idx[m + 1] = idx[m]
            m -= 1
        a[m + 1] = a_j
        idx[m + 1] = c_j


@njit(cache=True)
def rows_nb(
    size: np.ndarray,
    price: np.ndarray,
    size_type: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
    group_lens: np.ndarray,
    min_size: float,
    cash: np.ndarray,
    position: np.ndarray,
    want: int,
    buy_q: np.ndarray,
    buy_v: np.ndarray,
    held_before: np.ndarray,
) -> None:
    """Walk the rows of ``size`` (NaN = no order) as vectorbt's from_orders would.

    Cash is shared per group and ``price`` is the order and valuation price; ``cash`` (per group) and ``position`` (per
    column) are updated in place. At row ``want`` the buys of each column (quantity and value) and
    the positions before the row are written to ``buy_q``, ``buy_v``, ``held_before``.
    ``size_type``, ``fees``, ``slippage`` are per row.
    """
    n_rows = size.shape[0]
    n_groups = group_lens.shape[0]
    max_len = 0
    for g in range(n_groups):
        max_len = max(max_len, group_lens[g])
    order_value = np.empty(max_len)
    call = np.empty(max_len, dtype=np.int64)
    for i in range(n_rows):
        any_order = False
        for col in range(size.shape[1]):
            if not np.isnan(size[i, col]):
                any_order = True
                break
        if not any_order:
            continue  # vectorbt is handed only the rows that hold an order
        st = size_type[i]
        fee = fees[i]
        slip = slippage[i]
        from_col = 0
        for g in range(n_groups):
            n = group_lens[g]
            value = cash[g]
            for k in range(n):
                col = from_col + k
                if position[col] != 0:
                    value += position[col] * price[i, col]
            for k in range(n):
                col = from_col + k
                s = size[i, col]
                if st == AMOUNT:
                    order_value[k] = s * price[i, col]
                else:
                    order_value[k] = s * value - position[col] * price[i, col]
                call[k] = k
            insert_argsort_nb(order_value, call, n)
            if i == want:
                for k in range(n):
                    held_before[from_col + k] = position[from_col + k]
            for k in range(n):
                col = from_col + call[k]
                c = 0.0 if _is_close(cash[g], 0.0) else cash[g]
                p = 0.0 if _is_close(position[col], 0.0) else position[col]
                v = 0.0 if _is_close(value, 0.0) else value
                cash[g] = c
                position[col] = p
                s = size[i, col]
                if np.isnan(s):
                    continue
                if st == TARGET_PERCENT:
                    if v <= 0:
                        continue
                    s = s * v
                    s = s / price[i, col]
                    s = s - p
                if s > 0:  # buy_nb, direction both, long, no fixed fees, no cash lock
                    adj_price = price[i, col] * (1 + slip)
                    if c == 0:
                        continue
                    req_cash = s * adj_price
                    req_fees = req_cash * fee + 0.0
                    total = req_cash + req_fees
                    if _is_close(total, c) or total < c:
                        final_size = s
                        final_req = total
                    else:
                        max_req = _add(c, -0.0) / (1 + fee)
                        if max_req <= 0:
                            continue
                        final_size = max_req / adj_price
                        final_req = c
                    if _is_close(s, 0.0) or _is_less(final_size, min_size):
                        continue
                    cash[g] = _add(c, -final_req)
                    position[col] = _add(p, final_size)
                    if i == want:
                        buy_q[col] += final_size
                        buy_v[col] += final_size * adj_price
                else:  # sell_nb
                    s = -s
                    adj_price = price[i, col] * (1 - slip)
                    if _is_close(s, 0.0) or _is_less(s, min_size):
                        continue
                    acq = s * adj_price
                    fees_paid = acq * fee + 0.0
                    final_acq = _add(acq, -fees_paid)
                    if final_acq < 0:
                        continue
                    cash[g] = c + final_acq
                    position[col] = _add(p, -s)
            from_col += n


@njit(cache=True)
def order_nb(
    target: float, price: float, value: float, cash: float, position: float, fee: float, slip: float, min_size: float
) -> tuple[float, float, float, float, float, int]:
    """One target-percent order of :func:`rows_nb`, as vectorbt fills it, for a long-only book.

    ``cash``, ``position`` and ``value`` (the group's value at the row's start) are the state before
    the order, already snapped to 0 within vectorbt's tolerance. Returns the new cash and position
    and the fill: size, price (slippage included), fees and side (0 buy, 1 sell; -1 no fill).
    The same operations in the same order as :func:`rows_nb`'s branches.
    """
    if value <= 0:
        return cash, position, 0.0, 0.0, 0.0, -1
    s = target * value
    s = s / price
    s = s - position
    if s > 0:
        adj_price = price * (1 + slip)
        if cash == 0:
            return cash, position, 0.0, 0.0, 0.0, -1
        req_cash = s * adj_price
        req_fees = req_cash * fee + 0.0
        total = req_cash + req_fees
        if _is_close(total, cash) or total < cash:
            final_size = s
            final_req = total
            fees_paid = req_fees
        else:
            max_req = _add(cash, -0.0) / (1 + fee)
            if max_req <= 0:
                return cash, position, 0.0, 0.0, 0.0, -1
            final_size = max_req / adj_price
            final_req = cash
            fees_paid = cash - max_req
        if _is_close(s, 0.0) or _is_less(final_size, min_size):
            return cash, position, 0.0, 0.0, 0.0, -1
        return _add(cash, -final_req), _add(position, final_size), final_size, adj_price, fees_paid, 0
    s = -s
    adj_price = price * (1 - slip)
    if _is_close(s, 0.0) or _is_less(s, min_size):
        return cash, position, 0.0, 0.0, 0.0, -1
    acq = s * adj_price
    fees_paid = acq * fee + 0.0
    final_acq = _add(acq, -fees_paid)
    if final_acq < 0:
        return cash, position, 0.0, 0.0, 0.0, -1
    return cash + final_acq, _add(position, -s), s, adj_price, fees_paid, 1
