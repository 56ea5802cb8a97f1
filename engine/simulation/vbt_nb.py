"""The numba engine's ``from_orders`` loop: vectorbt's own order execution, one compiled specialization.

``backtest.vbt_engine=numba`` fills the simulator's orders with vectorbt's numba code. Calling
``vectorbt.portfolio.nb.simulate_from_orders_nb`` itself costs a cold process (empty numba cache)
~8 s of compilation on this code's arguments: the generic loop over fifteen flexibly broadcast
arguments, log records, ``process_order_nb`` around ``execute_order_nb``, every helper compiled
for each array shape of its arguments, and a second specialization of the whole loop for a
window with a carry row (per-row arrays instead of scalars). :func:`from_orders_nb` is that loop
for the arguments the simulator passes and nothing else, around the same vectorbt functions that
do the arithmetic (``execute_order_nb`` with ``buy_nb`` / ``sell_nb``, ``approx_order_value_nb``,
``insert_argsort_nb``, ``order_nb``, ``fill_order_record_nb``); every array argument has one
dtype, one number of dimensions and one layout, so a process compiles it once (~3 s, and cached
on disk like vectorbt's own functions).

What it restates of ``simulate_from_orders_nb`` (vectorbt 1.2), for ``cash_sharing=True``,
``call_seq="auto"`` (the default call sequence sorted by approximate order value in every row),
``val_price=price``, ``ffill_val_price=True``, ``update_value=False``, direction both, no fixed
fees, ``min_size=1e-8``, no maximum size or granularity, no rejection, no cash locking, partial
fills allowed, no logs, ``max_orders`` = rows x columns: the same statements in the same order, with
``process_order_nb``'s steps for those settings (execute, then an order record when filled; the
valuation price and the group value unchanged). A group of one column is simulated as vectorbt does
without cash sharing (the same value and no sort to make). ``tests/test_simulator.py`` holds its
records equal to ``vbt.Portfolio.from_orders``'s and to the rust engine's.

This module imports vectorbt: only the numba engine imports it (:func:`engine.simulation.orders.orders_simulate`).
numba's disk cache keys a compiled function by its own source file only, so a cached loop would keep
an older vectorbt's arithmetic after an upgrade: the engine uses it only with the vectorbt it was
checked against (:data:`engine.simulation.orders.VBT_NB_CHECKED`), and vectorbt's own
``simulate_from_orders_nb`` with any other (a warning says so).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from vectorbt.portfolio.enums import OrderStatus, ProcessOrderState, order_dt
from vectorbt.portfolio.nb import approx_order_value_nb, execute_order_nb, fill_order_record_nb, order_nb
from vectorbt.utils.array_ import insert_argsort_nb

_BOTH = 2  # vectorbt Direction.Both
_FILLED = OrderStatus.Filled


@njit(cache=True)
def from_orders_nb(
    group_lens: np.ndarray,
    init_cash: np.ndarray,
    size: np.ndarray,
    price: np.ndarray,
    close: np.ndarray,
    size_type: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
) -> np.ndarray:
    """Simulate vectorbt's ``from_orders`` on the simulator's arguments; return the order records.

    Parameters
    ----------
    group_lens : np.ndarray
        int64 (n_groups,): columns per cash-sharing group (a book), summing to the columns.
    init_cash : np.ndarray
        float64 (n_groups,): each group's cash at the start.
    size, price, close : np.ndarray
        float64 (n_rows, n_cols), C order: order sizes (NaN: no order), order prices (also the
        valuation prices), closes (read only where a price is infinite, as vectorbt does).
    size_type, fees, slippage : np.ndarray
        int64 / float64 / float64 (n_rows,): per row, every column alike.
    """
    n_rows, n_cols = size.shape
    order_records = np.empty(n_rows * n_cols, dtype=order_dt)
    last_position = np.full(n_cols, 0.0, dtype=np.float64)
    last_debt = np.full(n_cols, 0.0, dtype=np.float64)
    last_val_price = np.full(n_cols, np.nan, dtype=np.float64)
    order_price = np.full(n_cols, np.nan, dtype=np.float64)
    temp_order_value = np.empty(n_cols, dtype=np.float64)
    call_seq = np.empty(n_cols, dtype=np.int64)
    oidx = 0

    from_col = 0
    for group in range(len(group_lens)):
        to_col = from_col + group_lens[group]
        group_len = to_col - from_col
        cash_now = float(init_cash[group])
        free_cash_now = float(init_cash[group])

        for i in range(n_rows):
            for k in range(group_len):
                col = from_col + k

                # Resolve order price
                _price = price[i, col]
                if np.isinf(_price):
                    if _price > 0:
                        _price = close[i, col]  # upper bound is close
                    elif i > 0:
                        _price = close[i - 1, col]  # lower bound is prev close
                    else:
                        _price = np.nan  # first timestamp has no prev close
                order_price[col] = _price

                # Resolve valuation price (val_price is price)
                _val_price = price[i, col]
                if np.isinf(_val_price):
                    if _val_price > 0:
                        _val_price = _price  # upper bound is order price
                    elif i > 0:
                        _val_price = close[i - 1, col]  # lower bound is prev close
                    else:
                        _val_price = np.nan  # first timestamp has no prev close
                if not np.isnan(_val_price):
                    last_val_price[col] = _val_price

            # Group value, then the call sequence: sells first, by approximate order value
            value_now = cash_now
            for k in range(group_len):
                col = from_col + k
                if last_position[col] != 0:
                    value_now += last_position[col] * last_val_price[col]
            for k in range(group_len):
                col = from_col + k
                call_seq[k] = k
                temp_order_value[k] = approx_order_value_nb(
                    size[i, col],
                    size_type[i],
                    _BOTH,
                    cash_now,
                    last_position[col],
                    free_cash_now,
                    last_val_price[col],
                    value_now,
                )
            insert_argsort_nb(temp_order_value[:group_len], call_seq[:group_len])

            for k in range(group_len):
                col = from_col + call_seq[k]
                position_now = last_position[col]
                debt_now = last_debt[col]
                val_price_now = last_val_price[col]

                order = order_nb(
                    size=size[i, col],
                    price=order_price[col],
                    size_type=size_type[i],
                    direction=_BOTH,
                    fees=fees[i],
                    fixed_fees=0.0,
                    slippage=slippage[i],
                    min_size=1e-8,
                    max_size=np.inf,
                    size_granularity=np.nan,
                    reject_prob=0.0,
                    lock_cash=False,
                    allow_partial=True,
                    raise_reject=False,
                    log=False,
                )
                state = ProcessOrderState(
                    cash=cash_now,
                    position=position_now,
                    debt=debt_now,
                    free_cash=free_cash_now,
                    val_price=val_price_now,
                    value=value_now,
                    oidx=oidx,
                    lidx=0,
                )
                # process_order_nb without rejection raising, value update or logs
                exec_state, order_result = execute_order_nb(state, order)
                if order_result.status == _FILLED:
                    fill_order_record_nb(order_records[oidx], oidx, i, col, order_result)
                    oidx += 1

                cash_now = exec_state.cash
                free_cash_now = exec_state.free_cash
                last_position[col] = exec_state.position
                last_debt[col] = exec_state.debt

        from_col = to_col

    return order_records[:oidx]
