"""Figure 6: side by side with backtesting.py on one asset, SL x TP grid.

Same data and strategy as tests/test_crosscheck_backtesting.py: 1,500 generated daily bars,
SMA(10)/SMA(30) cross-up while flat -> buy all at the next open with stop loss ``sl`` and take
profit ``tp`` from the fill price, no costs. backtesting.py gets the levels from the next open at
order time (the test's oracle variant, where every trade must match). Grids: SL {5, 7, 10} % x
TP {10, 15, 20} % (9 combinations) and SL {3, 5, 7, 10, 12} % x TP {10, 15, 20, 25, 30} % (25,
a superset of the 9).

- backtesting.py: one ``bt.run(sl=, tp=)`` per combination (its indicators are computed in
  every run, in the strategy's ``init``).
- ours, per combination: the signal (``sma_cross``, once for the grid), then per combination the
  entries (``entries_while_flat``) and one ``VectorBTSimulator.simulate``: timed together, as a
  user pays it.
- ours, vectorised: the signal, every combination's entries and ONE
  ``VectorBTSimulator.simulate_grid`` call (one book of the single asset per combination), timed
  together.

Verdict of the target (vectorised grid per combination <= 1/100 of ``bt.run``'s): the two run
alternately ``repeat`` times, one ratio per pair; the estimate is their median and the noise
interval its distribution-free confidence interval (``common.median_interval``: the range of the
ratios for up to 5 pairs): ``pass`` only when the whole interval is <= 0.01, ``miss`` only when it
is all above, ``inconclusive`` otherwise.

Correctness (enforced): every combination's trades from ``simulate`` and from its grid book must
equal backtesting.py's (entry and exit bar and price, 1e-9), and each grid book's trades must equal
its ``simulate`` call's; otherwise the row is a MISMATCH and ``python -m benchmarks`` exits 1.
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import Row, best_of, check_equal, check_interval, paired_times, ratio_interval
from engine.testing import N_BARS, crosscheck_ohlc, entries_while_flat, sma, sma_cross

FIG = "6 peer"
SLS = (0.05, 0.07, 0.10)
TPS = (0.10, 0.15, 0.20)
SLS_BIG = (0.03, 0.05, 0.07, 0.10, 0.12)
TPS_BIG = (0.10, 0.15, 0.20, 0.25, 0.30)
TARGET_GRID = 0.01  # vectorised grid per combination <= 1/100 of backtesting.py's bt.run
CASH = 10_000_000.0


def entries(prices: Any, sig: np.ndarray, rules: Any) -> np.ndarray:
    """Weight 1.0 on the bar after each signal at whose close we are flat, NaN elsewhere."""
    return entries_while_flat(prices, sig, rules)


def trades_of(records: np.ndarray, col: int, off: int = 0) -> list[tuple[int, float, int | None, float | None]]:
    rec = records[records["col"] == col]
    buys, sells = rec[rec["side"] == 0], rec[rec["side"] == 1]
    out = []
    for k in range(len(buys)):
        ex = ((int(sells["idx"][k]) - off) // 2, float(sells["price"][k])) if k < len(sells) else (None, None)
        out.append(((int(buys["idx"][k]) - off) // 2, float(buys["price"][k]), *ex))
    return out


def agree(ours: list[tuple[int, float, int | None, float | None]], bt: pd.DataFrame) -> int:
    """Trades identical in entry bar and price and exit bar and price (a trade we still hold at the
    end counts when backtesting.py force-closed it on the last bar)."""
    n = 0
    for (eb, ep, xb, xp), row in zip(ours, bt.itertuples(), strict=False):
        same_entry = eb == row.EntryBar and np.isclose(ep, row.EntryPrice, rtol=1e-9, atol=0)
        if xb is None:
            n += int(same_entry and row.ExitBar == N_BARS - 1)
        else:
            n += int(same_entry and xb == row.ExitBar and np.isclose(xp, row.ExitPrice, rtol=1e-9, atol=0))
    return n


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "n_bars": N_BARS,
        "grid": f"SL {SLS} x TP {TPS}",
        "n_combinations": len(SLS) * len(TPS),
        "grid_big": f"SL {SLS_BIG} x TP {TPS_BIG}",
        "n_combinations_big": len(SLS_BIG) * len(TPS_BIG),
        "repeat": 3 if quick else 5,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    from engine.config.exit_rules import ExitRules
    from engine.simulation import PriceBlock, VectorBTSimulator

    size = sizes(quick)
    df = crosscheck_ohlc()
    next_open = df["Open"].to_numpy()

    class Bracket(Strategy):
        sl = 0.05
        tp = 0.15

        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self) -> None:
            i = len(self.data) - 1
            if not self.position and i + 1 < N_BARS and crossover(self.fast, self.slow):
                fill = next_open[i + 1]
                self.buy(sl=fill * (1 - self.sl), tp=fill * (1 + self.tp))

    prices = PriceBlock(
        *(df[[c]].to_numpy(dtype=np.float64).copy() for c in ("Open", "High", "Low", "Close")),
        df.index.to_numpy(dtype="datetime64[ns]"),
        ("X",),
    )
    close = df["Close"].to_numpy()
    sig = sma_cross(close)
    bt = Backtest(
        df, Bracket, cash=CASH, commission=0.0, exclusive_orders=False, trade_on_close=False, finalize_trades=True
    )
    sim = VectorBTSimulator(0.0, 0.0, "rust")
    rep = size["repeat"]

    import backtesting.backtesting as bt_module

    def grid(ws: list[np.ndarray], rules: list[Any]) -> list[Any]:
        k = len(ws)
        return sim.simulate_grid(prices, ws, rules, init_cash=[CASH] * k, carry_shares=[None] * k)

    def measure(sls: tuple[float, ...], tps: tuple[float, ...]) -> dict[str, Any]:
        combos = [(sl, tp) for sl in sls for tp in tps]
        rules = [ExitRules(sl_stop=sl, tp_stop=tp) for sl, tp in combos]
        k = len(combos)
        ws = [entries(prices, sig, r) for r in rules]

        # ours as a user pays it: the signal once, then the entries of every combination, then simulation
        def ours_loop() -> list[Any]:
            s = sma_cross(close)
            return [sim.simulate(prices, entries(prices, s, r), r, init_cash=CASH) for r in rules]

        def ours_grid() -> list[Any]:
            s = sma_cross(close)
            return grid([entries(prices, s, r) for r in rules], rules)

        def bt_all() -> list[Any]:
            return [bt.run(sl=sl, tp=tp) for sl, tp in combos]

        progress = bt_module._tqdm
        bt_module._tqdm = lambda seq, **_: seq  # no progress bar: its drawing is not the peer's work
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bt_trades = [
                    bt.run(sl=sl, tp=tp)["_trades"].sort_values("EntryBar").reset_index(drop=True) for sl, tp in combos
                ]
                # the target's pair: the vectorised grid and backtesting.py alternately, one ratio per pair
                tg, tb = paired_times(ours_grid, bt_all, rep)
        finally:
            bt_module._tqdm = progress
        t_bt = statistics.median(tb) / k
        t_grid = statistics.median(tg) / k
        ratio = ratio_interval(tg, tb)
        t_signal = best_of(lambda: sma_cross(close), rep)
        t_entries = best_of(lambda: [entries(prices, sig, r) for r in rules], rep) / k
        t_ours = best_of(ours_loop, rep) / k
        t_grid_sim = best_of(lambda: grid(ws, rules), rep) / k
        ours = [
            trades_of(sim.simulate(prices, w, r, init_cash=CASH).portfolio.order_records, 0)
            for w, r in zip(ws, rules, strict=True)
        ]
        books = [trades_of(b.portfolio.order_records, 0) for b in grid(ws, rules)]
        per = [
            {
                "sl": sl,
                "tp": tp,
                "bt_trades": len(b),
                "our_trades": len(o),
                "grid_trades": len(g),
                "agree": agree(o, b),
                "grid_agree": agree(g, b),
            }
            for (sl, tp), o, g, b in zip(combos, ours, books, bt_trades, strict=True)
        ]
        return {
            "n_combinations": k,
            "bt_per_combo_s": t_bt,
            "ours_per_combo_s": t_ours,
            "grid_per_combo_s": t_grid,
            "grid_vs_bt_ratio_median_low_high": ratio,
            "entries_per_combo_s": t_entries,
            "signal_s": t_signal,
            "grid_simulation_only_per_combo_s": t_grid_sim,
            "trades_bt": sum(p["bt_trades"] for p in per),
            "trades_agree": sum(p["agree"] for p in per),
            "trades_agree_grid": sum(p["grid_agree"] for p in per),
            "combos_all_agree": sum(p["agree"] == p["bt_trades"] == p["our_trades"] for p in per),
            "combos_grid_all_agree": sum(p["grid_agree"] == p["bt_trades"] == p["grid_trades"] for p in per),
            "grid_equals_per_call": all(g == o for g, o in zip(books, ours, strict=True)),
            "per_combination": per,
        }

    small = measure(SLS, TPS)
    big = measure(SLS_BIG, TPS_BIG)
    bt_name = "backtesting.py bt.run per combination"
    target = f"<= {TARGET_GRID}x (>= {1 / TARGET_GRID:.0f}x faster)"
    rows = [
        Row(
            FIG,
            "ours: signal + entries + simulate, per combination",
            small["ours_per_combo_s"] * 1e3,
            "ms",
            small["bt_per_combo_s"] * 1e3,
            bt_name,
            note=f"of which entries {small['entries_per_combo_s'] * 1e3:.2f} ms",
        ),
    ]
    for m in (small, big):
        k = m["n_combinations"]
        ratio, lo, hi = m["grid_vs_bt_ratio_median_low_high"]
        rows.append(
            Row(
                FIG,
                f"ours: signal + entries + simulate_grid ({k} books, 1 call), per combination",
                m["grid_per_combo_s"] * 1e3,
                "ms",
                m["bt_per_combo_s"] * 1e3,
                bt_name,
                target=target,
                status=check_interval(ratio, lo, hi, TARGET_GRID),
                ratio=ratio,
                note=(
                    f"ratio: median of {size['repeat']} alternating pairs, interval {lo:.3g}..{hi:.3g}; "
                    f"{1 / ratio:.0f}x faster; simulate_grid alone {m['grid_simulation_only_per_combo_s'] * 1e3:.3f} ms, "
                    f"entries {m['entries_per_combo_s'] * 1e3:.3f} ms per combination"
                ),
            )
        )
    for m in (small, big):
        k = m["n_combinations"]
        ok = m["combos_grid_all_agree"] == k and m["combos_all_agree"] == k and m["grid_equals_per_call"]
        rows.append(
            Row(
                FIG,
                f"trades identical to backtesting.py ({k} combinations, simulate and grid)",
                m["trades_agree_grid"],
                "trades",
                m["trades_bt"],
                "backtesting.py trades",
                target="all combinations identical",
                status=check_equal(ok),
                note=(
                    f"all trades equal in {m['combos_grid_all_agree']}/{k} combinations (simulate: "
                    f"{m['combos_all_agree']}/{k}); grid == simulate: {m['grid_equals_per_call']}"
                ),
            )
        )
    detail = {"sizes": size, "grid_9": small, "grid_25": big}
    return rows, detail
