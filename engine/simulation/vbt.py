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

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.core.choices import VBT_ENGINES
from engine.simulation.orders import carry_arrays, grid_weights, order_arrays, orders_simulate

# re-exported: the simulator's inputs and outcome, where callers have imported them from
from engine.simulation.prices import PriceBlock as PriceBlock
from engine.simulation.result import SimResult as SimResult
from engine.simulation.result import book_results

# re-exported: the order frames' labels (engine.run imports them from here)
from engine.simulation.stops import ORDER_REASONS as ORDER_REASONS
from engine.simulation.stops import ORDER_SIDES as ORDER_SIDES
from engine.simulation.stops import (
    Ambiguity,
    HeldReweights,
    StopExits,
    StopState,
    ambiguity_check,
    split_books,
)
from engine.simulation.topups import scan_stops

TOPUP_FILLS = "numba"
"""Where the fills of a top-up row come from while the stops are scanned: ``"numba"`` (the
restatement in :mod:`engine.simulation.fills`, checked against the vectorbt call afterwards) or
``"vectorbt"`` (a vectorbt call per top-up row; tests compare both)."""


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
        if engine not in VBT_ENGINES:
            msg = f"engine must be one of {VBT_ENGINES}, got {engine!r}"
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
        g, k = len(weights), prices.shape[1]
        w_all = grid_weights(prices, weights, exit_rules, init_cash, carry_shares)
        shares, price0 = carry_arrays(carry_shares, carry_price, k)  # (g, k) shares carried in
        off, init, arrays = order_arrays(prices, w_all, shares, price0, init_cash, self.fees, self.slippage)
        group_lens = np.full(g, k)

        policy = self.ambiguity if ambiguity is None else ambiguity
        found: list[StopExits | None] = [None] * g
        states: list[StopState | None] = [None] * g if carry_state is None else list(carry_state)
        if len(states) != g:
            msg = "simulate_grid needs one carry state (or None) per book"
            raise ValueError(msg)
        tracked = [b for b, r in enumerate(exit_rules) if (r is not None and r.active) or held_reweights == "first_bar"]
        if not tracked:
            records = orders_simulate(*arrays, init, group_lens, self.engine)
            return book_results(prices, records, init, off, shares, found, None, None, arrays, self.engine)
        scan = (prices, w_all, exit_rules, states, tracked, policy, held_reweights, init, group_lens, off)
        # top-up fills from the numba restatement of vectorbt's arithmetic, checked against the
        # vectorbt call's own fills; on any difference, again with the fills taken from vectorbt
        for exact in (False, True) if TOPUP_FILLS == "numba" else (True,):
            grid, arrays, reason, amb, taken = scan_stops(
                *scan, arrays, exact=exact, fee=self.fees, slip=self.slippage, engine=self.engine
            )
            records = orders_simulate(*arrays, init, group_lens, self.engine)
            if exact or _fills_agree(records, taken, g * k):
                break
        for b, e in zip(tracked, split_books(grid, len(tracked), k), strict=True):
            found[b] = e
        return book_results(prices, records, init, off, shares, found, reason, amb, arrays, self.engine)


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
