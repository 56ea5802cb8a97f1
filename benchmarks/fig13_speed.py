"""Figure 13: an SL x TP grid on a user's freqtrade folder of 5m bars, against vectorbt and backtesting.py.

The benchmark writes a freqtrade-style folder (``BTC_USDT-5m.feather``: a ``date`` column in ns and
OHLCV, generated 5m bars with a few missing hours) and reads it back through the engine's files
source (``FilesSource.load``), as a user's data. Strategy: SMA(10) crosses above SMA(30) at a bar's
close while flat -> buy with all the cash at the next bar's open, stop loss and take profit from the
fill; no costs. Grid: SL {0.5, 1, 1.5, 2, 3} % x TP {1, 2, 3, 4, 5} % = 25 books.

Timed as a user pays it, the signal and the entries inside every timed call:

- ours: ``sma_cross`` (the strategy's signal, numba, the same for every peer) -> signal weights -> ONE ``engine.simulation.native.signal_grid`` call for the
  25 books -> their 25 ``SimResult``;
- vectorbt: ``sma_cross`` -> entries -> ONE ``vbt.Portfolio.from_signals`` broadcasting ``sl_stop``
  and ``tp_stop`` over the 25 columns (``price=open``, ``stop_entry_price="fillprice"``), with
  ``engine="rust"`` (vectorbt-rust) and with ``engine="numba"``, the per-call selection vectorbt
  documents;
- backtesting.py: one ``bt.run(sl=, tp=)`` per combination (indicators computed in every run).

Each ratio is ours / theirs over alternating pairs (median and its distribution-free interval,
``common.median_interval``): target <= 1/3 for both vectorbt engines, <= 1/200 for backtesting.py.
Throughput (``benchmarks.fig13_throughput``): ONE ``signal_grid`` call on 1,000 books (the same
pair, SL x TP x trailing) over every bar, in bar-columns per CPU second with one numba thread and
per wall second on every core, the two thread counts alternating; target >= 1e8 (pass when the
interval of the repeated calls' median is above it). Its baseline: vectorbt-rust's ``from_signals``
on the same columns.

Correctness (enforced, a MISMATCH exits 1):

- backtesting.py's conventions are ours (it checks the entry bar's range after a fill at the open):
  every trade of every combination must be equal (entry and exit bar and price, rtol 1e-9);
- vectorbt's ``from_signals`` checks a stop only from the bar after the entry: a trade is
  comparable where both enter on the same bar and ours did not exit on its entry bar; every
  comparable trade must be equal, and the row says how many trades were comparable;
- the native grid's fills, cash and equity equal the vectorbt path's
  (``VectorBTSimulator.simulate_grid``, vectorbt's ``from_orders``) to 1e-9.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from benchmarks.common import (
    Row,
    check_equal,
    check_interval,
    ratio_interval,
)
from benchmarks.fig13_throughput import BOOKS, throughput_rows

FIG = "13 speed"
SLS = (0.005, 0.01, 0.015, 0.02, 0.03)
TPS = (0.01, 0.02, 0.03, 0.04, 0.05)
PAIR = "BTC/USDT"
CASH = 10_000_000.0
FIVE_MIN_NS = 300 * 10**9
TARGET_VBT, TARGET_BT = 1 / 3, 1 / 200


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "n_bars": 5_760 if quick else 17_280,
        "grid": f"SL {SLS} x TP {TPS}",
        "n_combinations": len(SLS) * len(TPS),
        "throughput_books": BOOKS,
        "repeat": 3 if quick else 7,
        "repeat_throughput": 15 if quick else 21,
        "repeat_bt": 3 if quick else 5,
    }


def folder_write(folder: Path, n_bars: int, seed: int = 13) -> None:
    """A freqtrade folder with one 5m pair: ``BTC_USDT-5m.feather``, ~``n_bars`` bars with gaps.

    A random walk with volatility clustering, opens off the previous close, wicks, and three missing
    spans of 1-3 hours (the bars after a gap open where the walk has gone meanwhile).
    """
    rng = np.random.default_rng(seed)
    total = n_bars + 3 * 36
    vol = 0.0012 * np.exp(np.cumsum(rng.normal(0, 0.05, total)).clip(-1, 1))
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 1, total) * vol))
    open_ = np.concatenate([[40_000.0], close[:-1]]) * np.exp(rng.normal(0, 0.0002, total))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, total)) * vol * 0.7)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, total)) * vol * 0.7)
    start = np.datetime64("2024-03-01T00:00", "ns").astype(np.int64)
    date = start + np.arange(total, dtype=np.int64) * FIVE_MIN_NS
    keep = np.ones(total, dtype=bool)
    for at, span in ((total // 4, 12), (total // 2, 36), (3 * total // 4, 24)):
        keep[at : at + span] = False
    keep[np.flatnonzero(keep)[n_bars:]] = False
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(date[keep], utc=True),
            "open": open_[keep],
            "high": high[keep],
            "low": low[keep],
            "close": close[keep],
            "volume": rng.uniform(5.0, 50.0, total)[keep],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_feather(folder / "BTC_USDT-5m.feather", compression="lz4")


def prices_read(folder: Path) -> Any:
    """The pair's bars through the engine's files source, as a PriceBlock."""
    from engine.config import FilesData
    from engine.data.sources.files import FilesSource
    from engine.simulation import PriceBlock

    bars = FilesSource(FilesData(path=str(folder))).load(PAIR, "5m")
    cols = [bars.get_column(c).to_numpy().astype(np.float64)[:, None].copy() for c in ("open", "high", "low", "close")]
    index = bars.get_column("timestamp").dt.epoch("ns").to_numpy().astype("datetime64[ns]")
    return PriceBlock(*cols, index, (PAIR,))


@njit(cache=True)
def sma_nb(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average, NaN for the first ``n - 1`` values: each window's first value plus the
    mean of the differences to it (``engine.testing.sma``'s formula, summed in order in numba)."""
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        first = x[i - n + 1]
        total = 0.0
        for j in range(i - n + 1, i + 1):
            total += x[j] - first
        out[i] = first + total / n
    return out


@njit(cache=True)
def sma_cross(close: np.ndarray, fast: int = 10, slow: int = 30) -> np.ndarray:
    """Bars whose close has SMA(fast) cross above SMA(slow) (backtesting.lib.crossover's rule).

    The strategy's signal, the same function for every peer (backtesting.py's indicators are
    :func:`sma_nb`): numba, so that the signal common to all sides is not most of the engine's time.
    """
    f, s = sma_nb(close, fast), sma_nb(close, slow)
    cross = np.zeros(len(close), dtype=np.bool_)
    for i in range(1, len(close)):
        cross[i] = f[i - 1] < s[i - 1] and f[i] > s[i]
    return np.flatnonzero(cross)


def entries_of(n: int, signal: np.ndarray) -> np.ndarray:
    """Bars after each signal (the entry bars), as a boolean array."""
    e = np.zeros(n, dtype=bool)
    bars = signal + 1
    e[bars[bars < n]] = True
    return e


def our_trades(res: Any) -> list[tuple[int, float, int | None, float | None]]:
    """(entry bar, entry price, exit bar, exit price) of a one-column book; exit None while held."""
    rec = res.order_records
    buys, sells = rec[rec["side"] == 0], rec[rec["side"] == 1]
    out: list[tuple[int, float, int | None, float | None]] = []
    for j in range(len(buys)):
        ex = (int(sells["idx"][j]) // 2, float(sells["price"][j])) if j < len(sells) else (None, None)
        out.append((int(buys["idx"][j]) // 2, float(buys["price"][j]), *ex))
    return out


def vbt_trades(pf: Any, col: int) -> dict[int, tuple[float, int | None, float | None]]:
    """vectorbt's trades of column ``col`` by entry bar: (entry price, exit bar, exit price); exit None while open."""
    tr = pf.trades.records_arr
    tr = tr[tr["col"] == col]
    return {
        int(t["entry_idx"]): (float(t["entry_price"]), *((int(t["exit_idx"]), float(t["exit_price"])) if t["status"] == 1 else (None, None)))
        for t in tr
    }  # fmt: skip


def compare_vbt(ours: list[list[tuple[int, float, int | None, float | None]]], pf: Any) -> dict[str, int]:
    """Trades comparable with vectorbt's (same entry bar, ours not out on its entry bar) and how many are equal."""
    total = comparable = equal = 0
    for b, trades in enumerate(ours):
        theirs = vbt_trades(pf, b)
        total += len(trades)
        for eb, ep, xb, xp in trades:
            if xb == eb or eb not in theirs:
                continue
            comparable += 1
            tp, txb, txp = theirs[eb]
            same_exit = xb == txb and (xp is None or (txp is not None and np.isclose(xp, txp, rtol=1e-9, atol=0)))
            equal += int(np.isclose(ep, tp, rtol=1e-9, atol=0) and same_exit)
    return {"trades": total, "comparable": comparable, "equal": equal}


def compare_bt(
    ours: list[list[tuple[int, float, int | None, float | None]]], bt: list[pd.DataFrame], n: int
) -> dict[str, int]:
    """Trades equal to backtesting.py's, in order (a trade still held counts when backtesting.py closed it on the last bar)."""
    total = equal = 0
    for trades, frame in zip(ours, bt, strict=True):
        total += max(len(trades), len(frame))
        for (eb, ep, xb, xp), row in zip(trades, frame.itertuples(), strict=False):
            same_entry = eb == row.EntryBar and np.isclose(ep, row.EntryPrice, rtol=1e-9, atol=0)
            if xb is None:
                equal += int(same_entry and row.ExitBar == n - 1)
            else:
                same_exit = xb == row.ExitBar and np.isclose(xp, row.ExitPrice, rtol=1e-9, atol=0)
                equal += int(same_entry and same_exit)
    return {"trades": total, "equal": equal}


def pairs_wall_cpu(
    fn_a: Any, fn_b: Any, repeat: int
) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """Wall and CPU seconds (this process, every thread) of ``fn_a`` and ``fn_b`` called alternately after a warm-up each."""
    fn_a()
    fn_b()
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for j, fn in enumerate((fn_a, fn_b)):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[j].append(time.perf_counter() - t0)
            cpu[j].append(time.process_time() - c0)
    return wall, cpu


def speed_rows(
    name: str,
    baseline: str,
    times: tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]],
    target: float,
) -> tuple[list[Row], dict[str, Any]]:
    """The wall row (the target's) and the CPU row of a paired comparison, ours / theirs per pair."""
    rows, detail = [], {}
    for clock, (ta, tb) in zip(("wall", "CPU"), times, strict=True):
        ratio, lo, hi = ratio_interval(ta, tb)
        detail[clock] = {"ours_s": ta, "theirs_s": tb, "ratio_median_low_high": (ratio, lo, hi)}
        rows.append(
            Row(
                FIG, f"{name} ({clock})" if clock == "wall" else f"  same, {clock} time", statistics.median(ta) * 1e3,
                "ms", statistics.median(tb) * 1e3, baseline, target=f"<= {target:.3g}x ({1 / target:.0f}x faster)",
                status=check_interval(ratio, lo, hi, target), ratio=ratio,
                note=f"{1 / ratio:.1f}x faster; median of {len(ta)} alternating pairs, interval {lo:.3g}..{hi:.3g}",
            )
        )  # fmt: skip
    return rows, detail


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    import vectorbt as vbt

    from engine.config.exit_rules import ExitRules
    from engine.simulation.native import signal_grid

    size = sizes(quick)
    folder = tmp / "freqtrade" / "data" / "binance"
    folder_write(folder, size["n_bars"])
    prices = prices_read(folder)
    n = prices.shape[0]
    close = prices.close[:, 0]
    combos = [(sl, tp) for sl in SLS for tp in TPS]
    rules = [ExitRules(sl_stop=sl, tp_stop=tp) for sl, tp in combos]
    sl_row, tp_row = np.array([c[0] for c in combos])[None, :], np.array([c[1] for c in combos])[None, :]
    rep = size["repeat"]

    def ours() -> list[Any]:
        w = np.full((n, 1), np.nan)
        w[entries_of(n, sma_cross(close)), 0] = 1.0
        return signal_grid(prices, w, rules, init_cash=CASH).results()

    def vectorbt(engine: str, sl: np.ndarray = sl_row, tp: np.ndarray = tp_row, trail: Any = False) -> Any:
        e = entries_of(n, sma_cross(close))[:, None]
        return vbt.Portfolio.from_signals(
            prices.close, e, np.zeros_like(e), price=prices.open, open=prices.open, high=prices.high, low=prices.low,
            sl_stop=sl, tp_stop=tp, sl_trail=trail, stop_entry_price="fillprice", init_cash=CASH, engine=engine,
        )  # fmt: skip

    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size, "n_bars_read": n}
    mine = [our_trades(r) for r in ours()]
    for engine in ("rust", "numba"):
        speed, info = speed_rows(
            f"grid of 25 (signal + entries + simulation) vs vbt from_signals, {engine}",
            f"vbt.Portfolio.from_signals, 25 stop columns, engine={engine}",
            pairs_wall_cpu(ours, lambda e=engine: vectorbt(e), rep),
            TARGET_VBT,
        )
        rows += speed
        detail[f"vbt_{engine}"] = info
        cmp = compare_vbt(mine, vectorbt(engine))
        detail[f"vbt_{engine}"]["trades"] = cmp
        ok = cmp["comparable"] > 0 and cmp["equal"] == cmp["comparable"]
        rows.append(
            Row(
                FIG, f"  trades equal to vbt from_signals where conventions agree, {engine}", cmp["equal"], "trades",
                cmp["comparable"], "comparable trades", target="all comparable equal", status=check_equal(ok),
                note=f"{cmp['comparable']} of our {cmp['trades']} trades comparable (same entry bar, not out on it: "
                "vectorbt checks stops from the bar after the entry)",
            )
        )  # fmt: skip
    rows += _backtesting_rows(prices, combos, ours, mine, size, detail)
    rows += _parity_row(prices, rules, mine, detail)
    w = np.full((n, 1), np.nan)
    w[entries_of(n, sma_cross(close)), 0] = 1.0
    rows += throughput_rows(prices, w, CASH, size["repeat_throughput"], vectorbt, detail)
    return rows, detail


def _backtesting_rows(
    prices: Any,
    combos: list[tuple[float, float]],
    ours: Any,
    mine: list[Any],
    size: dict[str, Any],
    detail: dict[str, Any],
) -> list[Row]:
    """Ours against backtesting.py: the paired speed row and the trade-for-trade row."""
    import backtesting.backtesting as bt_module
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    n = prices.shape[0]
    next_open = prices.open[:, 0]
    df = pd.DataFrame(
        {"Open": prices.open[:, 0], "High": prices.high[:, 0], "Low": prices.low[:, 0], "Close": prices.close[:, 0]},
        index=pd.DatetimeIndex(prices.index),
    )

    class Bracket(Strategy):
        sl = 0.01
        tp = 0.02

        def init(self) -> None:
            self.fast = self.I(sma_nb, self.data.Close, 10)
            self.slow = self.I(sma_nb, self.data.Close, 30)

        def next(self) -> None:
            i = len(self.data) - 1
            if not self.position and i + 1 < n and crossover(self.fast, self.slow):
                fill = next_open[i + 1]
                self.buy(sl=fill * (1 - self.sl), tp=fill * (1 + self.tp))

    bt = Backtest(
        df, Bracket, cash=CASH, commission=0.0, exclusive_orders=False, trade_on_close=False, finalize_trades=True
    )
    progress = bt_module._tqdm
    bt_module._tqdm = lambda seq, **_: seq  # no progress bar: its drawing is not the peer's work
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = [
                bt.run(sl=sl, tp=tp)["_trades"].sort_values("EntryBar").reset_index(drop=True) for sl, tp in combos
            ]
            times = pairs_wall_cpu(ours, lambda: [bt.run(sl=sl, tp=tp) for sl, tp in combos], size["repeat_bt"])
    finally:
        bt_module._tqdm = progress
    speed, info = speed_rows(
        "grid of 25 (signal + entries + simulation) vs backtesting.py",
        "backtesting.py, one bt.run per combination",
        times,
        TARGET_BT,
    )
    cmp = compare_bt(mine, frames, n)
    detail["backtesting"] = {**info, "trades": cmp}
    return [
        *speed,
        Row(
            FIG, "  trades equal to backtesting.py (25 combinations)", cmp["equal"], "trades", cmp["trades"],
            "backtesting.py trades", target="all equal", status=check_equal(cmp["trades"] > 0 and cmp["equal"] == cmp["trades"]),
            note="entry and exit bar and price, rtol 1e-9",
        ),
    ]  # fmt: skip


def _parity_row(prices: Any, rules: list[Any], mine: list[Any], detail: dict[str, Any]) -> list[Row]:
    """The native grid against the vectorbt path (from_orders): fills, cash and equity."""
    from engine.simulation import VectorBTSimulator
    from engine.simulation.native import signal_grid

    n, g = prices.shape[0], len(rules)
    w = np.full((n, 1), np.nan)
    w[entries_of(n, sma_cross(prices.close[:, 0])), 0] = 1.0
    ref = VectorBTSimulator(0.0, 0.0, "rust").simulate_grid(
        prices, [w] * g, rules, init_cash=[CASH] * g, carry_shares=[None] * g, held_reweights="first_bar"
    )
    got = signal_grid(prices, w, rules, init_cash=CASH).results()
    same = 0
    for r, o in zip(ref, got, strict=True):
        a, b = r.order_records, o.order_records
        same += int(
            len(a) == len(b)
            and all(np.array_equal(a[f], b[f]) for f in ("col", "idx", "side"))
            and all(np.allclose(a[f], b[f], rtol=1e-9, atol=0) for f in ("size", "price", "fees"))
            and np.allclose(r.equity, o.equity, rtol=1e-9)
            and np.allclose(r.cash, o.cash, rtol=1e-9, atol=1e-6)
        )
    detail["parity_books_equal"] = same
    return [
        Row(
            FIG, "  native grid equal to the vectorbt path (from_orders): fills, cash, equity", same, "books", g,
            "books", target="all equal to 1e-9", status=check_equal(same == g and sum(map(len, mine)) > 0),
        )
    ]  # fmt: skip
