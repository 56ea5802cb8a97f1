"""Round-trip trades of a book, built from its fills over the whole walk-forward.

A trade is one position of a symbol from the buy that opens it (from flat) to the sell that makes
it flat again, across as many windows as it lasts:

- ``entry_price`` is the size-weighted average of its buy fills, ``exit_price`` that of its sell
  fills (slippage included in both); ``size`` is the quantity bought in all;
- a top-up (a buy while open) and a partial reduction (a sell that leaves some) at a rebalance
  are part of the same trade: they enter the averages with their sizes;
- ``pnl`` is sell value minus buy value minus every fee of the trade's fills, ``return`` is
  ``pnl`` over the buy value (``size * entry_price``): both are net of fees;
- ``exit_kind`` is the reason of the fill that closed it (a stop kind, ``rebalance``, ``signal``,
  ``delisted``); a position still open after the last bar is marked at the last close with kind
  ``end`` and status ``open``;
- every time is the open time of the bar the fill happened in (docs/EXIT_RULES.md, "Timestamps").

A short trade (docs/LONG_SHORT.md) opens on a sell from flat and closes on the buy that makes it
flat: its entry is the average of its sells, its exit that of its buys, ``size`` the quantity sold,
``pnl`` sell value minus buy value minus fees and ``return`` the pnl over the sell value. A fill
that takes a position through zero (a flip) is booked as the close of one trade and the opening
of the next, its fees split by size. The frame gains a ``side`` column (``long``/``short``) when a
book has a short trade.

The ledger is numpy over the book's orders concatenated across windows, not vectorbt's
``get_exit_trades_nb`` / ``get_positions_nb`` (the records behind ``Portfolio.positions``): those
cost ~3.8 s of numba JIT in the first process on a machine, more than a whole warm run, and carry
no exit reasons or windows. ``tests/test_trades.py`` holds this ledger equal to vectorbt's
positions on random fills, and to a by-hand rebuild from orders.parquet in ``tests/test_backtest.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from engine.simulation.stops import EXIT_KIND_NAMES, LIQUIDATION, ORDER_REASONS

END = len(ORDER_REASONS)
TRADE_KINDS: tuple[str, ...] = (*ORDER_REASONS, "end")
"""Name of each trade exit-kind code: the order reasons, then ``end`` (open after the last bar)."""
STOP_KINDS = tuple(EXIT_KIND_NAMES[k] for k in sorted(EXIT_KIND_NAMES))
OPTIONAL_KINDS = (EXIT_KIND_NAMES[LIQUIDATION],)
"""Kinds metrics.json lists only when a trade ended so (a margin market's: long-only spot runs never do)."""
"""The exit kinds of the exit rules (``n_stop_exits`` counts trades closed by one of them)."""

TRADE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "entry_window": pl.Int64,
    "entry_time": pl.Datetime("ms", "UTC"),
    "entry_price": pl.Float64,
    "exit_window": pl.Int64,
    "exit_time": pl.Datetime("ms", "UTC"),
    "exit_price": pl.Float64,
    "size": pl.Float64,
    "fees": pl.Float64,
    "pnl": pl.Float64,
    "return": pl.Float64,
    "exit_kind": pl.String,
    "ambiguous": pl.Boolean,
    "status": pl.String,
}


def trades_from_orders(
    orders: dict[str, np.ndarray],
    marks: dict[str, float],
    end_ms: int,
    end_window: int,
    funding: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Build the round-trip trades of one book's fills.

    Parameters
    ----------
    orders : dict of np.ndarray
        The book's fills in simulation order: ``window`` (int64), ``timestamp`` (int64 epoch ms,
        the fill's bar open time), ``symbol`` (str), ``side`` (0 buy, 1 sell), ``size``, ``price``,
        ``fees`` (float64), ``reason`` (int, index into ``TRADE_KINDS``), ``ambiguous`` (bool).
    marks : dict
        Last close of every symbol, to mark a position still open after the last bar.
    end_ms, end_window : int
        Open time of the last bar and the last window (an open position's exit time and window).
    funding : dict of np.ndarray, optional
        A perpetual run's funding payments (:func:`engine.run.funding.funding_columns`; the orders
        then carry ``idx``): each trade gains ``funding`` (paid; received < 0), which its ``pnl``
        and ``return`` are net of.

    Returns
    -------
    dict of np.ndarray
        Columns of :data:`TRADE_SCHEMA` (times as int64 epoch ms, ``exit_kind`` as codes,
        ``status`` as bool ``open``), in order of symbol, then opening.
    """
    orders = _flips_split(orders)
    n = len(orders["size"])
    if n == 0:
        return _empty()
    names, col = np.unique(np.asarray(orders["symbol"], dtype=object).astype(str), return_inverse=True)
    order = np.argsort(col, kind="stable")  # grouped by symbol, in simulation order within each
    col = col[order]
    side, size, price, fees = (np.asarray(orders[k])[order] for k in ("side", "size", "price", "fees"))
    buy = side == 0
    starts, closes = _trade_starts(col, buy, size)
    trade = np.cumsum(starts) - 1
    m = int(trade[-1]) + 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], n] - 1
    fee = np.bincount(trade, weights=fees, minlength=m)
    closed = closes[last]
    sym = col[first]
    short = ~buy[first]
    entry_q, entry_v, exit_q, exit_v = _legs(trade, m, buy, size, price, short)
    exit_v = exit_v + _open_value(names, sym, closed, entry_q - exit_q, marks)
    pnl = exit_v - entry_v - fee
    if short.any():
        pnl = np.where(short, entry_v - exit_v - fee, pnl)
    paid = None if funding is None else _funding_paid(orders, funding, order, trade)
    if paid is not None:
        pnl = pnl - paid
    src = order[first], order[last]  # rows of the opening and the closing fill in ``orders``
    out = {
        "symbol": names[sym],
        "entry_window": np.asarray(orders["window"])[src[0]],
        "entry_time": np.asarray(orders["timestamp"])[src[0]],
        "entry_price": entry_v / entry_q,
        "exit_window": np.where(closed, np.asarray(orders["window"])[src[1]], end_window),
        "exit_time": np.where(closed, np.asarray(orders["timestamp"])[src[1]], end_ms),
        "exit_price": exit_v / entry_q,
        "size": entry_q,
        "fees": fee,
        "pnl": pnl,
        "return": pnl / entry_v,
        "exit_kind": np.where(closed, np.asarray(orders["reason"])[src[1]], END).astype(np.int8),
        "ambiguous": np.where(closed, np.asarray(orders["ambiguous"])[src[1]], False),
        "status": ~closed,
    }
    if short.any():
        out["side"] = short
    if paid is not None:
        out["funding"] = paid
    return out


def _trade_starts(col: np.ndarray, buy: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return which fills open a trade and which make their symbol flat (fills grouped by symbol ``col``).

    A trade is the run of a symbol's fills up to and including a fill that makes it flat: a sell
    that leaves (relatively) nothing of a long, as vectorbt's ``is_close`` judges it, or a buy that
    covers a short.
    """
    signed = np.where(buy, size, -size)
    closes = np.zeros(len(size), dtype=np.bool_)
    bounds = np.flatnonzero(np.r_[True, col[1:] != col[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        held = np.cumsum(signed[lo:hi])  # the position after each fill
        before = held + size[lo:hi] * ~buy[lo:hi]
        # flat again: a sell that leaves (relatively) nothing, as vectorbt's is_close judges it
        closes[lo:hi] = ~buy[lo:hi] & (np.abs(held) <= np.maximum(1e-9 * np.abs(before), 1e-12))
        covered = held - size[lo:hi]  # the position before a buy: a short when below zero
        closes[lo:hi] |= buy[lo:hi] & (covered < 0) & (np.abs(held) <= np.maximum(1e-9 * np.abs(covered), 1e-12))
    new_symbol = np.r_[True, col[1:] != col[:-1]]
    return new_symbol | np.r_[False, closes[:-1]], closes


def _legs(
    trade: np.ndarray, m: int, buy: np.ndarray, size: np.ndarray, price: np.ndarray, short: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return each of the ``m`` trades' entry quantity and value, then exit quantity and value (fills only).

    A long enters on its buys and exits on its sells; a short (``short``) the other way round
    (docs/LONG_SHORT.md).
    """
    buy_q = np.bincount(trade, weights=np.where(buy, size, 0.0), minlength=m)
    buy_v = np.bincount(trade, weights=np.where(buy, size * price, 0.0), minlength=m)
    sell_q = np.bincount(trade, weights=np.where(buy, 0.0, size), minlength=m)
    sell_v = np.bincount(trade, weights=np.where(buy, 0.0, size * price), minlength=m)
    if short.any():
        buy_q, sell_q = np.where(short, sell_q, buy_q), np.where(short, buy_q, sell_q)
        buy_v, sell_v = np.where(short, sell_v, buy_v), np.where(short, buy_v, sell_v)
    return buy_q, buy_v, sell_q, sell_v


def _open_value(
    names: np.ndarray, sym: np.ndarray, closed: np.ndarray, held: np.ndarray, marks: dict[str, float]
) -> np.ndarray:
    """Return the value at its symbol's last close of what each open trade still ``held`` (0 for a closed one).

    Refuses (``RuntimeError``, an engine bug) an open trade whose symbol has no last close.
    """
    mark = np.array([marks.get(str(names[c]), np.nan) for c in sym])
    if np.isnan(mark[~closed]).any():
        missing = sorted({str(names[c]) for c in sym[~closed & np.isnan(mark)]})
        msg = f"no last close to mark the open position(s) of {missing}; report this as an engine bug"
        raise RuntimeError(msg)
    left = np.where(closed, 0.0, held)
    return np.where(closed, 0.0, left * np.nan_to_num(mark))


def _funding_paid(
    orders: dict[str, np.ndarray], funding: dict[str, np.ndarray], order: np.ndarray, trade: np.ndarray
) -> np.ndarray:
    """Return the funding each trade paid (received < 0): ``trade`` numbers the fills in ``order``."""
    from engine.run.funding import funding_per_trade

    of_order = np.empty(len(order), dtype=np.int64)
    of_order[order] = trade
    return funding_per_trade(orders, funding, of_order)


def _flips_split(orders: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split every fill that takes a symbol's position through zero into a close and an opening (fees by size)."""
    side = np.asarray(orders["side"])
    if not (side == 1).any():
        return orders
    size = np.asarray(orders["size"], dtype=np.float64)
    signed = np.where(side == 0, size, -size)
    sym = np.asarray(orders["symbol"], dtype=object).astype(str)
    after = np.zeros(len(size))
    for s in np.unique(sym):
        m = sym == s
        after[m] = np.cumsum(signed[m])
    before = after - signed
    tol = np.maximum(1e-9 * np.abs(before), 1e-12)
    flip = (np.sign(before) * np.sign(after) < 0) & (np.abs(after) > tol) & (np.abs(before) > tol)
    if not flip.any():
        return orders
    rows = np.repeat(np.arange(len(size)), np.where(flip, 2, 1))
    second = np.r_[False, rows[1:] == rows[:-1]]
    out = {k: np.asarray(v)[rows] for k, v in orders.items()}
    part = np.where(second, np.abs(after[rows]), np.where(flip[rows], np.abs(before[rows]), size[rows]))
    out["fees"] = np.asarray(orders["fees"], dtype=np.float64)[rows] * part / size[rows]
    out["size"] = part
    return out


def _empty() -> dict[str, np.ndarray]:
    f, i = np.empty(0), np.empty(0, dtype=np.int64)
    return {
        "symbol": np.empty(0, dtype=object),
        "entry_window": i,
        "entry_time": i,
        "entry_price": f,
        "exit_window": i,
        "exit_time": i,
        "exit_price": f,
        "size": f,
        "fees": f,
        "pnl": f,
        "return": f,
        "exit_kind": np.empty(0, dtype=np.int8),
        "ambiguous": np.empty(0, dtype=np.bool_),
        "status": np.empty(0, dtype=np.bool_),
    }


def trades_frame(t: dict[str, np.ndarray]) -> pl.DataFrame:
    """Return the trades as a polars frame of :data:`TRADE_SCHEMA`, sorted by entry time, then symbol."""
    order = np.lexsort((t["symbol"].astype(str), t["entry_time"])) if len(t["size"]) else np.empty(0, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "symbol": pl.Series(t["symbol"][order].tolist(), dtype=pl.String),
            "entry_window": t["entry_window"][order],
            "entry_time": pl.Series(t["entry_time"][order]).cast(pl.Datetime("ms", "UTC")),
            "entry_price": t["entry_price"][order],
            "exit_window": t["exit_window"][order],
            "exit_time": pl.Series(t["exit_time"][order]).cast(pl.Datetime("ms", "UTC")),
            "exit_price": t["exit_price"][order],
            "size": t["size"][order],
            "fees": t["fees"][order],
            "pnl": t["pnl"][order],
            "return": t["return"][order],
            "exit_kind": pl.Series(TRADE_KINDS, dtype=pl.String).gather(t["exit_kind"][order]),
            "ambiguous": t["ambiguous"][order],
            "status": pl.Series(np.where(t["status"][order], "open", "closed").tolist(), dtype=pl.String),
        },
        schema=TRADE_SCHEMA,
    )
    if "side" in t:
        frame = frame.with_columns(
            pl.Series("side", np.where(t["side"][order], "short", "long").tolist(), dtype=pl.String)
        )
    if "funding" in t:
        frame = frame.with_columns(pl.Series("funding", t["funding"][order], dtype=pl.Float64))
    return frame


def kind_counts(kinds: np.ndarray) -> dict[str, int]:
    """Return the number of trades per exit kind (every kind of ``TRADE_KINDS``, 0 where none)."""
    counts = np.bincount(kinds.astype(np.int64), minlength=len(TRADE_KINDS))
    return {name: int(c) for name, c in zip(TRADE_KINDS, counts, strict=True)}
