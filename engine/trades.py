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

The arithmetic is vectorbt's own (``get_exit_trades_nb`` then ``get_positions_nb``, the records
behind ``Portfolio.positions``) over the book's orders concatenated across windows; this module
maps the records back to symbols, windows, times and exit reasons.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.simulation.stops import ORDER_REASONS

END = len(ORDER_REASONS)
TRADE_KINDS: tuple[str, ...] = (*ORDER_REASONS, "end")
"""Name of each trade exit-kind code: the order reasons, then ``end`` (open after the last bar)."""
STOP_KINDS = ("stop_loss", "take_profit", "trailing", "max_holding")
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
    orders: dict[str, np.ndarray], marks: dict[str, float], end_ms: int, end_window: int
) -> dict[str, np.ndarray]:
    """Return the round-trip trades of one book's fills.

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

    Returns
    -------
    dict of np.ndarray
        Columns of :data:`TRADE_SCHEMA` (times as int64 epoch ms, ``exit_kind`` as codes,
        ``status`` as bool ``open``), sorted by entry order, then symbol.
    """
    from vectorbt.portfolio.enums import order_dt
    from vectorbt.portfolio.nb import get_exit_trades_nb, get_positions_nb
    from vectorbt.records.nb import col_map_nb

    n = len(orders["size"])
    if n == 0:
        return _empty()
    names, col = np.unique(np.asarray(orders["symbol"], dtype=object).astype(str), return_inverse=True)
    rec = np.empty(n, dtype=order_dt)
    rec["id"] = np.arange(n)
    rec["col"] = col
    rec["idx"] = np.arange(n)  # fills in simulation order: their sequence is their time
    rec["size"] = orders["size"]
    rec["price"] = orders["price"]
    rec["fees"] = orders["fees"]
    rec["side"] = orders["side"]
    close = np.full((n + 1, len(names)), np.nan)  # only the last row (the marks) is ever read
    close[n] = [marks.get(s, np.nan) for s in names]
    trades = get_exit_trades_nb(rec, close, col_map_nb(rec["col"], len(names)))
    pos = get_positions_nb(trades, col_map_nb(trades["col"], len(names)))
    is_open = pos["status"] == 0
    closing = np.minimum(pos["exit_idx"], n - 1)  # an open position's exit_idx is the marks row
    entry_value = pos["size"] * pos["entry_price"]
    kind = np.where(is_open, END, np.asarray(orders["reason"])[closing]).astype(np.int8)
    if np.isnan(pos["exit_price"][is_open]).any():
        missing = sorted({str(names[c]) for c in pos["col"][is_open & np.isnan(pos["exit_price"])]})
        msg = f"no last close to mark the open position(s) of {missing}; report this as an engine bug"
        raise RuntimeError(msg)
    return {
        "symbol": names[pos["col"]],
        "entry_window": np.asarray(orders["window"])[pos["entry_idx"]],
        "entry_time": np.asarray(orders["timestamp"])[pos["entry_idx"]],
        "entry_price": pos["entry_price"],
        "exit_window": np.where(is_open, end_window, np.asarray(orders["window"])[closing]),
        "exit_time": np.where(is_open, end_ms, np.asarray(orders["timestamp"])[closing]),
        "exit_price": pos["exit_price"],
        "size": pos["size"],
        "fees": pos["entry_fees"] + pos["exit_fees"],
        "pnl": pos["pnl"],
        "return": pos["pnl"] / entry_value,
        "exit_kind": kind,
        "ambiguous": np.where(is_open, False, np.asarray(orders["ambiguous"])[closing]),
        "status": is_open,
    }


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
    return pl.DataFrame(
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


def kind_counts(kinds: np.ndarray) -> dict[str, int]:
    """Return the number of trades per exit kind (every kind of ``TRADE_KINDS``, 0 where none)."""
    counts = np.bincount(kinds.astype(np.int64), minlength=len(TRADE_KINDS))
    return {name: int(c) for name, c in zip(TRADE_KINDS, counts, strict=True)}
