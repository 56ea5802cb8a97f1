"""Figure 2: the simulation stage on fixed arrays.

``VectorBTSimulator.simulate`` with exit rules (SL 5 % / TP 15 %) vs the rebalance mode on the
same arrays (10 columns x 4 years of 4h bars, equal weights set every 7 days), and against one
raw ``vbt.Portfolio.from_orders`` call on the same two-row arrays (the overhead of the stop
kernel, input checks and result building). Also the per-call cost on one walk-forward window
(7 daily bars x 10 columns), which is what the end-to-end simulation stage pays ~200-400 times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, best_of, check

FIG = "2 simulation"
FEES, SLIP = 0.001, 0.0005
OVERHEAD_TARGET = 1.2


def ohlc(n_bars: int, n_cols: int, step: str, seed: int = 1) -> tuple[Any, np.ndarray]:
    """Random-walk OHLC as a PriceBlock plus the bar index."""
    from engine.simulation.vbt import PriceBlock

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_cols)), axis=0))
    open_ = np.vstack([np.full((1, n_cols), 100.0), close[:-1]]) * np.exp(rng.normal(0, 0.002, (n_bars, n_cols)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.006, (n_bars, n_cols))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.006, (n_bars, n_cols))))
    unit = {"h": "h", "d": "D"}[step[-1]]
    index = np.datetime64("2021-01-01", "ns") + np.arange(n_bars) * np.timedelta64(int(step[:-1]), unit)
    cols = tuple(f"S{j}" for j in range(n_cols))
    return PriceBlock(open_, high, low, close, index.astype("datetime64[ns]"), cols), index


def weights_every(n_bars: int, n_cols: int, every: int) -> np.ndarray:
    w = np.full((n_bars, n_cols), np.nan)
    w[::every] = 1.0 / n_cols
    return w


def raw_arrays(prices: Any, weights: np.ndarray, rules: Any) -> dict[str, np.ndarray]:
    """The two-row arrays ``simulate`` hands to vectorbt (no carry row), built here once."""
    from engine.simulation.stops import MAX_HOLDING, find_stop_exits

    n, k = prices.shape
    close = np.empty((2 * n, k))
    close[0::2] = prices.open
    close[1::2] = prices.close
    size = np.full((2 * n, k), np.nan)
    size[0::2] = weights
    price = close
    if rules is not None:
        ex = find_stop_exits(prices.open, prices.high, prices.low, prices.index, weights, rules, SLIP)
        price = close.copy()
        rows = 2 * ex.bar + np.where(ex.kind == MAX_HOLDING, 0, 1)
        price[rows, ex.col] = ex.price
        size[rows, ex.col] = 0.0
    return {"close": close, "size": size, "price": price}


def raw_call(a: dict[str, np.ndarray], engine: str) -> Any:
    import vectorbt as vbt
    from vectorbt.portfolio.enums import SizeType

    return vbt.Portfolio.from_orders(
        a["close"],
        a["size"],
        size_type=SizeType.TargetPercent,
        price=a["price"],
        val_price=a["price"],
        fees=FEES,
        slippage=SLIP,
        init_cash=100_000.0,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        engine=engine,
    ).order_records


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "n_cols": 10,
        "years": 4,
        "interval": "4h",
        "n_bars": 1461 * 6,
        "rebalance_every_bars": 42,
        "window_call": "7 daily bars x 10 columns",
        "repeat": 3 if quick else 7,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.exit_rules import ExitRules
    from engine.simulation.vbt import VectorBTSimulator

    size = sizes(quick)
    n, k, rep = size["n_bars"], size["n_cols"], size["repeat"]
    prices, _ = ohlc(n, k, "4h")
    w = weights_every(n, k, size["rebalance_every_bars"])
    rules = ExitRules(sl_stop=0.05, tp_stop=0.15)
    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    t: dict[str, float] = {}
    for engine in ("rust", "numba"):
        sim = VectorBTSimulator(FEES, SLIP, engine)
        for mode, r in (("exit_rules", rules), ("rebalance", None)):
            t[f"sim_{mode}_{engine}"] = best_of(
                lambda sim=sim, r=r: sim.simulate(prices, w, r, init_cash=100_000.0), rep
            )
            arrays = raw_arrays(prices, w, r)
            t[f"raw_{mode}_{engine}"] = best_of(lambda a=arrays, e=engine: raw_call(a, e), rep)
    res = VectorBTSimulator(FEES, SLIP, "rust").simulate(prices, w, rules, init_cash=100_000.0)
    detail.update({"seconds": t, "n_orders": res.orders.height, "n_stop_exits": res.exits.height})
    label = f"{k} cols x {n} 4h bars"
    rows.append(
        Row(
            FIG,
            f"simulate, exit rules ({label}), rust",
            t["sim_exit_rules_rust"] * 1e3,
            "ms",
            t["sim_rebalance_rust"] * 1e3,
            "rebalance mode, same arrays",
            note=f"{res.exits.height} stop exits",
        )
    )
    for mode in ("exit_rules", "rebalance"):
        for engine in ("rust", "numba"):
            ratio = t[f"sim_{mode}_{engine}"] / t[f"raw_{mode}_{engine}"]
            rows.append(
                Row(
                    FIG,
                    f"simulate vs raw from_orders, {mode}, {engine}",
                    t[f"sim_{mode}_{engine}"] * 1e3,
                    "ms",
                    t[f"raw_{mode}_{engine}"] * 1e3,
                    "one raw from_orders, same 2-row arrays",
                    f"<= {OVERHEAD_TARGET}x",
                    check(ratio, OVERHEAD_TARGET),
                )
            )
    for mode, label in (("exit_rules", "exit rules"), ("rebalance", "rebalance")):
        rows.append(
            Row(
                FIG,
                f"throughput, {label}, rust",
                n * k / t[f"sim_{mode}_rust"],
                "bar-cols/s",
                n * k / t[f"sim_{mode}_numba"],
                "numba",
            )
        )

    from engine.simulation.stops import find_stop_exits

    t["kernel"] = best_of(
        lambda: find_stop_exits(prices.open, prices.high, prices.low, prices.index, w, rules, SLIP), rep
    )
    rows.append(
        Row(
            FIG,
            "  of which stop kernel (find_stop_exits), numba",
            t["kernel"] * 1e3,
            "ms",
            t["sim_exit_rules_rust"] * 1e3,
            "simulate, exit rules, rust",
        )
    )

    # One walk-forward window: the per-call fixed cost the end-to-end simulation stage pays.
    wp, _ = ohlc(7, 10, "1d", seed=2)
    ww = weights_every(7, 10, 7)
    carry = np.full(10, 50.0)
    for engine in ("rust", "numba"):
        sim = VectorBTSimulator(FEES, SLIP, engine)
        t[f"win_{engine}"] = best_of(
            lambda sim=sim: sim.simulate(
                wp, ww, rules, init_cash=100_000.0, carry_shares=carry, carry_price=wp.open[0]
            ),
            max(rep * 10, 30),
        )
        arrays = raw_arrays(wp, ww, rules)
        t[f"win_raw_{engine}"] = best_of(lambda a=arrays, e=engine: raw_call(a, e), max(rep * 10, 30))
        rows.append(
            Row(
                FIG,
                f"one window call (7 daily bars x 10 cols, carry-in), {engine}",
                t[f"win_{engine}"] * 1e3,
                "ms",
                t[f"win_raw_{engine}"] * 1e3,
                "raw from_orders",
                note="fixed cost per call",
            )
        )
    return rows, detail
