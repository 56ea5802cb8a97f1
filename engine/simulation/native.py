"""A signal-mode exit-rule grid simulated in one numba pass, without a vectorbt call.

:func:`signal_grid` gives the same books as ``VectorBTSimulator.simulate_grid(prices, [weights] *
g, exit_rules, held_reweights="first_bar", ...)`` (no carried shares): per book, entries on flat
columns at the bar's open (a positive weight on a held column is dropped, the "already long" of a
signal), ``0`` closes, the stop exits of :mod:`engine.simulation.stops`, and the fills vectorbt's
``from_orders`` makes for those orders (target percent sizes valued at the row's prices, cash shared
within a book, sells before buys, fees and slippage; :func:`engine.simulation.fills.order_nb`).

Where the vectorbt path builds two-row order arrays for all books, scans the stops, hands vectorbt
the rows with an order and rebuilds every book's cash and equity from the records, this path walks
each book once (:func:`engine.simulation.native_nb.signal_grid_nb`), books in parallel over the
cores (each book writes only its own slices, so the result does not depend on the thread count).
``tests/test_native.py`` holds it equal to the vectorbt path and to ``vbt.Portfolio.from_orders``
(fills, cash and equity to 1e-9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from engine.config.exit_rules import ExitRules
from engine.core.choices import VBT_ENGINES
from engine.simulation.native_nb import signal_grid_nb, signal_grid_serial_nb
from engine.simulation.prices import PriceBlock
from engine.simulation.result import SimResult
from engine.simulation.stops import Ambiguity, StopExits, StopState, _rule_arrays, ambiguity_check
from engine.simulation.vbt_enums import order_dt, vectorbt_import

if TYPE_CHECKING:  # vectorbt is imported only when a Portfolio is built (~350 MB, ~2.5 s)
    import vectorbt as vbt

PARALLEL_MIN_CELLS = 1_000_000
"""Bar-columns from which the books run on numba's threads (below, one thread: starting the
threads costs more than such a grid, most on a loaded machine)."""


@dataclass(frozen=True)
class GridResult:
    """Every book of a :func:`signal_grid` call, in flat arrays (one slice per book).

    Attributes
    ----------
    prices : PriceBlock
        The simulated prices (``k`` columns per book).
    equity : np.ndarray
        (n_books, n_bars) value at each bar's close.
    cash_end : np.ndarray
        (n_books,) cash after the last bar (the cash at each close follows from ``order_cash``).
    records : np.ndarray
        vectorbt ``order_dt`` records of all books (``col`` within the book, ``idx`` the row of
        the two-rows-per-bar grid), book ``b``'s in ``bounds[b]``.
    """

    prices: PriceBlock
    weights: np.ndarray
    equity: np.ndarray
    cash_end: np.ndarray
    records: np.ndarray
    reason: np.ndarray
    ambiguous: np.ndarray
    order_price: np.ndarray
    """Price of each order before slippage (the open, a stop level)."""
    order_cash: np.ndarray
    """The book's cash after each order's row (so far)."""
    exits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    drops: tuple[np.ndarray, np.ndarray]
    offsets: tuple[np.ndarray, np.ndarray, np.ndarray]
    counts: np.ndarray
    state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    init_cash: np.ndarray
    fees: float
    slippage: float
    engine: str

    def __len__(self) -> int:
        """Return the number of books."""
        return len(self.init_cash)

    def book(self, b: int) -> SimResult:
        """Book ``b`` as a :class:`SimResult` (views into the flat arrays)."""
        return self._book(b, [o.tolist() for o in self.offsets], self.counts.tolist(), self.records["idx"] // 2)

    def results(self) -> list[SimResult]:
        """Every book as a :class:`SimResult`."""
        offsets, counts, bars = [o.tolist() for o in self.offsets], self.counts.tolist(), self.records["idx"] // 2
        return [self._book(b, offsets, counts, bars) for b in range(len(self))]

    def _book(self, b: int, offsets: list[list[int]], counts: list[list[int]], bars: np.ndarray) -> SimResult:
        """Book ``b`` from the offsets and counts as lists and every order's bar."""
        k = self.prices.shape[1]
        o0, e0, d0 = offsets[0][b], offsets[1][b], offsets[2][b]
        no, ne, nd = counts[b]
        orders, ex, dr = slice(o0, o0 + no), slice(e0, e0 + ne), slice(d0, d0 + nd)
        cols = slice(b * k, (b + 1) * k)
        end = StopState(self.state[1][cols], self.state[2][cols], self.state[3][cols])
        bar, col, kind, price, amb, at_open = self.exits
        exits = StopExits(
            bar[ex], col[ex], kind[ex], price[ex], amb[ex], at_open[ex], self.drops[0][dr], self.drops[1][dr], end
        )
        return SimResult(
            equity=self.equity[b],
            cash=self._cash(b, bars[orders], self.order_cash[orders]),
            cash_end=float(self.cash_end[b]),
            shares_end=self.state[0][cols],
            order_bar=bars[orders],
            order_records=self.records[orders],
            order_reason=self.reason[orders],
            order_ambiguous=self.ambiguous[orders],
            stop_exits=exits,
            end_state=end,
            n_ambiguous=int(np.count_nonzero(exits.ambiguous)),
            portfolio_factory=self._portfolio_factory(b, exits),
            prices=self.prices,
        )

    def _cash(self, b: int, bars: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Book ``b``'s cash at each bar's close: its cash after the last order of each bar, carried forward."""
        n_bars = self.prices.shape[0]
        if not len(bars):
            return np.full(n_bars, float(self.init_cash[b]))
        last = np.flatnonzero(np.append(bars[1:] != bars[:-1], True))  # the last order of each bar
        at = np.zeros(n_bars, dtype=np.int64)
        at[bars[last]] = np.arange(1, len(last) + 1)
        np.maximum.accumulate(at, out=at)
        return np.concatenate(([float(self.init_cash[b])], after[last]))[at]

    def _portfolio_factory(self, b: int, exits: StopExits) -> Callable[[], vbt.Portfolio]:
        """Return the builder of book ``b``'s ``vbt.Portfolio``: the vectorbt path's order arrays of the book."""
        prices, k = self.prices, self.prices.shape[1]
        w = self.weights if self.weights.shape[1] == k else self.weights[:, b * k : (b + 1) * k]
        init, fees, slippage, engine = float(self.init_cash[b]), self.fees, self.slippage, self.engine

        def portfolio() -> vbt.Portfolio:
            n_bars = prices.shape[0]
            close = np.empty((2 * n_bars, k))
            close[0::2], close[1::2] = prices.open, prices.close
            size = np.full(close.shape, np.nan)
            size[0::2] = w
            assert exits.dropped_bar is not None and exits.dropped_col is not None and exits.at_open is not None
            size[2 * exits.dropped_bar, exits.dropped_col] = np.nan
            price = close.copy()
            rows = 2 * exits.bar + np.where(exits.at_open, 0, 1)
            price[rows, exits.col] = exits.price
            size[rows, exits.col] = 0.0
            return vectorbt_import().Portfolio.from_orders(
                close, size, size_type="targetpercent", price=price, val_price=price, fees=fees, slippage=slippage,
                init_cash=init, cash_sharing=True, group_by=True, call_seq="auto", engine=engine,
            )  # fmt: skip

        return portfolio


def signal_grid(
    prices: PriceBlock,
    weights: np.ndarray,
    exit_rules: list[ExitRules | None],
    *,
    init_cash: float | list[float] = 10_000.0,
    fees: float = 0.0,
    slippage: float = 0.0,
    ambiguity: Ambiguity = "pessimistic",
    engine: str = "rust",
) -> GridResult:
    """Simulate one book per exit rule on the same prices and signal weights (see the module docstring).

    Parameters
    ----------
    prices : PriceBlock
        OHLC of the ``k`` columns every book trades.
    weights : np.ndarray
        (n_bars, k) weights shared by every book, or (n_bars, n_books * k) one block per book: NaN
        no order; ``w > 0`` at this bar's open, buys fraction ``w`` of the book's value on a flat
        column (dropped on a held one); ``0`` closes the column.
    exit_rules : list of ExitRules or None
        One per book (None: no stop).
    init_cash : float or list of float, default 10_000.0
        Each book's cash at the start.
    fees, slippage : float
        As ``VectorBTSimulator``'s.
    ambiguity : {"pessimistic", "optimistic"}
        Which exit wins a bar whose range holds both stop loss and take profit.
    engine : {"rust", "numba"}
        vectorbt engine of the books' ``portfolio`` (built on demand only).

    Returns
    -------
    GridResult
        ``.results()`` gives one :class:`SimResult` per book.
    """
    ambiguity_check(ambiguity)
    g, (n_bars, k) = len(exit_rules), prices.shape
    w = np.ascontiguousarray(weights, dtype=np.float64)
    cash0 = np.asarray([init_cash] * g if np.ndim(init_cash) == 0 else init_cash, dtype=np.float64)
    _check(w, g, n_bars, k, cash0, fees, slippage, engine)
    finite = np.isfinite(w).sum(axis=0)
    per_book = np.full(g, finite.sum()) if w.shape[1] == k else finite.reshape(g, k).sum(axis=1)
    starts = np.zeros(g + 1, dtype=np.int64)
    np.cumsum(per_book, out=starts[1:])
    offsets = (2 * starts, starts, starts)
    cap = int(starts[-1])
    records = np.empty(2 * cap, dtype=order_dt)  # written by the kernel, book by book
    out = (np.empty(2 * cap, np.int8), np.empty(2 * cap, np.bool_), np.empty(2 * cap), np.empty(2 * cap))
    ex_i = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8), np.empty(cap, np.bool_),
            np.empty(cap, np.bool_))  # fmt: skip
    ex_price, drops = np.empty(cap), (np.empty(cap, np.int64), np.empty(cap, np.int64))
    counts = np.zeros((g, 3), dtype=np.int64)
    cash, equity = np.empty(g), np.empty((g, n_bars))
    state = (np.empty(g * k), np.empty(g * k), np.empty(g * k), np.empty(g * k, dtype=np.int64))
    p = prices
    kernel = (
        signal_grid_nb
        if g * n_bars * k >= PARALLEL_MIN_CELLS and numba.get_num_threads() > 1
        else signal_grid_serial_nb
    )
    kernel(
        p.open, p.high, p.low, p.close, p.index.view(np.int64), w, _rule_arrays(list(exit_rules), k), cash0,
        float(fees), float(slippage), ambiguity == "pessimistic", offsets, records, out, ex_i, ex_price, drops,
        counts, cash, equity, state,
    )  # fmt: skip
    exits = (ex_i[0], ex_i[1], ex_i[2], ex_price, ex_i[3], ex_i[4])
    return GridResult(
        p, w, equity, cash, records, out[0], out[1], out[2], out[3], exits, drops, offsets, counts, state, cash0,
        float(fees), float(slippage), engine,
    )  # fmt: skip


def _check(
    w: np.ndarray, g: int, n_bars: int, k: int, cash0: np.ndarray, fees: float, slippage: float, engine: str
) -> None:
    """Raise ValueError on inputs :func:`signal_grid` cannot simulate, naming the fix."""
    if g == 0:
        msg = "signal_grid needs at least one book (one exit rule or None per book)"
        raise ValueError(msg)
    if w.ndim != 2 or w.shape[0] != n_bars or w.shape[1] not in (k, g * k):
        msg = f"weights must have shape {(n_bars, k)} (shared) or {(n_bars, g * k)} (one block per book)"
        raise ValueError(msg)
    if np.isinf(w).any() or (w[np.isfinite(w)] < 0).any():
        msg = "weights must be NaN (no order) or finite and >= 0 (long only)"
        raise ValueError(msg)
    if cash0.shape != (g,) or not (np.isfinite(cash0).all() and (cash0 >= 0).all()):
        msg = f"init_cash must be one finite value >= 0, or {g} of them (one per book)"
        raise ValueError(msg)
    if not (np.isfinite(fees) and fees >= 0 and np.isfinite(slippage) and 0 <= slippage < 1):
        msg = f"fees must be >= 0 and 0 <= slippage < 1, got fees={fees}, slippage={slippage}"
        raise ValueError(msg)
    if engine not in VBT_ENGINES:
        msg = f"engine must be one of {VBT_ENGINES}, got {engine!r}"
        raise ValueError(msg)
