"""Round-trip trades from fills (engine.run.trades): hand-computed cases across windows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.run.trades import TRADE_KINDS, trades_frame, trades_from_orders

REB, SL, TP, SIG, DEL = (TRADE_KINDS.index(k) for k in ("rebalance", "stop_loss", "take_profit", "signal", "delisted"))
BUY, SELL = 0, 1


def _orders(rows: list[tuple]) -> dict[str, np.ndarray]:
    """(window, ms, symbol, side, size, price, fees, reason, ambiguous) rows as order columns."""
    cols = list(zip(*rows, strict=True))
    return {
        "window": np.array(cols[0], dtype=np.int64),
        "timestamp": np.array(cols[1], dtype=np.int64),
        "symbol": np.array(cols[2], dtype=object),
        "side": np.array(cols[3], dtype=np.int64),
        "size": np.array(cols[4], dtype=np.float64),
        "price": np.array(cols[5], dtype=np.float64),
        "fees": np.array(cols[6], dtype=np.float64),
        "reason": np.array(cols[7], dtype=np.int64),
        "ambiguous": np.array(cols[8], dtype=np.bool_),
    }


ROWS = [
    # A: bought in window 0, topped up in window 1, partly sold in window 2, stopped out in window 3
    (0, 0, "A/USDT", BUY, 10.0, 100.0, 1.0, REB, False),
    (1, 70, "A/USDT", BUY, 10.0, 120.0, 1.2, REB, False),
    (2, 140, "A/USDT", SELL, 5.0, 130.0, 0.65, REB, False),
    (3, 150, "A/USDT", SELL, 15.0, 104.0, 1.56, SL, True),
    # B: one-window trade closed by a take profit; then bought again and still open at the end
    (0, 0, "B/USDT", BUY, 4.0, 50.0, 0.2, REB, False),
    (0, 30, "B/USDT", SELL, 4.0, 57.5, 0.23, TP, False),
    (2, 140, "B/USDT", BUY, 2.0, 60.0, 0.12, REB, False),
]


def test_round_trips_by_hand() -> None:
    t = trades_frame(trades_from_orders(_orders(ROWS), {"A/USDT": 101.0, "B/USDT": 66.0}, 200, 4))
    assert t.get_column("symbol").to_list() == ["A/USDT", "B/USDT", "B/USDT"]
    a, b1, b2 = t.iter_rows(named=True)
    # A: entry = (10*100 + 10*120) / 20 = 110; exit = (5*130 + 15*104) / 20 = 110.5
    assert (a["entry_window"], a["exit_window"], a["exit_kind"], a["ambiguous"], a["status"]) == (
        0,
        3,
        "stop_loss",
        True,
        "closed",
    )
    assert a["entry_price"] == pytest.approx(110.0, rel=1e-15)
    assert a["exit_price"] == pytest.approx(110.5, rel=1e-15)
    assert a["size"] == pytest.approx(20.0, rel=1e-15)
    # pnl = 2210 - 2200 - (1 + 1.2 + 0.65 + 1.56) = 5.59; return on the 2200 bought
    assert a["fees"] == pytest.approx(4.41, rel=1e-12)
    assert a["pnl"] == pytest.approx(5.59, rel=1e-12)
    assert a["return"] == pytest.approx(5.59 / 2200.0, rel=1e-12)
    assert (a["entry_time"].timestamp(), a["exit_time"].timestamp()) == (0.0, 0.15)
    # B, first trade: 4 @ 50 -> 4 @ 57.5, fees 0.43
    assert (b1["exit_kind"], b1["status"]) == ("take_profit", "closed")
    assert b1["pnl"] == pytest.approx(30.0 - 0.43, rel=1e-12)
    # B, second trade: open after the last bar, marked at the last close 66, kind "end"
    assert (b2["exit_kind"], b2["status"], b2["exit_window"], b2["ambiguous"]) == ("end", "open", 4, False)
    assert b2["exit_time"].timestamp() == 0.2
    assert b2["exit_price"] == 66.0
    assert b2["pnl"] == pytest.approx(2 * (66.0 - 60.0) - 0.12, rel=1e-12)


def test_every_order_reason_is_a_trade_kind() -> None:
    rows = [
        (0, 0, "X/USDT", BUY, 1.0, 10.0, 0.0, REB, False),
        (0, 5, "X/USDT", SELL, 1.0, 11.0, 0.0, SIG, False),
        (1, 10, "X/USDT", BUY, 1.0, 10.0, 0.0, SIG, False),
        (1, 15, "X/USDT", SELL, 1.0, 9.0, 0.0, DEL, False),
    ]
    t = trades_frame(trades_from_orders(_orders(rows), {}, 20, 1))
    assert t.get_column("exit_kind").to_list() == ["signal", "delisted"]
    assert t.get_column("return").to_list() == pytest.approx([0.1, -0.1], rel=1e-12)


def test_no_orders_no_trades() -> None:
    empty = {k: v[:0] for k, v in _orders(ROWS).items()}
    assert trades_frame(trades_from_orders(empty, {}, 0, 0)).height == 0


def _vectorbt_positions(orders: dict[str, np.ndarray], marks: dict[str, float]) -> list[tuple]:
    """The same fills through vectorbt's own position records (get_exit_trades_nb -> get_positions_nb)."""
    from vectorbt.portfolio.enums import order_dt
    from vectorbt.portfolio.nb import get_exit_trades_nb, get_positions_nb
    from vectorbt.records.nb import col_map_nb

    n = len(orders["size"])
    names, col = np.unique(orders["symbol"].astype(str), return_inverse=True)
    rec = np.empty(n, dtype=order_dt)
    rec["id"], rec["col"], rec["idx"] = np.arange(n), col, np.arange(n)
    rec["size"], rec["price"], rec["fees"], rec["side"] = (
        orders["size"],
        orders["price"],
        orders["fees"],
        orders["side"],
    )
    close = np.full((n + 1, len(names)), np.nan)
    close[n] = [marks[s] for s in names]
    trades = get_exit_trades_nb(rec, close, col_map_nb(rec["col"], len(names)))
    pos = get_positions_nb(trades, col_map_nb(trades["col"], len(names)))
    return sorted(
        (str(names[p["col"]]), int(p["entry_idx"]), p["entry_price"], p["exit_price"], p["size"], p["pnl"], p["return"])
        for p in pos
    )


@pytest.mark.parametrize("seed", range(5))
def test_ledger_equals_vectorbt_positions(seed: int) -> None:
    """Random fills of three symbols (opening buys, top-ups, partial and full sells, positions left
    open) give the same round trips as vectorbt's position records."""
    rng = np.random.default_rng(seed)
    rows, held = [], {"A/X": 0.0, "B/X": 0.0, "C/X": 0.0}
    for t in range(300):
        s = str(rng.choice(list(held)))
        p = float(rng.uniform(50, 150))
        if held[s] == 0 or rng.random() < 0.4:
            q = float(rng.uniform(0.1, 5))
            rows.append((t // 10, t, s, BUY, q, p, q * p * 0.001, REB, False))
            held[s] += q
        else:
            q = held[s] if rng.random() < 0.5 else float(held[s] * rng.uniform(0.1, 0.9))
            rows.append((t // 10, t, s, SELL, q, p, q * p * 0.001, SL, False))
            held[s] -= q
    orders = _orders(rows)
    marks = {"A/X": 101.0, "B/X": 99.0, "C/X": 100.0}
    ours = trades_from_orders(orders, marks, 10_000, 99)
    got = sorted(
        (s, int(et), ep, xp, q, pnl, r)
        for s, et, ep, xp, q, pnl, r in zip(
            ours["symbol"], ours["entry_time"], ours["entry_price"], ours["exit_price"], ours["size"], ours["pnl"],
            ours["return"], strict=True,
        )
    )  # fmt: skip
    want = _vectorbt_positions(orders, marks)
    assert len(got) == len(want) > 10
    for g, w in zip(got, want, strict=True):
        assert g[:2] == w[:2]
        np.testing.assert_allclose(g[2:], w[2:], rtol=1e-9)
