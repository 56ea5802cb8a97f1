"""Figure 2: the simulation stage on fixed arrays.

``VectorBTSimulator.simulate`` with exit rules (SL 5 % / TP 15 %) vs the rebalance mode on the
same arrays (10 columns x 4 years of 4h bars, equal weights set every 7 days), and the per-call
cost on one walk-forward window (7 daily bars x 10 columns, with shares carried in), which is what
the end-to-end simulation stage pays ~200-400 times.

Baseline of the overhead rows (like with like): the SAME order rows through vectorbt's public
``vbt.Portfolio.from_orders``. The benchmark builds the simulator's two-row grid itself (rows
``2i`` = bar opens, ``2i + 1`` = the rest of the bar, the stop rows from the same kernel, the carry
row of a window call) and keeps only the rows that hold an order, exactly the rows ``simulate``
hands to vectorbt; ``from_orders`` is timed on those pre-sliced arrays. A second, informational
baseline is vectorbt's dispatch ``vectorbt.portfolio.dispatch.simulate_from_orders`` on the same
arrays (the simulation alone, no Portfolio wrapper: the floor under any caller). Both baselines'
order records (row index mapped back to the full grid) must equal ``simulate``'s field for field,
else the row is a MISMATCH and the command exits 1.

Verdict of the overhead target (simulate / from_orders <= 1.2x): the two calls run alternately,
the ratio of each pair is taken, and the estimate is the median of those ratios with a
distribution-free 95 % confidence interval of that median as its noise (order statistics:
``common.median_interval``): ``pass`` only when the whole interval is <= 1.2, ``miss`` only when
it is all above, ``inconclusive`` otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, best_of, check_equal, check_interval, paired_times, ratio_interval

FIG = "2 simulation"
FEES, SLIP = 0.001, 0.0005
OVERHEAD_TARGET = 1.2
INIT_CASH = 100_000.0


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


def order_rows(
    prices: Any,
    weights: np.ndarray,
    exits: Any,
    carry: np.ndarray | None = None,
    init_cash: float = INIT_CASH,
) -> dict[str, Any]:
    """The order rows ``simulate`` hands to vectorbt, built here apart from the simulator.

    The full two-row grid (docs/EXIT_RULES.md), a carry row first when shares are carried in
    (bought back at the first open, no fees or slippage, initial cash raised by their value), the
    stop exits at their rows (``exits``: the ones the simulator's scan found, as they depend on
    top-up fills that only a simulation knows; exits at the open in the bar's open row, the others
    in its rest-of-bar row); then only the rows holding an order. ``rows`` maps the sliced arrays'
    row index back to the full grid.
    """
    from vectorbt.portfolio.enums import SizeType

    n, k = prices.shape
    off = int(carry is not None)
    close = np.empty((2 * n + off, k))
    close[off::2] = prices.open
    close[off + 1 :: 2] = prices.close
    size = np.full((2 * n + off, k), np.nan)
    size[off::2] = weights
    price = close.copy()
    if exits is not None:
        rows = off + 2 * exits.bar + np.where(exits.at_open, 0, 1)
        price[rows, exits.col] = exits.price
        size[rows, exits.col] = 0.0
    size_type = np.full((2 * n + off, 1), SizeType.TargetPercent, dtype=np.int64)
    fees = np.full((2 * n + off, 1), FEES)
    slippage = np.full((2 * n + off, 1), SLIP)
    cash = init_cash
    if off:
        close[0] = price[0] = prices.open[0]
        size[0] = carry
        size_type[0], fees[0], slippage[0] = SizeType.Amount, 0.0, 0.0
        cash += float(np.sum(carry * prices.open[0]))
    keep = np.flatnonzero(np.isfinite(size).any(axis=1))
    return {
        "close": close[keep],
        "size": size[keep],
        "price": price[keep],
        "size_type": size_type[keep],
        "fees": fees[keep],
        "slippage": slippage[keep],
        "init_cash": cash,
        "rows": keep,
        "n_rows": 2 * n + off,
    }


def from_orders_call(a: dict[str, Any], engine: str) -> np.ndarray:
    """The public call: ``vbt.Portfolio.from_orders`` on the order rows; its order records."""
    import vectorbt as vbt

    return vbt.Portfolio.from_orders(
        a["close"],
        a["size"],
        size_type=a["size_type"],
        price=a["price"],
        val_price=a["price"],
        fees=a["fees"],
        slippage=a["slippage"],
        init_cash=a["init_cash"],
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        engine=engine,
    ).order_records


def dispatch_call(a: dict[str, Any], engine: str) -> np.ndarray:
    """vectorbt's simulation alone (``dispatch.simulate_from_orders``) on the same arrays, with the
    arguments ``from_orders`` passes it (vectorbt's defaults spelled out)."""
    from vectorbt.portfolio import dispatch
    from vectorbt.portfolio import nb as portfolio_nb
    from vectorbt.portfolio.enums import CallSeqType, Direction

    shape = a["close"].shape
    group_lens = np.array([shape[1]], dtype=np.int64)
    call_seq = portfolio_nb.build_call_seq(shape, group_lens, call_seq_type=CallSeqType.Default)
    records, _ = dispatch.simulate_from_orders(
        shape,
        group_lens,
        np.array([a["init_cash"]]),
        call_seq,
        size=a["size"],
        price=a["price"],
        size_type=a["size_type"],
        direction=np.asarray(Direction.Both),
        fees=a["fees"],
        slippage=a["slippage"],
        min_size=np.asarray(1e-8),
        val_price=a["price"],
        close=a["close"],
        auto_call_seq=True,
        ffill_val_price=True,
        update_value=False,
        max_orders=shape[0] * shape[1],
        max_logs=1,
        flex_2d=True,
        engine=engine,
    )
    return records


def same_records(ours: np.ndarray, theirs: np.ndarray, rows: np.ndarray, carry: bool) -> bool:
    """``simulate``'s order records equal the baseline's field for field, bit for bit (``id`` aside).

    The baseline's row index is mapped back to the full grid (``rows``); ``simulate`` drops the
    carry row's records (row 0) and keeps the grid's row index otherwise.
    """
    theirs = theirs.copy()
    theirs["idx"] = rows[theirs["idx"]]
    if carry:
        theirs = theirs[theirs["idx"] >= 1]
    if len(ours) != len(theirs) or not len(ours):
        return False
    return all(np.array_equal(ours[f], theirs[f]) for f in ("col", "idx", "size", "price", "fees", "side"))


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
    from engine.config.exit_rules import ExitRules
    from engine.simulation.stops import find_stop_exits
    from engine.simulation.vbt import VectorBTSimulator

    size = sizes(quick)
    n, k, rep = size["n_bars"], size["n_cols"], size["repeat"]
    prices, _ = ohlc(n, k, "4h")
    w = weights_every(n, k, size["rebalance_every_bars"])
    rules = ExitRules(sl_stop=0.05, tp_stop=0.15)
    # one walk-forward window: the per-call fixed cost the end-to-end simulation stage pays
    wp, _ = ohlc(7, 10, "1d", seed=2)
    ww = weights_every(7, 10, 7)
    carry = np.full(10, 50.0)
    cases = {
        "exit_rules": (prices, w, rules, None, rep),
        "rebalance": (prices, w, None, None, rep),
        "window": (wp, ww, rules, carry, max(rep * 10, 30)),
    }
    rows: list[Row] = []
    t: dict[str, float] = {}
    checks: dict[str, Any] = {}
    ratios: dict[str, tuple[float, float, float]] = {}
    for engine in ("rust", "numba"):
        sim = VectorBTSimulator(FEES, SLIP, engine)
        for case, (p, wt, r, cs, reps) in cases.items():
            kw: dict[str, Any] = {"init_cash": INIT_CASH}
            if cs is not None:
                kw.update(carry_shares=cs, carry_price=p.open[0])
            a = order_rows(p, wt, sim.simulate(p, wt, r, **kw).stop_exits, cs)
            # simulate and from_orders alternately: the ratio of each pair, its median and range
            ts, tv = paired_times(
                lambda sim=sim, p=p, wt=wt, r=r, kw=kw: sim.simulate(p, wt, r, **kw),
                lambda a=a, e=engine: from_orders_call(a, e),
                reps,
            )
            t[f"sim_{case}_{engine}"] = float(np.median(ts))
            t[f"vbt_{case}_{engine}"] = float(np.median(tv))
            ratios[f"{case}_{engine}"] = ratio_interval(ts, tv)
            t[f"dispatch_{case}_{engine}"] = best_of(lambda a=a, e=engine: dispatch_call(a, e), reps)
            ours = sim.simulate(p, wt, r, **kw).order_records
            checks[f"{case}_{engine}"] = {
                "order_rows": len(a["rows"]),
                "grid_rows": a["n_rows"],
                "orders": len(ours),
                "from_orders_equal": same_records(ours, from_orders_call(a, engine), a["rows"], cs is not None),
                "dispatch_equal": same_records(ours, dispatch_call(a, engine), a["rows"], cs is not None),
            }
    res = VectorBTSimulator(FEES, SLIP, "rust").simulate(prices, w, rules, init_cash=INIT_CASH)
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
    names = {
        "exit_rules": "exit rules",
        "rebalance": "rebalance",
        "window": "window call (7 daily bars x 10, carry-in)",
    }
    for case in cases:
        for engine in ("rust", "numba"):
            c = checks[f"{case}_{engine}"]
            sim_s, vbt_s, disp_s = (t[f"{x}_{case}_{engine}"] for x in ("sim", "vbt", "dispatch"))
            ratio, lo, hi = ratios[f"{case}_{engine}"]
            rows.append(
                Row(
                    FIG,
                    f"simulate vs from_orders on the same order rows, {names[case]}, {engine}",
                    sim_s * 1e3,
                    "ms",
                    vbt_s * 1e3,
                    f"vbt.Portfolio.from_orders, {c['order_rows']} order rows",
                    f"<= {OVERHEAD_TARGET}x",
                    check_interval(ratio, lo, hi, OVERHEAD_TARGET),
                    note=(
                        f"ratio: median of {cases[case][4]} alternating pairs, 95 % CI {lo:.3g}..{hi:.3g}; "
                        f"{c['order_rows']} of {c['grid_rows']} grid rows hold an order; {c['orders']} orders"
                    ),
                    ratio=ratio,
                )
            )
            rows.append(
                Row(
                    FIG,
                    f"  simulate vs dispatch.simulate_from_orders, same rows, {names[case]}, {engine}",
                    sim_s * 1e3,
                    "ms",
                    disp_s * 1e3,
                    "dispatch.simulate_from_orders, same arrays",
                    note="informational: vectorbt's simulation alone, no Portfolio wrapper",
                )
            )
            same = c["from_orders_equal"] and c["dispatch_equal"]
            rows.append(
                Row(
                    FIG,
                    f"  order records equal to both calls', {names[case]}, {engine}",
                    c["orders"],
                    "orders",
                    target="equal field for field",
                    status=check_equal(same),
                    note=f"from_orders: {c['from_orders_equal']}, dispatch: {c['dispatch_equal']}",
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
    detail = {
        "sizes": size,
        "seconds": t,
        "checks": checks,
        "ratios_median_low_high": ratios,
        "n_orders": res.orders.height,
        "n_stop_exits": res.exits.height,
        "baseline": "vbt.Portfolio.from_orders on the order rows (target); dispatch.simulate_from_orders (info)",
    }
    return rows, detail
