"""The order arrays of a simulation and the vectorbt ``from_orders`` call that fills them.

The grid has two rows per bar (see :mod:`engine.simulation.vbt`) and, when shares are carried in,
a carry row before them; several books sit side by side, ``k`` columns each, one cash-sharing
group per book.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeAlias

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.simulation.prices import PriceBlock
from engine.simulation.vbt_enums import (
    Direction,
    SizeType,
    call_seq_default,
    order_dt,
    rust_enums,
    vectorbt_import,
    vectorbt_nb_modules,
)

log = logging.getLogger(__name__)

PerRow: TypeAlias = "float | int | np.ndarray"
"""A per-row argument of the simulation: a scalar for every row, or a (n_rows, 1) array."""
OrderArrays = tuple[np.ndarray, np.ndarray, PerRow, np.ndarray, PerRow, PerRow]
"""close, size, size type, price, fees, slippage: :func:`orders_simulate`'s arguments before the
initial cash (size type, fees and slippage are scalars, or per-row (n_rows, 1) arrays)."""


def grid_weights(
    prices: PriceBlock,
    weights: list[np.ndarray],
    exit_rules: list[ExitRules | None],
    init_cash: list[float],
    carry_shares: list[np.ndarray | None],
    signed: bool = False,
) -> np.ndarray:
    """Validate the books' inputs and return their weights side by side, (n_bars, n_books * k).

    ``signed``: negative weights (short) are allowed (the market execution).

    Raises
    ------
    ValueError
        Where the books' lists differ in length or are empty, a weights array does not have the
        prices' shape, a weight is infinite or negative, or an initial cash is not finite and >= 0.
    """
    n_bars, k = prices.shape
    g = len(weights)
    if not (g == len(exit_rules) == len(init_cash) == len(carry_shares)) or not g:
        msg = "simulate_grid needs one weights array, exit rules, init cash and carry per book"
        raise ValueError(msg)
    w_all = (
        np.hstack([np.asarray(w, dtype=np.float64) for w in weights])
        if g > 1
        else np.asarray(weights[0], dtype=np.float64)
    )
    if w_all.shape != (n_bars, k * g):
        msg = f"each weights array must have the prices' shape {(n_bars, k)}"
        raise ValueError(msg)
    if np.isinf(w_all).any() or (not signed and (w_all[np.isfinite(w_all)] < 0).any()):
        msg = "weights must be NaN (no order) or finite and >= 0 (long only)"
        raise ValueError(msg)
    for c0 in init_cash:
        if not (np.isfinite(c0) and (signed or c0 >= 0)):
            msg = f"init_cash must be finite and >= 0, got {c0}"
            raise ValueError(msg)
    return w_all


def carry_arrays(
    carry_shares: list[np.ndarray | None], carry_price: np.ndarray | None, n_cols: int, signed: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate every book's carry-in (``signed``: short positions, negative shares, allowed).

    Returns the (n_books, n_cols) shares (0 where a book carries nothing) and the carry price,
    None when no book carries any share.
    """
    shares = np.zeros((len(carry_shares), n_cols))
    for b, cs in enumerate(carry_shares):
        if cs is not None:
            row = np.asarray(cs, dtype=np.float64)
            if row.shape != (n_cols,):
                msg = f"carry_shares must be {n_cols} finite values >= 0 (long only)"
                raise ValueError(msg)
            shares[b] = row
    if not np.isfinite(shares).all() or (not signed and (shares < 0).any()):
        msg = f"carry_shares must be {n_cols} finite values >= 0 (long only)"
        raise ValueError(msg)
    if not shares.any():
        return shares, None
    if carry_price is None:
        msg = "carry_price is required when carry_shares holds shares (the previous window's last close)"
        raise ValueError(msg)
    price = np.asarray(carry_price, dtype=np.float64)
    held = (shares != 0).any(axis=0)
    if price.shape != (n_cols,) or not (np.isfinite(price[held]).all() and (price[held] > 0).all()):
        msg = f"carry_price must be {n_cols} values, finite and > 0 where shares are carried"
        raise ValueError(msg)
    return shares, price


def order_arrays(
    prices: PriceBlock,
    w_all: np.ndarray,
    shares: np.ndarray,
    price0: np.ndarray | None,
    init_cash: list[float],
    fee: float,
    slip: float,
) -> tuple[int, np.ndarray, OrderArrays]:
    """Build the order arrays of every book on one grid.

    Parameters
    ----------
    prices : PriceBlock
        The simulated prices.
    w_all : np.ndarray
        (n_bars, n_books * k) target weights, NaN = no order (:func:`grid_weights`).
    shares, price0 : np.ndarray, np.ndarray or None
        Carried shares and their price (:func:`carry_arrays`); ``price0`` None: no carry row.
    init_cash : list of float
        Each book's cash at the start (besides the carried shares).
    fee, slip : float
        Fees and slippage of every order but the carry row's.

    Returns
    -------
    off : int
        Row of bar 0 (1 with a carry row, else 0).
    init : np.ndarray
        (n_books,) vectorbt's initial cash: the cash plus the carried shares' value.
    arrays : tuple
        close, size, size type, price, fees, slippage: the arguments of :func:`orders_simulate`
        before the initial cash (the price is the close array until stop exits are written in).
    """
    n_bars, k = prices.shape
    g = len(init_cash)
    # one grid for all books: a carry row for every book as soon as one carries shares
    off = int(price0 is not None)
    n_rows = 2 * n_bars + off

    base = np.empty((n_rows, k))
    base[off::2] = prices.open
    base[off + 1 :: 2] = prices.close
    if off:
        held_any = (shares != 0).any(axis=0)
        # a column nobody holds keeps the open: its value at the carry row multiplies 0 shares
        base[0] = np.where(held_any, price0, prices.open[0])
    close = base if g == 1 else np.tile(base, (1, g))
    size = np.full((n_rows, k * g), np.nan)
    size[off::2] = w_all
    if off:
        size[0] = np.where(shares != 0, shares, np.nan).ravel()

    init = np.array([float(c0) for c0 in init_cash])
    if off:
        for b in range(g):
            init[b] += float(np.sum(shares[b] * base[0]))
        # per-row columns broadcast across assets: only row 0 (the carry row) differs
        types = np.full((n_rows, 1), SizeType.TargetPercent, dtype=np.int64)
        types[0] = SizeType.Amount
        fee_rows = np.full((n_rows, 1), fee)
        fee_rows[0] = 0.0
        slip_rows = np.full((n_rows, 1), slip)
        slip_rows[0] = 0.0
        per_row: tuple[PerRow, PerRow, PerRow] = (types, fee_rows, slip_rows)
    else:
        per_row = (SizeType.TargetPercent, fee, slip)
    size_type, fees, slippage = per_row
    return off, init, (close, size, size_type, close, fees, slippage)


def orders_simulate(
    close: np.ndarray,
    size: np.ndarray,
    size_type: PerRow,
    price: np.ndarray,
    fees: PerRow,
    slippage: PerRow,
    init_cash: np.ndarray,
    group_lens: np.ndarray,
    engine: str,
) -> np.ndarray:
    """Run vectorbt's ``from_orders`` simulation without building a ``Portfolio`` around it.

    The same call ``Portfolio.from_orders(close, size, size_type=..., price=price, val_price=price,
    fees=..., slippage=..., init_cash=..., cash_sharing=True, group_by=True, call_seq="auto")``
    makes, with vectorbt's defaults spelled out (min_size 1e-8, direction both, ffill_val_price):
    the wrapper, config copies and pandas objects cost ~10 ms a call, several times the simulation
    of one window. Tests compare the records with ``Portfolio.from_orders`` to keep them equal.

    Only rows holding an order (a finite size in some column) are passed to vectorbt, and the
    records' ``idx`` is mapped back to the full grid. This is exact: vectorbt's from_orders loop
    reads a row's own price, valuation price and size only (``price`` is always finite here, so
    the previous row's close is never consulted), and cash and positions change only on orders.
    Most rows of a rebalance-with-stops grid hold no order, so this cuts the simulation several
    times over.
    """
    n_rows = close.shape[0]
    rows = np.flatnonzero(np.isfinite(size).any(axis=1))
    if len(rows) == 0:
        return np.empty(0, dtype=order_dt)
    if len(rows) < n_rows:
        close, size, price = close[rows], size[rows], price[rows]
        size_type, fees, slippage = (np.asarray(a)[rows] if np.ndim(a) else a for a in (size_type, fees, slippage))
    shape = close.shape
    group_lens = np.asarray(group_lens, dtype=np.int64)
    init = np.asarray(init_cash, dtype=np.float64)
    size_type = np.asarray(size_type, dtype=np.int64)
    fees = np.asarray(fees, dtype=np.float64)
    slippage = np.asarray(slippage, dtype=np.float64)
    if engine == "rust":
        # vectorbt's dispatch checks ~30 arguments for rust support on every call (~0.2 ms, more
        # than a window's simulation); the arrays here are built to be supported, so the rust
        # function is called directly, with the defaults dispatch would pass spelled out (it reads
        # vectorbt's record dtypes from rust_enums' stand-ins: vectorbt itself is not imported)
        call_seq = call_seq_default(shape, group_lens)
        with rust_enums():
            records, _ = _rust_from_orders()(
                shape, group_lens, init, call_seq, size, price, size_type, _DIRECTION, fees, _ZERO, slippage,
                _MIN_SIZE, _INF, _NAN, _ZERO, _FALSE, _TRUE, _FALSE, _FALSE, price, close,
                auto_call_seq=True, ffill_val_price=True, update_value=False, max_orders=shape[0] * shape[1],
                max_logs=1, init_temp_records=False, seed=None, flex_2d=True,
            )  # fmt: skip
    else:  # the numba engine: vectorbt's order execution in one specialization (vbt_nb)
        records = _numba_from_orders()(
            _numba_array(group_lens, np.int64), _numba_array(init, np.float64),
            *(_numba_array(a, np.float64) for a in (size, price, close)),
            _per_row(size_type, shape[0], np.int64), _per_row(fees, shape[0], np.float64),
            _per_row(slippage, shape[0], np.float64),
        )  # fmt: skip
    if len(rows) < n_rows:
        records["idx"] = rows[records["idx"]]
    return records


_DIRECTION = np.asarray(Direction.Both, dtype=np.int64)
_MIN_SIZE = np.asarray(1e-8)
_ZERO, _INF, _NAN = np.asarray(0.0), np.asarray(np.inf), np.asarray(np.nan)
_TRUE, _FALSE = np.asarray(True), np.asarray(False)


def _per_row(a: np.ndarray, n_rows: int, dtype: type) -> np.ndarray:
    """Return a per-row argument (a scalar or a (n_rows, 1) array) as the numba loop's (n_rows,) array."""
    out: np.ndarray = np.empty(n_rows, dtype=dtype)  # C order and writeable: the loop's one specialization
    out[:] = np.asarray(a, dtype=dtype).reshape(-1)
    return out


def _per_row_zeros(n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-row size types, fees and slippage of ``n_rows`` rows, all 0."""
    return np.zeros(n_rows, dtype=np.int64), np.zeros(n_rows), np.zeros(n_rows)


def _numba_array(a: np.ndarray, dtype: type) -> np.ndarray:
    """Return ``a`` as a C-ordered, writeable array of ``dtype`` (copied only when it is not)."""
    return np.require(a, dtype=dtype, requirements=["C", "W"])


VBT_NB_CHECKED = "1.2.0"
"""The vectorbt version :mod:`engine.simulation.vbt_nb`'s loop was checked against, record for record
(tests/test_vbt_nb.py). numba's disk cache keys the compiled loop by its own file only, so with any
other vectorbt the numba engine calls vectorbt's own ``simulate_from_orders_nb`` (cached by vectorbt's
files), with a warning: a stale compiled copy of older vectorbt code can never fill an order."""


@functools.cache
def _numba_from_orders() -> Callable[..., np.ndarray]:
    """Return the numba engine's loop over vectorbt's order execution (imports vectorbt, once)."""
    from importlib.metadata import version

    found = version("vectorbt")
    if found != VBT_NB_CHECKED:
        log.warning(
            "vectorbt %s is not the %s the numba engine's compiled loop was checked against: vectorbt's own "
            "simulate_from_orders_nb fills the orders (the same records; a first start compiles ~4 s longer)",
            found,
            VBT_NB_CHECKED,
        )
        return _vectorbt_from_orders
    with vectorbt_nb_modules():  # vectorbt's numba functions, without the whole package
        from engine.simulation.vbt_nb import from_orders_nb

        # compiled (or loaded from numba's cache) while vectorbt's modules are importable: a cached
        # function's types name vectorbt's classes by module
        one = np.full((1, 1), np.nan)
        from_orders_nb(np.ones(1, dtype=np.int64), np.zeros(1), one, one, one, *_per_row_zeros(1))
    return from_orders_nb


def _vectorbt_from_orders(
    group_lens: np.ndarray,
    init: np.ndarray,
    size: np.ndarray,
    price: np.ndarray,
    close: np.ndarray,
    size_type: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
) -> np.ndarray:
    """:func:`engine.simulation.vbt_nb.from_orders_nb`'s arguments through vectorbt's own ``simulate_from_orders_nb``."""
    shape = size.shape
    records, _ = vectorbt_import().portfolio.nb.simulate_from_orders_nb(
        shape, group_lens, init, call_seq_default(shape, group_lens), size, price, size_type[:, None],
        _DIRECTION, fees[:, None], _ZERO, slippage[:, None], _MIN_SIZE, _INF, _NAN, _ZERO, _FALSE, _TRUE, _FALSE,
        _FALSE, price, close, auto_call_seq=True, ffill_val_price=True, update_value=False,
        max_orders=shape[0] * shape[1], max_logs=1, flex_2d=True,
    )  # fmt: skip
    return records  # type: ignore[no-any-return]


@functools.cache
def _rust_from_orders() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """vectorbt-rust's from_orders simulation (an error naming the package if it is missing)."""
    try:
        from vectorbt_rust.portfolio import simulate_from_orders_rs
    except ImportError as exc:  # the same condition vectorbt's dispatch raises on
        msg = "backtest.vbt_engine=rust needs the package vectorbt-rust: pip install vectorbt-rust (or use numba)"
        raise RuntimeError(msg) from exc
    return simulate_from_orders_rs  # type: ignore[no-any-return]
