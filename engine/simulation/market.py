"""Market execution: rebalances and stops through a participation cap, impact, spread and limits.

One numba kernel (:mod:`engine.simulation.market_nb`) walks every book; docs/EXECUTION.md states the rules. The grid is the vectorbt path's (:mod:`engine.simulation.vbt`):
bar ``i``'s open row (rebalance orders, exits at the open, pending remainders) and its rest-of-bar
row (stop exits at the stop price); the stops are those of :mod:`engine.simulation.stops`. With every
friction off the results equal :class:`~engine.simulation.vbt.VectorBTSimulator`'s to 1e-9.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from engine.simulation.books import GridBook, Pending
from engine.simulation.market_nb import (
    DROPPED,
    FEES,
    FUNDING,
    IMPACT,
    N_FILL_FIELDS,
    REJECTED,
    SLIPPAGE,
    SPREAD,
    market_nb,
)
from engine.simulation.orders import carry_arrays, grid_weights
from engine.simulation.prices import PriceBlock
from engine.simulation.result import SimResult
from engine.simulation.stops import (
    Ambiguity,
    HeldReweights,
    StopExits,
    StopState,
    _rule_arrays,
    ambiguity_check,
)
from engine.simulation.vbt_enums import order_dt

LEFTOVERS = ("carry", "drop")
COST_KEYS = ("fees", "slippage", "impact", "spread", "rejected_orders", "dropped_quote")
"""Keys of ``SimResult.costs`` (the market execution's friction totals)."""
EXTRA_COLUMNS = ("quote_volume", "participation", "impact_cost", "spread_cost")
"""Columns the market execution adds to ``SimResult.orders``."""


@dataclass(frozen=True)
class Frictions:
    """A window's per-column market facts, all float64, on the simulation grid of the PriceBlock.

    Attributes
    ----------
    quote_volume : np.ndarray
        (n_bars, k) the bar's traded quote volume (close * volume of the bar); NaN or 0: nothing
        tradable on that bar when a cap or impact is on.
    sigma : np.ndarray
        (n_bars, k) the bar's volatility estimate, a fraction (impact's sigma; docs/EXECUTION.md
        recommends Parkinson's high-low estimator over past bars). Must be finite and >= 0 where
        the quote volume is > 0 when impact is on.
    half_spread : np.ndarray
        (k,) fraction of the price paid on every fill against the trader (0 = none), in [0, 1).
    amount_step : np.ndarray
        (k,) amounts round down to a multiple of it (0 = none).
    min_notional : np.ndarray
        (k,) a fill whose quote amount is below it is not placed (0 = none).
    price_tick : np.ndarray
        (k,) fill prices round to the tick against the trader (buys up, sells down; 0 = none).
    funding : np.ndarray or None
        (n_bars, k) funding per share of a perpetual (rate x mark, summed over the funding times
        inside the bar), paid by the positions held after the bar's open row; None: spot.
    """

    quote_volume: np.ndarray
    sigma: np.ndarray
    half_spread: np.ndarray
    amount_step: np.ndarray
    min_notional: np.ndarray
    price_tick: np.ndarray
    funding: np.ndarray | None = None

    @classmethod
    def none(cls, n_bars: int, k: int) -> Frictions:
        """No friction: unknown volumes, no spread, no exchange limits."""
        nan, zero = np.full((n_bars, k), np.nan), np.zeros(k)
        return cls(nan, nan.copy(), zero, zero.copy(), zero.copy(), zero.copy())

    def check(self, shape: tuple[int, int], impact: bool) -> None:
        """Raise ValueError naming the first field that does not fit a (n_bars, k) window."""
        k = shape[1]
        for name in ("quote_volume", "sigma"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.shape != shape:
                msg = f"Frictions.{name} must be a float64 array of shape {shape} (the window's bars x columns)"
                raise ValueError(msg)
        if np.isinf(self.quote_volume).any() or (self.quote_volume < 0).any():
            msg = "Frictions.quote_volume must be NaN or finite and >= 0"
            raise ValueError(msg)
        for name in ("half_spread", "amount_step", "min_notional", "price_tick"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.shape != (k,):
                msg = f"Frictions.{name} must be a float64 array of shape ({k},) (one value per column)"
                raise ValueError(msg)
            if not (np.isfinite(a).all() and (a >= 0).all()):
                msg = f"Frictions.{name} must be finite and >= 0 (0 = none)"
                raise ValueError(msg)
        f = self.funding
        if f is not None and (not isinstance(f, np.ndarray) or f.shape != shape or not np.isfinite(f).all()):
            msg = f"Frictions.funding must be None or a finite float64 array of shape {shape}"
            raise ValueError(msg)
        if (self.half_spread >= 1).any():
            msg = "Frictions.half_spread must be a fraction of the price below 1"
            raise ValueError(msg)
        if impact:
            sig = self.sigma[self.quote_volume > 0]
            if not (np.isfinite(sig).all() and (sig >= 0).all()):
                msg = "Frictions.sigma must be finite and >= 0 on every bar with quote volume when impact is on"
                raise ValueError(msg)


@dataclass(frozen=True)
class ExecutionRules:
    """How orders meet the market.

    Attributes
    ----------
    max_participation : float
        Fraction of the bar's quote volume one column may fill on that bar (inf = no cap).
    leftover : {"carry", "drop"}
        What becomes of a rebalance order's remainder the cap leaves: it keeps filling on the next
        bars' opens, or is dropped. A stop exit's remainder is always carried.
    impact_k : float
        Square-root impact coefficient k (0 = no impact).
    """

    max_participation: float = math.inf
    leftover: str = "carry"
    impact_k: float = 0.0

    def __post_init__(self) -> None:
        """Validate the rules."""
        if not (self.max_participation > 0):  # also catches NaN
            msg = f"max_participation must be > 0 (inf = no cap), got {self.max_participation}"
            raise ValueError(msg)
        if self.leftover not in LEFTOVERS:
            msg = f"leftover must be one of {LEFTOVERS}, got {self.leftover!r}"
            raise ValueError(msg)
        if not (math.isfinite(self.impact_k) and self.impact_k >= 0):
            msg = f"impact_k must be finite and >= 0, got {self.impact_k}"
            raise ValueError(msg)


def market_simulate(
    prices: PriceBlock,
    books: list[GridBook],
    fr: Frictions,
    ex: ExecutionRules,
    *,
    fees: float,
    slippage: float,
    carry_price: np.ndarray | None,
    ambiguity: Ambiguity,
    held_reweights: HeldReweights,
    margin: tuple[float, float] | None = None,
) -> list[SimResult]:
    """Simulate several books on one window's prices through the market (docs/EXECUTION.md).

    Parameters
    ----------
    prices : PriceBlock
        OHLC of the window's ``k`` columns.
    books : list of GridBook
        Each book's exit rules, weights, initial cash and carried shares, risk state and pending
        remainders (books do not interact).
    fr : Frictions
        The window's quote volumes, volatilities, spreads and exchange limits.
    ex : ExecutionRules
        Participation cap, leftover policy and impact coefficient.
    fees, slippage : float
        Fee fraction of each fill's value; fixed slippage fraction of the price.
    carry_price : np.ndarray or None
        (k,) the previous window's last close, needed where shares are carried (checked as on the
        vectorbt path; the market execution starts from the carried cash and shares as they are).
    ambiguity : {"pessimistic", "optimistic"}
        Which exit wins a bar whose range holds both stop loss and take profit.
    held_reweights : {"all", "first_bar"}
        Whether a positive weight re-weights a held column at any bar or only at bar 0.
    margin : (leverage, maintenance margin) or None
        Isolated margin: each position is liquidated at its liquidation level
        (:mod:`engine.simulation.margin`); None: no margin market (spot).

    Returns
    -------
    list of SimResult
        One per book, with the orders' extra columns, ``costs``, ``pending_end`` and ``ledger``.
    """
    policy = _arguments_check(ambiguity, held_reweights, fees, slippage, margin)
    n_bars, k = prices.shape
    fr.check((n_bars, k), ex.impact_k > 0)
    rules = [b.exit_rules for b in books]
    w_all = grid_weights(prices, [b.weights for b in books], rules, [b.init_cash for b in books],
                         [b.carry_shares for b in books], signed=True)  # fmt: skip
    shares, _ = carry_arrays([b.carry_shares for b in books], carry_price, k, signed=True)
    # a book with a short weight or short shares may sell below zero (docs/LONG_SHORT.md)
    shorts = bool((w_all[np.isfinite(w_all)] < 0).any() or (shares < 0).any())
    par = _kernel_params(fees, slippage, ex, shorts, margin, fr.funding is not None)
    frc = np.ascontiguousarray(np.stack([fr.half_spread, fr.amount_step, fr.min_notional, fr.price_tick], axis=1))
    index_ns = np.asarray(prices.index, dtype="datetime64[ns]").view(np.int64)
    fixed = (
        prices.open, prices.high, prices.low, prices.close, index_ns, np.ascontiguousarray(w_all), k,
        *_rule_arrays(rules, k), policy == "pessimistic", held_reweights == "first_bar",
        np.ascontiguousarray(fr.quote_volume), np.ascontiguousarray(fr.sigma), frc, par,
    )  # fmt: skip
    funding = np.zeros((1, 1)) if fr.funding is None else np.ascontiguousarray(fr.funding, dtype=np.float64)
    kernel = functools.partial(market_nb, *fixed)  # the window's inputs bound; the state follows
    out, ebuf, dbuf, st = _walk(kernel, books, shares, n_bars, k, funding, fr.funding is not None)
    # a margin book keeps its positions' basis across windows (liquidation levels) with or without exit rules
    tracked = [(r is not None and r.active) or held_reweights == "first_bar" or margin is not None for r in rules]
    exits = _exits(ebuf, dbuf, st, tracked, k)
    return _book_results(prices, out, k, exits)


def _arguments_check(
    ambiguity: Ambiguity,
    held_reweights: HeldReweights,
    fees: float,
    slippage: float,
    margin: tuple[float, float] | None,
) -> Ambiguity:
    """Return the ambiguity policy; refuse (``ValueError``) a mode, fee, slippage or margin out of range."""
    policy = ambiguity_check(ambiguity)
    if held_reweights not in ("all", "first_bar"):
        msg = f"held_reweights must be 'all' or 'first_bar', got {held_reweights!r}"
        raise ValueError(msg)
    if not (np.isfinite(fees) and fees >= 0 and np.isfinite(slippage) and 0 <= slippage < 1):
        msg = f"fees must be >= 0 and 0 <= slippage < 1, got fees={fees}, slippage={slippage}"
        raise ValueError(msg)
    if margin is not None and not (margin[0] >= 1.0 and 0.0 < margin[1] < 1.0 / margin[0]):
        msg = f"margin must be (leverage >= 1, 0 < maintenance margin < 1 / leverage), got {margin}"
        raise ValueError(msg)
    return policy


def _kernel_params(
    fees: float,
    slippage: float,
    ex: ExecutionRules,
    shorts: bool,
    margin: tuple[float, float] | None,
    funded: bool,
) -> np.ndarray:
    """Return the kernel's scalar parameters (``par`` of :func:`~engine.simulation.market_nb.market_nb`), in its order."""
    return np.array(
        [
            fees,
            slippage,
            ex.max_participation,
            ex.impact_k,
            float(ex.leftover == "carry"),
            float(shorts),
            *(margin or (0.0, 0.0)),
            float(funded),
        ]
    )


def _walk(
    kernel: Callable[..., tuple[int, int, int]],
    books: list[GridBook],
    shares: np.ndarray,
    n_bars: int,
    k: int,
    funding: np.ndarray,
    funded: bool,
) -> tuple[_Outcome, np.ndarray, np.ndarray, StopState]:
    """Walk every book through the kernel from its carried cash, shares, stop state and remainders.

    ``kernel`` is :func:`~engine.simulation.market_nb.market_nb` with its leading arguments (prices,
    weights, rules, frictions, ``par``) bound.
    Returns the outcome, the rows of the stop exits and of the dropped entries, and the books' stop
    state at the end.
    """
    g = len(books)
    # room for the usual number of fills first; a walk that runs out is redone with room for all
    for room in (first_room(n_bars, g, k), 2 * n_bars * g * k):
        cash = np.array([float(b.init_cash) for b in books])
        position = shares.reshape(-1).copy()
        st, pend = _state_in(books, k)
        fbuf = np.empty((room, N_FILL_FIELDS))
        ebuf, dbuf = np.empty((min(room, n_bars * g * k), 6)), np.empty((min(room, n_bars * g * k), 2))
        cash_bar, equity_bar = np.empty((g, n_bars)), np.empty((g, n_bars))
        ledger, tally = np.zeros((g * k, 4)), np.zeros((g, 7))
        fpaid = np.zeros((n_bars, g * k) if funded else (1, 1))
        nf, ne, nd = kernel(
            cash, position, st.basis, st.peak, st.opened_ns, pend, fbuf, ebuf, dbuf, cash_bar, equity_bar,
            ledger, tally, funding, fpaid,
        )  # fmt: skip
        if nf >= 0:
            break
    out = _Outcome(
        fbuf[:nf], cash_bar, equity_bar, position.reshape(g, k), pend, ledger, tally, fpaid if funded else None
    )
    return out, ebuf[:ne], dbuf[:nd], st


def first_room(n_bars: int, g: int, k: int) -> int:
    """Fill rows of the first walk's buffers: 4096 plus 4 per bar and book, at most 2 per row and column."""
    return min(2 * n_bars * g * k, 4096 + 4 * n_bars * g)


def _state_in(books: list[GridBook], k: int) -> tuple[StopState, np.ndarray]:
    """Return the books' carried stop state and pending remainders, side by side (fresh copies)."""
    st = StopState.concat(
        [StopState.flat(k) if b.carry_state is None else b.carry_state.take(slice(None)) for b in books]
    )
    if st.basis.shape != (len(books) * k,):
        msg = f"each book's carry_state must have {k} columns"
        raise ValueError(msg)
    return st, np.vstack([_pending_in(b.carry_pending, k) for b in books])


def _pending_in(p: Pending | None, k: int) -> np.ndarray:
    """Return a book's carried remainders as kernel rows (shares, reason, ambiguous)."""
    rows = np.zeros((k, 3))
    if p is None:
        return rows
    shares = np.asarray(p.shares, dtype=np.float64)
    if shares.shape != (k,) or not np.isfinite(shares).all():
        msg = f"carry_pending must hold {k} finite signed share counts"
        raise ValueError(msg)
    rows[:, 0], rows[:, 1], rows[:, 2] = shares, p.reason, p.ambiguous
    return rows


def _exits(ebuf: np.ndarray, dbuf: np.ndarray, st: StopState, tracked: list[bool], k: int) -> list[StopExits | None]:
    """Each tracked book's stop exits, sorted by bar then column, with its dropped entries and end state."""
    order = np.lexsort((ebuf[:, 1], ebuf[:, 0]))
    e = ebuf[order]
    bar, col = e[:, 0].astype(np.int64), e[:, 1].astype(np.int64)
    dbar, dcol = dbuf[:, 0].astype(np.int64), dbuf[:, 1].astype(np.int64)
    out: list[StopExits | None] = []
    for b, on in enumerate(tracked):
        if not on:
            out.append(None)
            continue
        m, dm = col // k == b, dcol // k == b
        out.append(
            StopExits(
                bar[m],
                col[m] - b * k,
                e[m, 2].astype(np.int8),
                e[m, 3].copy(),
                e[m, 4] > 0,
                e[m, 5] > 0,
                dbar[dm],
                dcol[dm] - b * k,
                st.take(slice(b * k, (b + 1) * k)),
            )
        )
    return out


@dataclass(frozen=True)
class _Outcome:
    """The kernel's outputs, all books together."""

    fills: np.ndarray
    cash: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    pend: np.ndarray
    ledger: np.ndarray
    tally: np.ndarray
    fpaid: np.ndarray | None = None


def _book_results(prices: PriceBlock, out: _Outcome, k: int, exits: list[StopExits | None]) -> list[SimResult]:
    """Every book's :class:`SimResult` from the kernel's outputs (fills split by book, order kept)."""
    f = out.fills
    col = f[:, 1].astype(np.int64)
    book = col // k
    order = np.argsort(book, kind="stable")
    f, col, book = f[order], col[order], book[order]
    bounds = np.searchsorted(book, np.arange(len(exits) + 1)).tolist()
    rec = np.empty(len(f), dtype=order_dt)
    bar = f[:, 0].astype(np.int64)
    rec["col"] = col - book * k
    rec["idx"] = 2 * bar + f[:, 8].astype(np.int64)
    rec["size"], rec["price"], rec["fees"] = f[:, 3], f[:, 4], f[:, 5]
    rec["side"] = f[:, 2].astype(np.int64)
    reason, ambiguous = f[:, 6].astype(np.int8), f[:, 7] > 0
    results = []
    for b, e in enumerate(exits):
        lo, hi = bounds[b], bounds[b + 1]
        mine = rec[lo:hi].copy()
        mine["id"] = np.arange(hi - lo)
        cols = slice(b * k, (b + 1) * k)
        results.append(
            SimResult(
                equity=out.equity[b],
                cash=out.cash[b],
                cash_end=float(out.cash[b, -1]),
                shares_end=out.position[b],
                order_bar=bar[lo:hi],
                order_records=mine,
                order_reason=reason[lo:hi],
                order_ambiguous=ambiguous[lo:hi],
                stop_exits=e,
                end_state=None if e is None else e.end,
                n_ambiguous=0 if e is None else int(e.ambiguous.sum()),
                portfolio_factory=_no_portfolio,
                prices=prices,
                order_extra={name: f[lo:hi, 9 + j] for j, name in enumerate(EXTRA_COLUMNS)},
                costs=_costs(out.tally[b], out.fpaid is not None),
                pending_end=Pending(out.pend[cols, 0], out.pend[cols, 1].astype(np.int8), out.pend[cols, 2] > 0),
                ledger=out.ledger[cols],
                funding=None if out.fpaid is None else out.fpaid[:, cols],
            )
        )
    return results


def _costs(tally: np.ndarray, funded: bool) -> dict[str, float]:
    """Return a book's friction totals (``COST_KEYS``, and ``funding`` when funding was booked) from its kernel tally."""
    return ({"funding": float(tally[FUNDING])} if funded else {}) | {
        "fees": float(tally[FEES]),
        "slippage": float(tally[SLIPPAGE]),
        "impact": float(tally[IMPACT]),
        "spread": float(tally[SPREAD]),
        "rejected_orders": int(tally[REJECTED]),
        "dropped_quote": float(tally[DROPPED]),
    }


def _no_portfolio() -> NoReturn:
    """Raise: the market execution has no vectorbt Portfolio (its fills are not vectorbt's)."""
    msg = "a market-execution result has no vbt.Portfolio: use its orders, cash and equity"
    raise NotImplementedError(msg)
