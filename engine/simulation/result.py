"""A simulation's outcome (:class:`SimResult`) and its making from the records of one vectorbt call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from engine.simulation.books import Pending
from engine.simulation.orders import OrderArrays
from engine.simulation.prices import PriceBlock
from engine.simulation.stops import ORDER_REASONS, ORDER_SIDES, StopExits, StopState
from engine.simulation.vbt_enums import vectorbt_import

if TYPE_CHECKING:  # vectorbt is imported only when a Portfolio is built (~350 MB, ~2.5 s)
    import vectorbt as vbt

_TS_TYPE = pl.Datetime("ms", "UTC")
"""Timestamps of orders and exits: epoch milliseconds, as in orders.parquet and trades.parquet."""


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulation.

    Attributes
    ----------
    equity : np.ndarray
        (n_bars,) portfolio value at each bar's close.
    cash : np.ndarray
        (n_bars,) cash at each bar's close (``equity - cash`` is the invested value).
    cash_end : float
        Cash after the last bar.
    shares_end : np.ndarray
        (n_cols,) shares held after the last bar.
    orders : pl.DataFrame
        One row per filled order: bar, timestamp, column, side, size (shares), price (fill price
        including slippage), fees, reason ("rebalance" or an exit kind name).
    exits : pl.DataFrame
        One row per stop exit found: bar, timestamp, column, kind, price (level before
        slippage), ambiguous.
    n_ambiguous : int
        Number of exits in bars whose range held both the stop loss and the take profit.
    portfolio : vbt.Portfolio
        The ``vbt.Portfolio`` on the two-rows-per-bar grid (carry row included, if any), built on
        first access (the simulation itself does not need it).
    """

    equity: np.ndarray
    cash: np.ndarray
    cash_end: float
    shares_end: np.ndarray
    order_bar: np.ndarray
    """Bar of each order (int64), in simulation order; with the arrays below, the numpy form of
    ``orders`` for callers that process many results (an exit-rule grid) without polars."""
    order_records: np.ndarray
    """vectorbt's order records without the carry row (fields col, side, size, price, fees)."""
    order_reason: np.ndarray
    """Reason code of each order: 0 rebalance, else an ``EXIT_KIND_NAMES`` code."""
    order_ambiguous: np.ndarray
    """True for a stop exit's order in a bar whose range held both stop loss and take profit."""
    stop_exits: StopExits | None
    end_state: StopState | None
    """Risk state of the positions after the last bar (None where no exit rule was tracked)."""
    n_ambiguous: int
    portfolio_factory: Callable[[], vbt.Portfolio]
    prices: PriceBlock
    order_extra: dict[str, np.ndarray] | None = None
    """The market execution's columns of each order (quote_volume, participation, impact_cost,
    spread_cost; docs/EXECUTION.md), appended to ``orders``; None on the vectorbt path."""
    costs: dict[str, float] | None = None
    """What each friction took (the market execution only): fees, slippage, impact, spread (quote
    currency), rejected_orders (count) and dropped_quote (quote value of remainders not filled)."""
    pending_end: Pending | None = None
    """Order remainders still pending after the last bar (the market execution only)."""
    ledger: np.ndarray | None = None
    """(n_cols, 4) shares desired, filled, dropped by a friction and left unfilled as vectorbt leaves
    them (cash short) per column (the market execution only):
    ``desired + pending in = filled + dropped + unfilled + pending out``."""
    funding: np.ndarray | None = None
    """(n_bars, n_cols) funding each column's position paid on each bar (received: negative); None: spot."""

    @functools.cached_property
    def portfolio(self) -> vbt.Portfolio:
        """The ``vbt.Portfolio`` of this simulation (built on first access)."""
        return self.portfolio_factory()

    @functools.cached_property
    def orders(self) -> pl.DataFrame:
        """Orders as a polars frame (built on first access)."""
        rec, bar = self.order_records, self.order_bar
        return pl.DataFrame(
            {
                "bar": pl.Series(bar, dtype=pl.Int64),
                "timestamp": pl.Series(self.prices.index[bar]).dt.replace_time_zone("UTC").dt.cast_time_unit("ms"),
                "column": _labels(self.prices.columns, rec["col"]),
                "side": _labels(ORDER_SIDES, rec["side"]),
                "size": rec["size"],
                "price": rec["price"],
                "fees": rec["fees"],
                "reason": _labels(ORDER_REASONS, self.order_reason),
                **(self.order_extra or {}),
            },
            schema_overrides={"timestamp": _TS_TYPE},
        )

    @functools.cached_property
    def exits(self) -> pl.DataFrame:
        """Stop exits as a polars frame (built on first access)."""
        exits = self.stop_exits
        if exits is None:
            return pl.DataFrame(
                schema={
                    "bar": pl.Int64,
                    "timestamp": _TS_TYPE,
                    "column": pl.String,
                    "kind": pl.String,
                    "price": pl.Float64,
                    "ambiguous": pl.Boolean,
                }
            )
        return pl.DataFrame(
            {
                "bar": pl.Series(exits.bar, dtype=pl.Int64),
                "timestamp": pl.Series(self.prices.index[exits.bar])
                .dt.replace_time_zone("UTC")
                .dt.cast_time_unit("ms"),
                "column": _labels(self.prices.columns, exits.col),
                "kind": _labels(ORDER_REASONS, exits.kind),
                "price": exits.price,
                "ambiguous": exits.ambiguous,
            },
            schema_overrides={"timestamp": _TS_TYPE},
        )


def book_results(
    prices: PriceBlock,
    records: np.ndarray,
    init: np.ndarray,
    off: int,
    shares: np.ndarray,
    found: list[StopExits | None],
    reason: np.ndarray | None,
    amb: np.ndarray | None,
    arrays: OrderArrays,
    engine: str,
) -> list[SimResult]:
    """Every book's result from the records of the one call, computed for all books at once.

    vectorbt values a portfolio from its records the same way (cash flow plus assets at the
    close); doing it in numpy, per bar rather than per row, skips its pandas wrapping. Sums
    run in the same order as for one book alone (records in simulation order, columns left to
    right), so a book's numbers do not depend on the books beside it.

    Parameters
    ----------
    prices : PriceBlock
        The simulated prices (``k`` columns per book).
    records : np.ndarray
        vectorbt's order records of the call, on the two-rows-per-bar grid.
    init : np.ndarray
        (n_books,) initial cash of each book (carried shares' value included).
    off : int
        Row of bar 0 in the grid (1 with a carry row, else 0).
    shares : np.ndarray
        (n_books, k) shares carried in.
    found : list of StopExits or None
        Each book's stop exits (None where its stops were not scanned).
    reason, amb : np.ndarray or None
        (n_rows, n_books * k) reason codes and ambiguity flags of the orders (None: all rebalance).
    arrays : tuple
        The order arrays of the call: close, size, size type, price, fees, slippage.
    engine : str
        vectorbt engine of the books' ``Portfolio`` (built on demand).

    Returns
    -------
    list of SimResult
        One per book.
    """
    k = prices.shape[1]
    g = len(init)
    book, cash, equity, position_end = _book_values(prices, records, init, off)
    mine, codes, ambiguous, bars, bounds = _book_records(records, book, off, shares, reason, amb, k)
    results = []
    for b in range(g):
        lo, hi = bounds[b], bounds[b + 1]
        exits = found[b]
        results.append(
            SimResult(
                equity=equity[b],
                cash=cash[b],
                cash_end=float(cash[b, -1]),
                shares_end=position_end[b],
                order_bar=bars[lo:hi],
                order_records=mine[lo:hi],
                order_reason=codes[lo:hi],
                order_ambiguous=ambiguous[lo:hi],
                stop_exits=exits,
                end_state=None if exits is None else exits.end,
                n_ambiguous=0 if exits is None else int(exits.ambiguous.sum()),
                portfolio_factory=_portfolio_factory(arrays, init, b, k, engine),
                prices=prices,
            )
        )
    return results


def _portfolio_factory(
    arrays: OrderArrays, init: np.ndarray, b: int, k: int, engine: str
) -> Callable[[], vbt.Portfolio]:
    """Return the builder of book ``b``'s ``vbt.Portfolio``: its columns of the one call, on their own."""
    close, size, size_type, price, fees, slippage = arrays
    cols = slice(b * k, (b + 1) * k)

    def portfolio() -> vbt.Portfolio:
        return vectorbt_import().Portfolio.from_orders(
            close[:, cols],
            size[:, cols],
            size_type=size_type,
            price=price[:, cols],
            val_price=price[:, cols],
            fees=fees,
            slippage=slippage,
            init_cash=float(init[b]),
            cash_sharing=True,
            group_by=True,
            call_seq="auto",
            engine=engine,
        )

    return portfolio


def _book_values(
    prices: PriceBlock, records: np.ndarray, init: np.ndarray, off: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each record's book, and each book's cash and equity per bar and shares after the last bar."""
    n_bars, k = prices.shape
    g = len(init)
    col = records["col"]
    book = col // k
    sell = records["side"] == 1
    signed = np.where(sell, -records["size"], records["size"])
    flow = np.where(sell, 1.0, -1.0) * records["size"] * records["price"] - records["fees"]
    bar_of = np.maximum(records["idx"] - off, 0) // 2  # the carry row folds into bar 0
    cash = init[:, None] + np.cumsum(
        np.bincount(book * n_bars + bar_of, weights=flow, minlength=g * n_bars).reshape(g, n_bars), axis=1
    )
    pos_flow = np.bincount(bar_of * (g * k) + col, weights=signed, minlength=n_bars * g * k)
    position = np.cumsum(pos_flow.reshape(n_bars, g * k), axis=0).reshape(n_bars, g, k)
    held = np.zeros((n_bars, g))
    for j in range(k):
        held += position[:, :, j] * prices.close[:, j][:, None]
    equity = np.ascontiguousarray((cash.T + held).T)  # (g, n_bars): one contiguous row per book
    return book, cash, equity, position[-1]


def _book_records(
    records: np.ndarray,
    book: np.ndarray,
    off: int,
    shares: np.ndarray,
    reason: np.ndarray | None,
    amb: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Every book's records without the carry row, book after book, with their codes and bars.

    Returns the records (columns within the book), reason codes, ambiguity flags, bars, and the
    bounds of each book's slice (book ``b`` is ``bounds[b]:bounds[b + 1]``).
    """
    g = len(shares)
    # every book's records, book after book (simulation order kept within a book), in one go
    order = np.argsort(book, kind="stable") if g > 1 else np.arange(len(records))
    mine, owner = records[order], book[order]
    mine["col"] -= owner * k
    if off:
        first = mine["idx"] == 0
        got = np.zeros((g, k))
        got[owner[first], mine["col"][first]] = mine["size"][first]
        for bad in np.flatnonzero((got != shares).any(axis=1)):
            _check_carry_fill(mine[owner == bad], shares[bad])
        keep = mine["idx"] >= off
        mine, owner = mine[keep], owner[keep]
    codes = np.zeros(len(mine), dtype=np.int8) if reason is None else reason[mine["idx"], mine["col"] + owner * k]
    ambiguous = np.zeros(len(mine), dtype=np.bool_) if amb is None else amb[mine["idx"], mine["col"] + owner * k]
    bars = (mine["idx"] - off) // 2
    bounds = np.searchsorted(owner, np.arange(g + 1)).tolist()
    return mine, codes, ambiguous, bars, bounds


def _check_carry_fill(records: np.ndarray, shares: np.ndarray) -> None:
    """Raise if the carry row did not rebuild the carried shares exactly.

    The carry row's cash is the sum of the shares' values, so the last buy can be short by a few
    ulps; vectorbt fills it in full because it compares cash with a relative tolerance of 1e-9 and
    snaps the remainder to 0. This check turns a partial fill (which would lose shares) into an
    error instead of a silent drift.
    """
    first = records[records["idx"] == 0]
    got = np.zeros_like(shares)
    got[first["col"]] = first["size"]
    if not np.array_equal(got, shares):
        msg = f"carry row bought {got} instead of {shares} shares; report this as an engine bug"
        raise RuntimeError(msg)


def _labels(names: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """Map integer codes to their names (a gather, cheaper than building Python strings)."""
    return pl.Series(names, dtype=pl.String).gather(codes)
