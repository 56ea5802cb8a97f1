"""Rebalance simulation with optional stop exits on one vectorbt ``from_orders`` call.

Simulation grid: bar ``i`` becomes two rows. Row ``2i`` is the bar's open (valuation and close
value ``open[i]``), where target-percent rebalance orders and ``max_holding`` exits execute at
``open[i]``. Row ``2i + 1`` is the rest of the bar (close value ``close[i]``), where stop exits
execute as target-percent 0 orders at the stop price. An entry at the open and a stop later in
the same bar are thus one order per row, and vectorbt's ``from_orders`` (target percent, cash
sharing, sells before buys) does every order with its own fees and slippage. Equity is reported
at the odd rows: one value per bar, at its close.

Carry-in: a walk-forward caller passes the shares held at the end of the previous window; one
extra row before row 0 buys them back at ``carry_price`` without fees or slippage, with
vectorbt's initial cash raised by their value, so the window starts with exactly that cash and
those shares. That row is dropped from every output. The positions' risk state (cost basis,
trailing peak, opening time: ``StopState``) is carried too (``carry_state``), so a carried position
keeps its stops; the state after the last bar is returned (``SimResult.end_state``).

Top-ups: the cost basis after a re-weight of a held position needs the re-weight's fills, which
depend on the cash and the other columns' orders of that row. The stop scan therefore stops at a
bar that re-weights a held column; the rows up to that bar's open are simulated (vectorbt, the
same call on a prefix of the same arrays, so the fills are the ones the full call makes) and the
scan resumes with the new basis. A walk-forward window re-weights only at its first bar, so this
costs one prefix of two rows per window.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import vectorbt as vbt
from vectorbt.portfolio import nb as portfolio_nb
from vectorbt.portfolio.enums import CallSeqType, Direction, SizeType, order_dt

from engine.exit_rules import ExitRules

# re-exported: the order frames' labels (engine.run imports them from here)
from engine.simulation.stops import ORDER_REASONS as ORDER_REASONS
from engine.simulation.stops import ORDER_SIDES as ORDER_SIDES
from engine.simulation.stops import (
    Ambiguity,
    FillWalk,
    HeldReweights,
    StopExits,
    StopState,
    ambiguity_check,
    scan_grid,
    split_books,
)

ENGINES = ("rust", "numba")
TOPUP_FILLS = "numba"
"""Where the fills of a top-up row come from while the stops are scanned: ``"numba"`` (the
restatement in :mod:`engine.simulation.fills`, checked against the vectorbt call afterwards) or
``"vectorbt"`` (a vectorbt call per top-up row; tests compare both)."""


@dataclass(frozen=True)
class PriceBlock:
    """OHLC of the simulated columns on one time grid.

    Attributes
    ----------
    open, high, low, close : np.ndarray
        (n_bars, n_cols) float64, finite and > 0, with ``low <= open, close <= high``.
    index : np.ndarray
        (n_bars,) datetime64[ns] bar open times, strictly increasing.
    columns : tuple of str
        One name per column.
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    index: np.ndarray
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and prices."""
        object.__setattr__(self, "columns", tuple(self.columns))
        shape = np.shape(self.open)
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            msg = f"open must be a non-empty 2-D (n_bars, n_cols) array, got shape {shape}"
            raise ValueError(msg)
        for name in ("open", "high", "low", "close"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.shape != shape:
                msg = f"{name} must be a float64 array of shape {shape} (like open); convert with np.asarray(x, float)"
                raise ValueError(msg)
            if not (np.isfinite(arr).all() and (arr > 0).all()):
                msg = f"{name} holds non-finite or non-positive prices: drop or fill those bars first"
                raise ValueError(msg)
        if not (
            (self.low <= np.minimum(self.open, self.close)).all()
            and (self.high >= np.maximum(self.open, self.close)).all()
        ):
            msg = "bars must satisfy low <= open, close <= high"
            raise ValueError(msg)
        if (
            not isinstance(self.index, np.ndarray)
            or self.index.dtype != np.dtype("datetime64[ns]")
            or self.index.shape != (shape[0],)
        ):
            msg = f"index must be a datetime64[ns] array of length {shape[0]} (bar open times)"
            raise ValueError(msg)
        if shape[0] > 1 and not (np.diff(self.index.view(np.int64)) > 0).all():
            msg = "index must be strictly increasing"
            raise ValueError(msg)
        if len(self.columns) != shape[1]:
            msg = f"columns has {len(self.columns)} names for {shape[1]} price columns"
            raise ValueError(msg)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_bars, n_cols)``."""
        return self.open.shape


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
    portfolio : Any
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
    portfolio_factory: Callable[[], Any]
    prices: PriceBlock

    @functools.cached_property
    def portfolio(self) -> Any:
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


class VectorBTSimulator:
    """Target-weight rebalancing with stop exits, simulated by vectorbt.

    Parameters
    ----------
    fees : float, default 0.0
        Fee as a fraction of each order's value (every order, stop exits included).
    slippage : float, default 0.0
        Price slippage fraction: buys fill at ``price * (1 + slippage)``, sells at
        ``price * (1 - slippage)``.
    engine : {"rust", "numba"}, default "rust"
        vectorbt engine. "rust" needs the ``vectorbt-rust`` package and raises without it.
    ambiguity : {"pessimistic", "optimistic"}, default "pessimistic"
        Which exit wins when a bar's range holds both stop loss and take profit.
    """

    def __init__(
        self,
        fees: float = 0.0,
        slippage: float = 0.0,
        engine: str = "rust",
        ambiguity: Ambiguity = "pessimistic",
    ) -> None:
        if engine not in ENGINES:
            msg = f"engine must be one of {ENGINES}, got {engine!r}"
            raise ValueError(msg)
        ambiguity_check(ambiguity)
        if not (np.isfinite(fees) and fees >= 0 and np.isfinite(slippage) and 0 <= slippage < 1):
            msg = f"fees must be >= 0 and 0 <= slippage < 1, got fees={fees}, slippage={slippage}"
            raise ValueError(msg)
        self.fees = float(fees)
        self.slippage = float(slippage)
        self.engine = engine
        self.ambiguity: Ambiguity = ambiguity

    def simulate(
        self,
        prices: PriceBlock,
        weights: np.ndarray,
        exit_rules: ExitRules | None = None,
        *,
        init_cash: float = 10_000.0,
        carry_shares: np.ndarray | None = None,
        carry_price: np.ndarray | None = None,
        carry_state: StopState | None = None,
        ambiguity: Ambiguity | None = None,
        held_reweights: HeldReweights = "all",
    ) -> SimResult:
        """Simulate target-weight orders at bar opens, plus stop exits inside the bars.

        Parameters
        ----------
        prices : PriceBlock
            OHLC of the columns.
        weights : np.ndarray
            (n_bars, n_cols): NaN = no order; ``w >= 0`` = at this bar's open, rebalance the
            column to fraction ``w`` of the equity valued at the open (0 closes it).
        exit_rules : ExitRules or None
            Stops; None or inactive rules give a pure rebalance run.
        init_cash : float, default 10_000.0
            Cash at the start (besides the carried shares).
        carry_shares, carry_price : np.ndarray or None
            (n_cols,) shares held at the start and the price they are valued at (the previous
            window's last close). ``carry_price`` is needed where ``carry_shares != 0``.
        carry_state : StopState or None
            Risk state (cost basis, trailing peak, opening time) of the carried positions; None:
            carried shares are not watched by the stops until their next positive weight opens a
            new position.
        ambiguity : {"pessimistic", "optimistic"} or None
            Overrides the simulator's ambiguity policy for this call (e.g. a sensitivity pass).
        held_reweights : {"all", "first_bar"}
            With exit rules (or ``"first_bar"``): a positive weight on a held column re-weights it
            at any bar (``"all"``; the cost basis averages in the top-up's fills), or only at bar 0
            (``"first_bar"``: later entries of a held column are dropped, a signal's "already long";
            the stops then run even without exit rules, to know what is held).

        Returns
        -------
        SimResult
        """
        return self.simulate_grid(
            prices,
            [weights],
            [exit_rules],
            init_cash=[init_cash],
            carry_shares=[carry_shares],
            carry_price=carry_price,
            carry_state=[carry_state],
            ambiguity=ambiguity,
            held_reweights=held_reweights,
        )[0]

    def simulate_grid(
        self,
        prices: PriceBlock,
        weights: list[np.ndarray],
        exit_rules: list[ExitRules | None],
        *,
        init_cash: list[float],
        carry_shares: list[np.ndarray | None],
        carry_price: np.ndarray | None = None,
        carry_state: list[StopState | None] | None = None,
        ambiguity: Ambiguity | None = None,
        held_reweights: HeldReweights = "all",
    ) -> list[SimResult]:
        """Simulate several books (e.g. an exit-rule grid) on the same prices in ONE vectorbt call.

        Each book is a cash-sharing group of its own (columns tiled book after book), so books do
        not interact; each book's result equals :meth:`simulate` with the same arguments, bit for
        bit. The order arrays and the results are built for all books at once, so a book costs
        little more than its share of vectorbt's simulation.
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
        if np.isinf(w_all).any() or (w_all[np.isfinite(w_all)] < 0).any():
            msg = "weights must be NaN (no order) or finite and >= 0 (long only)"
            raise ValueError(msg)
        for c0 in init_cash:
            if not (np.isfinite(c0) and c0 >= 0):
                msg = f"init_cash must be finite and >= 0, got {c0}"
                raise ValueError(msg)
        shares, price0 = _carry_arrays(carry_shares, carry_price, k)  # (g, k) shares carried in
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
            size_type: Any = np.full((n_rows, 1), SizeType.TargetPercent, dtype=np.int64)
            size_type[0] = SizeType.Amount
            fees: Any = np.full((n_rows, 1), self.fees)
            fees[0] = 0.0
            slippage: Any = np.full((n_rows, 1), self.slippage)
            slippage[0] = 0.0
        else:
            size_type, fees, slippage = SizeType.TargetPercent, self.fees, self.slippage
        group_lens = np.full(g, k)

        policy = self.ambiguity if ambiguity is None else ambiguity
        found: list[StopExits | None] = [None] * g
        states: list[StopState | None] = [None] * g if carry_state is None else list(carry_state)
        if len(states) != g:
            msg = "simulate_grid needs one carry state (or None) per book"
            raise ValueError(msg)
        tracked = [b for b, r in enumerate(exit_rules) if (r is not None and r.active) or held_reweights == "first_bar"]
        arrays = (close, size, size_type, close, fees, slippage)
        if not tracked:
            records = _orders_simulate(*arrays, init, group_lens, self.engine)
            return self._results(prices, records, init, off, shares, found, None, None, arrays)
        scan = (prices, w_all, exit_rules, states, tracked, policy, held_reweights, init, group_lens, off)
        # top-up fills from the numba restatement of vectorbt's arithmetic, checked against the
        # vectorbt call's own fills; on any difference, again with the fills taken from vectorbt
        for exact in (False, True) if TOPUP_FILLS == "numba" else (True,):
            grid, arrays, reason, amb, taken = self._stops(*scan, arrays, exact=exact)
            records = _orders_simulate(*arrays, init, group_lens, self.engine)
            if exact or _fills_agree(records, taken, g * k):
                break
        for b, e in zip(tracked, split_books(grid, len(tracked), k), strict=True):
            found[b] = e
        return self._results(prices, records, init, off, shares, found, reason, amb, arrays)

    def _stops(
        self,
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
        arrays: tuple[Any, ...],
        *,
        exact: bool,
    ) -> tuple[
        StopExits,
        tuple[Any, ...],
        np.ndarray | None,
        np.ndarray | None,
        list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ]:
        """Return the stop scan of the tracked books and the order arrays with its exits written in.

        A top-up needs the fills of its row: the rows up to it are walked once, segment after
        segment (each from the cash and positions the last one left), by :func:`rows_nb` or, with
        ``exact``, by vectorbt itself (segments chained by a carry row). Returns the scan, the
        arrays, the reason and ambiguity grids, and the fills taken per top-up row.
        """
        close, size0, size_type, _, fees, slippage = arrays
        n_rows = close.shape[0]
        g, k = len(exit_rules), prices.shape[1]
        sub = len(tracked) < g
        cols_of = np.concatenate([np.arange(b * k, (b + 1) * k) for b in tracked]) if sub else slice(None)
        w_tracked = w_all[:, cols_of] if sub else w_all
        per_row = [
            np.broadcast_to(np.asarray(a, dtype=float).reshape(-1), (n_rows,)) for a in (size_type, fees, slippage)
        ]
        chain: dict[str, Any] = {"row": 0, "cash": init.copy(), "pos": np.zeros(g * k)}
        taken: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def topup(bar: int, so_far: StopExits, basis: np.ndarray) -> np.ndarray:
            """Cost basis after the buys of ``bar``'s open, from the fills of that row."""
            lo, r = int(chain["row"]), off + 2 * bar
            seg_size, seg_price = size0[lo : r + 1].copy(), close[lo : r + 1].copy()
            _apply_exits(seg_size, seg_price, None, None, so_far, off - lo, k, tracked)
            q, v, before = self._segment_vbt(
                chain, seg_size, seg_price, close[lo : r + 1], arrays, lo, r, g, k, group_lens
            )
            taken.append((np.array([r]), q[None, :].copy(), v[None, :].copy()))
            q, v, before = q[cols_of], v[cols_of], before[cols_of]
            new = np.full(basis.shape, np.nan)
            bought = (q > 0) & np.isfinite(basis)
            new[bought] = (before[bought] * basis[bought] + v[bought]) / (before[bought] + q[bought])
            return new

        walk = None
        # a walk-forward window re-weights only at its first bar: one vectorbt segment of two rows
        # gives those fills; a call that re-weights held columns again later walks them in numba
        later_buys = held_reweights == "all" and bool((w_tracked[1:] > 0).any())
        if not exact and later_buys:  # the scan walks the rows to its top-up bars itself (numba)
            n_bars = prices.shape[0]
            walk = FillWalk(
                size0[:, cols_of].copy(), close[:, cols_of].copy(), per_row[0].astype(np.int64),
                np.ascontiguousarray(per_row[1]), np.ascontiguousarray(per_row[2]),
                np.full(len(tracked), k, dtype=np.int64), init[tracked].copy(), np.zeros(len(tracked) * k), off,
                np.zeros((n_bars, len(tracked) * k)), np.zeros((n_bars, len(tracked) * k)),
                np.zeros(n_bars, dtype=np.bool_),
            )  # fmt: skip
        grid = scan_grid(
            prices.open, prices.high, prices.low, prices.index, w_tracked,
            [exit_rules[b] for b in tracked], self.slippage, policy,
            StopState.concat([StopState.flat(k) if (carried := states[b]) is None else carried.take(slice(None)) for b in tracked]),
            topup, held_reweights, walk,
        )  # fmt: skip
        if walk is not None:
            bars = np.flatnonzero(walk.taken)
            lut = np.asarray(cols_of) if sub else np.arange(g * k)
            got_q, got_v = np.zeros((len(bars), g * k)), np.zeros((len(bars), g * k))
            got_q[:, lut], got_v[:, lut] = walk.taken_q[bars], walk.taken_v[bars]
            taken.append((off + 2 * bars, got_q, got_v))
        assert grid.dropped_bar is not None  # scan_grid always reports its dropped orders
        if not (len(grid) or len(grid.dropped_bar)):
            return grid, arrays, None, None, taken
        # stop fills differ from the row's close value, so the order prices need their own array
        if walk is not None and not sub:  # the walk's arrays already hold the exits: no copies
            size, price = walk.size, walk.price
        else:
            size, price = size0.copy(), close.copy()
        reason = np.zeros((n_rows, k * g), dtype=np.int8)
        amb = np.zeros((n_rows, k * g), dtype=np.bool_)
        _apply_exits(size, price, reason, amb, grid, off, k, tracked)
        return grid, (close, size, size_type, price, fees, slippage), reason, amb, taken

    def _segment_vbt(
        self,
        chain: dict[str, Any],
        seg_size: np.ndarray,
        seg_price: np.ndarray,
        seg_close: np.ndarray,
        arrays: tuple[Any, ...],
        lo: int,
        r: int,
        g: int,
        k: int,
        group_lens: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run rows ``lo..r`` through vectorbt, from the chain's cash and positions.

        A carry row buys the positions back first. Returns the buys of row ``r`` (quantity, value)
        and the positions before it.
        """
        _, _, size_type, _, fees, slippage = arrays
        if lo == 0:
            seg = (seg_close, seg_size, _rows(size_type, 0, r + 1), seg_price, _rows(fees, 0, r + 1))
            seg_slip, cash0, first = _rows(slippage, 0, r + 1), chain["cash"], 0
        else:
            pos = chain["pos"]
            p0 = seg_close[0]
            cash0 = chain["cash"] + (pos * p0).reshape(g, k).sum(axis=1)
            m = r + 1 - lo
            st = np.full((m + 1, 1), SizeType.TargetPercent, dtype=np.int64)
            st[0] = SizeType.Amount
            fe, sl = np.full((m + 1, 1), self.fees), np.full((m + 1, 1), self.slippage)
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
        rec = _orders_simulate(*seg, seg_slip, cash0, group_lens, self.engine)
        col = rec["col"]
        signed = np.where(rec["side"] == 1, -rec["size"], rec["size"])
        flow = np.where(rec["side"] == 1, 1.0, -1.0) * rec["size"] * rec["price"] - rec["fees"]
        last = first + r - lo
        before = np.bincount(col[rec["idx"] < last], weights=signed[rec["idx"] < last], minlength=g * k)
        buy = (rec["idx"] == last) & (rec["side"] == 0)
        q = np.bincount(col[buy], weights=rec["size"][buy], minlength=g * k)
        v = np.bincount(col[buy], weights=rec["size"][buy] * rec["price"][buy], minlength=g * k)
        pos_all = np.bincount(col, weights=signed, minlength=g * k)
        chain["row"], chain["pos"] = r + 1, np.where(np.abs(pos_all) > 0, pos_all, 0.0)
        chain["cash"] = cash0 + np.bincount(col // k, weights=flow, minlength=g)
        return q, v, before

    def _results(
        self,
        prices: PriceBlock,
        records: np.ndarray,
        init: np.ndarray,
        off: int,
        shares: np.ndarray,
        found: list[StopExits | None],
        reason: np.ndarray | None,
        amb: np.ndarray | None,
        arrays: tuple[Any, ...],
    ) -> list[SimResult]:
        """Every book's result from the records of the one call, computed for all books at once.

        vectorbt values a portfolio from its records the same way (cash flow plus assets at the
        close); doing it in numpy, per bar rather than per row, skips its pandas wrapping. Sums
        run in the same order as for one book alone (records in simulation order, columns left to
        right), so a book's numbers do not depend on the books beside it.
        """
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
        position_end = position[-1]

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
        close, size, size_type, price, fees, slippage = arrays
        results = []
        for b in range(g):
            lo, hi = bounds[b], bounds[b + 1]
            cols = slice(b * k, (b + 1) * k)

            def portfolio(cols: slice = cols, b: int = b) -> Any:
                return vbt.Portfolio.from_orders(
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
                    engine=self.engine,
                )

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
                    portfolio_factory=portfolio,
                    prices=prices,
                )
            )
        return results


def _fills_agree(records: np.ndarray, taken: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_cols: int) -> bool:
    """Whether the buys of every top-up row in ``records`` are the ones the scan was given.

    ``taken`` holds blocks of (rows, bought quantities, bought values), rows increasing.
    """
    if not taken or not sum(len(t[0]) for t in taken):
        return True
    rows = np.concatenate([t[0] for t in taken])
    want_q, want_v = np.vstack([t[1] for t in taken]), np.vstack([t[2] for t in taken])
    slot = np.minimum(np.searchsorted(rows, records["idx"]), len(rows) - 1)
    sel = (rows[slot] == records["idx"]) & (records["side"] == 0)
    key = slot[sel] * n_cols + records["col"][sel]
    size = records["size"][sel]
    got_q = np.bincount(key, weights=size, minlength=len(rows) * n_cols).reshape(want_q.shape)
    got_v = np.bincount(key, weights=size * records["price"][sel], minlength=len(rows) * n_cols).reshape(want_v.shape)
    return bool(np.allclose(got_q, want_q, rtol=1e-12, atol=0) and np.allclose(got_v, want_v, rtol=1e-12, atol=0))


def _rows(a: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of a per-row argument (a scalar applies to every row)."""
    return np.asarray(a)[lo:hi] if np.ndim(a) else a


def _apply_exits(
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


def _orders_simulate(
    close: np.ndarray,
    size: np.ndarray,
    size_type: Any,
    price: np.ndarray,
    fees: Any,
    slippage: Any,
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
    call_seq = portfolio_nb.build_call_seq(shape, group_lens, call_seq_type=CallSeqType.Default)
    init = np.asarray(init_cash, dtype=np.float64)
    size_type = np.asarray(size_type, dtype=np.int64)
    fees = np.asarray(fees, dtype=np.float64)
    slippage = np.asarray(slippage, dtype=np.float64)
    if engine == "rust":
        # vectorbt's dispatch checks ~30 arguments for rust support on every call (~0.2 ms, more
        # than a window's simulation); the arrays here are built to be supported, so the rust
        # function is called directly, with the defaults dispatch would pass spelled out
        records, _ = _rust_from_orders()(
            shape, group_lens, init, call_seq, size, price, size_type, _DIRECTION, fees, _ZERO, slippage,
            _MIN_SIZE, _INF, _NAN, _ZERO, _FALSE, _TRUE, _FALSE, _FALSE, price, close,
            auto_call_seq=True, ffill_val_price=True, update_value=False, max_orders=shape[0] * shape[1],
            max_logs=1, init_temp_records=False, seed=None, flex_2d=True,
        )  # fmt: skip
    else:  # the numba engine, likewise without the dispatch layer
        records, _ = portfolio_nb.simulate_from_orders_nb(
            shape, group_lens, init, call_seq, size, price, size_type, _DIRECTION, fees, _ZERO, slippage,
            _MIN_SIZE, _INF, _NAN, _ZERO, _FALSE, _TRUE, _FALSE, _FALSE, price, close,
            auto_call_seq=True, ffill_val_price=True, update_value=False, max_orders=shape[0] * shape[1],
            max_logs=1, flex_2d=True,
        )  # fmt: skip
    if len(rows) < n_rows:
        records["idx"] = rows[records["idx"]]
    return records


_DIRECTION = np.asarray(Direction.Both, dtype=np.int64)
_MIN_SIZE = np.asarray(1e-8)
_ZERO, _INF, _NAN = np.asarray(0.0), np.asarray(np.inf), np.asarray(np.nan)
_TRUE, _FALSE = np.asarray(True), np.asarray(False)


@functools.cache
def _rust_from_orders() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """vectorbt-rust's from_orders simulation (an error naming the package if it is missing)."""
    try:
        from vectorbt_rust.portfolio import simulate_from_orders_rs
    except ImportError as exc:  # the same condition vectorbt's dispatch raises on
        msg = "backtest.vbt_engine=rust needs the package vectorbt-rust: pip install vectorbt-rust (or use numba)"
        raise RuntimeError(msg) from exc
    return simulate_from_orders_rs  # type: ignore[no-any-return]


def _carry_arrays(
    carry_shares: list[np.ndarray | None], carry_price: np.ndarray | None, n_cols: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate every book's carry-in.

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
    if not np.isfinite(shares).all() or (shares < 0).any():
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


_TS_TYPE = pl.Datetime("ms", "UTC")
"""Timestamps of orders and exits: epoch milliseconds, as in orders.parquet and trades.parquet."""


def _labels(names: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """Map integer codes to their names (a gather, cheaper than building Python strings)."""
    return pl.Series(names, dtype=pl.String).gather(codes)
