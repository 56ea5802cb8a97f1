"""Trend-in-trend trades through the simulator vs an independent plain-python loop (4h, SL/TP)."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.config.exit_rules import ExitRules
from engine.simulation.vbt import PriceBlock, VectorBTSimulator
from engine.strategy.signals import TrendInTrend, signals_compute, weights_from_signals

H4 = 4 * 3_600_000
DAY = 86_400_000
D0 = 1_609_459_200_000  # 2021-01-01
SL, TP = 0.05, 0.15


def _series(n: int = 3000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(77)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.015, n)))
    open_ = np.r_[50.0, close[:-1]] * np.exp(rng.normal(0, 0.002, n))  # small gaps between bars
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.012, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.012, n)))
    return {"ts": D0 + np.arange(n, dtype=np.int64) * H4, "open": open_, "high": high, "low": low, "close": close}


def _frames(s: dict[str, np.ndarray]) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = s["ts"].size // 6 * 6
    ts = pl.Series(s["ts"][:n]).cast(pl.Datetime("ms", "UTC"))
    fine = pl.DataFrame(
        {
            "symbol": "X/USDT",
            "timestamp": ts,
            "open": s["open"][:n],
            "high": s["high"][:n],
            "low": s["low"][:n],
            "close": s["close"][:n],
            "volume": 1.0,
        }
    )
    daily = (
        fine.group_by_dynamic("timestamp", every="1d")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .with_columns(pl.lit("X/USDT").alias("symbol"))
    )
    return fine, daily


def _plain_trades(s: dict[str, np.ndarray], w: np.ndarray) -> list[tuple[int, float, int, float, str]]:
    """Bar by bar: orders at the open, then SL/TP inside the bar (SL first when both), gaps at the open.
    An entry signal while already long is ignored (the stops keep the position's entry fill)."""
    trades, ref, entry = [], None, None
    for i in range(s["ts"].size):
        o, h, lo = s["open"][i], s["high"][i], s["low"][i]
        if not np.isnan(w[i]):
            if w[i] == 0 and entry is not None:
                trades.append((*entry, i, o, "signal"))
                entry, ref = None, None
            elif w[i] > 0 and entry is None:
                ref = o
                entry = (i, o)
        if entry is None:
            continue
        sl, tp = ref * (1 - SL), ref * (1 + TP)
        if o <= sl or o >= tp:
            trades.append((*entry, i, o, "stop_loss" if o <= sl else "take_profit"))
        elif lo <= sl:
            trades.append((*entry, i, sl, "stop_loss"))
        elif h >= tp:
            trades.append((*entry, i, tp, "take_profit"))
        else:
            continue
        entry, ref = None, None
    return trades


def _sim_trades(orders: pl.DataFrame) -> list[tuple[int, float, int, float, str]]:
    trades, pos, entry = [], 0.0, None
    for r in orders.sort("bar", "side").iter_rows(named=True):
        signed = r["size"] if r["side"] == "buy" else -r["size"]
        if pos <= 1e-12 and signed > 0:
            entry = (r["bar"], r["price"])
        pos += signed
        if r["side"] == "sell" and pos <= 1e-9 * r["size"]:
            reason = "signal" if r["reason"] == "rebalance" else r["reason"]
            trades.append((*entry, r["bar"], r["price"], reason))
            pos, entry = 0.0, None
    return trades


def test_trend_in_trend_trades_match_plain_loop() -> None:
    s = _series()
    fine, daily = _frames(s)
    n = fine.height
    s = {k: v[:n] for k, v in s.items()}
    p = TrendInTrend(trend_days=10, ema_bars=12, pullback=0.015)
    sig = signals_compute(fine.lazy(), daily.lazy(), p, H4)
    w = weights_from_signals(sig, ["X/USDT"], s["ts"], {"X/USDT": 1.0}, H4)
    block = PriceBlock(
        open=s["open"][:, None],
        high=s["high"][:, None],
        low=s["low"][:, None],
        close=s["close"][:, None],
        index=(s["ts"] * 1_000_000).astype("datetime64[ns]"),
        columns=["X/USDT"],
    )
    res = VectorBTSimulator().simulate(
        block, w, ExitRules(sl_stop=SL, tp_stop=TP), init_cash=10_000.0, held_reweights="first_bar"
    )
    ours, plain = _sim_trades(res.orders), _plain_trades(s, w[:, 0])
    assert len(plain) >= 10
    assert {t[4] for t in plain} >= {"stop_loss", "take_profit", "signal"}
    assert [(a, b, c) for a, _, b, _, c in ours] == [(a, b, c) for a, _, b, _, c in plain]
    np.testing.assert_allclose([t[1] for t in ours], [t[1] for t in plain], rtol=1e-9)
    np.testing.assert_allclose([t[3] for t in ours], [t[3] for t in plain], rtol=1e-9)
