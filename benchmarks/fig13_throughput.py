"""Figure 13's throughput rows: bar-columns per second of a many-column stop grid, per core and on every core.

The timed call is one ``engine.simulation.native.signal_grid`` on 1,000 one-column books (the
figure's pair, SL x TP x trailing) over every bar of the figure's folder (5,760 in quick mode,
17,280 in full): 5.8 M or 17.3 M bar-columns per call, the orders, exits and equity of every book,
without building the ``SimResult`` objects. The call is repeated with numba's threads at 1 and at
every core in alternation (the same moments of a shared machine for both), after one untimed call
of each.

- per core: bar-columns per CPU second of this process with one thread (what one core delivers,
  whatever else the machine runs);
- every core: bar-columns per wall second with ``NUMBA_NUM_THREADS`` threads (what the cores deliver
  together; other jobs on the machine lower it, so the load average is stated in the row).

Target >= 1e8 for both: pass when the distribution-free interval of the median over the repeated
calls (``common.median_interval``) is above it, miss when below, inconclusive when it straddles.
Baseline: vectorbt-rust's ``from_signals`` on the same columns, per CPU second.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import MISS, PASS, Row, median_interval

FIG = "13 speed"
TARGET_THROUGHPUT = 1e8
BOOKS = 1_000


def at_least(values: list[float], target: float) -> str:
    """Verdict of ``value >= target`` on repeated measurements (their median's interval)."""
    _, lo, hi = median_interval(values)
    return PASS if lo >= target else MISS if hi < target else "inconclusive"


def grid() -> tuple[list[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ``BOOKS`` exit rules (SL x TP x trailing) and their (1, BOOKS) sl, tp and trail rows for vectorbt."""
    from engine.config.exit_rules import ExitRules

    sls = np.linspace(0.003, 0.05, BOOKS // 4)
    combos = [(sl, tp, tr) for sl in sls for tp, tr in ((0.01, False), (0.03, False), (0.02, True), (0.05, True))]
    rules = [ExitRules(sl_stop=float(sl), tp_stop=tp, sl_trail=tr) for sl, tp, tr in combos]
    rows = tuple(np.array([c[j] for c in combos])[None, :] for j in range(3))
    return rules, (rows[0], rows[1], rows[2])


def timed_rates(call: Any, cells: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Bar-columns per wall and per CPU second of ``call`` with 1 and every numba thread, alternately."""
    import numba

    counts = sorted({1, int(numba.config.NUMBA_NUM_THREADS)})
    before = numba.get_num_threads()
    out: dict[str, dict[str, list[float]]] = {str(t): {"wall": [], "cpu": []} for t in counts}
    try:
        for threads in counts:  # untimed: compiled or loaded, buffers and threads started
            numba.set_num_threads(threads)
            call()
        for _ in range(repeat):
            for threads in counts:
                numba.set_num_threads(threads)
                c0, t0 = time.process_time(), time.perf_counter()
                call()
                out[str(threads)]["wall"].append(cells / (time.perf_counter() - t0))
                out[str(threads)]["cpu"].append(cells / max(time.process_time() - c0, 1e-9))
    finally:
        numba.set_num_threads(before)
    return out


def throughput_rows(
    prices: Any, weights: np.ndarray, cash: float, repeat: int, vectorbt: Any, detail: dict[str, Any]
) -> list[Row]:
    """The per-core and every-core rows (see the module docstring); the raw rates go to ``detail``."""
    from engine.simulation.native import signal_grid

    n = prices.shape[0]
    rules, vb = grid()
    cells = n * BOOKS
    load_start = os.getloadavg()[0]
    rates = timed_rates(lambda: signal_grid(prices, weights, rules, init_cash=cash), cells, repeat)
    load_end = os.getloadavg()[0]
    vectorbt("rust", *vb)
    c0 = time.process_time()
    for _ in range(max(1, repeat // 3)):
        vectorbt("rust", *vb)
    vbt_rate = cells * max(1, repeat // 3) / max(time.process_time() - c0, 1e-9)
    detail["throughput"] = {
        "bar_cols": cells, "books": BOOKS, "bars": n, "per_threads": rates, "vbt_rust_bar_cols_per_cpu_s": vbt_rate,
        "load_average_start_end": (load_start, load_end),
    }  # fmt: skip
    load = f"load average {load_start:.1f} -> {load_end:.1f}"
    rows = []
    for threads, rate in rates.items():
        per_core = threads == "1"
        got = rate["cpu" if per_core else "wall"]
        _, lo, hi = median_interval(got)
        other = statistics.median(rate["wall" if per_core else "cpu"])
        label = "per core (1 thread, per CPU second)" if per_core else f"{threads} threads (per wall second)"
        rows.append(
            Row(
                FIG, f"throughput, {BOOKS} stop books x {n} bars, {label}", statistics.median(got), "bar-cols/s",
                vbt_rate, "vbt from_signals (rust), same columns, per CPU second", target=f">= {TARGET_THROUGHPUT:.0e}",
                status=at_least(got, TARGET_THROUGHPUT),
                note=f"interval {lo:.3g}..{hi:.3g} over {len(got)} signal_grid calls of {cells / 1e6:.1f} M "
                "bar-columns (orders, exits, equity; SimResults not built), thread counts alternating; "
                f"per {'wall' if per_core else 'CPU'} second {other:.3g}; {load}",
            )
        )  # fmt: skip
    return rows
