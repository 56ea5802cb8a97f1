"""The market execution kernel: target weights, stop exits and frictions walked bar by bar (numba).

docs/EXECUTION.md states the rules; :mod:`engine.simulation.market` validates the inputs and builds
the results. The fill arithmetic is vectorbt's ``from_orders`` (as restated in
:mod:`engine.simulation.fills`: target percent sizes valued at the row's price, cash shared per
book, sells before buys, the same tolerances) with the frictions applied on top: the
participation cap, amount step, minimum notional, half-spread, square-root impact and price tick.
With every friction off the fills are vectorbt's (``tests/test_market.py``, the parity test).

Buffers
    ``fbuf`` (2 * n_bars * n_cols, 14) float64, one row per fill: bar, grid column, side (0 buy,
    1 sell), size, fill price, fees, reason code, ambiguous, row (0 open, 1 rest of bar), the
    bar's quote volume, participation, impact cost, spread cost, slippage cost.
    ``ebuf`` (n_bars * n_cols, 6): bar, column, kind, price, ambiguous, at_open of each stop exit;
    ``dbuf`` (n_bars * n_cols, 2): bar, column of each dropped entry (``first_bar``).
    ``pend`` (n_cols, 3): signed shares, reason code, ambiguous flag of each pending remainder.
    ``ledger`` (n_cols, 4): shares desired, filled, dropped by a friction, and left unfilled as on
    the vectorbt path (cash short, nothing to sell, below vectorbt's min size), all absolute, for the
    conservation law ``desired + pending in = filled + dropped + unfilled + pending out``.
    ``tally`` (n_books, 7): fees, slippage, impact, spread (quote currency), rejected orders,
    dropped quote, funding paid (received: negative).
    ``fpaid`` (n_bars, n_cols): the funding each column's position paid on each bar (docs/LONG_SHORT.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.simulation.fills import _add, _is_close, _is_less, insert_argsort_nb
from engine.simulation.margin import stop_with_liquidation
from engine.simulation.stops import LIQUIDATION, STOP_LOSS, _intrabar_exit, _open_exit
from engine.simulation.stops_short import _intrabar_exit_short, _open_exit_short

MIN_SIZE = 1e-8  # vectorbt's default min_size, as in orders.py
STEP_TOL = 1e-9  # an amount within this fraction of a step of the next multiple rounds up to it
FEES, SLIPPAGE, IMPACT, SPREAD, REJECTED, DROPPED, FUNDING = range(7)
N_FILL_FIELDS = 14


@njit(cache=True)
def _floor_step(x: float, step: float) -> float:
    """``x`` rounded down to a multiple of ``step`` (0 = no step)."""
    if step <= 0.0:
        return x
    return float(np.floor(x / step + STEP_TOL) * step)


@njit(cache=True)
def _tick(price: float, tick: float, buy: bool) -> float:
    """``price`` rounded to the tick against the trader: buys up, sells down (0 = no tick)."""
    if tick <= 0.0:
        return price
    if buy:
        return float(np.ceil(price / tick - STEP_TOL) * tick)
    return float(np.floor(price / tick + STEP_TOL) * tick)


@njit(cache=True)
def _prices(
    p: float, q: float, buy: bool, slip: float, hs: float, impact_k: float, sig: float, vol: float, tick: float
) -> tuple[float, float, float, float]:
    """Fill price of ``q`` shares at ``p`` and its costs per share: (price, slippage, spread, impact).

    Buy: ``p (1 + slip) (1 + hs) (1 + impact)`` rounded up to the tick; sell: ``p (1 - slip)
    (1 - hs) (1 - impact)`` rounded down; ``impact = impact_k * sig * sqrt(q p / vol)`` (at most 1).
    The tick's rounding counts as spread.
    """
    imp = 0.0
    if impact_k > 0.0 and q > 0.0:
        imp = min(impact_k * sig * np.sqrt(q * p / vol), 1.0)
    if buy:
        p1 = p * (1 + slip)
        p2 = p1 * (1.0 + hs)
        p3 = p2 * (1.0 + imp)
        p4 = _tick(p3, tick, True)
        return p4, p1 - p, (p2 - p1) + (p4 - p3), p3 - p2
    p1 = p * (1 - slip)
    p2 = p1 * (1.0 - hs)
    p3 = p2 * (1.0 - imp)
    p4 = _tick(p3, tick, False)
    return p4, p - p1, (p1 - p2) + (p3 - p4), p2 - p3


@njit(cache=True)
def _cap(want: float, p: float, budget: float, step: float) -> tuple[float, bool]:
    """Return the shares of ``want`` that fit in the quote ``budget`` at ``p``, on the step; and whether capped."""
    q = _floor_step(want, step)
    if q * p <= budget:
        return q, False
    q = budget / p
    while q > 0.0 and q * p > budget:
        q = np.nextafter(q, 0.0)
    q = _floor_step(q, step)
    while q > 0.0 and q * p > budget:
        q = q - step if step > 0.0 else np.nextafter(q, 0.0)
    return max(q, 0.0), True


@njit(cache=True)
def _fill_one(
    i: int, row: int, col: int, c: int, s: float, p: float, reason: int, amb: bool, new: bool, cash: float,
    position: np.ndarray, pend: np.ndarray, budget: np.ndarray, vol: float, sig: float, frc: np.ndarray,
    par: np.ndarray, fbuf: np.ndarray, nf: int, ledger: np.ndarray, tally: np.ndarray, short_ok: bool,
) -> tuple[float, int, float, float]:  # fmt: skip
    """Execute one order of ``s`` shares (signed) of grid column ``col`` at row price ``p``.

    Returns the book's cash, the fill count, and the signed shares filled (bought > 0, sold < 0)
    with their price (0, nan if none). ``short_ok``: a sale may take the position below zero.
    Position, pending remainder, budget, ledger and tally are updated in place.
    """
    fee, slip, impact_k, carry = par[0], par[1], par[3], par[4] > 0.0
    hs, step, min_notional, tick = frc[c, 0], frc[c, 1], frc[c, 2], frc[c, 3]
    buy = s > 0
    want = abs(s)
    if new:
        ledger[col, 0] += want
    p_ = position[col]
    room = want if buy or short_ok else min(want, max(p_, 0.0))
    q, capped = _cap(room, p, budget[col], step)
    later = 0.0  # shares left pending
    if capped and (carry or reason != 0) and room - q >= max(step * (1.0 - STEP_TOL), MIN_SIZE):
        later = room - q
    fill, price, fees_paid, spent = 0.0, np.nan, 0.0, 0.0
    short = want - room  # unfilled as on the vectorbt path: nothing to sell, no cash, below min size
    costs = (0.0, 0.0, 0.0)
    if min_notional > 0.0 and q > 0.0 and q * p < min_notional:
        if later > 0.0 and room * p >= min_notional:
            later = room  # only this bar's share is too small: the whole remainder waits
        else:
            tally[REJECTED] += 1  # too small to be placed
            later = 0.0
        q = 0.0
    if q > 0.0:
        price, d_slip, d_spread, d_imp = _prices(p, q, buy, slip, hs, impact_k, sig, vol, tick)
        if buy:
            short += q
            if cash != 0.0 or par[6] > 0.0:
                req = q * price
                req_fees = req * fee + 0.0
                total = req + req_fees
                # a margin market (par[6] = leverage) lends the notional: the weights' gross is at most the
                # leverage (engine/config/book.py), so a buy is not limited by the cash; spot buys are
                if par[6] > 0.0 or _is_close(total, cash) or total < cash:
                    fill, fees_paid, spent = q, req_fees, total
                else:
                    max_req = _add(cash, -0.0) / (1 + fee)
                    if max_req > 0:
                        if step > 0.0:
                            fill = _floor_step(max_req / price, step)
                            fees_paid = fill * price * fee + 0.0
                            spent = fill * price + fees_paid
                        else:
                            fill, fees_paid, spent = max_req / price, cash - max_req, cash
                if _is_close(s, 0.0) or _is_less(fill, MIN_SIZE):
                    fill = 0.0
                elif min_notional > 0.0 and fill * p < min_notional:
                    tally[REJECTED] += 1
                    short -= fill
                    fill = 0.0
                else:
                    short -= fill
                    cash = _add(cash, -spent)
                    position[col] = _add(p_, fill)
        elif price <= 0.0:
            tally[REJECTED] += 1  # impact took the whole price: no sale
        else:
            short += q
            if not (_is_close(q, 0.0) or _is_less(q, MIN_SIZE)):
                acq = q * price
                fees_paid = acq * fee + 0.0
                final_acq = _add(acq, -fees_paid)
                if final_acq >= 0:
                    fill = q
                    short -= q
                    cash = cash + final_acq
                    position[col] = _add(p_, -q)
        costs = (d_slip, d_spread, d_imp)
    if fill > 0.0:
        budget[col] -= fill * p
        row_ = fbuf[nf]
        row_[0], row_[1], row_[2], row_[3], row_[4], row_[5] = i, col, 0.0 if buy else 1.0, fill, price, fees_paid
        row_[6], row_[7], row_[8], row_[9] = reason, 1.0 if amb else 0.0, row, vol
        row_[10] = fill * p / vol if vol > 0.0 else np.nan
        row_[11], row_[12], row_[13] = fill * costs[2], fill * costs[1], fill * costs[0]
        nf += 1
        tally[FEES] += fees_paid
        tally[SLIPPAGE] += fill * costs[0]
        tally[SPREAD] += fill * costs[1]
        tally[IMPACT] += fill * costs[2]
        ledger[col, 1] += fill
    if later > 0.0:
        pend[col, 0] = later if buy else -later
        pend[col, 1] = reason
        pend[col, 2] = 1.0 if amb else 0.0
    ledger[col, 3] += short
    gone = want - fill - later - short
    if gone > 0.0:
        ledger[col, 2] += gone
        tally[DROPPED] += gone * p
    return cash, nf, (fill if buy else -fill), price


@njit(cache=True)
def _row(
    i: int, row: int, b: int, k: int, kind: np.ndarray, size: np.ndarray, price: np.ndarray, reason: np.ndarray,
    amb: np.ndarray, cash: np.ndarray, position: np.ndarray, pend: np.ndarray, budget: np.ndarray, qv: np.ndarray,
    sigma: np.ndarray, frc: np.ndarray, par: np.ndarray, fbuf: np.ndarray, nf: int, ledger: np.ndarray,
    tally: np.ndarray, held_before: np.ndarray, bq: np.ndarray, bpx: np.ndarray, key: np.ndarray, call: np.ndarray,
) -> int:  # fmt: skip
    """Execute the orders of book ``b`` in one row as vectorbt's from_orders orders them.

    ``kind``: 0 no order, 1 target percent ``size`` (0 = close), 2 amount ``size`` shares (a
    pending remainder). Writes each column's position before the row and its buys (shares, price)
    to ``held_before``, ``bq``, ``bpx`` (signed: a sale is negative). Returns the fill count. With shorts
    on (``par[5]``) a target below zero, or a remainder of a column flat or short, may sell short.
    """
    j0 = b * k
    any_order = False
    for c in range(k):
        held_before[c] = position[j0 + c]
        bq[c] = 0.0
        bpx[c] = np.nan
        any_order = any_order or kind[c] != 0
    if not any_order:
        return nf  # vectorbt is handed only the rows that hold an order
    value = cash[b]
    for c in range(k):
        if position[j0 + c] != 0:
            value += position[j0 + c] * price[c]
    for c in range(k):
        if kind[c] == 1:
            key[c] = size[c] * value - position[j0 + c] * price[c]
        elif kind[c] == 2:
            key[c] = size[c] * price[c]
        else:
            key[c] = np.nan
        call[c] = c
    insert_argsort_nb(key, call, k)
    for kk in range(k):
        c = call[kk]
        col = j0 + c
        cb = 0.0 if _is_close(cash[b], 0.0) else cash[b]
        p_ = 0.0 if _is_close(position[col], 0.0) else position[col]
        v = 0.0 if _is_close(value, 0.0) else value
        cash[b] = cb
        position[col] = p_
        if kind[c] == 0:
            continue
        if kind[c] == 1:
            if v <= 0 and not (size[c] == 0.0 and p_ != 0.0):
                continue  # nothing to size a target by; a close (a leveraged book's liquidation) still closes
            s = size[c] * v
            s = s / price[c]
            s = s - p_
        else:
            s = size[c]
        short_ok = par[5] > 0.0 and ((kind[c] == 1 and size[c] < 0.0) or (kind[c] == 2 and p_ <= 0.0))
        cash[b], nf, got, px = _fill_one(
            i, row, col, c, s, price[c], reason[c], amb[c], kind[c] == 1, cb, position, pend, budget,
            qv[i, c], sigma[i, c], frc, par, fbuf, nf, ledger, tally[b], short_ok,
        )  # fmt: skip
        if got != 0.0:
            bq[c] = got
            bpx[c] = px
    return nf


@njit(cache=True)
def _drop_pending(col: int, p: float, pend: np.ndarray, ledger: np.ndarray, tally: np.ndarray) -> None:
    """Drop column ``col``'s pending remainder (a new order or a stop exit replaces it)."""
    gone = abs(pend[col, 0])
    if gone > 0.0:
        ledger[col, 2] += gone
        tally[DROPPED] += gone * p
    pend[col, 0] = pend[col, 1] = pend[col, 2] = 0.0


@njit(cache=True)
def market_nb(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, index_ns: np.ndarray,
    weights: np.ndarray, k: int, fixed_sl: np.ndarray, tp_stop: np.ndarray, trail: np.ndarray,
    max_holding_ns: np.ndarray, pessimistic: bool, first_only: bool, qv: np.ndarray, sigma: np.ndarray,
    frc: np.ndarray, par: np.ndarray, cash: np.ndarray, position: np.ndarray, basis: np.ndarray, peak: np.ndarray,
    opened_ns: np.ndarray, pend: np.ndarray, fbuf: np.ndarray, ebuf: np.ndarray, dbuf: np.ndarray,
    cash_bar: np.ndarray, equity_bar: np.ndarray, ledger: np.ndarray, tally: np.ndarray, funding: np.ndarray,
    fpaid: np.ndarray,
) -> tuple[int, int, int]:  # fmt: skip
    """Walk every book's bars (see the module docstring and docs/EXECUTION.md).

    ``par``: fees, slippage, max participation, impact k, carry (1.0) or drop (0.0). ``frc``
    (k, 4): half-spread, amount step, min notional, price tick. State arrays (cash per book;
    position, basis, peak, opened_ns, pend per grid column) are updated in place. Returns the
    numbers of fills, exits and dropped entries written; -1 fills when a buffer ran out of room
    (a book's bar writes at most 2 k fills, k exits and k drops), the state then half-walked.
    """
    n_bars, gk = weights.shape
    g = gk // k
    slip, cap, impact_k = par[1], par[2], par[3]
    leverage, mm = par[6], par[7]  # isolated margin (leverage 0: none), engine/simulation/margin.py
    # funding (quote per share, rate x mark) of the funding times inside each bar; par[8] = 0: none
    funded = par[8] > 0.0
    limited = cap < np.inf or impact_k > 0.0
    # with a friction on, a position exists once something filled: an entry a friction refused or
    # capped to nothing has no stops (frictionless, the stops track it as the vectorbt path does)
    filled_only = limited or bool((frc != 0.0).any())
    kind = np.zeros(k, dtype=np.int64)
    reason = np.zeros(k, dtype=np.int64)
    amb = np.zeros(k, dtype=np.bool_)
    opening = np.zeros(k, dtype=np.bool_)
    size = np.empty(k)
    price = np.empty(k)
    key = np.empty(k)
    held_before = np.empty(k)
    bq = np.empty(k)
    bpx = np.empty(k)
    call = np.empty(k, dtype=np.int64)
    budget = np.empty(gk)
    nf = ne = nd = 0
    for i in range(n_bars):
        t = index_ns[i]
        for col in range(gk):
            vol = qv[i, col % k]
            budget[col] = np.inf if not limited else (cap * vol if vol > 0.0 else 0.0)
        for b in range(g):
            if nf + 2 * k > fbuf.shape[0] or ne + k > ebuf.shape[0] or nd + k > dbuf.shape[0]:
                return -1, ne, nd  # buffers full: the caller runs again with room for every row
            j0 = b * k
            for c in range(k):  # the open row's orders: exits at the open, weights, pending remainders
                col = j0 + c
                w = weights[i, col]
                o = open_[i, c]
                kind[c], reason[c], amb[c], opening[c], price[c] = 0, 0, False, False, o
                if filled_only and not np.isnan(basis[col]) and position[col] == 0.0 and pend[col, 0] <= 0.0:
                    basis[col] = np.nan  # the entry never filled and nothing of it is pending: no position
                if not np.isnan(basis[col]) and not (filled_only and position[col] == 0.0):
                    is_short = position[col] < 0.0
                    sl, liq = stop_with_liquidation(fixed_sl[col], is_short, leverage, mm)
                    if is_short:
                        ek, px = _open_exit_short(
                            o, w, t, basis[col], peak[col], opened_ns[col], sl, tp_stop[col], trail[col],
                            max_holding_ns[col],
                        )  # fmt: skip
                    else:
                        ek, px = _open_exit(
                            o, w, t, basis[col], peak[col], opened_ns[col], sl, tp_stop[col], trail[col],
                            max_holding_ns[col],
                        )  # fmt: skip
                    if liq and ek == STOP_LOSS:
                        ek = LIQUIDATION
                    if ek != 0:
                        ebuf[ne, 0], ebuf[ne, 1], ebuf[ne, 2], ebuf[ne, 3], ebuf[ne, 5] = i, col, ek, px, 1.0
                        ebuf[ne, 4] = 0.0
                        ne += 1
                        basis[col] = np.nan
                        kind[c], size[c], price[c], reason[c] = 1, 0.0, px, ek
                    elif not np.isnan(w):
                        if w == 0.0:
                            basis[col] = np.nan
                            kind[c], size[c] = 1, 0.0
                        elif (w < 0.0) != is_short:  # a flip: the position closes and opens on the other side
                            basis[col] = o * (1.0 + slip) if w > 0.0 else o * (1.0 - slip)
                            peak[col] = basis[col]
                            opened_ns[col] = t
                            opening[c] = True
                            kind[c], size[c] = 1, w
                        elif first_only and i > 0:
                            dbuf[nd, 0], dbuf[nd, 1] = i, col
                            nd += 1
                        else:
                            kind[c], size[c] = 1, w
                elif not np.isnan(w):
                    if w != 0.0:  # opens a long (w > 0) or a short (w < 0) at the open, slippage against it
                        basis[col] = o * (1.0 + slip) if w > 0.0 else o * (1.0 - slip)
                        peak[col] = basis[col]
                        opened_ns[col] = t
                        opening[c] = True
                    kind[c], size[c] = 1, w
                if kind[c] != 0:
                    _drop_pending(col, price[c], pend, ledger, tally[b])
                elif pend[col, 0] != 0.0:
                    kind[c], size[c], reason[c], amb[c] = 2, pend[col, 0], int(pend[col, 1]), pend[col, 2] > 0.0
                    pend[col, 0] = pend[col, 1] = pend[col, 2] = 0.0
            nf = _row(
                i, 0, b, k, kind, size, price, reason, amb, cash, position, pend, budget, qv, sigma, frc, par,
                fbuf, nf, ledger, tally, held_before, bq, bpx, key, call,
            )  # fmt: skip
            if funded:  # the positions after the open row pay (long, rate > 0) or receive the bar's funding
                for c in range(k):
                    col = j0 + c
                    f = funding[i, c]
                    if f != 0.0 and position[col] != 0.0:
                        pay = position[col] * f
                        cash[b] -= pay
                        fpaid[i, col] = pay
                        tally[b, FUNDING] += pay
            any_exit = False
            for c in range(k):  # cost basis after the open's buys, then the checks inside the bar
                col = j0 + c
                got = bq[c]
                if got != 0.0 and not np.isnan(basis[col]):
                    if opening[c]:
                        basis[col] = bpx[c]
                        peak[col] = bpx[c]
                    elif (got > 0.0 and held_before[c] >= 0.0) or (got < 0.0 and held_before[c] < 0.0):
                        # a top-up (a short's: more sold) averages in; a reduction leaves the basis
                        basis[col] = (held_before[c] * basis[col] + got * bpx[c]) / (held_before[c] + got)
                kind[c], reason[c], amb[c], price[c] = 0, 0, False, close[i, c]
                if np.isnan(basis[col]):
                    continue
                if filled_only and position[col] == 0.0:  # nothing filled yet: no stop can exit it
                    if pend[col, 0] <= 0.0:
                        basis[col] = np.nan
                    continue
                is_short = position[col] < 0.0
                sl, liq = stop_with_liquidation(fixed_sl[col], is_short, leverage, mm)
                if is_short:
                    ek, px, am = _intrabar_exit_short(
                        open_[i, c], high[i, c], low[i, c], basis[col], peak[col], sl, tp_stop[col], trail[col],
                        pessimistic,
                    )  # fmt: skip
                else:
                    ek, px, am = _intrabar_exit(
                        open_[i, c], high[i, c], low[i, c], basis[col], peak[col], sl, tp_stop[col], trail[col],
                        pessimistic,
                    )  # fmt: skip
                if liq and ek == STOP_LOSS:
                    ek = LIQUIDATION
                if ek != 0:
                    ebuf[ne, 0], ebuf[ne, 1], ebuf[ne, 2], ebuf[ne, 3], ebuf[ne, 5] = i, col, ek, px, 0.0
                    ebuf[ne, 4] = 1.0 if am else 0.0
                    ne += 1
                    basis[col] = np.nan
                    kind[c], size[c], price[c], reason[c], amb[c] = 1, 0.0, px, ek, am
                    _drop_pending(col, px, pend, ledger, tally[b])
                    any_exit = True
                elif is_short:  # a short's trough: the lowest low, after the bar's checks
                    if low[i, c] < peak[col]:
                        peak[col] = low[i, c]
                elif high[i, c] > peak[col]:
                    peak[col] = high[i, c]
            if any_exit:
                nf = _row(
                    i, 1, b, k, kind, size, price, reason, amb, cash, position, pend, budget, qv, sigma, frc, par,
                    fbuf, nf, ledger, tally, held_before, bq, bpx, key, call,
                )  # fmt: skip
            held = 0.0
            for c in range(k):
                held += position[j0 + c] * close[i, c]
            cash_bar[b, i] = cash[b]
            equity_bar[b, i] = cash[b] + held
    return nf, ne, nd
